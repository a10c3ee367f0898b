use std::collections::VecDeque;

use super::resp::{self, Item, Scan};
use super::*;
use crate::driver::Driver;
use crate::testutil::assert_prefixes_partial;
use crate::{Detail, ParserConfig, RedisInfo};

fn fresh() -> State {
    State::default()
}

fn info(r: &Record) -> &RedisInfo {
    match &r.detail {
        Detail::Redis(i) => i,
        d => panic!("not redis: {d:?}"),
    }
}

fn run(chunks: &[(Dir, &[u8])]) -> (Vec<Record>, Driver<Redis>) {
    let mut d = Driver::<Redis>::new(&ParserConfig::default());
    let mut out = Vec::new();
    for (i, (dir, b)) in chunks.iter().enumerate() {
        let t = (i as u64 + 1) * 10;
        out.extend(d.feed(*dir, b, b.len() as u64, t, t + 1));
    }
    (out, d)
}

fn cmd(buf: &[u8]) -> (Command, usize) {
    match Redis::parse(Dir::Request, buf, &mut fresh()) {
        Ok(Parsed::Frame {
            frame:
                Frame {
                    msg: Message::Command(c),
                    bytes,
                    ..
                },
            consumed,
        }) => {
            assert_eq!(bytes, consumed as u64);
            (c, consumed)
        }
        other => panic!("expected command, got {other:?}"),
    }
}

fn reply(buf: &[u8]) -> (Reply, usize) {
    match Redis::parse(Dir::Response, buf, &mut fresh()) {
        Ok(Parsed::Frame {
            frame: Frame {
                msg: Message::Reply(r),
                ..
            },
            consumed,
        }) => (r, consumed),
        other => panic!("expected reply, got {other:?}"),
    }
}

const SET: &[u8] = b"*3\r\n$3\r\nset\r\n$5\r\nmykey\r\n$5\r\nvalue\r\n";

#[test]
fn array_command() {
    let (c, n) = cmd(SET);
    assert_eq!(n, SET.len());
    assert_eq!(
        c,
        Command {
            command: "SET".into(),
            key: Some("mykey".into()),
            args: 2,
            select_db: None
        }
    );
    let (c, _) = cmd(b"*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n");
    assert_eq!(
        c,
        Command {
            command: "SELECT".into(),
            key: None,
            args: 1,
            select_db: Some(3)
        }
    );
    let (c, _) = cmd(b"*3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$6\r\nsecret\r\n");
    assert_eq!(
        c,
        Command {
            command: "AUTH".into(),
            key: None,
            args: 2,
            select_db: None
        }
    );
    let (c, _) = cmd(b"*4\r\n$5\r\nHELLO\r\n$1\r\n3\r\n$4\r\nAUTH\r\n$1\r\np\r\n");
    assert_eq!(c.key, None);
    let (c, _) = cmd(b"*1\r\n$4\r\nPING\r\n");
    assert_eq!(
        c,
        Command {
            command: "PING".into(),
            key: None,
            args: 0,
            select_db: None
        }
    );
}

#[test]
fn inline_commands() {
    let (c, n) = cmd(b"PING\r\n");
    assert_eq!((c.command.as_str(), c.key, c.args, n), ("PING", None, 0, 6));
    let (c, n) = cmd(b"get  foo\n");
    assert_eq!(
        (c.command.as_str(), c.key.as_deref(), c.args, n),
        ("GET", Some("foo"), 1, 9)
    );
    let (c, _) = cmd(b"set \"k\" v EX 10\r\n");
    assert_eq!((c.key.as_deref(), c.args), (Some("k"), 4));
    assert!(matches!(
        Redis::parse(Dir::Request, b"\r\n", &mut fresh()),
        Ok(Parsed::Skip { consumed: 2 })
    ));
    assert!(matches!(
        Redis::parse(Dir::Request, b"\x00\x01 x\r\n", &mut fresh()),
        Err(ParseError::Invalid(_))
    ));
    assert!(matches!(
        Redis::parse(Dir::Request, b"+OK\r\n", &mut fresh()),
        Err(ParseError::Invalid(_))
    ));
}

#[test]
fn big_value_consumed_beyond_buffer() {
    let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\nabc";
    match Redis::parse(Dir::Request, buf, &mut fresh()) {
        Ok(Parsed::Frame { frame, consumed }) => {
            assert_eq!(consumed, buf.len() - 3 + 100_002);
            assert_eq!(frame.bytes, consumed as u64);
        }
        other => panic!("{other:?}"),
    }
    match Redis::parse(Dir::Response, b"$70000\r\nxx", &mut fresh()) {
        Ok(Parsed::Frame { consumed, .. }) => assert_eq!(consumed, 8 + 70_002),
        other => panic!("{other:?}"),
    }
    // A big value that is not the last element cannot be skipped blindly.
    let buf = b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\nabc";
    assert!(matches!(
        Redis::parse(Dir::Request, buf, &mut fresh()),
        Ok(Parsed::Partial)
    ));
}

#[test]
fn replies() {
    assert_eq!(reply(b"+OK\r\n"), (Reply::Status("OK".into()), 5));
    assert_eq!(
        reply(b"-WRONGTYPE Operation against a key holding the wrong kind of value\r\n").0,
        Reply::Error {
            prefix: "WRONGTYPE".into(),
            message: "WRONGTYPE Operation against a key holding the wrong kind of value".into()
        }
    );
    assert_eq!(
        reply(b"!21\r\nSYNTAX invalid syntax\r\n"),
        (
            Reply::Error {
                prefix: "SYNTAX".into(),
                message: "SYNTAX invalid syntax".into()
            },
            28
        )
    );
    assert_eq!(reply(b":1000\r\n"), (Reply::Other, 7));
    assert_eq!(reply(b"$-1\r\n"), (Reply::Other, 5));
    assert_eq!(reply(b"*-1\r\n"), (Reply::Other, 5));
    assert_eq!(reply(b"_\r\n"), (Reply::Other, 3));
    assert_eq!(
        reply(b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n"),
        (
            Reply::Array {
                first: Some("message".into()),
                third: None
            },
            36
        )
    );
    assert_eq!(
        reply(b">3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n"),
        (
            Reply::Push {
                first: Some("subscribe".into()),
                third: Some(1)
            },
            31
        )
    );
    // RESP3 map, set, double, bignum, boolean, verbatim, attribute, nested.
    let m = b"%2\r\n+a\r\n:1\r\n+b\r\n~2\r\n,1.5\r\n(123\r\n";
    assert_eq!(reply(m), (Reply::Other, m.len()));
    let a = b"|1\r\n+ttl\r\n:3\r\n*2\r\n#t\r\n=9\r\ntxt:hello\r\n";
    assert_eq!(
        reply(a),
        (
            Reply::Array {
                first: None,
                third: None
            },
            a.len()
        )
    );
    // Streamed string and aggregate.
    let s = b"$?\r\n;4\r\nHell\r\n;2\r\no!\r\n;0\r\n";
    assert_eq!(reply(s), (Reply::Other, s.len()));
    let s = b"*?\r\n:1\r\n$1\r\nx\r\n.\r\n";
    assert_eq!(
        reply(s),
        (
            Reply::Array {
                first: None,
                third: None
            },
            s.len()
        )
    );
}

#[test]
fn scan_summary() {
    let buf = b"*3\r\n$3\r\nGET\r\n:7\r\n*1\r\n+x\r\n";
    let Ok(Scan::Done(end, sum)) = resp::scan(buf) else {
        panic!()
    };
    assert_eq!(end, buf.len());
    assert_eq!(sum.root, b'*');
    assert_eq!(sum.root_len, Some(3));
    assert_eq!(
        sum.items,
        [
            Some(Item::Str(8..11)),
            Some(Item::Int(7)),
            Some(Item::Other)
        ]
    );
}

#[test]
fn prefixes_are_partial() {
    assert_prefixes_partial::<Redis>(Dir::Request, b"PING\r\n", fresh);
    // A final bulk payload is framed as soon as its header is seen (the driver skips the
    // payload as it arrives, even when the capture dropped it).
    // The command name and key are always seen whole.
    assert_prefixes_partial::<Redis>(Dir::Request, b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n", fresh);
    for (m, payload) in [
        (SET, 7),
        (
            b"*3\r\n$4\r\nECHO\r\n$1\r\nk\r\n$3\r\nabc\r\n".as_slice(),
            5,
        ),
    ] {
        let head = m.len() - payload;
        for cut in 0..head {
            assert!(
                matches!(
                    Redis::parse(Dir::Request, &m[..cut], &mut fresh()),
                    Ok(Parsed::Partial)
                ),
                "{cut}"
            );
        }
        assert!(matches!(
            Redis::parse(Dir::Request, &m[..head], &mut fresh()),
            Ok(Parsed::Frame { consumed, .. }) if consumed == m.len()
        ));
    }
    for m in [
        b"+OK\r\n".as_slice(),
        b"-ERR x\r\n",
        b"*2\r\n*1\r\n:1\r\n%1\r\n+a\r\n_\r\n",
        b"|1\r\n+k\r\n+v\r\n+OK\r\n",
        b"$?\r\n;1\r\na\r\n;0\r\n",
        b"~?\r\n#f\r\n.\r\n",
        b"!3\r\nERR\r\n",
    ] {
        assert_prefixes_partial::<Redis>(Dir::Response, m, fresh);
    }
}

#[test]
fn bounded_nesting_and_counts() {
    let deep = b"*1\r\n".repeat(resp::MAX_DEPTH + 1);
    assert!(matches!(
        Redis::parse(Dir::Response, &deep, &mut fresh()),
        Err(ParseError::Invalid(_))
    ));
    let ok_deep = [b"*1\r\n".repeat(resp::MAX_DEPTH), b":1\r\n".to_vec()].concat();
    assert!(matches!(
        Redis::parse(Dir::Response, &ok_deep, &mut fresh()),
        Ok(Parsed::Frame { .. })
    ));
    assert!(matches!(
        Redis::parse(Dir::Response, b"*99999999999\r\n", &mut fresh()),
        Err(ParseError::TooLarge { .. })
    ));
    assert!(matches!(
        Redis::parse(Dir::Response, b"$999999999999\r\n", &mut fresh()),
        Err(ParseError::TooLarge { .. })
    ));
    let long = [b"+".as_slice(), &vec![b'a'; resp::MAX_LINE + 1]].concat();
    assert!(matches!(
        Redis::parse(Dir::Response, &long, &mut fresh()),
        Err(ParseError::TooLarge { .. })
    ));
    for bad in [
        b"?x\r\n".as_slice(),
        b"$3\r\nabcd\r\n",
        b":x\r\n",
        b"%-1\r\n",
        b".\r\n",
        b";3\r\nabc\r\n",
        b"$?\r\n+x\r\n",
    ] {
        assert!(
            matches!(
                Redis::parse(Dir::Response, bad, &mut fresh()),
                Err(ParseError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn pipelined_select_and_errors() {
    let mut reqs = Vec::new();
    reqs.extend_from_slice(b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n");
    reqs.extend_from_slice(SET);
    reqs.extend_from_slice(b"*2\r\n$5\r\nLPUSH\r\n$5\r\nmykey\r\n");
    let (recs, d) = run(&[
        (Dir::Request, &reqs),
        (Dir::Response, b"+OK\r\n+OK\r\n-WRONGTYPE bad kind\r\n"),
    ]);
    assert_eq!(recs.len(), 3);
    assert_eq!(
        *info(&recs[0]),
        RedisInfo {
            command: "SELECT".into(),
            key: None,
            db_index: Some(2),
            ..RedisInfo::default()
        }
    );
    assert_eq!(
        *info(&recs[1]),
        RedisInfo {
            command: "SET".into(),
            key: Some("mykey".into()),
            db_index: Some(2),
            ..RedisInfo::default()
        }
    );
    assert_eq!(
        *info(&recs[2]),
        RedisInfo {
            command: "LPUSH".into(),
            key: Some("mykey".into()),
            db_index: Some(2),
            error_prefix: Some("WRONGTYPE".into()),
            error_message: Some("WRONGTYPE bad kind".into()),
            batch_size: None
        }
    );
    assert_eq!(recs[1].request_bytes, SET.len() as u64);
    assert_eq!(recs[1].response_bytes, 5);
    assert_eq!(recs[2].response_bytes, 21);
    for r in &recs {
        assert_eq!(
            (r.start_ns, r.request_end_ns, r.response_start_ns, r.end_ns),
            (10, 11, 20, 21)
        );
    }
    assert_eq!(d.state().db_index, Some(2));
    assert_eq!(d.stats().parse_errors, 0);
}

#[test]
fn multi_exec_batch() {
    let (recs, _) = run(&[
        (Dir::Request, b"*1\r\n$5\r\nMULTI\r\n"),
        (Dir::Response, b"+OK\r\n"),
        (
            Dir::Request,
            b"*2\r\n$4\r\nINCR\r\n$1\r\na\r\n*2\r\n$4\r\nINCR\r\n$1\r\nb\r\n",
        ),
        (Dir::Response, b"+QUEUED\r\n+QUEUED\r\n"),
        (Dir::Request, b"*1\r\n$4\r\nEXEC\r\n"),
        (Dir::Response, b"*2\r\n:1\r\n:1\r\n"),
        (Dir::Request, b"*1\r\n$4\r\nEXEC\r\n"),
        (Dir::Response, b"-ERR EXEC without MULTI\r\n"),
    ]);
    let cmds: Vec<_> = recs
        .iter()
        .map(|r| (info(r).command.as_str(), info(r).batch_size))
        .collect();
    assert_eq!(
        cmds,
        vec![
            ("MULTI", None),
            ("INCR", None),
            ("INCR", None),
            ("EXEC", Some(2)),
            ("EXEC", None)
        ]
    );
    assert_eq!(info(&recs[4]).error_prefix.as_deref(), Some("ERR"));
    assert_eq!((recs[3].start_ns, recs[3].end_ns), (50, 61));
}

#[test]
fn pubsub_resp2_messages_not_paired() {
    let (recs, d) = run(&[
        (Dir::Request, b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$1\r\nb\r\n"),
        (Dir::Response, b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n"),
        (Dir::Response, b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n"),
        (Dir::Request, b"*1\r\n$4\r\nPING\r\n"),
        (Dir::Response, b"*3\r\n$7\r\nmessage\r\n$1\r\nb\r\n$2\r\nyo\r\n*2\r\n$4\r\npong\r\n$0\r\n\r\n"),
        (Dir::Request, b"*1\r\n$11\r\nUNSUBSCRIBE\r\n"),
        (Dir::Response, b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$1\r\nb\r\n:0\r\n"),
        (Dir::Request, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        (Dir::Response, b"$1\r\nv\r\n"),
    ]);
    let got: Vec<_> = recs
        .iter()
        .map(|r| {
            (
                info(r).command.as_str(),
                info(r).key.as_deref(),
                r.response_start_ns,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("SUBSCRIBE", Some("a"), 20),
            ("PING", None, 50),
            ("UNSUBSCRIBE", None, 70),
            ("GET", Some("k"), 90)
        ]
    );
    assert!(!d.state().subscribed);
}

#[test]
fn resp3_pushes_never_paired() {
    let (recs, _) = run(&[
        (Dir::Request, b"*2\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n"),
        (Dir::Response, b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n"),
        (Dir::Request, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
        (Dir::Response, b">2\r\n$10\r\ninvalidate\r\n*1\r\n$1\r\nk\r\n$1\r\nv\r\n"),
    ]);
    let got: Vec<_> = recs
        .iter()
        .map(|r| (info(r).command.as_str(), r.response_bytes))
        .collect();
    assert_eq!(got, vec![("SUBSCRIBE", 30), ("GET", 7)]);
}

#[test]
fn unanswered_on_close_and_orphans() {
    let (recs, mut d) = run(&[
        (Dir::Response, b"+OK\r\n"),
        (Dir::Request, b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"),
    ]);
    assert!(recs.is_empty());
    let recs = d.close();
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (
            recs[0].response_start_ns,
            recs[0].response_bytes,
            recs[0].end_ns
        ),
        (0, 0, 21)
    );
}

#[test]
fn detect_and_boundary() {
    assert_eq!(Redis::detect(Dir::Request, SET), Confidence::Certain);
    assert_eq!(Redis::detect(Dir::Request, b"*3\r"), Confidence::Maybe);
    assert_eq!(Redis::detect(Dir::Request, b"*"), Confidence::Maybe);
    assert_eq!(Redis::detect(Dir::Request, b"*3\r\n:"), Confidence::No);
    assert_eq!(Redis::detect(Dir::Request, b"PING\r\n"), Confidence::Maybe);
    assert_eq!(Redis::detect(Dir::Request, b"get k\r\n"), Confidence::Maybe);
    assert_eq!(Redis::detect(Dir::Request, b"FROB k\r\n"), Confidence::No);
    assert_eq!(
        Redis::detect(Dir::Request, b"GET / HTTP/1.1\r\n"),
        Confidence::Maybe
    );
    assert_eq!(Redis::detect(Dir::Response, b"+OK\r\n"), Confidence::Maybe);
    assert_eq!(Redis::detect(Dir::Response, b"$-1\r\n"), Confidence::Maybe);
    assert_eq!(
        Redis::detect(Dir::Response, b"HTTP/1.1 200 OK\r\n"),
        Confidence::No
    );
    assert_eq!(Redis::detect(Dir::Response, b""), Confidence::No);
    // Stream::choose: HTTP wins on an HTTP request line, Redis on a RESP array.
    assert_eq!(
        crate::stream::choose(Dir::Request, b"GET / HTTP/1.1\r\n"),
        Some(ProtocolKind::Http1)
    );
    assert_eq!(
        crate::stream::choose(Dir::Request, SET),
        Some(ProtocolKind::Redis)
    );
    let buf = b"$3\r\nfoo\r\n*1\r\n$4\r\nPING\r\n";
    assert_eq!(Redis::find_boundary(Dir::Request, buf, 0), Some(9));
    assert_eq!(Redis::find_boundary(Dir::Request, buf, 10), None);
    assert_eq!(
        Redis::find_boundary(Dir::Response, b"garbage\r\n+OK\r\n", 1),
        Some(9)
    );
}

#[test]
fn stitch_synthetic_frames() {
    let c = |name: &str, t: u64| Frame {
        msg: Message::Command(Command {
            command: name.into(),
            key: None,
            args: 0,
            select_db: None,
        }),
        bytes: 10,
        start_ns: t,
        end_ns: t + 1,
    };
    let r = |rep: Reply, t: u64| Frame {
        msg: Message::Reply(rep),
        bytes: 5,
        start_ns: t,
        end_ns: t + 2,
    };
    let mut st = State {
        outstanding_requests: 2,
        ..State::default()
    };
    let mut reqs = VecDeque::from([c("PING", 1), c("GET", 3)]);
    let mut resps = VecDeque::from([
        r(
            Reply::Push {
                first: Some("invalidate".into()),
                third: None,
            },
            5,
        ),
        r(Reply::Status("PONG".into()), 7),
    ]);
    let recs = Redis::stitch(&mut reqs, &mut resps, &mut st);
    assert_eq!(recs.len(), 1);
    assert_eq!(
        (
            recs[0].start_ns,
            recs[0].request_end_ns,
            recs[0].response_start_ns,
            recs[0].end_ns
        ),
        (1, 2, 7, 9)
    );
    assert_eq!((recs[0].request_bytes, recs[0].response_bytes), (10, 5));
    assert_eq!(reqs.len(), 1);
    assert_eq!(st.outstanding_requests, 1);
}

#[test]
fn big_aggregate_reply_streamed_not_buffered() {
    // An 80 KiB LRANGE reply (over the 64 KiB buffer cap) arriving in 4 KiB reads, nested
    // arrays included, then the next command's reply.
    let mut big = b"*5000\r\n".to_vec();
    for i in 0..5000 {
        if i % 100 == 0 {
            big.extend_from_slice(b"*2\r\n:1\r\n$3\r\nabc\r\n");
        } else {
            big.extend_from_slice(b"$10\r\n0123456789\r\n");
        }
    }
    assert!(big.len() > 64 * 1024);
    let mut d = Driver::<Redis>::new(&ParserConfig::default());
    let mut recs = Vec::new();
    let reqs =
        b"*4\r\n$6\r\nLRANGE\r\n$1\r\nl\r\n$1\r\n0\r\n$2\r\n-1\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    recs.extend(d.feed(Dir::Request, reqs, reqs.len() as u64, 1, 2));
    let mut t = 10;
    for piece in big.chunks(4096) {
        recs.extend(d.feed(Dir::Response, piece, piece.len() as u64, t, t + 1));
        t += 10;
    }
    recs.extend(d.feed(Dir::Response, b"$1\r\nv\r\n", 7, t, t + 1));
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(info(&recs[0]).command, "LRANGE");
    assert_eq!(info(&recs[0]).key.as_deref(), Some("l"));
    assert_eq!(info(&recs[1]).command, "GET");
    assert_eq!(recs[1].response_bytes, 7);
    assert_eq!(recs[1].response_start_ns, t);
    assert_eq!(d.stats().buffer_overflows, 0);
    assert_eq!(d.stats().parse_errors, 0);
    assert_eq!(d.state().resp_skip, 0);
}

#[test]
fn skip_values_counts_nested_elements() {
    let buf = b"*2\r\n:1\r\n%1\r\n+a\r\n$3\r\nabc\r\n+NEXT\r\n";
    assert_eq!(
        resp::skip_values(buf, 1),
        Ok(resp::Skipped {
            consumed: buf.len() - 7,
            pending: 0
        })
    );
    // Stops inside an incomplete line; a bulk payload past the buffer is skipped blindly.
    assert_eq!(
        resp::skip_values(b":1\r\n:2", 3),
        Ok(resp::Skipped {
            consumed: 4,
            pending: 2
        })
    );
    assert_eq!(
        resp::skip_values(b"$10\r\nab", 1),
        Ok(resp::Skipped {
            consumed: 17,
            pending: 0
        })
    );
    assert!(resp::skip_values(b"?\r\n", 1).is_err());
}

#[test]
fn reply_older_than_request_is_not_its_answer() {
    // The capture lost a command whose reply arrived; a later command must not take it.
    let c = Frame {
        msg: Message::Command(Command {
            command: "GET".into(),
            key: None,
            args: 0,
            select_db: None,
        }),
        bytes: 10,
        start_ns: 50,
        end_ns: 51,
    };
    let r = |t| Frame {
        msg: Message::Reply(Reply::Status("OK".into())),
        bytes: 5,
        start_ns: t,
        end_ns: t + 1,
    };
    let mut st = State {
        outstanding_requests: 2,
        ..State::default()
    };
    let mut reqs = VecDeque::from([c]);
    let mut resps = VecDeque::from([r(10), r(60)]);
    let recs = Redis::stitch(&mut reqs, &mut resps, &mut st);
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].response_start_ns, 60);
    assert_eq!(st.outstanding_requests, 0);
}
