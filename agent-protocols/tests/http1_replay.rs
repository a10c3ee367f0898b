//! HTTP/1 fixtures recorded from curl and a raw-socket client against nginx, replayed whole,
//! split at every byte, in random chunkings, truncated and corrupted.

mod common;

use agent_protocols::{Detail, Dir, HttpInfo, ParserConfig, ProtocolKind, Record};
use common::*;
use proptest::prelude::*;

const FIXTURES: &[&str] = &[
    "http1/keepalive.jsonl",
    "http1/head.jsonl",
    "http1/chunked.jsonl",
    "http1/close_delimited.jsonl",
    "http1/pipelined.jsonl",
];

fn cfg() -> ParserConfig {
    ParserConfig::default()
}

fn http(r: &Record) -> &HttpInfo {
    match &r.detail {
        Detail::Http(h) => h,
        d => panic!("not http: {d:?}"),
    }
}

fn run(chunks: &[Chunk]) -> Replay {
    replay(ProtocolKind::Http1, chunks, &cfg())
}

/// Bytes sent in one direction of one connection.
fn total(chunks: &[Chunk], dir: Dir) -> u64 {
    chunks
        .iter()
        .filter(|c| c.dir == dir)
        .map(|c| c.total)
        .sum()
}

/// Every record is well ordered in time, and together the records account for every byte.
fn check_accounting(chunks: &[Chunk], r: &Replay) {
    for (_, rec) in &r.records {
        assert_eq!(rec.protocol, ProtocolKind::Http1);
        assert!(
            rec.start_ns > 0 && rec.start_ns <= rec.request_end_ns,
            "{rec:?}"
        );
        assert!(
            rec.response_start_ns > 0 && rec.response_start_ns <= rec.end_ns,
            "{rec:?}"
        );
        assert!(rec.start_ns <= rec.response_start_ns, "{rec:?}");
    }
    let req: u64 = r.records.iter().map(|(_, x)| x.request_bytes).sum();
    let resp: u64 = r.records.iter().map(|(_, x)| x.response_bytes).sum();
    assert_eq!(req, total(chunks, Dir::Request));
    assert_eq!(resp, total(chunks, Dir::Response));
    assert_eq!(r.stats.parse_errors, 0);
    assert_eq!(r.stats.bytes_lost, 0);
    assert_eq!(r.stats.resyncs, 0);
}

type Row<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    Option<u16>,
    Option<u64>,
    Option<u64>,
);

fn rows(r: &Replay) -> Vec<Row<'_>> {
    r.records
        .iter()
        .map(|(_, rec)| {
            let h = http(rec);
            (
                h.method.as_str(),
                h.path.as_str(),
                h.query.as_deref(),
                h.version.as_str(),
                h.status,
                h.request_content_length,
                h.response_content_length,
            )
        })
        .collect()
}

#[test]
fn keepalive_get_404_post_chunked_expect() {
    let chunks = load_fixture("http1/keepalive.jsonl");
    let r = run(&chunks);
    check_accounting(&chunks, &r);
    assert_eq!(
        rows(&r),
        vec![
            (
                "GET",
                "/index.html",
                Some("lang=en&x=1"),
                "1.1",
                Some(200),
                None,
                Some(42)
            ),
            ("GET", "/missing", None, "1.1", Some(404), None, Some(153)),
            ("POST", "/submit", None, "1.1", Some(201), Some(20), Some(8)),
            // Chunked request body: 17 payload bytes.
            ("POST", "/submit", None, "1.1", Some(201), Some(17), Some(8)),
            // Expect: 100-continue; the interim 100 is not the answer.
            ("POST", "/submit", None, "1.1", Some(201), Some(11), Some(8)),
        ]
    );
    let h = http(&r.records[0].1);
    assert_eq!(h.host.as_deref(), Some("127.0.0.1:18581"));
    assert_eq!(h.user_agent.as_deref(), Some("curl/7.88.1"));
    assert_eq!(
        h.traceparent.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(h.tracestate.as_deref(), Some("vendor=1"));
    assert_eq!(
        (h.b3.as_deref(), h.content_type.as_deref(), h.upgraded),
        (None, None, false)
    );
    assert_eq!(
        http(&r.records[2].1).content_type.as_deref(),
        Some("application/json")
    );
    // Timing of the first exchange comes from its chunks.
    let first = &r.records[0].1;
    assert_eq!(first.start_ns, chunks[0].start_ns);
    assert_eq!(first.request_end_ns, chunks[0].end_ns);
    assert_eq!(first.response_start_ns, chunks[1].start_ns);
    assert_eq!(first.end_ns, chunks[1].end_ns);
    assert_eq!(first.request_bytes, chunks[0].total);
    assert_eq!(first.response_bytes, chunks[1].total);
    // The 100-continue request's body came last.
    let last = &r.records[4].1;
    assert_eq!(last.request_end_ns, chunks.last().unwrap().end_ns);
}

#[test]
fn head_responses_have_no_body() {
    let chunks = load_fixture("http1/head.jsonl");
    let r = run(&chunks);
    check_accounting(&chunks, &r);
    assert_eq!(
        rows(&r),
        vec![
            (
                "HEAD",
                "/index.html",
                None,
                "1.1",
                Some(200),
                None,
                Some(42)
            ),
            ("HEAD", "/big.txt", None, "1.1", Some(200), None, Some(6000)),
        ]
    );
}

#[test]
fn chunked_gzip_responses() {
    let chunks = load_fixture("http1/chunked.jsonl");
    let r = run(&chunks);
    check_accounting(&chunks, &r);
    let rows = rows(&r);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].0..=rows[0].4.map(|_| "").unwrap(), "GET"..="");
    assert_eq!((rows[0].1, rows[0].4), ("/big.txt", Some(200)));
    assert_eq!((rows[1].1, rows[1].4), ("/index.html", Some(200)));
    // Decoded payload sizes (gzip bytes) are smaller than the wire size with chunk framing.
    for (_, rec) in &r.records {
        let payload = http(rec).response_content_length.unwrap();
        assert!(payload > 0 && payload < rec.response_bytes);
    }
}

#[test]
fn close_delimited_http10_response() {
    let chunks = load_fixture("http1/close_delimited.jsonl");
    let r = run(&chunks);
    check_accounting(&chunks, &r);
    let rows = rows(&r);
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].0, rows[0].1, rows[0].3, rows[0].4),
        ("GET", "/big.txt", "1.0", Some(200))
    );
    let resp = chunks.iter().find(|c| c.dir == Dir::Response).unwrap();
    let head = resp.data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(rows[0].6, Some(resp.total - head as u64));
}

#[test]
fn pipelined_requests_in_one_write() {
    let chunks = load_fixture("http1/pipelined.jsonl");
    let r = run(&chunks);
    check_accounting(&chunks, &r);
    assert_eq!(
        rows(&r),
        vec![
            ("GET", "/index.html", None, "1.1", Some(200), None, Some(42)),
            (
                "HEAD",
                "/index.html",
                None,
                "1.1",
                Some(200),
                None,
                Some(42)
            ),
            (
                "GET",
                "/missing",
                Some("q=1"),
                "1.1",
                Some(404),
                None,
                Some(153)
            ),
        ]
    );
}

#[test]
fn detection_picks_http1() {
    for f in FIXTURES {
        let chunks = load_fixture(f);
        assert_eq!(
            agent_protocols::stream::choose(chunks[0].dir, &chunks[0].data),
            Some(ProtocolKind::Http1),
            "{f}"
        );
        assert_eq!(
            plain(&replay_detected(&chunks, &cfg())),
            plain(&run(&chunks)),
            "{f}"
        );
    }
}

#[test]
fn split_at_every_byte() {
    for f in FIXTURES {
        let chunks = load_fixture(f);
        let want = plain(&run(&chunks));
        for i in 0..chunks.len() {
            for at in 1..chunks[i].data.len() {
                let got = run(&split_at(&chunks, i, at));
                assert_eq!(plain(&got), want, "{f}: chunk {i} split at {at}");
                assert_eq!(got.stats.parse_errors, 0, "{f}: chunk {i} split at {at}");
            }
        }
    }
}

#[test]
fn truncated_bodies_keep_records() {
    // Losing the tail of a content-length body costs nothing: the driver skips the body by its
    // announced size.
    for f in [
        "http1/keepalive.jsonl",
        "http1/head.jsonl",
        "http1/pipelined.jsonl",
    ] {
        let chunks = load_fixture(f);
        let want = plain(&run(&chunks));
        for (i, c) in chunks.iter().enumerate() {
            if c.dir != Dir::Response {
                continue;
            }
            // The final response's head ends after its status line (skip a 100 Continue).
            let status = c.data.windows(9).rposition(|w| w == b"HTTP/1.1 ").unwrap();
            let head = status
                + c.data[status..]
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .unwrap()
                + 4;
            // Past the head and past the first chunk-size line.
            let keep = head + 8;
            if keep >= c.data.len() - 8 {
                continue;
            }
            let got = run(&truncate(&chunks, i, keep));
            assert_eq!(plain(&got), want, "{f}: chunk {i} truncated to {keep}");
            assert_eq!(got.stats.bytes_lost, 0);
        }
    }
}

#[test]
fn truncated_chunked_body_keeps_head() {
    // Losing chunk framing mid-body: the exchange is still reported (status, sizes seen so far)
    // and the next exchange parses after resync.
    let chunks = load_fixture("http1/chunked.jsonl");
    let want = run(&chunks);
    let c = &chunks[1];
    let head = c.data.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let got = run(&truncate(&chunks, 1, head + 8));
    assert!(got.stats.bytes_lost > 0);
    assert_eq!(got.records.len(), 2);
    let (a, b) = (&got.records[0].1, &want.records[0].1);
    assert_eq!(
        (http(a).path.as_str(), http(a).status),
        ("/big.txt", Some(200))
    );
    assert!(a.response_bytes >= head as u64 && a.response_bytes < b.response_bytes);
    assert_eq!(got.records[1], want.records[1]);
}

#[test]
fn truncated_heads_lose_only_their_exchange() {
    let chunks = load_fixture("http1/keepalive.jsonl");
    let want = run(&chunks);
    // Second response (404) loses most of its head.
    let got = run(&truncate(&chunks, 3, 10));
    assert!(got.stats.bytes_lost > 0);
    let paths: Vec<_> = got
        .records
        .iter()
        .map(|(_, r)| (http(r).path.as_str(), http(r).status))
        .collect();
    // The /missing request is still reported (as unanswered, at close) and the others are intact.
    assert_eq!(got.records.len(), want.records.len());
    assert!(paths.contains(&("/index.html", Some(200))));
    assert_eq!(
        paths.iter().filter(|p| p.1 == Some(201)).count(),
        3,
        "{paths:?}"
    );
}

#[test]
fn corrupted_request_resyncs() {
    let chunks = load_fixture("http1/keepalive.jsonl");
    let want = run(&chunks);
    let mut bad = chunks.clone();
    bad[2].data[3] = 0x01; // "GET /missing" -> "GET\x01/missing"
    let got = run(&bad);
    assert_eq!(got.stats.parse_errors, 1);
    assert_eq!(got.records.len(), want.records.len() - 1);
    let paths: Vec<_> = got
        .records
        .iter()
        .map(|(_, r)| http(r).path.as_str())
        .collect();
    assert_eq!(paths, vec!["/index.html", "/submit", "/submit", "/submit"]);
    assert_eq!(got.records[1].1, want.records[2].1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_chunkings(which in 0..FIXTURES.len(), cuts in prop::collection::vec(0usize..4000, 0..24)) {
        let chunks = load_fixture(FIXTURES[which]);
        let want = plain(&run(&chunks));
        let mut pieces = Vec::new();
        for c in &chunks {
            let mine: Vec<usize> = cuts.iter().map(|k| k % (c.data.len() + 1)).collect();
            pieces.extend(split_chunk(c, &mine));
        }
        prop_assert_eq!(plain(&run(&pieces)), want);
    }

    #[test]
    fn corruption_never_panics(which in 0..FIXTURES.len(), flips in prop::collection::vec((0usize..64, 0usize..8000, any::<u8>()), 1..8)) {
        let mut chunks = load_fixture(FIXTURES[which]);
        let n = chunks.len();
        for (i, at, b) in flips {
            let c = &mut chunks[i % n];
            if !c.data.is_empty() {
                let at = at % c.data.len();
                c.data[at] = b;
            }
        }
        let got = run(&chunks);
        // Bounded output: never more records than requests could explain.
        prop_assert!(got.records.len() <= 8);
    }

    #[test]
    fn random_truncation_never_panics(which in 0..FIXTURES.len(), i in 0usize..64, keep in 0usize..8000) {
        let chunks = load_fixture(FIXTURES[which]);
        let i = i % chunks.len();
        let keep = keep % (chunks[i].data.len() + 1);
        let got = run(&truncate(&chunks, i, keep));
        prop_assert!(got.records.len() <= run(&chunks).records.len());
    }
}
