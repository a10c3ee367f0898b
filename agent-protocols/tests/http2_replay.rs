//! Replays of real traffic recorded through fixtures-tools/record_h2.py on loopback: a python
//! grpcio client and server (tests/fixtures/http2/apps), and nginx (h2c, prior knowledge,
//! apps/nginx_h2c.conf) with curl and nghttp as clients.

mod h2common;

use agent_protocols::{Detail, Dir, GrpcInfo, ProtocolKind, Record};
use h2common::*;
use proptest::prelude::*;

/// All fixtures (grpc_big: 20 000-byte request, 34 000-byte reply in single large DATA frames).
const ALL: [&str; 6] = [
    "grpc_unary",
    "grpc_stream",
    "grpc_concurrent",
    "h2c_nginx",
    "h2c_nginx_nghttp",
    "grpc_big",
];
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn g(r: &Record) -> &GrpcInfo {
    match &r.detail {
        Detail::Grpc(g) => g,
        other => panic!("not gRPC: {other:?}"),
    }
}

fn greeter(stream_id: u32, method: &str, status: u32, msgs: (u32, u32)) -> GrpcInfo {
    GrpcInfo {
        path: Some(format!("helloworld.Greeter/{method}")),
        service: Some("helloworld.Greeter".into()),
        method: Some(method.into()),
        authority: Some("127.0.0.1:50672".into()),
        stream_id,
        http_status: Some(200),
        grpc_status: Some(status),
        grpc_message: None,
        request_messages: msgs.0,
        response_messages: msgs.1,
        traceparent: None,
        tracestate: None,
        plain_http2: false,
        http_method: Some("POST".into()),
        headers_unknown: false,
        reset: false,
    }
}

/// Every record's timing is ordered and its sizes are non-zero.
fn sane(r: &Record) {
    assert_eq!(r.protocol, ProtocolKind::Http2);
    assert!(r.start_ns <= r.request_end_ns, "{r:?}");
    assert!(r.request_end_ns <= r.response_start_ns, "{r:?}");
    assert!(r.response_start_ns <= r.end_ns, "{r:?}");
    assert!(r.request_bytes > 0 && r.response_bytes > 0, "{r:?}");
}

#[test]
fn unary_and_not_found() {
    let chunks = load("grpc_unary");
    let (recs, stats) = replay(&chunks);
    assert_eq!(recs.len(), 2);
    assert_eq!(stats.parse_errors, 0);
    assert_eq!(stats.bytes_lost, 0);
    let mut ok = greeter(1, "SayHello", 0, (1, 1));
    ok.traceparent = Some(TRACEPARENT.into());
    ok.tracestate = Some("rojo=00f067aa0ba902b7".into());
    assert_eq!(g(&recs[0]), &ok);
    let mut nf = greeter(3, "SayHello", 5, (1, 0));
    nf.grpc_message = Some("no such user: missing".into());
    assert_eq!(g(&recs[1]), &nf);
    // Exact sizes and timing of the first call (chunks 3 and 6 of the fixture): HEADERS (329)
    // + DATA (19) on stream 1; the response HEADERS (87) + DATA (26) + trailers (24).
    let r = &recs[0];
    assert_eq!(r.request_bytes, 329 + 19);
    assert_eq!(r.response_bytes, 87 + 26 + 24);
    assert_eq!(
        (r.start_ns, r.request_end_ns),
        (chunks[3].start_ns, chunks[3].end_ns)
    );
    assert_eq!(
        (r.response_start_ns, r.end_ns),
        (chunks[6].start_ns, chunks[6].end_ns)
    );
    // Trailers-only answer: 38-byte request (dynamic-table references), 62-byte response.
    assert_eq!(
        (recs[1].request_bytes, recs[1].response_bytes),
        (9 + 8 + 9 + 12, 9 + 53)
    );
    recs.iter().for_each(sane);
}

#[test]
fn server_streaming() {
    let (recs, stats) = replay(&load("grpc_stream"));
    assert_eq!(stats.parse_errors, 0);
    assert_eq!(recs.len(), 1);
    assert_eq!(g(&recs[0]), &greeter(1, "SayHelloStream", 0, (1, 3)));
    sane(&recs[0]);
}

#[test]
fn concurrent_calls_on_one_connection() {
    let (recs, stats) = replay(&load("grpc_concurrent"));
    assert_eq!(stats.parse_errors, 0);
    assert_eq!(recs.len(), 5);
    for (i, r) in recs.iter().enumerate() {
        assert_eq!(g(r), &greeter(2 * i as u32 + 1, "SayHello", 0, (1, 1)));
        sane(r);
    }
    // All five requests went out in one write; the answers came back one by one.
    assert!(recs.iter().all(|r| r.start_ns == recs[0].start_ns));
    assert!(recs.windows(2).all(|w| w[0].end_ns <= w[1].end_ns));
}

/// The capture starts at the second call: its headers only reference HPACK entries the first
/// call inserted. Names come out unknown, never wrong; the rest of the record is kept.
#[test]
fn capture_starting_mid_connection() {
    let chunks = load("grpc_unary");
    let late: Vec<Chunk> = chunks[9..].to_vec();
    assert_eq!(
        agent_protocols::stream::choose(Dir::Request, &late[0].data),
        Some(ProtocolKind::Http2)
    );
    let (recs, stats) = replay(&late);
    assert_eq!(stats.parse_errors, 0);
    assert_eq!(recs.len(), 1);
    let want = GrpcInfo {
        stream_id: 3,
        http_status: Some(200),
        grpc_status: Some(5),
        grpc_message: Some("no such user: missing".into()),
        request_messages: 1,
        response_messages: 0,
        // :method POST is a static-table entry.
        http_method: Some("POST".into()),
        headers_unknown: true,
        ..GrpcInfo::default()
    };
    assert_eq!(g(&recs[0]), &want);
    assert_eq!((recs[0].request_bytes, recs[0].response_bytes), (38, 62));
}

fn expected(name: &str) -> Vec<Record> {
    replay(&load(name)).0
}

#[test]
fn every_byte_split_gives_the_same_records() {
    // grpc_big too: a split right after a large DATA frame's header once lost its message.
    for name in ALL {
        let chunks = load(name);
        let want = expected(name);
        let total = total_bytes(&chunks);
        let mut splits = 0;
        for at in 1..total {
            let split = split_at(&chunks, at);
            splits += usize::from(split.len() == chunks.len() + 1);
            let (got, stats) = replay(&split);
            assert_eq!(got, want, "{name} split at {at}");
            assert_eq!(stats.parse_errors, 0);
        }
        // Every offset except the chunk boundaries split a chunk.
        assert_eq!(splits, total - chunks.len(), "{name}");
    }
}

/// Each direction's bytes are re-chunked at random (order between directions kept per chunk).
fn rechunk(chunks: &[Chunk], cuts: &[usize]) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut k = 0;
    for c in chunks {
        let mut rest = c.data.as_slice();
        while !rest.is_empty() {
            let n = cuts
                .get(k)
                .copied()
                .unwrap_or(usize::MAX)
                .clamp(1, rest.len());
            k += 1;
            out.push(Chunk {
                data: rest[..n].to_vec(),
                total: n as u64,
                ..c.clone()
            });
            rest = &rest[n..];
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_chunkings(which in 0..6usize, cuts in proptest::collection::vec(1..200usize, 0..200)) {
        let name = ALL[which];
        let (got, stats) = replay(&rechunk(&load(name), &cuts));
        prop_assert_eq!(got, expected(name));
        prop_assert_eq!(stats.parse_errors, 0);
    }

    /// Corrupted bytes: no panic, and every record still names a real method or none.
    #[test]
    fn corruption_never_panics(which in 0..6usize, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let name = ALL[which];
        let mut chunks = load(name);
        let total = total_bytes(&chunks);
        for (pos, x) in flips {
            let mut pos = pos % total;
            for c in chunks.iter_mut() {
                if pos < c.data.len() {
                    c.data[pos] ^= x | 1;
                    break;
                }
                pos -= c.data.len();
            }
        }
        let (got, _) = replay(&chunks);
        prop_assert!(got.len() <= 2 * expected(name).len() + 4);
    }
}

fn sane_or_incomplete(r: &Record) {
    assert!(r.start_ns <= r.end_ns, "{r:?}");
    assert!(r.request_bytes + r.response_bytes > 0, "{r:?}");
}

/// A capture that kept only part of a chunk (captured < bytes): no panic, the lost bytes are
/// skipped inside a body or counted, records never name a method that was not called, and the calls that ended before
/// the loss still come out exactly.
#[test]
fn truncated_captures() {
    for name in ALL {
        let chunks = load(name);
        let want = expected(name);
        for i in 0..chunks.len() {
            for keep in [0, 1, 9, chunks[i].data.len() / 2] {
                let mut t = chunks.clone();
                if keep >= t[i].data.len() {
                    continue;
                }
                t[i].data.truncate(keep);
                let (got, stats) = replay(&t);
                // Lost inside a message body, the bytes are skipped and nothing changes.
                assert!(
                    stats.bytes_lost > 0 || got == want,
                    "{name} chunk {i} keep {keep}"
                );
                for r in &got {
                    if let Some(m) = &g(r).method {
                        assert!(m == "SayHello" || m == "SayHelloStream", "{r:?}");
                    }
                    if let Some(p) = &g(r).path {
                        assert!(
                            p.starts_with("helloworld.Greeter/") || p == "/" || p == "/missing"
                        );
                    }
                    sane_or_incomplete(r);
                }
                // Calls that ended before the truncated chunk are reported exactly.
                for w in want.iter().filter(|w| w.end_ns < chunks[i].start_ns) {
                    assert!(got.contains(w), "{name} chunk {i} keep {keep}: lost {w:?}");
                }
            }
        }
    }
}

#[test]
fn large_messages_in_large_frames() {
    let (recs, stats) = replay(&load("grpc_big"));
    assert_eq!(
        (stats.parse_errors, stats.bytes_lost, stats.buffer_overflows),
        (0, 0, 0)
    );
    assert_eq!(recs.len(), 2);
    assert_eq!(g(&recs[0]), &greeter(1, "SayHello", 0, (1, 1)));
    // HEADERS 9+217, DATA 9+20005 / HEADERS 9+78, DATA 9+34005, trailers 9+15.
    assert_eq!(recs[0].request_bytes, 226 + 20014);
    assert_eq!(recs[0].response_bytes, 87 + 34014 + 24);
    assert_eq!(g(&recs[1]), &greeter(3, "SayHello", 0, (1, 1)));
    recs.iter().for_each(sane);
}

/// The kernel kept only the first 4 KiB of every write. The big DATA frames are skipped past
/// their captured part; the WINDOW_UPDATE after the request body and the trailers after the
/// reply body fell in the lost part. Bytes lost could have been header blocks: both HPACK
/// decoders restart, so the second call's dynamic-table references come out unknown (not
/// wrong), and the first call, whose trailers were lost, is reported when the connection ends.
#[test]
fn large_messages_with_4k_capture() {
    let capped: Vec<Chunk> = load("grpc_big")
        .into_iter()
        .map(|mut c| {
            c.data.truncate(4096);
            c
        })
        .collect();
    let (recs, stats) = replay(&capped);
    assert_eq!(stats.bytes_lost, 13 + 24 + 13);
    assert_eq!(stats.parse_errors, 0);
    assert_eq!(recs.len(), 2);
    let second = g(&recs[0]);
    let want = GrpcInfo {
        stream_id: 3,
        http_status: Some(200),
        request_messages: 1,
        response_messages: 1,
        http_method: Some("POST".into()),
        headers_unknown: true,
        ..GrpcInfo::default()
    };
    assert_eq!(second, &want);
    let mut first = greeter(1, "SayHello", 0, (1, 1));
    first.grpc_status = None;
    assert_eq!(g(&recs[1]), &first);
    assert_eq!(recs[1].request_bytes, 226 + 20014);
    assert_eq!(recs[1].response_bytes, 87 + 34014);
}

fn nginx(stream_id: u32, path: &str, status: u16) -> GrpcInfo {
    GrpcInfo {
        path: Some(path.into()),
        authority: Some("127.0.0.1:50682".into()),
        stream_id,
        http_status: Some(status),
        plain_http2: true,
        http_method: Some("GET".into()),
        ..GrpcInfo::default()
    }
}

#[test]
fn plain_http2_curl_to_nginx() {
    let (recs, stats) = replay(&load("h2c_nginx"));
    assert_eq!(stats.parse_errors, 0);
    assert_eq!(recs.len(), 1);
    let mut want = nginx(1, "/", 200);
    want.traceparent = Some(TRACEPARENT.into());
    assert_eq!(g(&recs[0]), &want);
    // HEADERS only (END_STREAM on HEADERS) / HEADERS + 17-byte body.
    assert_eq!(recs[0].request_bytes, 90);
    assert_eq!(recs[0].response_bytes, 85);
    sane(&recs[0]);
}

/// nghttp opens idle streams with PRIORITY frames first, then two requests in one write.
#[test]
fn plain_http2_nghttp_two_streams() {
    let (recs, stats) = replay(&load("h2c_nginx_nghttp"));
    assert_eq!(stats.parse_errors, 0);
    assert_eq!(recs.len(), 2);
    assert_eq!(g(&recs[0]), &nginx(13, "/", 200));
    assert_eq!(g(&recs[1]), &nginx(15, "/missing", 404));
    assert_eq!(recs[0].start_ns, recs[1].start_ns);
    recs.iter().for_each(sane);
}

/// Regression (proptest shrink): grpc_big re-chunked with these cuts lost the request's gRPC
/// message count.
#[test]
fn big_request_rechunked_keeps_message_count() {
    let chunks = rechunk(&load("grpc_big"), &[66, 16, 55, 185, 72]);
    let (got, stats) = replay(&chunks);
    assert_eq!(stats.parse_errors, 0);
    assert_eq!(got, expected("grpc_big"));
}
