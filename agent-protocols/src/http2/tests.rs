//! Unit tests: frames built byte by byte, header blocks encoded with httlib-hpack's encoder the
//! way common stacks encode them (Huffman strings, incremental indexing).

use std::collections::VecDeque;

use httlib_hpack::Encoder;

use super::types::*;
use super::*;
use crate::driver::Driver;
use crate::testutil::assert_prefixes_partial;
use crate::{Detail, GrpcInfo, ParserConfig};

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut v = len.to_be_bytes()[1..].to_vec();
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn grpc_msg(len: usize) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&(len as u32).to_be_bytes());
    v.extend(std::iter::repeat_n(b'm', len));
    v
}

fn block(enc: &mut Encoder, h: &[(&str, &str)]) -> Vec<u8> {
    let flags = Encoder::BEST_FORMAT
        | Encoder::WITH_INDEXING
        | Encoder::HUFFMAN_NAME
        | Encoder::HUFFMAN_VALUE;
    let mut dst = Vec::new();
    for (n, v) in h {
        let field = (n.as_bytes().to_vec(), v.as_bytes().to_vec(), flags);
        enc.encode(field, &mut dst).expect("encodable");
    }
    dst
}

fn req_headers(enc: &mut Encoder, path: &str) -> Vec<u8> {
    block(
        enc,
        &[
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "localhost:50051"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("tracestate", "vendor=1"),
        ],
    )
}

fn resp_headers(enc: &mut Encoder) -> Vec<u8> {
    block(
        enc,
        &[(":status", "200"), ("content-type", "application/grpc")],
    )
}

fn trailers(enc: &mut Encoder, status: &str, msg: Option<&str>) -> Vec<u8> {
    let mut h = vec![("grpc-status", status)];
    if let Some(m) = msg {
        h.push(("grpc-message", m));
    }
    block(enc, &h)
}

fn settings(params: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in params {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(TYPE_SETTINGS, 0, 0, &p)
}

struct Conn {
    d: Driver<Http2>,
    t: u64,
    out: Vec<Record>,
}

impl Conn {
    fn new() -> Self {
        Self {
            d: Driver::new(&ParserConfig::default()),
            t: 0,
            out: Vec::new(),
        }
    }
    fn feed(&mut self, dir: Dir, data: &[u8]) {
        self.t += 10;
        let r = self
            .d
            .feed(dir, data, data.len() as u64, self.t, self.t + 1);
        self.out.extend(r);
    }
}

fn grpc(r: &Record) -> &GrpcInfo {
    match &r.detail {
        Detail::Grpc(g) => g,
        other => panic!("not gRPC: {other:?}"),
    }
}

/// A complete unary call on stream 1 as (request bytes, response bytes).
fn unary(req_enc: &mut Encoder, resp_enc: &mut Encoder, stream: u32) -> (Vec<u8>, Vec<u8>) {
    let mut rq = frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        stream,
        &req_headers(req_enc, "/helloworld.Greeter/SayHello"),
    );
    rq.extend(frame(TYPE_DATA, FLAG_END_STREAM, stream, &grpc_msg(7)));
    let mut rs = frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        stream,
        &resp_headers(resp_enc),
    );
    rs.extend(frame(TYPE_DATA, 0, stream, &grpc_msg(12)));
    rs.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        stream,
        &trailers(resp_enc, "0", None),
    ));
    (rq, rs)
}

#[test]
fn unary_call_every_field() {
    let (mut qe, mut se) = (Encoder::default(), Encoder::default());
    let (rq, rs) = unary(&mut qe, &mut se, 1);
    let mut c = Conn::new();
    let mut first = PREFACE.to_vec();
    first.extend(settings(&[(1, 4096), (4, 65535)]));
    c.feed(Dir::Request, &first);
    c.feed(Dir::Response, &settings(&[(5, 16384)]));
    c.feed(Dir::Request, &rq); // t = 30
    c.feed(Dir::Response, &rs); // t = 40
    assert_eq!(c.out.len(), 1);
    let r = &c.out[0];
    assert_eq!(r.protocol, ProtocolKind::Http2);
    assert_eq!(r.start_ns, 30);
    assert_eq!(r.request_end_ns, 31);
    assert_eq!(r.response_start_ns, 40);
    assert_eq!(r.end_ns, 41);
    assert_eq!(r.request_bytes, rq.len() as u64);
    assert_eq!(r.response_bytes, rs.len() as u64);
    let want = GrpcInfo {
        path: Some("helloworld.Greeter/SayHello".into()),
        service: Some("helloworld.Greeter".into()),
        method: Some("SayHello".into()),
        authority: Some("localhost:50051".into()),
        stream_id: 1,
        http_status: Some(200),
        grpc_status: Some(0),
        grpc_message: None,
        request_messages: 1,
        response_messages: 1,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        tracestate: Some("vendor=1".into()),
        plain_http2: false,
        http_method: Some("POST".into()),
        headers_unknown: false,
        reset: false,
    };
    assert_eq!(grpc(r), &want);
    assert_eq!(c.d.state().stats.prefaces, 1);
    assert_eq!(c.d.stats().parse_errors, 0);
}

#[test]
fn interleaved_streams_pair_by_id() {
    let (mut qe, mut se) = (Encoder::default(), Encoder::default());
    let h1 = req_headers(&mut qe, "/a.A/One");
    let h3 = req_headers(&mut qe, "/b.B/Two");
    let mut rq = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &h1);
    rq.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &h3));
    // Stream 3's message spans two DATA frames; stream 1 sends two messages.
    let m3 = grpc_msg(10);
    rq.extend(frame(TYPE_DATA, 0, 3, &m3[..4]));
    let mut two = grpc_msg(1);
    two.extend(grpc_msg(2));
    rq.extend(frame(TYPE_DATA, FLAG_END_STREAM, 1, &two));
    rq.extend(frame(TYPE_DATA, FLAG_END_STREAM, 3, &m3[4..]));
    // Responses in the other order; stream 3 trailers-only with an error.
    let mut rs = frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        3,
        &block(
            &mut se,
            &[
                (":status", "200"),
                ("content-type", "application/grpc"),
                ("grpc-status", "5"),
                ("grpc-message", "not%20found"),
            ],
        ),
    );
    rs.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        1,
        &resp_headers(&mut se),
    ));
    let mut three = grpc_msg(0);
    three.extend(grpc_msg(3));
    three.extend(grpc_msg(300));
    rs.extend(frame(TYPE_DATA, 0, 1, &three));
    rs.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        1,
        &trailers(&mut se, "0", None),
    ));
    let mut c = Conn::new();
    c.feed(Dir::Request, &rq);
    c.feed(Dir::Response, &rs);
    assert_eq!(c.out.len(), 2);
    let (a, b) = (grpc(&c.out[0]), grpc(&c.out[1]));
    assert_eq!(a.stream_id, 3);
    assert_eq!(a.path.as_deref(), Some("b.B/Two"));
    assert_eq!(a.grpc_status, Some(5));
    assert_eq!(a.grpc_message.as_deref(), Some("not found"));
    assert_eq!((a.request_messages, a.response_messages), (1, 0));
    assert_eq!(a.http_status, Some(200));
    assert_eq!(b.stream_id, 1);
    assert_eq!(b.method.as_deref(), Some("One"));
    assert_eq!(b.service.as_deref(), Some("a.A"));
    assert_eq!(b.grpc_status, Some(0));
    assert_eq!((b.request_messages, b.response_messages), (2, 3));
    assert!(!a.headers_unknown && !b.headers_unknown && !a.reset && !b.reset);
}

#[test]
fn continuation_padding_and_priority() {
    let mut qe = Encoder::default();
    let hb = req_headers(&mut qe, "/x.Y/Z");
    // PADDED | PRIORITY HEADERS carrying the first 10 bytes, two CONTINUATIONs with the rest.
    let mut p = vec![3u8];
    p.extend_from_slice(&[0x80, 0, 0, 1, 16]);
    p.extend_from_slice(&hb[..10]);
    p.extend_from_slice(&[0, 0, 0]);
    let mut rq = frame(TYPE_HEADERS, FLAG_PADDED | FLAG_PRIORITY, 1, &p);
    rq.extend(frame(TYPE_CONTINUATION, 0, 1, &hb[10..20]));
    rq.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &hb[20..]));
    let whole = rq.clone();
    assert_prefixes_partial::<Http2>(Dir::Request, &whole, State::default);
    let mut st = State::default();
    match Http2::parse(Dir::Request, &rq, &mut st) {
        Ok(Parsed::Frame { frame, consumed }) => {
            assert_eq!(consumed, rq.len());
            assert_eq!(frame.stream_id, 1);
            assert_eq!(frame.wire_len, rq.len() as u64);
            let FrameKind::Headers { fields, end_stream } = frame.kind else {
                panic!("not headers")
            };
            assert!(!end_stream);
            let f = fields.expect("decoded");
            assert_eq!(f.path.as_deref(), Some("/x.Y/Z"));
            assert_eq!(f.method.as_deref(), Some("POST"));
            assert!(!f.unknown);
        }
        other => panic!("{other:?}"),
    }
    // Padded DATA: padding is not payload.
    let mut dp = vec![4u8];
    dp.extend(grpc_msg(2));
    dp.extend_from_slice(&[0; 4]);
    let d = frame(TYPE_DATA, FLAG_PADDED | FLAG_END_STREAM, 1, &dp);
    assert_data_prefixes(&d, 1);
    match Http2::parse(Dir::Request, &d, &mut st) {
        Ok(Parsed::Frame { frame, .. }) => assert_eq!(
            frame.kind,
            FrameKind::Data {
                payload_len: dp.len() as u32,
                messages: 1,
                grpc_framed: true,
                end_stream: true
            }
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn control_frames_prefixes_and_skips() {
    let ping = frame(TYPE_PING, 0, 0, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let wu = frame(TYPE_WINDOW_UPDATE, 0, 0, &[0, 0, 0x10, 0]);
    let prio = frame(TYPE_PRIORITY, 0, 1, &[0, 0, 0, 0, 7]);
    let unknown = frame(0xfa, 0, 0, b"ext");
    let set = settings(&[(1, 0), (5, 32768)]);
    for f in [&ping, &wu, &prio, &unknown, &set] {
        assert_prefixes_partial::<Http2>(Dir::Request, f, State::default);
    }
    assert_prefixes_partial::<Http2>(Dir::Request, PREFACE, State::default);
    // SETTINGS from the client bind the server's encoder and frame size.
    let mut st = State::default();
    assert!(matches!(
        Http2::parse(Dir::Request, &set, &mut st),
        Ok(Parsed::Skip { consumed }) if consumed == set.len()
    ));
    assert_eq!(st.resp.max_frame, 32768);
    assert_eq!(st.req.max_frame, MAX_FRAME_LEN);
    let rst = frame(TYPE_RST_STREAM, 0, 5, &8u32.to_be_bytes());
    assert_prefixes_partial::<Http2>(Dir::Response, &rst, State::default);
    match Http2::parse(Dir::Response, &rst, &mut st) {
        Ok(Parsed::Frame { frame, .. }) => {
            assert_eq!(frame.stream_id, 5);
            assert_eq!(frame.kind, FrameKind::RstStream { error_code: 8 });
        }
        other => panic!("{other:?}"),
    }
    let mut ga = 7u32.to_be_bytes().to_vec();
    ga.extend_from_slice(&2u32.to_be_bytes());
    ga.extend_from_slice(b"bye");
    let ga = frame(TYPE_GOAWAY, 0, 0, &ga);
    assert_prefixes_partial::<Http2>(Dir::Response, &ga, State::default);
}

#[test]
fn frame_over_receiver_max_is_too_large() {
    let mut st = State::default();
    st.resp.max_frame = 16384;
    let h = frame(TYPE_DATA, 0, 1, &[])[..3].to_vec();
    let mut big = vec![0x01, 0x00, 0x00];
    big.extend_from_slice(&[TYPE_DATA, 0, 0, 0, 0, 1]);
    assert_eq!(h.len(), 3);
    assert_eq!(
        Http2::parse(Dir::Response, &big, &mut st).unwrap_err(),
        ParseError::TooLarge {
            size: 65536,
            max: 16384
        }
    );
}

#[test]
fn large_data_frame_skipped_and_counted() {
    let (mut qe, mut se) = (Encoder::default(), Encoder::default());
    let mut c = Conn::new();
    let mut rq = frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        1,
        &req_headers(&mut qe, "/s.S/Big"),
    );
    rq.extend(frame(TYPE_DATA, FLAG_END_STREAM, 1, &grpc_msg(1)));
    c.feed(Dir::Request, &rq);
    let mut rs = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &resp_headers(&mut se));
    // One 100 000-byte message in a 100 005-byte DATA frame, then a small message, captured
    // only 4 KiB of the big write.
    let big = frame(TYPE_DATA, 0, 1, &grpc_msg(100_000));
    rs.extend_from_slice(&big);
    let mut tail = frame(TYPE_DATA, 0, 1, &grpc_msg(2));
    tail.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        1,
        &trailers(&mut se, "0", None),
    ));
    c.d.feed(Dir::Response, &rs[..4096], rs.len() as u64, 100, 200);
    assert!(c.out.is_empty());
    let r = c.d.feed(Dir::Response, &tail, tail.len() as u64, 300, 400);
    assert_eq!(r.len(), 1);
    let g = grpc(&r[0]);
    assert_eq!(g.response_messages, 2);
    assert_eq!(g.grpc_status, Some(0));
    assert!(!g.headers_unknown);
    assert_eq!(r[0].response_bytes, (rs.len() + tail.len()) as u64);
    assert_eq!(r[0].response_start_ns, 100);
    assert_eq!(r[0].end_ns, 400);
    assert_eq!(c.d.stats().bytes_lost, 0);
}

#[test]
fn rst_stream_emits_reset_record() {
    let mut qe = Encoder::default();
    let mut c = Conn::new();
    c.feed(
        Dir::Request,
        &frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &req_headers(&mut qe, "/s.S/Slow"),
        ),
    );
    assert!(c.out.is_empty());
    c.feed(
        Dir::Request,
        &frame(TYPE_RST_STREAM, 0, 1, &8u32.to_be_bytes()),
    );
    assert_eq!(c.out.len(), 1);
    let g = grpc(&c.out[0]);
    assert!(g.reset);
    assert_eq!(g.method.as_deref(), Some("Slow"));
    assert_eq!(g.grpc_status, None);
    assert_eq!(g.http_status, None);
    assert_eq!(c.out[0].response_start_ns, 0);
    assert_eq!(c.out[0].response_bytes, 0);
    // Later frames of the reset stream are ignored.
    c.feed(
        Dir::Response,
        &frame(TYPE_DATA, FLAG_END_STREAM, 1, &grpc_msg(1)),
    );
    assert_eq!(c.out.len(), 1);
    assert!(c.d.state().streams.is_empty());
}

#[test]
fn goaway_resets_unprocessed_streams_and_close_flushes() {
    let mut qe = Encoder::default();
    let mut c = Conn::new();
    for id in [1, 3, 5] {
        let p = format!("/s.S/M{id}");
        c.feed(
            Dir::Request,
            &frame(
                TYPE_HEADERS,
                FLAG_END_HEADERS | FLAG_END_STREAM,
                id,
                &req_headers(&mut qe, &p),
            ),
        );
    }
    let mut ga = 3u32.to_be_bytes().to_vec();
    ga.extend_from_slice(&0u32.to_be_bytes());
    c.feed(Dir::Response, &frame(TYPE_GOAWAY, 0, 0, &ga));
    assert_eq!(c.out.len(), 1);
    assert_eq!(grpc(&c.out[0]).stream_id, 5);
    assert!(grpc(&c.out[0]).reset);
    let rest = c.d.close();
    assert_eq!(rest.len(), 2);
    assert_eq!(grpc(&rest[0]).method.as_deref(), Some("M1"));
    assert!(!grpc(&rest[0]).reset);
    assert_eq!(grpc(&rest[1]).stream_id, 3);
}

#[test]
fn plain_http2_request() {
    let (mut qe, mut se) = (Encoder::default(), Encoder::default());
    let mut c = Conn::new();
    let mut first = PREFACE.to_vec();
    first.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        1,
        &block(
            &mut qe,
            &[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/index.html?q=1"),
                (":authority", "example.test"),
                ("user-agent", "curl/8"),
            ],
        ),
    ));
    c.feed(Dir::Request, &first);
    let mut rs = frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        1,
        &block(
            &mut se,
            &[(":status", "404"), ("content-type", "text/html")],
        ),
    );
    rs.extend(frame(
        TYPE_DATA,
        FLAG_END_STREAM,
        1,
        b"<html>not found</html>",
    ));
    c.feed(Dir::Response, &rs);
    assert_eq!(c.out.len(), 1);
    let want = GrpcInfo {
        path: Some("/index.html?q=1".into()),
        authority: Some("example.test".into()),
        stream_id: 1,
        http_status: Some(404),
        plain_http2: true,
        http_method: Some("GET".into()),
        ..GrpcInfo::default()
    };
    assert_eq!(grpc(&c.out[0]), &want);
}

#[test]
fn informational_headers_are_not_the_response() {
    let (mut qe, mut se) = (Encoder::default(), Encoder::default());
    let mut c = Conn::new();
    c.feed(
        Dir::Request,
        &frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &req_headers(&mut qe, "/a.B/C"),
        ),
    );
    let mut rs = frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        1,
        &block(&mut se, &[(":status", "100")]),
    );
    rs.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        1,
        &resp_headers(&mut se),
    ));
    rs.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        1,
        &trailers(&mut se, "13", Some("boom")),
    ));
    c.feed(Dir::Response, &rs);
    let g = grpc(&c.out[0]);
    assert_eq!(g.http_status, Some(200));
    assert_eq!(g.grpc_status, Some(13));
    assert_eq!(g.grpc_message.as_deref(), Some("boom"));
}

/// The capture starts after both peers filled their HPACK tables: names that reference unseen
/// entries come out unknown, never wrong; ids, sizes, timing and message counts are kept.
#[test]
fn mid_connection_start() {
    let (mut qe, mut se) = (Encoder::default(), Encoder::default());
    // Calls the capture does not see: they fill the encoders' dynamic tables.
    let _ = unary(&mut qe, &mut se, 1);
    // No preface, no SETTINGS: the capture starts here.
    let (rq, rs) = unary(&mut qe, &mut se, 3);
    assert_eq!(Http2::detect(Dir::Request, &rq), Confidence::Maybe);
    assert_eq!(Http2::detect(Dir::Response, &rs), Confidence::Maybe);
    let mut c = Conn::new();
    c.feed(Dir::Request, &rq);
    c.feed(Dir::Response, &rs);
    assert_eq!(c.out.len(), 1);
    let r = &c.out[0];
    let g = grpc(r);
    assert!(g.headers_unknown);
    // Every field of the second call is a reference to an entry the first call inserted,
    // except the static-table ones.
    assert_eq!(g.path, None);
    assert_eq!(g.service, None);
    assert_eq!(g.authority, None);
    assert_eq!(g.traceparent, None);
    assert_eq!(g.http_method.as_deref(), Some("POST"));
    assert_eq!(g.http_status, Some(200));
    // content-type, te and grpc-status are all references: the bodies' framing says gRPC.
    assert!(!g.plain_http2);
    assert_eq!(g.stream_id, 3);
    assert_eq!((g.request_messages, g.response_messages), (1, 1));
    assert_eq!(r.request_bytes, rq.len() as u64);
    assert_eq!(r.response_bytes, rs.len() as u64);
    assert_eq!(c.d.stats().parse_errors, 0);
}

#[test]
fn mid_stream_capture_ignores_orphans() {
    let mut c = Conn::new();
    // DATA and a CONTINUATION of streams whose headers were never seen.
    let mut b = frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 7, &[0x82]);
    // Waiting for the rest of an orphan CONTINUATION changes nothing.
    let mut st = State::default();
    assert!(matches!(
        Http2::parse(Dir::Request, &b[..9], &mut st),
        Ok(Parsed::Partial)
    ));
    assert_eq!(
        (st.req.hpack.restarts, st.stats.header_blocks_skipped),
        (0, 0)
    );
    b.extend(frame(TYPE_DATA, FLAG_END_STREAM, 7, &grpc_msg(3)));
    c.feed(Dir::Request, &b);
    assert!(c.out.is_empty());
    assert!(c.d.state().streams.is_empty());
    assert_eq!(c.d.state().stats.header_blocks_skipped, 1);
    assert_eq!(c.d.stats().parse_errors, 0);
}

#[test]
fn malformed_frames_are_errors_not_panics() {
    let cases: Vec<Vec<u8>> = vec![
        frame(TYPE_DATA, 0, 0, b"x"),
        frame(TYPE_HEADERS, FLAG_END_HEADERS, 0, &[0x82]),
        frame(TYPE_RST_STREAM, 0, 1, &[0, 0]),
        frame(TYPE_SETTINGS, 0, 0, &[0, 1, 0]),
        frame(TYPE_SETTINGS, 0, 1, &[]),
        frame(TYPE_GOAWAY, 0, 0, &[0; 4]),
        frame(TYPE_DATA, FLAG_PADDED, 1, &[9, 1, 2]),
        frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, &[9, 0x82]),
    ];
    for f in cases {
        let mut st = State::default();
        assert!(
            matches!(
                Http2::parse(Dir::Request, &f, &mut st),
                Err(ParseError::Invalid(_))
            ),
            "{f:?}"
        );
    }
    // A corrupt header block: the frame is kept, its fields unknown.
    let f = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x40, 0x7f, 0x7f]);
    let mut st = State::default();
    match Http2::parse(Dir::Request, &f, &mut st) {
        Ok(Parsed::Frame { frame, .. }) => assert_eq!(
            frame.kind,
            FrameKind::Headers {
                fields: None,
                end_stream: false
            }
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(st.stats.header_blocks_corrupt, 1);
    // HEADERS followed by something that is not its CONTINUATION.
    let mut f = frame(TYPE_HEADERS, 0, 1, &[0x82]);
    f.extend(frame(TYPE_PING, 0, 0, &[0; 8]));
    match Http2::parse(Dir::Request, &f, &mut State::default()) {
        Ok(Parsed::Frame { frame, consumed }) => {
            assert_eq!(consumed, 10);
            assert!(matches!(
                frame.kind,
                FrameKind::Headers { fields: None, .. }
            ));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn detection() {
    assert_eq!(Http2::detect(Dir::Request, PREFACE), Confidence::Certain);
    assert_eq!(
        Http2::detect(Dir::Request, &PREFACE[..16]),
        Confidence::Certain
    );
    assert_eq!(
        Http2::detect(Dir::Request, b"PRI * HTTP/1.1\r\n"),
        Confidence::No
    );
    assert_eq!(
        Http2::detect(Dir::Response, &settings(&[(3, 100)])),
        Confidence::Maybe
    );
    assert_eq!(
        Http2::detect(Dir::Response, &frame(TYPE_SETTINGS, 1, 0, &[])),
        Confidence::Maybe
    );
    for other in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n",
        b"+OK\r\n",
        b"\x00\x00\x00\x08\x04\xd2\x16\x2f",
        b"Q\x00\x00\x00\x0dselect 1\x00",
        b"\x4a\x00\x00\x00\x0a8.0.36\x00",
    ] {
        assert_eq!(
            Http2::detect(Dir::Request, other),
            Confidence::No,
            "{other:?}"
        );
        assert_eq!(
            Http2::detect(Dir::Response, other),
            Confidence::No,
            "{other:?}"
        );
    }
    // Even stream from the client: not plausible.
    assert_eq!(
        Http2::detect(
            Dir::Request,
            &frame(TYPE_HEADERS, FLAG_END_HEADERS, 2, &[0x82])
        ),
        Confidence::No
    );
}

#[test]
fn boundary_after_garbage() {
    let mut qe = Encoder::default();
    let mut buf = b"\xff\xfe garbage \x01".to_vec();
    let at = buf.len();
    buf.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        1,
        &req_headers(&mut qe, "/a.B/C"),
    ));
    buf.extend(frame(TYPE_DATA, FLAG_END_STREAM, 1, &grpc_msg(1)));
    assert_eq!(Http2::find_boundary(Dir::Request, &buf, 0), Some(at));
    assert_eq!(
        Http2::find_boundary(Dir::Request, &buf, at + 1),
        Some(buf.len() - 15)
    );
    let mut p = b"xx".to_vec();
    p.extend_from_slice(PREFACE);
    assert_eq!(Http2::find_boundary(Dir::Request, &p, 0), Some(2));
    assert_eq!(Http2::find_boundary(Dir::Request, b"short", 0), None);
}

#[test]
fn lost_bytes_restart_hpack_and_counts_stay_sane() {
    let (mut qe, mut se) = (Encoder::default(), Encoder::default());
    let mut c = Conn::new();
    let (rq1, rs1) = unary(&mut qe, &mut se, 1);
    // Stream 1's request is captured with a hole: the tail is lost.
    c.d.feed(Dir::Request, &rq1[..rq1.len() - 10], rq1.len() as u64, 1, 2);
    assert_eq!(c.d.stats().bytes_lost, 10);
    c.feed(Dir::Response, &rs1);
    let (rq3, rs3) = unary(&mut qe, &mut se, 3);
    c.feed(Dir::Request, &rq3);
    c.feed(Dir::Response, &rs3);
    assert_eq!(c.out.len(), 2);
    let g1 = grpc(&c.out[0]);
    assert_eq!(g1.stream_id, 1);
    assert_eq!(g1.request_messages, 0);
    assert_eq!(g1.grpc_status, Some(0));
    let g3 = grpc(&c.out[1]);
    assert_eq!(g3.stream_id, 3);
    // The request decoder restarted: dynamic references from before the hole are unknown.
    assert!(g3.headers_unknown);
    assert_eq!(g3.path, None);
    // The connection was seen to carry gRPC: the stream is counted as gRPC.
    assert!(!g3.plain_http2);
    assert_eq!(g3.request_messages, 1);
    assert!(!g3.reset);
}

#[test]
fn stream_table_is_bounded() {
    let mut qe = Encoder::default();
    let mut c = Conn::new();
    let hb = req_headers(&mut qe, "/a.B/C");
    let hb2 = req_headers(&mut qe, "/a.B/C");
    let mut buf = Vec::new();
    for i in 0..(MAX_OPEN_STREAMS as u32 + 5) {
        buf.extend(frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            2 * i + 1,
            if i == 0 { &hb } else { &hb2 },
        ));
        // Fed in batches under the driver's queue cap, so the stream table is what drops.
        if i % 100 == 99 {
            c.feed(Dir::Request, &buf);
            buf.clear();
        }
    }
    c.feed(Dir::Request, &buf);
    assert_eq!(c.d.stats().parse_errors, 0);
    assert_eq!(c.d.stats().queue_overflows, 0);
    assert_eq!(c.d.state().streams.len(), MAX_OPEN_STREAMS);
    assert_eq!(c.d.state().stats.streams_dropped, 5);
    assert_eq!(c.d.state().streams.keys().next(), Some(&11));
    let _ = VecDeque::<Frame>::new();
}

#[test]
fn response_after_reset_is_not_a_second_record() {
    let (mut qe, mut se) = (Encoder::default(), Encoder::default());
    let mut c = Conn::new();
    c.feed(
        Dir::Request,
        &frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            1,
            &req_headers(&mut qe, "/s.S/Cancel"),
        ),
    );
    c.feed(
        Dir::Request,
        &frame(TYPE_RST_STREAM, 0, 1, &8u32.to_be_bytes()),
    );
    assert_eq!(c.out.len(), 1);
    // The server answered before it saw the cancellation.
    c.feed(
        Dir::Response,
        &frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            1,
            &block(&mut se, &[(":status", "200"), ("grpc-status", "1")]),
        ),
    );
    assert_eq!(c.out.len(), 1);
    assert!(c.d.state().streams.is_empty());
}

/// Before any request is seen (capture started late), a response opens its stream's entry.
#[test]
fn response_only_stream_from_before_the_capture() {
    let mut se = Encoder::default();
    let mut c = Conn::new();
    c.feed(
        Dir::Response,
        &frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS | FLAG_END_STREAM,
            5,
            &block(&mut se, &[(":status", "200"), ("grpc-status", "0")]),
        ),
    );
    assert_eq!(c.out.len(), 1);
    let g = grpc(&c.out[0]);
    assert_eq!(g.stream_id, 5);
    assert_eq!(g.grpc_status, Some(0));
    assert!(g.headers_unknown);
    assert!(!g.plain_http2);
    assert_eq!(c.out[0].request_bytes, 0);
    assert_eq!(c.out[0].start_ns, c.out[0].response_start_ns);
}

/// Every strict prefix of a DATA frame is Partial, or (once the unseen rest lies inside a
/// message body) the same frame with the whole frame consumed.
fn assert_data_prefixes(f: &[u8], messages: u32) {
    for cut in 0..f.len() {
        match Http2::parse(Dir::Request, &f[..cut], &mut State::default()) {
            Ok(Parsed::Partial) => {}
            Ok(Parsed::Frame { frame, consumed }) => {
                assert_eq!(consumed, f.len(), "cut {cut}");
                assert!(
                    matches!(frame.kind, FrameKind::Data { messages: m, .. } if m == messages),
                    "cut {cut}: {frame:?}"
                );
            }
            other => panic!("cut {cut}: {other:?}"),
        }
    }
}

#[test]
fn data_frame_handed_over_once_the_rest_is_body() {
    let mut two = grpc_msg(3);
    two.extend(grpc_msg(40));
    let f = frame(TYPE_DATA, 0, 1, &two);
    assert_data_prefixes(&f, 2);
    // Handed over as soon as the second prefix is in: 9 + 8 + 5 bytes.
    let mut st = State::default();
    assert!(matches!(
        Http2::parse(Dir::Request, &f[..21], &mut st),
        Ok(Parsed::Partial)
    ));
    assert!(matches!(
        Http2::parse(Dir::Request, &f[..22], &mut st),
        Ok(Parsed::Frame { consumed, .. }) if consumed == f.len()
    ));
    // The skipped tail finished the 40-byte body: the next frame starts a new message.
    let g = frame(TYPE_DATA, 0, 1, &grpc_msg(1));
    match Http2::parse(Dir::Request, &g, &mut st) {
        Ok(Parsed::Frame { frame, .. }) => {
            assert!(matches!(frame.kind, FrameKind::Data { messages: 1, .. }))
        }
        other => panic!("{other:?}"),
    }
}

/// A DATA frame over the default maximum size whose header ends a chunk (its message prefix
/// not yet in): waited for, not handed over with the prefix unseen (which lost the count).
#[test]
fn large_data_frame_waits_for_its_message_prefix() {
    let f = frame(TYPE_DATA, FLAG_END_STREAM, 1, &grpc_msg(20_000));
    for cut in FRAME_HEADER_LEN..FRAME_HEADER_LEN + 5 {
        assert!(
            matches!(
                Http2::parse(Dir::Request, &f[..cut], &mut State::default()),
                Ok(Parsed::Partial)
            ),
            "cut {cut}"
        );
    }
    let mut st = State::default();
    match Http2::parse(Dir::Request, &f[..FRAME_HEADER_LEN + 5], &mut st) {
        Ok(Parsed::Frame { frame, consumed }) => {
            assert_eq!(consumed, f.len());
            assert_eq!(frame.wire_len, f.len() as u64);
            assert!(matches!(
                frame.kind,
                FrameKind::Data {
                    payload_len: 20_005,
                    messages: 1,
                    grpc_framed: true,
                    end_stream: true,
                }
            ));
        }
        other => panic!("{other:?}"),
    }
    assert_data_prefixes(&f, 1);
}

/// The same through the driver: the chunk ends right after the big frame's header.
#[test]
fn large_data_frame_header_alone_in_a_chunk_keeps_the_count() {
    let (mut qe, mut se) = (Encoder::default(), Encoder::default());
    let mut c = Conn::new();
    let mut rq = frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        1,
        &req_headers(&mut qe, "/s.S/Big"),
    );
    let data = frame(TYPE_DATA, FLAG_END_STREAM, 1, &grpc_msg(20_000));
    let split = rq.len() + FRAME_HEADER_LEN;
    rq.extend_from_slice(&data);
    c.feed(Dir::Request, &rq[..split]);
    c.feed(Dir::Request, &rq[split..split + 2]);
    c.feed(Dir::Request, &rq[split + 2..]);
    let mut rs = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &resp_headers(&mut se));
    rs.extend(frame(TYPE_DATA, 0, 1, &grpc_msg(1)));
    rs.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        1,
        &trailers(&mut se, "0", None),
    ));
    c.feed(Dir::Response, &rs);
    assert_eq!(c.out.len(), 1);
    let g = grpc(&c.out[0]);
    assert_eq!((g.request_messages, g.response_messages), (1, 1));
    assert_eq!(g.grpc_status, Some(0));
    assert_eq!(c.out[0].request_bytes, rq.len() as u64);
    assert_eq!(c.out[0].response_bytes, rs.len() as u64);
    // The request ended with the chunk that carried the rest of the body.
    assert_eq!(c.out[0].request_end_ns, 31);
    assert_eq!(
        *c.d.stats(),
        crate::driver::DriverStats {
            frames: 5,
            records: 1,
            ..Default::default()
        }
    );
}

/// Many small messages in one huge frame: at most the default maximum frame size is buffered
/// waiting for a clear view, then the frame is handed over (count given up, memory bounded).
#[test]
fn huge_frame_of_small_messages_is_handed_over_after_16k() {
    let mut payload = Vec::new();
    while payload.len() < 40_000 {
        payload.extend(grpc_msg(10));
    }
    let f = frame(TYPE_DATA, 0, 1, &payload);
    let limit = FRAME_HEADER_LEN + DEFAULT_MAX_FRAME_SIZE;
    assert!(matches!(
        Http2::parse(Dir::Request, &f[..limit - 1], &mut State::default()),
        Ok(Parsed::Partial)
    ));
    match Http2::parse(Dir::Request, &f[..limit], &mut State::default()) {
        Ok(Parsed::Frame { frame, consumed }) => {
            assert_eq!(consumed, f.len());
            assert!(matches!(
                frame.kind,
                FrameKind::Data {
                    grpc_framed: false,
                    ..
                }
            ));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn settings_header_table_size_limits_the_peer_encoder() {
    let mut st = State::default();
    // The client allows the server's encoder a 100-byte table.
    let set = settings(&[(1, 100)]);
    assert!(matches!(
        Http2::parse(Dir::Request, &set, &mut st),
        Ok(Parsed::Skip { .. })
    ));
    // A response block resizing to 50 is fine; to 4096 is over the limit: not decodable.
    let ok = frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS,
        1,
        &[0x20 | 31, 50 - 31, 0x88],
    );
    match Http2::parse(Dir::Response, &ok, &mut st) {
        Ok(Parsed::Frame { frame, .. }) => match frame.kind {
            FrameKind::Headers {
                fields: Some(f), ..
            } => assert_eq!(f.status, Some(200)),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    let over = frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &[0x3f, 0xe1, 0x1f, 0x88]);
    match Http2::parse(Dir::Response, &over, &mut st) {
        Ok(Parsed::Frame { frame, .. }) => {
            assert!(matches!(
                frame.kind,
                FrameKind::Headers { fields: None, .. }
            ))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(st.stats.header_blocks_corrupt, 1);
    // The request direction is unaffected.
    let req = frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x3f, 0xe1, 0x1f, 0x82]);
    match Http2::parse(Dir::Request, &req, &mut st) {
        Ok(Parsed::Frame { frame, .. }) => match frame.kind {
            FrameKind::Headers {
                fields: Some(f), ..
            } => assert_eq!(f.method.as_deref(), Some("GET")),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

#[test]
fn oversized_header_block_is_skipped_and_restarts_hpack() {
    let mut st = State::default();
    let big = vec![0u8; MAX_HEADER_BLOCK + 1];
    let f = frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM, 1, &big);
    // Handed over from its header alone; the driver skips the block as it arrives.
    match Http2::parse(Dir::Request, &f[..9], &mut st) {
        Ok(Parsed::Frame { frame, consumed }) => {
            assert_eq!(consumed, f.len());
            assert_eq!(frame.wire_len, f.len() as u64);
            assert_eq!(
                frame.kind,
                FrameKind::Headers {
                    fields: None,
                    end_stream: true
                }
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(st.stats.header_blocks_skipped, 1);
    assert_eq!(st.req.hpack.restarts, 1);
}

/// Found by fuzzing: the response of a stream begun before the capture, then the client's
/// RST_STREAM. The record starts with the first byte seen, whichever side.
#[test]
fn response_seen_before_request_frames() {
    let mut se = Encoder::default();
    let mut c = Conn::new();
    c.feed(
        Dir::Response,
        &frame(
            TYPE_HEADERS,
            FLAG_END_HEADERS,
            9,
            &block(&mut se, &[(":status", "200")]),
        ),
    ); // t = 10
    c.feed(
        Dir::Request,
        &frame(TYPE_RST_STREAM, 0, 9, &8u32.to_be_bytes()),
    ); // t = 20
    assert_eq!(c.out.len(), 1);
    let r = &c.out[0];
    assert_eq!((r.start_ns, r.response_start_ns, r.end_ns), (10, 10, 11));
    assert_eq!(r.request_end_ns, 21);
    assert!(grpc(r).reset);
    assert_eq!(grpc(r).http_status, Some(200));
}
