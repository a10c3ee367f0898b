//! PostgreSQL parser and stitcher tests on hand-built messages.

use std::collections::VecDeque;
use std::sync::Arc;

use super::types::{Frame, Msg, Phase, Request, Response, State};
use super::*;
use crate::driver::Driver;
use crate::sql::{Analyzed, Dialect};
use crate::testutil::assert_prefixes_partial;
use crate::{DbSystem, Detail, SqlInfo};

fn msg(ty: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![ty];
    v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn startup(params: &[(&str, &str)]) -> Vec<u8> {
    let mut body = 196_608u32.to_be_bytes().to_vec();
    for (k, v) in params {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut v = ((body.len() + 4) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&body);
    v
}

fn ssl_request() -> Vec<u8> {
    let mut v = 8u32.to_be_bytes().to_vec();
    v.extend_from_slice(&80_877_103u32.to_be_bytes());
    v
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn query(sql: &str) -> Vec<u8> {
    msg(b'Q', &cstr(sql))
}

fn parse_msg(name: &str, sql: &str) -> Vec<u8> {
    let mut b = cstr(name);
    b.extend(cstr(sql));
    b.extend_from_slice(&0u16.to_be_bytes());
    msg(b'P', &b)
}

fn bind(portal: &str, stmt: &str) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend(cstr(stmt));
    b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, b'7', 0, 0]);
    msg(b'B', &b)
}

fn describe_portal(portal: &str) -> Vec<u8> {
    let mut b = vec![b'P'];
    b.extend(cstr(portal));
    msg(b'D', &b)
}

fn execute(portal: &str) -> Vec<u8> {
    let mut b = cstr(portal);
    b.extend_from_slice(&0u32.to_be_bytes());
    msg(b'E', &b)
}

fn sync() -> Vec<u8> {
    msg(b'S', &[])
}

fn complete(tag: &str) -> Vec<u8> {
    msg(b'C', &cstr(tag))
}

fn ready() -> Vec<u8> {
    msg(b'Z', b"I")
}

fn row_desc() -> Vec<u8> {
    let mut b = 1u16.to_be_bytes().to_vec();
    b.extend(cstr("a"));
    b.extend_from_slice(&[0; 18]);
    msg(b'T', &b)
}

fn data_row(v: &str) -> Vec<u8> {
    let mut b = 1u16.to_be_bytes().to_vec();
    b.extend_from_slice(&(v.len() as u32).to_be_bytes());
    b.extend_from_slice(v.as_bytes());
    msg(b'D', &b)
}

fn error(code: &str, m: &str) -> Vec<u8> {
    let mut b = b"SERROR\0".to_vec();
    b.push(b'C');
    b.extend(cstr(code));
    b.push(b'M');
    b.extend(cstr(m));
    b.push(0);
    msg(b'E', &b)
}

fn auth_ok_sequence() -> Vec<u8> {
    let mut v = msg(b'R', &0u32.to_be_bytes());
    v.extend(msg(b'S', b"server_version\x0015.0\x00"));
    v.extend(msg(b'K', &[0, 0, 0, 1, 0, 0, 0, 2]));
    v.extend(ready());
    v
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

/// Feeds chunks in order; chunk `i` spans [i*100, i*100+10].
fn run(chunks: &[(Dir, Vec<u8>)], cfg: &ParserConfig) -> (Vec<Record>, Driver<Postgres>) {
    let mut d = Driver::<Postgres>::new(cfg);
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

use Dir::{Request as Rq, Response as Rs};

#[test]
fn detect_cases() {
    assert_eq!(
        Postgres::detect(Rq, &startup(&[("user", "u")])),
        Confidence::Certain
    );
    assert_eq!(Postgres::detect(Rq, &ssl_request()), Confidence::Certain);
    assert_eq!(Postgres::detect(Rq, &query("SELECT 1")), Confidence::Maybe);
    assert_eq!(
        Postgres::detect(Rq, &parse_msg("", "SELECT 1")),
        Confidence::Maybe
    );
    assert_eq!(Postgres::detect(Rq, b"GET / HTTP/1.1\r\n"), Confidence::No);
    assert_eq!(
        Postgres::detect(Rq, b"*1\r\n$4\r\nPING\r\n"),
        Confidence::No
    );
    assert_eq!(Postgres::detect(Rq, b"Q\xff\xff\xff\xff"), Confidence::No);
    assert_eq!(
        Postgres::detect(Rq, &msg(b'Q', b"SELECT 1")),
        Confidence::No
    );
    assert_eq!(Postgres::detect(Rs, &ready()), Confidence::Maybe);
    assert_eq!(
        Postgres::detect(Rs, &complete("SELECT 1")),
        Confidence::Maybe
    );
    assert_eq!(Postgres::detect(Rs, &msg(b'Z', b"X")), Confidence::No);
    assert_eq!(Postgres::detect(Rs, b"HTTP/1.1 200 OK\r\n"), Confidence::No);
    assert_eq!(Postgres::detect(Rs, b""), Confidence::No);
}

#[test]
fn prefixes_are_partial() {
    for m in [
        query("SELECT * FROM t"),
        parse_msg("s1", "SELECT $1"),
        bind("", "s1"),
        describe_portal(""),
        execute(""),
        sync(),
        startup(&[("user", "alice"), ("database", "db")]),
        ssl_request(),
    ] {
        assert_prefixes_partial::<Postgres>(Rq, &m, State::default);
    }
    for m in [
        complete("INSERT 0 1"),
        ready(),
        row_desc(),
        error("42P01", "missing"),
        msg(b'1', &[]),
        msg(b'2', &[]),
    ] {
        assert_prefixes_partial::<Postgres>(Rs, &m, State::default);
    }
}

#[test]
fn data_rows_skip_from_their_header() {
    let row = data_row("xyz");
    let mut st = State::default();
    assert!(matches!(
        Postgres::parse(Rs, &row[..4], &mut st),
        Ok(Parsed::Partial)
    ));
    assert!(
        matches!(Postgres::parse(Rs, &row[..5], &mut st), Ok(Parsed::Skip { consumed }) if consumed == row.len())
    );
    assert_eq!(st.rows, 1);
    assert_eq!(st.skipped_resp, row.len() as u64);
}

#[test]
fn runs_of_data_rows_skip_in_one_step() {
    let rows = cat(&[
        data_row("a"),
        data_row("bb"),
        data_row("ccc"),
        complete("SELECT 3"),
    ]);
    let mut st = State::default();
    let run_len = rows.len() - complete("SELECT 3").len();
    assert!(
        matches!(Postgres::parse(Rs, &rows, &mut st), Ok(Parsed::Skip { consumed }) if consumed == run_len)
    );
    assert_eq!(st.rows, 3);
    // A trailing incomplete row is not part of the run.
    let partial = cat(&[data_row("a"), data_row("bb")[..6].to_vec()]);
    let mut st = State::default();
    assert!(
        matches!(Postgres::parse(Rs, &partial, &mut st), Ok(Parsed::Skip { consumed }) if consumed == data_row("a").len())
    );
    assert_eq!(st.rows, 1);
}

#[test]
fn startup_auth_and_simple_query() {
    let (recs, d) = run(
        &[
            (
                Rq,
                startup(&[
                    ("user", "alice"),
                    ("database", "shop"),
                    ("application_name", "app1"),
                ]),
            ),
            (Rs, auth_ok_sequence()),
            (Rq, query("SELECT a FROM t WHERE id = 42")),
            (
                Rs,
                cat(&[row_desc(), data_row("1"), data_row("2"), data_row("3")]),
            ),
            (Rs, cat(&[complete("SELECT 3"), ready()])),
        ],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    let q = query("SELECT a FROM t WHERE id = 42");
    let resp1 = cat(&[row_desc(), data_row("1"), data_row("2"), data_row("3")]);
    let resp2 = cat(&[complete("SELECT 3"), ready()]);
    assert_eq!(r.protocol, ProtocolKind::Postgres);
    assert_eq!((r.start_ns, r.request_end_ns), (200, 210));
    assert_eq!((r.response_start_ns, r.end_ns), (300, 410));
    assert_eq!(r.request_bytes, q.len() as u64);
    assert_eq!(r.response_bytes, (resp1.len() + resp2.len()) as u64);
    assert_eq!(
        *sql(r),
        SqlInfo {
            system: DbSystem::Postgresql,
            database: Some("shop".into()),
            user: Some("alice".into()),
            application_name: Some("app1".into()),
            query_sanitized: Some("SELECT a FROM t WHERE id = ?".into()),
            query_raw: None,
            operation: Some("SELECT".into()),
            collection: Some("t".into()),
            rows: Some(3),
            error_code: None,
            error_message: None,
            batch_size: None,
            statement: None,
        }
    );
    assert_eq!(d.stats().parse_errors, 0);
    assert_eq!(d.state().phase, Phase::Normal);
}

#[test]
fn database_defaults_to_user_and_raw_query_kept_when_configured() {
    let cfg = ParserConfig {
        keep_raw_query: true,
        ..ParserConfig::default()
    };
    let (recs, _) = run(
        &[
            (Rq, startup(&[("user", "bob")])),
            (Rs, auth_ok_sequence()),
            (Rq, query("INSERT INTO t VALUES (1)")),
            (Rs, cat(&[complete("INSERT 0 1"), ready()])),
        ],
        &cfg,
    );
    assert_eq!(recs.len(), 1);
    let s = sql(&recs[0]);
    assert_eq!(s.database.as_deref(), Some("bob"));
    assert_eq!(s.query_raw.as_deref(), Some("INSERT INTO t VALUES (1)"));
    assert_eq!(
        s.query_sanitized.as_deref(),
        Some("INSERT INTO t VALUES (?)")
    );
    assert_eq!(s.rows, Some(1));
    assert_eq!(s.operation.as_deref(), Some("INSERT"));
}

#[test]
fn error_response() {
    let (recs, _) = run(
        &[
            (Rq, query("SELECT * FROM nope")),
            (
                Rs,
                cat(&[error("42P01", "relation \"nope\" does not exist"), ready()]),
            ),
        ],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1);
    let s = sql(&recs[0]);
    assert_eq!(s.error_code.as_deref(), Some("42P01"));
    assert_eq!(
        s.error_message.as_deref(),
        Some("relation \"nope\" does not exist")
    );
    assert_eq!(s.rows, None);
    assert_eq!(s.collection.as_deref(), Some("nope"));
}

#[test]
fn multi_statement_query_and_notice() {
    let notice = msg(b'N', b"SNOTICE\0Mhello\0\0");
    let (recs, _) = run(
        &[
            (Rq, query("BEGIN; UPDATE t SET a = 1; COMMIT")),
            (
                Rs,
                cat(&[
                    complete("BEGIN"),
                    notice,
                    complete("UPDATE 4"),
                    complete("COMMIT"),
                    ready(),
                ]),
            ),
        ],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1);
    let s = sql(&recs[0]);
    assert_eq!(s.batch_size, Some(3));
    assert_eq!(s.rows, Some(4));
    assert_eq!(s.operation.as_deref(), Some("BEGIN"));
    assert_eq!(
        s.query_sanitized.as_deref(),
        Some("BEGIN; UPDATE t SET a = ?; COMMIT")
    );
}

#[test]
fn ssl_refused_then_startup() {
    let (recs, d) = run(
        &[
            (Rq, ssl_request()),
            (Rs, b"N".to_vec()),
            (Rq, startup(&[("user", "u"), ("database", "d")])),
            (Rs, auth_ok_sequence()),
            (Rq, query("SELECT 1")),
            (
                Rs,
                cat(&[row_desc(), data_row("1"), complete("SELECT 1"), ready()]),
            ),
        ],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1);
    assert_eq!(sql(&recs[0]).database.as_deref(), Some("d"));
    assert_eq!(recs[0].request_bytes, query("SELECT 1").len() as u64);
    assert_eq!(d.stats().parse_errors, 0);
}

#[test]
fn ssl_accepted_stops_parsing() {
    let (recs, d) = run(
        &[
            (Rq, ssl_request()),
            (Rs, b"S".to_vec()),
            (
                Rq,
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage".to_vec(),
            ),
            (Rs, b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76".to_vec()),
        ],
        &ParserConfig::default(),
    );
    assert!(recs.is_empty());
    assert_eq!(d.state().phase, Phase::Encrypted);
    assert_eq!(d.stats().parse_errors, 0);
}

#[test]
fn gss_refused_and_cancel_request() {
    let mut gss = 8u32.to_be_bytes().to_vec();
    gss.extend_from_slice(&80_877_104u32.to_be_bytes());
    assert_eq!(Postgres::detect(Rq, &gss), Confidence::Certain);
    let mut cancel = 16u32.to_be_bytes().to_vec();
    cancel.extend_from_slice(&80_877_102u32.to_be_bytes());
    cancel.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
    assert_eq!(Postgres::detect(Rq, &cancel), Confidence::Certain);
    let (recs, d) = run(
        &[(Rq, gss), (Rs, b"N".to_vec()), (Rq, cancel)],
        &ParserConfig::default(),
    );
    assert!(recs.is_empty());
    assert_eq!(d.state().phase, Phase::Normal);
    assert_eq!(d.stats().parse_errors, 0);
}

#[test]
fn extended_unnamed_statement() {
    let req = cat(&[
        parse_msg("", "SELECT a FROM t WHERE id = $1"),
        bind("", ""),
        describe_portal(""),
        execute(""),
        sync(),
    ]);
    let resp = cat(&[
        msg(b'1', &[]),
        msg(b'2', &[]),
        row_desc(),
        data_row("x"),
        data_row("y"),
        complete("SELECT 2"),
        ready(),
    ]);
    let (recs, _) = run(
        &[(Rq, req.clone()), (Rs, resp.clone())],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1);
    let r = &recs[0];
    let s = sql(r);
    assert_eq!(
        s.query_sanitized.as_deref(),
        Some("SELECT a FROM t WHERE id = $1")
    );
    assert_eq!(s.rows, Some(2));
    assert_eq!(s.statement, None);
    assert_eq!(s.batch_size, None);
    // Sync and ReadyForQuery bytes are not part of the statement.
    assert_eq!(r.request_bytes, (req.len() - 5) as u64);
    assert_eq!(r.response_bytes, (resp.len() - 6) as u64);
    assert_eq!((r.start_ns, r.end_ns), (0, 110));
}

#[test]
fn named_statement_reused_across_groups() {
    let (recs, d) = run(
        &[
            (
                Rq,
                cat(&[
                    parse_msg("P_1", "UPDATE t SET a = $1 WHERE id = $2"),
                    bind("", "P_1"),
                    execute(""),
                    sync(),
                ]),
            ),
            (
                Rs,
                cat(&[
                    msg(b'1', &[]),
                    msg(b'2', &[]),
                    complete("UPDATE 1"),
                    ready(),
                ]),
            ),
            (Rq, cat(&[bind("", "P_1"), execute(""), sync()])),
            (Rs, cat(&[msg(b'2', &[]), complete("UPDATE 0"), ready()])),
        ],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 2);
    for (r, rows) in recs.iter().zip([1, 0]) {
        let s = sql(r);
        assert_eq!(s.statement.as_deref(), Some("P_1"));
        assert_eq!(s.operation.as_deref(), Some("UPDATE"));
        assert_eq!(s.collection.as_deref(), Some("t"));
        assert_eq!(s.rows, Some(rows));
    }
    assert_eq!(d.state().statements.len(), 1);
}

#[test]
fn pipeline_batch_and_error_aborts_rest_of_group() {
    let req = cat(&[
        parse_msg("", "INSERT INTO a VALUES ($1)"),
        bind("", ""),
        execute(""),
        parse_msg("", "SELECT * FROM nope"),
        bind("", ""),
        execute(""),
        parse_msg("", "DELETE FROM b"),
        bind("", ""),
        execute(""),
        sync(),
        query("SELECT 1"),
    ]);
    let resp = cat(&[
        msg(b'1', &[]),
        msg(b'2', &[]),
        complete("INSERT 0 1"),
        error("42P01", "relation \"nope\" does not exist"),
        ready(),
        row_desc(),
        data_row("1"),
        complete("SELECT 1"),
        ready(),
    ]);
    let (recs, _) = run(&[(Rq, req), (Rs, resp)], &ParserConfig::default());
    assert_eq!(recs.len(), 3, "{recs:#?}");
    let a = sql(&recs[0]);
    assert_eq!(
        (a.operation.as_deref(), a.rows, a.batch_size),
        (Some("INSERT"), Some(1), Some(3))
    );
    let b = sql(&recs[1]);
    assert_eq!(b.error_code.as_deref(), Some("42P01"));
    assert_eq!(b.collection.as_deref(), Some("nope"));
    assert_eq!(b.batch_size, Some(3));
    let c = sql(&recs[2]);
    assert_eq!(
        (c.operation.as_deref(), c.rows, c.batch_size),
        (Some("SELECT"), Some(1), None)
    );
}

#[test]
fn records_wait_for_ready_for_query() {
    let mut d = Driver::<Postgres>::new(&ParserConfig::default());
    assert!(d.feed(Rq, &query("SELECT 1"), 13, 0, 1).is_empty());
    assert!(
        d.feed(
            Rs,
            &cat(&[row_desc(), data_row("1"), complete("SELECT 1")]),
            0,
            2,
            3
        )
        .is_empty()
    );
    let recs = d.feed(Rs, &ready(), 6, 4, 5);
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].response_start_ns, recs[0].end_ns), (2, 5));
}

#[test]
fn large_data_row_skipped_with_truncated_capture() {
    let big = "x".repeat(100_000);
    let row = data_row(&big);
    let mut d = Driver::<Postgres>::new(&ParserConfig::default());
    assert!(
        d.feed(Rq, &query("SELECT blob FROM t"), 24, 0, 1)
            .is_empty()
    );
    // Only the first 4 KiB of the 100 KB row are captured.
    let mut first = row_desc();
    first.extend_from_slice(&row[..4096]);
    let total = (row_desc().len() + row.len()) as u64;
    assert!(d.feed(Rs, &first, total, 2, 3).is_empty());
    let recs = d.feed(Rs, &cat(&[complete("SELECT 1"), ready()]), 20, 4, 5);
    assert_eq!(recs.len(), 1);
    let s = sql(&recs[0]);
    assert_eq!(s.rows, Some(1));
    assert_eq!(recs[0].response_bytes, total + 20);
    assert_eq!(d.stats().bytes_lost, 0);
    assert_eq!(d.stats().parse_errors, 0);
}

#[test]
fn long_query_is_parsed_from_its_head() {
    let long = format!("SELECT {} FROM t", "a, ".repeat(20_000));
    let q = query(&long);
    let mut d = Driver::<Postgres>::new(&ParserConfig::default());
    // Captured 20 KiB of a 60 KB query.
    d.feed(Rq, &q[..20_000], q.len() as u64, 0, 1);
    let recs = d.feed(Rs, &cat(&[complete("SELECT 0"), ready()]), 20, 2, 3);
    assert_eq!(recs.len(), 1);
    let s = sql(&recs[0]);
    assert!(
        s.query_sanitized
            .as_deref()
            .is_some_and(|q| q.ends_with(crate::sql::TRUNCATION_MARK))
    );
    assert_eq!(s.operation.as_deref(), Some("SELECT"));
    assert_eq!(recs[0].request_bytes, q.len() as u64);
}

#[test]
fn malformed_messages_are_errors() {
    let mut st = State::default();
    assert!(Postgres::parse(Rq, b"Q\0\0\0\x02", &mut st).is_err());
    assert!(Postgres::parse(Rq, b"\x01abc", &mut st).is_err());
    assert!(Postgres::parse(Rq, b"\0\0\0\x04\0\0\0\0", &mut st).is_err());
    assert!(Postgres::parse(Rq, &msg(b'Q', b"no nul"), &mut st).is_err());
    assert!(matches!(
        Postgres::parse(Rq, b"Q\x7f\xff\xff\xff", &mut st),
        Err(ParseError::TooLarge { .. })
    ));
    assert!(Postgres::parse(Rs, &msg(b'Z', b"II"), &mut st).is_err());
    assert!(Postgres::parse(Rs, b"Y\0\0\0\x04", &mut st).is_err());
}

#[test]
fn resync_after_garbage() {
    let mut data = b"\x07garbage".to_vec();
    data.extend(query("SELECT 1"));
    assert_eq!(Postgres::find_boundary(Rq, &data, 0), Some(8));
    assert_eq!(Postgres::find_boundary(Rq, b"xxxx", 0), None);
    let (recs, d) = run(
        &[(Rq, data), (Rs, cat(&[complete("SELECT 1"), ready()]))],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1);
    assert_eq!(d.stats().parse_errors, 1);
    assert_eq!(sql(&recs[0]).rows, Some(1));
}

#[test]
fn mid_connection_capture_drops_unanswerable_responses() {
    let (recs, _) = run(
        &[
            (Rs, cat(&[data_row("1"), complete("SELECT 1"), ready()])),
            (Rq, query("SELECT 2")),
            (Rs, cat(&[complete("SELECT 1"), ready()])),
        ],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1);
    assert_eq!(sql(&recs[0]).query_sanitized.as_deref(), Some("SELECT ?"));
}

#[test]
fn close_reports_unanswered_query() {
    let mut d = Driver::<Postgres>::new(&ParserConfig::default());
    d.feed(Rq, &query("SELECT pg_sleep(10)"), 25, 0, 1);
    let recs = d.close();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].response_start_ns, 0);
    assert_eq!(recs[0].response_bytes, 0);
    assert_eq!(sql(&recs[0]).operation.as_deref(), Some("SELECT"));
}

fn frame(msg: Msg, start: u64) -> Frame {
    let mut f = Frame::new(msg, 10);
    f.start_ns = start;
    f.end_ns = start + 1;
    f
}

#[test]
fn stitcher_on_synthetic_frames() {
    let sql = Arc::new(Analyzed::new(b"SELECT 1", Dialect::Postgres));
    let mut reqs: VecDeque<Frame> = VecDeque::new();
    let mut resps: VecDeque<Frame> = VecDeque::new();
    let mut st = State::default();
    reqs.push_back(frame(Msg::Req(Request::Query { sql: sql.clone() }), 1));
    resps.push_back(frame(
        Msg::Resp(Response::Command {
            tag: "SELECT 1".into(),
            rows: Some(1),
        }),
        5,
    ));
    // No ReadyForQuery yet: nothing.
    assert!(stitch::stitch(&mut reqs, &mut resps, &mut st).is_empty());
    resps.push_back(frame(Msg::Resp(Response::Ready { status: b'I' }), 7));
    let recs = stitch::stitch(&mut reqs, &mut resps, &mut st);
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].start_ns, recs[0].request_end_ns), (1, 2));
    assert_eq!((recs[0].response_start_ns, recs[0].end_ns), (5, 8));
    assert_eq!((recs[0].request_bytes, recs[0].response_bytes), (10, 20));
    assert!(reqs.is_empty() && resps.is_empty());

    // A suspended portal reports the rows it returned so far.
    reqs.push_back(frame(
        Msg::Req(Request::Execute {
            statement: Some("s".into()),
            sql: Some(sql),
        }),
        10,
    ));
    reqs.push_back(frame(Msg::Req(Request::Sync), 11));
    resps.push_back(frame(Msg::Resp(Response::Suspended { rows: 50 }), 12));
    resps.push_back(frame(Msg::Resp(Response::Ready { status: b'T' }), 13));
    let recs = stitch::stitch(&mut reqs, &mut resps, &mut st);
    assert_eq!(recs.len(), 1);
    assert_eq!(sql_of(&recs[0]).rows, Some(50));
    assert_eq!(sql_of(&recs[0]).statement.as_deref(), Some("s"));
}

fn sql_of(r: &Record) -> &SqlInfo {
    sql(r)
}

#[test]
fn function_call_consumes_its_ready_for_query() {
    let mut f = 0x0000_1234u32.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0, 0, 0, 0, 1]);
    let (recs, _) = run(
        &[
            (Rq, msg(b'F', &f)),
            (Rs, cat(&[msg(b'V', &[0, 0, 0, 1, b'1']), ready()])),
            (Rq, query("SELECT 2")),
            (Rs, cat(&[complete("SELECT 1"), ready()])),
        ],
        &ParserConfig::default(),
    );
    assert_eq!(recs.len(), 1);
    assert_eq!(sql(&recs[0]).rows, Some(1));
    assert_eq!((recs[0].start_ns, recs[0].end_ns), (200, 310));
}

#[test]
fn lost_end_of_authentication_recovers_on_query_results() {
    let mut d = Driver::<Postgres>::new(&ParserConfig::default());
    d.feed(Rq, &startup(&[("user", "u")]), 0, 0, 1);
    assert_eq!(d.state().phase, Phase::Auth);
    // The ReadyForQuery that ends authentication was never captured.
    d.feed(Rq, &query("SELECT 1"), 14, 2, 3);
    let recs = d.feed(
        Rs,
        &cat(&[row_desc(), data_row("1"), complete("SELECT 1"), ready()]),
        0,
        4,
        5,
    );
    assert_eq!(recs.len(), 1);
    assert_eq!(sql(&recs[0]).rows, Some(1));
    assert_eq!(d.state().phase, Phase::Normal);
}

/// Fuzz regression: answers to a request the capture never saw must not be paired with a
/// later request (the record would end before it started).
#[test]
fn orphan_responses_are_not_paired_with_a_later_request() {
    let cfg = ParserConfig::default();
    let (recs, _) = run(
        &[
            (Rs, complete("SELECT 1")),
            (Rq, query("SELECT 2")),
            (Rs, cat(&[complete("SELECT 5"), ready()])),
        ],
        &cfg,
    );
    assert_eq!(recs.len(), 1);
    assert!(recs[0].start_ns <= recs[0].end_ns, "{:?}", recs[0]);
    assert_eq!(recs[0].start_ns, 100);
    assert_eq!(sql(&recs[0]).rows, Some(5));
}
