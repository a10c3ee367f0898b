//! MySQL parser and stitcher tests on hand-built packets.

use std::collections::VecDeque;

use super::types::*;
use super::*;
use crate::driver::Driver;
use crate::testutil::assert_prefixes_partial;
use crate::{DbSystem, Detail, SqlInfo};

use Dir::{Request as Rq, Response as Rs};

fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(payload);
    v
}

fn greeting(version: &str) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(version.as_bytes());
    p.push(0);
    p.extend_from_slice(&[1, 0, 0, 0]); // connection id
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&[0xff, 0xf7, 0x21, 0x02, 0x00, 0xff, 0x81, 21]);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    pkt(0, &p)
}

fn handshake_response(user: &str, db: Option<&str>, program: Option<&str>) -> Vec<u8> {
    let mut caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH;
    if db.is_some() {
        caps |= CLIENT_CONNECT_WITH_DB;
    }
    if program.is_some() {
        caps |= CLIENT_CONNECT_ATTRS;
    }
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(33);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(user.as_bytes());
    p.push(0);
    p.push(20);
    p.extend_from_slice(&[7; 20]);
    if let Some(db) = db {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(b"mysql_native_password\0");
    if let Some(prog) = program {
        let mut attrs = vec![12];
        attrs.extend_from_slice(b"program_name");
        attrs.push(prog.len() as u8);
        attrs.extend_from_slice(prog.as_bytes());
        p.push(attrs.len() as u8);
        p.extend(attrs);
    }
    pkt(1, &p)
}

fn ok(seq: u8, affected: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0, affected, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    pkt(seq, &p)
}

fn eof(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xfe, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    pkt(seq, &p)
}

fn err(seq: u8, code: u16, state: &str, msg: &str) -> Vec<u8> {
    let mut p = vec![0xff];
    p.extend_from_slice(&code.to_le_bytes());
    p.push(b'#');
    p.extend_from_slice(state.as_bytes());
    p.extend_from_slice(msg.as_bytes());
    pkt(seq, &p)
}

fn com(cmd: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![cmd];
    p.extend_from_slice(body);
    pkt(0, &p)
}

fn coldef(seq: u8, name: &str) -> Vec<u8> {
    let mut p = Vec::new();
    for s in ["def", "db", "t", "t", name, name] {
        p.push(s.len() as u8);
        p.extend_from_slice(s.as_bytes());
    }
    p.extend_from_slice(&[0x0c, 0x21, 0, 0x20, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
    pkt(seq, &p)
}

fn row(seq: u8, vals: &[&str]) -> Vec<u8> {
    let mut p = Vec::new();
    for v in vals {
        p.push(v.len() as u8);
        p.extend_from_slice(v.as_bytes());
    }
    pkt(seq, &p)
}

/// A text result set: column count, definitions, EOF, rows, EOF (classic, no DEPRECATE_EOF).
fn result_set(cols: &[&str], rows: &[&[&str]], final_status: u16) -> Vec<u8> {
    let mut v = pkt(1, &[cols.len() as u8]);
    let mut seq = 2;
    for c in cols {
        v.extend(coldef(seq, c));
        seq += 1;
    }
    v.extend(eof(seq, 2));
    seq += 1;
    for r in rows {
        v.extend(row(seq, r));
        seq += 1;
    }
    v.extend(eof(seq, final_status));
    v
}

/// Sequence ids 1, 2, 3... over consecutive packets (one response).
fn renumber(bytes: &mut [u8]) {
    let mut at = 0;
    let mut seq = 1u8;
    while at + 4 <= bytes.len() {
        let len = usize::from(bytes[at])
            | usize::from(bytes[at + 1]) << 8
            | usize::from(bytes[at + 2]) << 16;
        bytes[at + 3] = seq;
        seq = seq.wrapping_add(1);
        at += 4 + len;
    }
}

fn run(chunks: &[(Dir, Vec<u8>)], cfg: &ParserConfig) -> (Vec<Record>, Driver<Mysql>) {
    let mut d = Driver::<Mysql>::new(cfg);
    let mut out = Vec::new();
    for (i, (dir, data)) in chunks.iter().enumerate() {
        let t = i as u64 * 100;
        out.extend(d.feed(*dir, data, data.len() as u64, t, t + 10));
    }
    (out, d)
}

fn sql(r: &Record) -> &SqlInfo {
    match &r.detail {
        Detail::Sql(s) => s,
        other => panic!("not SQL: {other:?}"),
    }
}

fn connect() -> Vec<(Dir, Vec<u8>)> {
    vec![
        (Rs, greeting("5.5.5-10.11.19-MariaDB-0+deb12u1")),
        (Rq, handshake_response("alice", Some("shop"), Some("mysql"))),
        (Rs, ok(2, 0, 2)),
    ]
}

#[test]
fn detect_cases() {
    assert_eq!(Mysql::detect(Rs, &greeting("8.0.36")), Confidence::Certain);
    assert_eq!(Mysql::detect(Rq, &com(3, b"SELECT 1")), Confidence::Maybe);
    assert_eq!(Mysql::detect(Rq, &com(3, b"\x00\x01\x02")), Confidence::No);
    assert_eq!(Mysql::detect(Rq, &pkt(1, b"\x03SELECT 1")), Confidence::No);
    assert_eq!(Mysql::detect(Rq, b"GET / HTTP/1.1\r\n"), Confidence::No);
    assert_eq!(Mysql::detect(Rs, b"HTTP/1.1 200 OK\r\n"), Confidence::No);
    assert_eq!(Mysql::detect(Rs, &ok(1, 0, 0)), Confidence::No);
    assert_eq!(Mysql::detect(Rs, b"\x01"), Confidence::No);
}

#[test]
fn prefixes_are_partial() {
    for m in [
        com(3, b"SELECT * FROM t"),
        com(0x16, b"SELECT ?"),
        com(0x0e, b""),
    ] {
        assert_prefixes_partial::<Mysql>(Rq, &m, State::default);
    }
    for m in [ok(1, 1, 0), err(1, 1146, "42S02", "no table"), pkt(1, &[2])] {
        assert_prefixes_partial::<Mysql>(Rs, &m, State::default);
    }
    assert_prefixes_partial::<Mysql>(Rs, &greeting("8.0.36"), State::default);
}

#[test]
fn handshake_query_and_result_set() {
    let mut chunks = connect();
    chunks.push((Rq, com(3, b"SELECT id, name FROM items WHERE price > 0")));
    let rs = result_set(&["id", "name"], &[&["1", "apple"], &["2", "pear"]], 2);
    chunks.push((Rs, rs.clone()));
    let (recs, d) = run(&chunks, &ParserConfig::default());
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(r.protocol, ProtocolKind::Mysql);
    assert_eq!(
        (r.start_ns, r.request_end_ns, r.response_start_ns, r.end_ns),
        (300, 310, 400, 410)
    );
    assert_eq!(r.request_bytes, 4 + 1 + 42);
    assert_eq!(r.response_bytes, rs.len() as u64);
    assert_eq!(
        *sql(r),
        SqlInfo {
            system: DbSystem::Mariadb,
            database: Some("shop".into()),
            user: Some("alice".into()),
            application_name: Some("mysql".into()),
            query_sanitized: Some("SELECT id, name FROM items WHERE price > ?".into()),
            query_raw: None,
            operation: Some("SELECT".into()),
            collection: Some("items".into()),
            rows: Some(2),
            error_code: None,
            error_message: None,
            batch_size: None,
            statement: None,
        }
    );
    assert_eq!(d.state().phase, Phase::Command);
    assert_eq!(d.stats().parse_errors, 0);
}

#[test]
fn mysql_server_is_mysql_system() {
    let (recs, _) = run(
        &[
            (Rs, greeting("8.0.36")),
            (Rq, handshake_response("u", None, None)),
            (Rs, ok(2, 0, 2)),
            (Rq, com(3, b"DELETE FROM t WHERE id = 5")),
            (Rs, ok(1, 3, 2)),
        ],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1);
    let s = sql(&recs[0]);
    assert_eq!(s.system, DbSystem::Mysql);
    assert_eq!(s.database, None);
    assert_eq!(s.rows, Some(3));
    assert_eq!(s.collection.as_deref(), Some("t"));
}

#[test]
fn auth_switch_is_not_a_query() {
    let (recs, d) = run(
        &[
            (Rs, greeting("8.0.36")),
            (Rq, handshake_response("u", Some("d"), None)),
            (Rs, pkt(2, b"\xfecaching_sha2_password\0abcdefghij\0")),
            (Rq, pkt(3, &[9; 32])),
            (Rs, pkt(4, b"\x01\x03")),
            (Rs, ok(5, 0, 2)),
            (Rq, com(0x0e, b"")),
            (Rs, ok(1, 0, 2)),
        ],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1);
    let s = sql(&recs[0]);
    assert_eq!(s.operation.as_deref(), Some("PING"));
    assert_eq!(s.query_sanitized, None);
    assert_eq!(recs[0].request_bytes, 5);
    assert_eq!(d.stats().parse_errors, 0);
}

#[test]
fn ssl_request_stops_parsing() {
    let mut caps = CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION;
    caps |= CLIENT_PLUGIN_AUTH;
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&[0, 0, 0, 1, 33]);
    p.extend_from_slice(&[0; 23]);
    let (recs, d) = run(
        &[
            (Rs, greeting("8.0.36")),
            (Rq, pkt(1, &p)),
            (Rq, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec()),
            (Rs, b"\x16\x03\x03\x00\x7a\x02".to_vec()),
        ],
        &ParserConfig::default(),
    );
    assert!(recs.is_empty());
    assert_eq!(d.state().phase, Phase::Tls);
    assert_eq!(d.stats().parse_errors, 0);
}

#[test]
fn error_packet() {
    let mut chunks = connect();
    chunks.push((Rq, com(3, b"SELECT * FROM missing")));
    chunks.push((
        Rs,
        err(1, 1146, "42S02", "Table 'shop.missing' doesn't exist"),
    ));
    let (recs, _) = run(&chunks, &ParserConfig::default());
    assert_eq!(recs.len(), 1);
    let s = sql(&recs[0]);
    assert_eq!(s.error_code.as_deref(), Some("1146"));
    assert_eq!(
        s.error_message.as_deref(),
        Some("Table 'shop.missing' doesn't exist")
    );
    assert_eq!(s.rows, None);
}

#[test]
fn prepared_statement_prepare_execute_close() {
    let mut chunks = connect();
    chunks.push((Rq, com(0x16, b"SELECT name FROM items WHERE id = ?")));
    let mut prep = vec![0];
    prep.extend_from_slice(&7u32.to_le_bytes());
    prep.extend_from_slice(&1u16.to_le_bytes()); // columns
    prep.extend_from_slice(&1u16.to_le_bytes()); // params
    prep.extend_from_slice(&[0, 0, 0]);
    let mut resp = pkt(1, &prep);
    resp.extend(coldef(2, "?"));
    resp.extend(eof(3, 2));
    resp.extend(coldef(4, "name"));
    resp.extend(eof(5, 2));
    chunks.push((Rs, resp));
    let mut exec = 7u32.to_le_bytes().to_vec();
    exec.extend_from_slice(&[0, 1, 0, 0, 0, 0, 1, 3, 0, 2, 0, 0, 0]);
    chunks.push((Rq, com(0x17, &exec)));
    let mut rs = pkt(1, &[1]);
    rs.extend(coldef(2, "name"));
    rs.extend(eof(3, 2));
    rs.extend(pkt(4, b"\x00\x00\x04pear"));
    rs.extend(eof(5, 2));
    chunks.push((Rs, rs));
    chunks.push((Rq, com(0x19, &7u32.to_le_bytes())));
    chunks.push((Rq, com(3, b"SELECT 1")));
    chunks.push((Rs, result_set(&["1"], &[&["1"]], 2)));
    let (recs, d) = run(&chunks, &ParserConfig::default());
    assert_eq!(recs.len(), 3, "{recs:#?}");
    let p = sql(&recs[0]);
    assert_eq!(p.operation.as_deref(), Some("PREPARE"));
    assert_eq!(p.statement.as_deref(), Some("7"));
    assert_eq!(p.collection.as_deref(), Some("items"));
    assert_eq!(p.rows, None);
    let e = sql(&recs[1]);
    assert_eq!(e.operation.as_deref(), Some("SELECT"));
    assert_eq!(e.statement.as_deref(), Some("7"));
    assert_eq!(
        e.query_sanitized.as_deref(),
        Some("SELECT name FROM items WHERE id = ?")
    );
    assert_eq!(e.rows, Some(1));
    // COM_STMT_CLOSE has no response and no record; its bytes go with the next command.
    let q = sql(&recs[2]);
    assert_eq!(q.rows, Some(1));
    assert_eq!(recs[2].request_bytes, 9 + 13);
    assert!(d.state().statements.is_empty());
}

#[test]
fn deprecate_eof_result_set() {
    // Column defs without EOF, rows, then an OK packet with 0xfe header.
    let mut rs = pkt(1, &[1]);
    rs.extend(coldef(2, "a"));
    rs.extend(row(3, &["1"]));
    rs.extend(row(4, &["2"]));
    rs.extend(row(5, &["3"]));
    rs.extend(pkt(6, &[0xfe, 0, 0, 2, 0, 0, 0]));
    let (recs, _) = run(
        &[(Rq, com(3, b"SELECT a FROM t")), (Rs, rs)],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1);
    assert_eq!(sql(&recs[0]).rows, Some(3));
    // Empty result with DEPRECATE_EOF: the terminator directly follows the definitions.
    let mut rs = pkt(1, &[1]);
    rs.extend(coldef(2, "a"));
    rs.extend(pkt(3, &[0xfe, 0, 0, 2, 0, 0, 0]));
    let (recs, _) = run(
        &[(Rq, com(3, b"SELECT a FROM t")), (Rs, rs)],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1);
    assert_eq!(sql(&recs[0]).rows, Some(0));
}

#[test]
fn multi_statement_with_more_results() {
    let mut resp = ok(1, 1, 2 | SERVER_MORE_RESULTS_EXISTS);
    resp.extend(result_set(&["a"], &[&["x"]], 2));
    renumber(&mut resp);
    let cfg = ParserConfig {
        keep_raw_query: true,
        ..ParserConfig::default()
    };
    let (recs, _) = run(
        &[
            (Rq, com(3, b"UPDATE t SET a = 1; SELECT a FROM t")),
            (Rs, resp),
        ],
        &cfg,
    );
    assert_eq!(recs.len(), 1, "{recs:#?}");
    let s = sql(&recs[0]);
    assert_eq!(s.batch_size, Some(2));
    assert_eq!(s.rows, Some(2));
    assert_eq!(
        s.query_raw.as_deref(),
        Some("UPDATE t SET a = 1; SELECT a FROM t")
    );
}

#[test]
fn init_db_updates_database() {
    let mut chunks = connect();
    chunks.push((Rq, com(2, b"other")));
    chunks.push((Rs, ok(1, 0, 2)));
    chunks.push((Rq, com(3, b"SELECT 1")));
    chunks.push((Rs, result_set(&["1"], &[&["1"]], 2)));
    let (recs, _) = run(&chunks, &ParserConfig::default());
    assert_eq!(recs.len(), 2);
    assert_eq!(sql(&recs[0]).operation.as_deref(), Some("USE"));
    assert_eq!(sql(&recs[1]).database.as_deref(), Some("other"));
}

#[test]
fn packets_split_and_coalesced() {
    let req = com(3, b"SELECT a FROM t");
    let resp = result_set(&["a"], &[&["1"], &["2"]], 2);
    // Byte by byte.
    let mut d = Driver::<Mysql>::new(&ParserConfig::default());
    let mut recs = Vec::new();
    for b in &req {
        recs.extend(d.feed(Rq, &[*b], 1, 0, 1));
    }
    for b in &resp {
        recs.extend(d.feed(Rs, &[*b], 1, 2, 3));
    }
    assert_eq!(recs.len(), 1);
    assert_eq!(sql(&recs[0]).rows, Some(2));
    // Two commands and two responses, each in one chunk.
    let (recs, _) = run(
        &[
            (Rq, [req.clone(), com(0x0e, b"")].concat()),
            (Rs, [resp, ok(1, 0, 2)].concat()),
        ],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 2);
    assert_eq!(sql(&recs[1]).operation.as_deref(), Some("PING"));
}

#[test]
fn large_packets_and_truncated_rows() {
    // A 16 MiB query: first packet of 0xffffff bytes, then a continuation.
    let mut first = vec![0xff, 0xff, 0xff, 0, 3];
    first.extend_from_slice(b"INSERT INTO blobs VALUES ('");
    let total_first = 4 + 0xff_ffff;
    let mut d = Driver::<Mysql>::new(&ParserConfig::default());
    // Only 20 KiB of the packet were captured.
    first.resize(20 * 1024, b'x');
    d.feed(Rq, &first, total_first as u64, 0, 1);
    let cont = pkt(1, b"xx')");
    d.feed(Rq, &cont, cont.len() as u64, 2, 3);
    let recs = d.feed(Rs, &ok(2, 1, 2), 11, 4, 5);
    assert_eq!(recs.len(), 1, "{:?}", d.stats());
    let s = sql(&recs[0]);
    assert_eq!(s.operation.as_deref(), Some("INSERT"));
    assert_eq!(s.collection.as_deref(), Some("blobs"));
    assert_eq!(recs[0].request_bytes, total_first as u64);
    // A 100 KB row of which only 1 KiB is captured.
    let mut d = Driver::<Mysql>::new(&ParserConfig::default());
    d.feed(Rq, &com(3, b"SELECT b FROM blobs"), 24, 0, 1);
    let mut head = pkt(1, &[1]);
    head.extend(coldef(2, "b"));
    head.extend(eof(3, 2));
    let big = row(4, &["z"; 1]);
    let big_len = 100_000usize;
    let mut big_row = vec![
        (big_len & 0xff) as u8,
        (big_len >> 8 & 0xff) as u8,
        (big_len >> 16) as u8,
        4,
    ];
    big_row.extend(vec![b'z'; 1024]);
    let captured = [head.clone(), big_row].concat();
    d.feed(Rs, &captured, (head.len() + 4 + big_len) as u64, 2, 3);
    let recs = d.feed(Rs, &eof(5, 2), 9, 4, 5);
    assert_eq!(recs.len(), 1, "{:?} {big:?}", d.stats());
    assert_eq!(sql(&recs[0]).rows, Some(1));
    assert_eq!(d.stats().bytes_lost, 0);
}

#[test]
fn malformed_and_resync() {
    let mut st = State::default();
    assert!(Mysql::parse(Rq, &pkt(0, &[0x99]), &mut st).is_err());
    assert!(Mysql::parse(Rq, &pkt(3, b"\x03SELECT 1"), &mut st).is_err());
    assert!(Mysql::parse(Rq, &pkt(0, &[]), &mut st).is_err());
    let mut data = b"\x07\x00\x05junkjunk".to_vec();
    data.extend(com(3, b"SELECT 1"));
    assert_eq!(Mysql::find_boundary(Rq, &data, 0), Some(11));
    let (recs, d) = run(&[(Rq, data), (Rs, ok(1, 0, 2))], &ParserConfig::default());
    assert_eq!(recs.len(), 1);
    assert!(d.stats().parse_errors >= 1);
}

#[test]
fn close_reports_unanswered_and_stray_responses_dropped() {
    let (recs, mut d) = run(
        &[(Rs, ok(1, 0, 2)), (Rq, com(3, b"SELECT SLEEP(100)"))],
        &ParserConfig::default(),
    );
    assert!(recs.is_empty());
    let recs = d.close();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].response_bytes, 0);
    assert_eq!(sql(&recs[0]).operation.as_deref(), Some("SELECT"));
}

#[test]
fn stitcher_waits_for_result_end() {
    use std::sync::Arc;
    let sqlt = Arc::new(crate::sql::Analyzed::new(
        b"SELECT 1",
        crate::sql::Dialect::Mysql,
    ));
    let mut reqs: VecDeque<Frame> = VecDeque::new();
    let mut resps: VecDeque<Frame> = VecDeque::new();
    let mut st = State::default();
    let mut f = Frame::new(Msg::Req(Request::Query { sql: sqlt }), 13);
    f.start_ns = 1;
    f.end_ns = 2;
    reqs.push_back(f);
    let mut s = Frame::new(Msg::Resp(Response::ResultStart), 5);
    s.start_ns = 3;
    s.end_ns = 4;
    resps.push_back(s);
    assert!(stitch::stitch(&mut reqs, &mut resps, &mut st).is_empty());
    let mut e = Frame::new(
        Msg::Resp(Response::ResultEnd {
            rows: 4,
            more: false,
        }),
        40,
    );
    e.start_ns = 5;
    e.end_ns = 6;
    resps.push_back(e);
    let recs = stitch::stitch(&mut reqs, &mut resps, &mut st);
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    assert_eq!(
        (r.start_ns, r.request_end_ns, r.response_start_ns, r.end_ns),
        (1, 2, 3, 6)
    );
    assert_eq!((r.request_bytes, r.response_bytes), (13, 45));
    assert_eq!(sql(r).rows, Some(4));
}

/// Affected-row counts are length-encoded u64s: two huge ones in one multi-statement answer
/// saturate instead of overflowing (found by fuzzing).
#[test]
fn huge_affected_row_counts_saturate() {
    let huge_ok = |seq: u8, status: u16| {
        let mut p = vec![0, 0xfe];
        p.extend_from_slice(&u64::MAX.to_le_bytes());
        p.push(0);
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        pkt(seq, &p)
    };
    let mut resp = huge_ok(1, 2 | SERVER_MORE_RESULTS_EXISTS);
    resp.extend(huge_ok(2, 2));
    let (recs, _) = run(
        &[
            (Rq, com(3, b"UPDATE t SET a = 1; UPDATE t SET a = 2")),
            (Rs, resp),
        ],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1, "{recs:#?}");
    assert_eq!(sql(&recs[0]).rows, Some(u64::MAX));
}
