use std::collections::VecDeque;

use super::*;
use crate::driver::Driver;
use crate::testutil::assert_prefixes_partial;
use crate::{Detail, HttpInfo};

const GET: &[u8] = b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8\r\n\
traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\ntracestate: k=v\r\n\
b3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1\r\nX-Req: abc\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello";
const POST: &[u8] =
    b"POST /submit HTTP/1.1\r\nHost: h\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
const CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n";

fn fresh() -> State {
    State::default()
}

fn frame(dir: Dir, buf: &[u8], st: &mut State) -> (Frame, usize) {
    match Http1::parse(dir, buf, st) {
        Ok(Parsed::Frame { frame, consumed }) => (frame, consumed),
        other => panic!("expected frame, got {other:?}"),
    }
}

fn http(r: &Record) -> &HttpInfo {
    match &r.detail {
        Detail::Http(h) => h,
        d => panic!("not http: {d:?}"),
    }
}

fn cfg() -> ParserConfig {
    ParserConfig {
        extra_http_headers: vec!["X-Req".into()],
        ..ParserConfig::default()
    }
}

/// Feeds (dir, bytes) chunks with increasing timestamps; returns records and the driver.
fn run(chunks: &[(Dir, &[u8])]) -> (Vec<Record>, Driver<Http1>) {
    let mut d = Driver::<Http1>::new(&cfg());
    let mut out = Vec::new();
    for (i, (dir, b)) in chunks.iter().enumerate() {
        let t = (i as u64 + 1) * 10;
        out.extend(d.feed(*dir, b, b.len() as u64, t, t + 1));
    }
    (out, d)
}

#[test]
fn request_head_fields() {
    let mut st = fresh();
    Http1::configure(&mut st, &cfg());
    let (f, n) = frame(Dir::Request, GET, &mut st);
    assert_eq!(n, GET.len());
    assert_eq!(f.head_bytes, GET.len() as u64);
    assert_eq!(f.body, Body::Done { wire: 0, data: 0 });
    let Message::Request(h) = f.msg else { panic!() };
    assert_eq!(h.method, "GET");
    assert_eq!(h.path, "/a/b");
    assert_eq!(h.query.as_deref(), Some("x=1&y=2"));
    assert_eq!(h.version, "1.1");
    assert_eq!(h.host.as_deref(), Some("example.com"));
    assert_eq!(h.user_agent.as_deref(), Some("curl/8"));
    assert_eq!(h.content_type, None);
    assert_eq!(h.content_length, None);
    assert_eq!(
        h.traceparent.as_deref(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(h.tracestate.as_deref(), Some("k=v"));
    assert_eq!(
        h.b3.as_deref(),
        Some("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1")
    );
    assert_eq!(
        h.extra_headers,
        vec![("x-req".to_owned(), "abc".to_owned())]
    );
    assert_eq!(st.methods, VecDeque::from([types::MethodKind::Other]));
    assert_eq!(st.outstanding_requests, 1);
}

#[test]
fn prefixes_are_partial() {
    assert_prefixes_partial::<Http1>(Dir::Request, GET, fresh);
    // Content-length bodies are framed as soon as the head is complete (the driver skips the
    // body as it arrives, even when the capture dropped it).
    let head = POST.len() - 7;
    for cut in 0..head {
        assert!(matches!(
            Http1::parse(Dir::Request, &POST[..cut], &mut fresh()),
            Ok(Parsed::Partial)
        ));
    }
    assert_eq!(
        frame(Dir::Request, &POST[..head], &mut fresh()).1,
        POST.len()
    );
    assert_prefixes_partial::<Http1>(Dir::Request, b"GET / HTTP/1.0\r\n\r\n", fresh);
    // Chunked: Partial until a chunk's data starts past the buffer (then streamed).
    let first_data = CHUNKED.len() - b"hello\r\n6;ext=1\r\n world\r\n0\r\nX-T: 1\r\n\r\n".len();
    for cut in 0..first_data {
        assert!(
            matches!(
                Http1::parse(Dir::Response, &CHUNKED[..cut], &mut fresh()),
                Ok(Parsed::Partial)
            ),
            "{cut}"
        );
    }
    let (f, n) = frame(Dir::Response, CHUNKED, &mut fresh());
    assert_eq!(
        (f.body, n),
        (Body::Done { wire: 40, data: 11 }, CHUNKED.len())
    );
    let mut st = fresh();
    let (f, n) = frame(Dir::Response, &CHUNKED[..first_data + 2], &mut st);
    assert_eq!((f.body, n), (Body::Chunked, first_data + 7));
    assert_eq!(
        st.resp_chunk,
        Some(types::ChunkProgress { wire: 10, data: 5 })
    );
    assert_prefixes_partial::<Http1>(Dir::Response, b"HTTP/1.1 204 No Content\r\n\r\n", fresh);
}

#[test]
fn content_length_body_consumed_beyond_buffer() {
    let mut st = fresh();
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nabc";
    let (f, n) = frame(Dir::Response, head, &mut st);
    assert_eq!(n, head.len() - 3 + 100_000);
    assert_eq!(
        f.body,
        Body::Done {
            wire: 100_000,
            data: 100_000
        }
    );
    let Message::Response(r) = f.msg else {
        panic!()
    };
    assert_eq!(
        r,
        ResponseHead {
            version: "1.1",
            status: 200,
            content_length: Some(100_000),
            upgraded: false
        }
    );
}

#[test]
fn chunked_whole() {
    let mut st = fresh();
    let (f, n) = frame(Dir::Response, CHUNKED, &mut st);
    assert_eq!(n, CHUNKED.len());
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".len();
    assert_eq!(f.head_bytes, head as u64);
    assert_eq!(
        f.body,
        Body::Done {
            wire: (CHUNKED.len() - head) as u64,
            data: 11
        }
    );
    assert!(st.resp_chunk.is_none());
}

#[test]
fn chunked_bad_framing_is_error() {
    let mut st = fresh();
    let r = Http1::parse(
        Dir::Response,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        &mut st,
    );
    assert!(matches!(r, Err(ParseError::Invalid(_))), "{r:?}");
    let r = Http1::parse(
        Dir::Response,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
        &mut st,
    );
    assert!(matches!(r, Err(ParseError::Invalid(_))), "{r:?}");
}

#[test]
fn chunked_streamed_through_driver() {
    // A big chunked body arriving in pieces: head handed out early, body streamed.
    let big = vec![b'x'; 10_000];
    let mut body = Vec::new();
    body.extend_from_slice(b"2710\r\n");
    body.extend_from_slice(&big);
    body.extend_from_slice(b"\r\n3\r\nabc\r\n0\r\n\r\n");
    let head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut resp = head.to_vec();
    resp.extend_from_slice(&body);
    let (recs, d) = run(&[
        (Dir::Request, b"GET /big HTTP/1.1\r\nHost: h\r\n\r\n"),
        (Dir::Response, &resp[..3000]),
        (Dir::Response, &resp[3000..7000]),
        (Dir::Response, &resp[7000..]),
    ]);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let r = &recs[0];
    assert_eq!(r.response_bytes, resp.len() as u64);
    assert_eq!(r.start_ns, 10);
    assert_eq!(r.request_end_ns, 11);
    assert_eq!(r.response_start_ns, 20);
    assert_eq!(r.end_ns, 41);
    assert_eq!(http(r).status, Some(200));
    assert_eq!(http(r).response_content_length, Some(10_003));
    assert_eq!(d.stats().parse_errors, 0);
}

#[test]
fn pipelined_keep_alive_with_head_and_post() {
    let mut reqs = Vec::new();
    reqs.extend_from_slice(GET);
    reqs.extend_from_slice(b"HEAD /h HTTP/1.1\r\nHost: h\r\n\r\n");
    reqs.extend_from_slice(POST);
    let mut resps = Vec::new();
    resps.extend_from_slice(OK);
    // HEAD response: content-length but no body.
    resps.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n");
    resps.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\nnope");
    let (recs, d) = run(&[
        (Dir::Request, &reqs),
        (Dir::Response, &resps[..resps.len() - 1]),
    ]);
    assert_eq!(recs.len(), 3, "{recs:?}");
    let h0 = http(&recs[0]);
    assert_eq!(
        (h0.method.as_str(), h0.path.as_str(), h0.status),
        ("GET", "/a/b", Some(200))
    );
    assert_eq!(h0.response_content_length, Some(5));
    assert_eq!(recs[0].request_bytes, GET.len() as u64);
    assert_eq!(recs[0].response_bytes, OK.len() as u64);
    let h1 = http(&recs[1]);
    assert_eq!(
        (h1.method.as_str(), h1.status, h1.response_content_length),
        ("HEAD", Some(200), Some(1234))
    );
    assert_eq!(
        recs[1].response_bytes,
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n".len() as u64
    );
    let h2 = http(&recs[2]);
    assert_eq!(h2.method, "POST");
    assert_eq!(h2.status, Some(404));
    assert_eq!(h2.content_type.as_deref(), Some("application/json"));
    assert_eq!(h2.request_content_length, Some(7));
    assert_eq!(recs[2].request_bytes, POST.len() as u64);
    assert_eq!(
        recs[2].response_bytes,
        3 + b"HTTP/1.1 404 Not Found\r\nContent-Length: 3\r\n\r\n".len() as u64
    );
    for r in &recs {
        assert_eq!(
            (r.start_ns, r.request_end_ns, r.response_start_ns, r.end_ns),
            (10, 11, 20, 21)
        );
    }
    assert_eq!(d.stats().parse_errors, 0);
}

#[test]
fn expect_continue_interim_not_paired() {
    let (recs, _) = run(&[
        (
            Dir::Request,
            b"PUT /u HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        ),
        (Dir::Response, b"HTTP/1.1 100 Continue\r\n\r\n"),
        (Dir::Request, b"data"),
        (
            Dir::Response,
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        ),
    ]);
    assert_eq!(recs.len(), 1);
    let h = http(&recs[0]);
    assert_eq!(
        (h.method.as_str(), h.status, h.request_content_length),
        ("PUT", Some(201), Some(4))
    );
    assert_eq!(recs[0].request_end_ns, 31);
    assert_eq!(recs[0].response_start_ns, 40);
}

#[test]
fn close_delimited_response_emitted_on_close() {
    let (recs, mut d) = run(&[
        (Dir::Request, b"GET /old HTTP/1.0\r\n\r\n"),
        (
            Dir::Response,
            b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>",
        ),
        (Dir::Response, b"</html>"),
    ]);
    assert!(recs.is_empty());
    let recs = d.close();
    assert_eq!(recs.len(), 1);
    let h = http(&recs[0]);
    assert_eq!(
        (h.version.as_str(), h.status, h.response_content_length),
        ("1.0", Some(200), Some(13))
    );
    assert_eq!(
        recs[0].response_bytes,
        b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n".len() as u64 + 13
    );
}

#[test]
fn no_body_statuses() {
    let (recs, _) = run(&[
        (
            Dir::Request,
            b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
        ),
        (
            Dir::Response,
            b"HTTP/1.1 304 Not Modified\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
        ),
    ]);
    assert_eq!(
        recs.iter().map(|r| http(r).status).collect::<Vec<_>>(),
        vec![Some(304), Some(204)]
    );
}

#[test]
fn websocket_upgrade_stops_parsing() {
    let (recs, d) = run(&[
        (Dir::Request, b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"),
        (Dir::Response, b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello"),
        (Dir::Request, b"\x81\x85abcd1234"),
        (Dir::Response, b"GET / HTTP/1.1\r\n\r\n"),
    ]);
    assert_eq!(recs.len(), 1);
    assert!(http(&recs[0]).upgraded);
    assert_eq!(http(&recs[0]).status, Some(101));
    assert_eq!(d.stats().parse_errors, 0);
    assert!(d.state().upgraded);
}

#[test]
fn connect_tunnel() {
    let (recs, d) = run(&[
        (
            Dir::Request,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        ),
        (
            Dir::Response,
            b"HTTP/1.1 200 Connection established\r\n\r\n",
        ),
        (Dir::Request, b"\x16\x03\x01\x00\x05hello"),
        (Dir::Response, b"\x16\x03\x03"),
    ]);
    assert_eq!(recs.len(), 1);
    assert!(http(&recs[0]).upgraded);
    assert_eq!(http(&recs[0]).path, "example.com:443");
    assert_eq!(d.stats().parse_errors, 0);
}

#[test]
fn rejected_upgrade_keeps_http() {
    let (recs, _) = run(&[
        (
            Dir::Request,
            b"GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        ),
        (
            Dir::Response,
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        ),
        (Dir::Request, b"GET /next HTTP/1.1\r\n\r\n"),
        (
            Dir::Response,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
    ]);
    assert_eq!(recs.len(), 2);
    assert_eq!(http(&recs[1]).path, "/next");
    assert!(!http(&recs[0]).upgraded);
}

#[test]
fn unanswered_request_on_close() {
    let (recs, mut d) = run(&[(Dir::Request, b"DELETE /x HTTP/1.1\r\n\r\n")]);
    assert!(recs.is_empty());
    let recs = d.close();
    assert_eq!(recs.len(), 1);
    assert_eq!(http(&recs[0]).status, None);
    assert_eq!(recs[0].response_start_ns, 0);
    assert_eq!(recs[0].end_ns, 11);
}

#[test]
fn orphan_response_dropped() {
    let (recs, _) = run(&[
        (
            Dir::Response,
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        ),
        (Dir::Request, b"GET /x HTTP/1.1\r\n\r\n"),
        (
            Dir::Response,
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        ),
    ]);
    assert_eq!(recs.len(), 1);
    assert_eq!(http(&recs[0]).status, Some(404));
}

#[test]
fn too_large_and_malformed() {
    let mut st = fresh();
    let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
    big.resize(parse::MAX_HEAD + 10, b'a');
    assert!(matches!(
        Http1::parse(Dir::Request, &big, &mut st),
        Err(ParseError::TooLarge { .. })
    ));
    assert!(matches!(
        Http1::parse(
            Dir::Request,
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            &mut st
        ),
        Err(ParseError::Invalid(_))
    ));
    assert!(matches!(
        Http1::parse(Dir::Response, b"HTTP/1.1 2x0 OK\r\n\r\n", &mut st),
        Err(ParseError::Invalid(_))
    ));
    assert!(matches!(
        Http1::parse(
            Dir::Request,
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            &mut st
        ),
        Err(ParseError::Invalid(_))
    ));
    assert_eq!(st.outstanding_requests, 0);
    assert!(st.methods.is_empty());
}

#[test]
fn detect_and_boundary() {
    assert_eq!(Http1::detect(Dir::Request, GET), Confidence::Certain);
    assert_eq!(
        Http1::detect(Dir::Request, b"GET /x HTTP/1.0\r\n"),
        Confidence::Certain
    );
    assert_eq!(Http1::detect(Dir::Request, b"GE"), Confidence::Maybe);
    assert_eq!(Http1::detect(Dir::Request, b"GET /abc"), Confidence::Maybe);
    assert_eq!(
        Http1::detect(Dir::Request, b"GET /abc HT"),
        Confidence::Maybe
    );
    assert_eq!(
        Http1::detect(Dir::Request, b"GET /abc FOO/1.1"),
        Confidence::No
    );
    assert_eq!(
        Http1::detect(Dir::Request, b"GETS / HTTP/1.1"),
        Confidence::No
    );
    assert_eq!(
        Http1::detect(Dir::Request, b"*3\r\n$3\r\nSET"),
        Confidence::No
    );
    assert_eq!(Http1::detect(Dir::Request, b""), Confidence::No);
    assert_eq!(Http1::detect(Dir::Response, OK), Confidence::Certain);
    assert_eq!(Http1::detect(Dir::Response, b"HTTP/1"), Confidence::Maybe);
    assert_eq!(Http1::detect(Dir::Response, b"HTTP/2 200"), Confidence::No);
    assert_eq!(Http1::detect(Dir::Response, b"+OK\r\n"), Confidence::No);
    let buf = b"garbage\r\nmore GET x\r\nPOST /p HTTP/1.1\r\n";
    assert_eq!(Http1::find_boundary(Dir::Request, buf, 0), Some(21));
    assert_eq!(
        Http1::find_boundary(Dir::Request, b"GET / HTTP/1.1\r\n", 0),
        Some(0)
    );
    assert_eq!(
        Http1::find_boundary(Dir::Request, b"GET / HTTP/1.1\r\n", 1),
        None
    );
    let buf = b"xx\r\nHTTP/1.1 200 OK\r\n";
    assert_eq!(Http1::find_boundary(Dir::Response, buf, 1), Some(4));
    assert_eq!(Http1::find_boundary(Dir::Response, b"HTTP/1.1 2", 0), None);
}

#[test]
fn stitch_synthetic_frames() {
    let req = |path: &str, t: u64| Frame {
        msg: Message::Request(Box::new(RequestHead {
            method: "GET".into(),
            path: path.into(),
            version: "1.1",
            ..RequestHead::default()
        })),
        head_bytes: 20,
        body: Body::Done { wire: 0, data: 0 },
        start_ns: t,
        end_ns: t + 1,
    };
    let resp = |status: u16, body: Body, t: u64| Frame {
        msg: Message::Response(ResponseHead {
            version: "1.1",
            status,
            content_length: None,
            upgraded: false,
        }),
        head_bytes: 30,
        body,
        start_ns: t,
        end_ns: t + 1,
    };
    let body_end = |wire, data, t: u64| Frame {
        msg: Message::BodyEnd,
        head_bytes: 0,
        body: Body::Done { wire, data },
        start_ns: t,
        end_ns: t + 5,
    };
    let mut st = State {
        outstanding_requests: 2,
        ..State::default()
    };
    let mut reqs = VecDeque::from([req("/1", 100), req("/2", 102)]);
    let mut resps = VecDeque::from([resp(200, Body::Chunked, 200)]);
    assert!(
        Http1::stitch(&mut reqs, &mut resps, &mut st).is_empty(),
        "waits for the body end"
    );
    resps.push_back(body_end(500, 400, 300));
    resps.push_back(resp(500, Body::Done { wire: 2, data: 2 }, 400));
    let recs = Http1::stitch(&mut reqs, &mut resps, &mut st);
    assert_eq!(recs.len(), 2);
    assert_eq!(
        (
            recs[0].start_ns,
            recs[0].request_end_ns,
            recs[0].response_start_ns,
            recs[0].end_ns
        ),
        (100, 101, 200, 305)
    );
    assert_eq!((recs[0].request_bytes, recs[0].response_bytes), (20, 530));
    assert_eq!(http(&recs[0]).response_content_length, Some(400));
    assert_eq!(http(&recs[1]).status, Some(500));
    assert_eq!(recs[1].response_bytes, 32);
    assert_eq!(st.outstanding_requests, 0);
    assert!(reqs.is_empty() && resps.is_empty());
}

/// The kernel sampled out the rest of an exchange (here: the response to /a) and the ones
/// after it: the request held for it must not pair with the next captured response.
#[test]
fn skipped_exchanges_drop_what_they_left_half_done() {
    let mut d = Driver::<Http1>::new(&cfg());
    let req = |p: &str| format!("GET {p} HTTP/1.1\r\nHost: h\r\n\r\n");
    let resp = |body: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let r = req("/a");
    assert!(
        d.feed(Dir::Request, r.as_bytes(), r.len() as u64, 10, 11)
            .is_empty()
    );
    // Half a response, then the kernel skipped the rest and whole exchanges after it.
    let half = &resp("aaaa")[..20];
    assert!(
        d.feed(Dir::Response, half.as_bytes(), half.len() as u64, 20, 21)
            .is_empty()
    );
    d.exchanges_skipped();
    let r = req("/b");
    assert!(
        d.feed(Dir::Request, r.as_bytes(), r.len() as u64, 50, 51)
            .is_empty()
    );
    let s = resp("bb");
    let out = d.feed(Dir::Response, s.as_bytes(), s.len() as u64, 60, 61);
    assert_eq!(out.len(), 1);
    assert_eq!(http(&out[0]).path, "/b");
    assert_eq!(out[0].start_ns, 50);
    assert_eq!(out[0].response_bytes, s.len() as u64);
    assert_eq!(d.stats().frames_abandoned, 1);
    assert_eq!(d.stats().parse_errors, 0);
}
