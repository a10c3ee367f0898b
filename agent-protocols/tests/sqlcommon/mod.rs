//! Fixture loading and replay helpers for the SQL parser tests and benches.
#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use agent_protocols::driver::{Driver, DriverStats};
use agent_protocols::{Dir, ParserConfig, Protocol, Record};

/// One captured chunk of one connection.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub conn_id: u64,
    pub dir: Dir,
    pub data: Vec<u8>,
    /// Bytes the application transferred (`data` is the captured prefix).
    pub bytes: u64,
    pub ts_enter_ns: u64,
    pub ts_exit_ns: u64,
}

/// Loads `tests/fixtures/<protocol>/<name>.jsonl` with the shared fixture loader.
pub fn load(protocol: &str, name: &str) -> Vec<Chunk> {
    common::load_fixture(format!("{protocol}/{name}.jsonl"))
        .into_iter()
        .map(|c| Chunk {
            conn_id: c.conn_id,
            dir: c.dir,
            data: c.data,
            bytes: c.total,
            ts_enter_ns: c.start_ns,
            ts_exit_ns: c.end_ns,
        })
        .collect()
}

/// Replays chunks through one driver per connection; records in arrival order, then what
/// `close` flushes per connection.
pub fn replay<P: Protocol>(chunks: &[Chunk], cfg: &ParserConfig) -> (Vec<Record>, DriverStats) {
    let mut drivers: BTreeMap<u64, Driver<P>> = BTreeMap::new();
    let mut out = Vec::new();
    for c in chunks {
        let d = drivers.entry(c.conn_id).or_insert_with(|| Driver::new(cfg));
        out.extend(d.feed(c.dir, &c.data, c.bytes, c.ts_enter_ns, c.ts_exit_ns));
    }
    let mut stats = DriverStats::default();
    for d in drivers.values_mut() {
        out.extend(d.close());
        stats.add(d.stats());
    }
    (out, stats)
}

/// Re-chunks every chunk: each piece keeps the original timestamps. `cut(i, len)` gives the
/// piece sizes for chunk `i`.
pub fn rechunk(chunks: &[Chunk], mut cut: impl FnMut(usize, usize) -> Vec<usize>) -> Vec<Chunk> {
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let mut at = 0;
        for n in cut(i, c.data.len()) {
            let end = (at + n).min(c.data.len());
            if end > at {
                out.push(Chunk {
                    data: c.data[at..end].to_vec(),
                    bytes: (end - at) as u64,
                    ..c.clone()
                });
            }
            at = end;
        }
        if at < c.data.len() {
            out.push(Chunk {
                data: c.data[at..].to_vec(),
                bytes: (c.data.len() - at) as u64,
                ..c.clone()
            });
        }
    }
    out
}

/// Every chunk split into single bytes.
pub fn bytewise(chunks: &[Chunk]) -> Vec<Chunk> {
    rechunk(chunks, |_, len| vec![1; len])
}

/// All chunks of one direction of one connection joined into one chunk per direction run.
pub fn coalesce(chunks: &[Chunk]) -> Vec<Chunk> {
    let mut out: Vec<Chunk> = Vec::new();
    for c in chunks {
        match out.last_mut() {
            Some(l) if l.conn_id == c.conn_id && l.dir == c.dir => {
                l.data.extend_from_slice(&c.data);
                l.bytes += c.bytes;
                l.ts_exit_ns = c.ts_exit_ns;
            }
            _ => out.push(c.clone()),
        }
    }
    out
}

/// Compact one-line description of a record's timing-free content, for comparisons.
pub fn timing_free(r: &Record) -> Record {
    Record {
        start_ns: 0,
        end_ns: 0,
        request_end_ns: 0,
        response_start_ns: 0,
        ..r.clone()
    }
}

/// Expected record: operation, collection, rows, error code, statement, batch size, and the
/// first 40 chars of the sanitized query.
pub type Exp = (
    &'static str,
    Option<&'static str>,
    Option<u64>,
    Option<&'static str>,
    Option<&'static str>,
    Option<u32>,
    Option<&'static str>,
);

/// Connection facts every record of a fixture carries.
pub struct Conn {
    pub system: agent_protocols::DbSystem,
    /// Database expected on record `i` (it changes with USE / COM_INIT_DB).
    pub database: fn(usize) -> Option<&'static str>,
    pub user: Option<&'static str>,
    pub application_name: Option<&'static str>,
}

fn sql_of(r: &Record) -> &agent_protocols::SqlInfo {
    match &r.detail {
        agent_protocols::Detail::Sql(s) => s,
        other => panic!("not SQL: {other:?}"),
    }
}

/// Replays a fixture and checks every record against `expected`, then checks that re-chunking
/// (byte by byte, coalesced) gives the same records.
pub fn check_fixture<P: Protocol>(
    proto: &str,
    name: &str,
    expected: &[Exp],
    conn: &Conn,
) -> Vec<Record> {
    let chunks = load(proto, name);
    let cfg = ParserConfig::default();
    let (recs, stats) = replay::<P>(&chunks, &cfg);
    assert_eq!(stats.parse_errors, 0, "{name}: {stats:?}");
    assert_eq!(stats.bytes_lost, 0, "{name}: {stats:?}");
    assert_eq!(stats.queue_overflows, 0, "{name}: {stats:?}");
    assert_eq!(recs.len(), expected.len(), "{name}: {recs:#?}");
    for (i, (r, e)) in recs.iter().zip(expected).enumerate() {
        let s = sql_of(r);
        assert_eq!(
            s.operation.as_deref().unwrap_or(""),
            e.0,
            "{name}[{i}] operation"
        );
        assert_eq!(s.collection.as_deref(), e.1, "{name}[{i}] collection");
        assert_eq!(s.rows, e.2, "{name}[{i}] rows");
        assert_eq!(s.error_code.as_deref(), e.3, "{name}[{i}] error_code");
        assert_eq!(
            s.error_code.is_some(),
            s.error_message.is_some(),
            "{name}[{i}] error_message"
        );
        assert_eq!(s.statement.as_deref(), e.4, "{name}[{i}] statement");
        assert_eq!(s.batch_size, e.5, "{name}[{i}] batch_size");
        let q = s.query_sanitized.as_deref().map(|q| &q[..q.len().min(40)]);
        assert_eq!(q, e.6, "{name}[{i}] query_sanitized");
        assert_eq!(s.query_raw, None, "{name}[{i}] query_raw off by default");
        assert_eq!(s.system, conn.system, "{name}[{i}] system");
        assert_eq!(
            s.database.as_deref(),
            (conn.database)(i),
            "{name}[{i}] database"
        );
        assert_eq!(s.user.as_deref(), conn.user, "{name}[{i}] user");
        assert_eq!(
            s.application_name.as_deref(),
            conn.application_name,
            "{name}[{i}] app"
        );
        assert!(r.start_ns > 0, "{name}[{i}] start");
        assert!(r.start_ns <= r.request_end_ns, "{name}[{i}] request timing");
        assert!(
            r.request_end_ns <= r.response_start_ns,
            "{name}[{i}] response after request"
        );
        assert!(
            r.response_start_ns <= r.end_ns,
            "{name}[{i}] response timing"
        );
        assert!(
            r.request_bytes > 0 && r.response_bytes > 0,
            "{name}[{i}] sizes"
        );
    }
    // Same records whatever the chunking.
    let (bw, _) = replay::<P>(&bytewise(&chunks), &cfg);
    assert_eq!(bw, recs, "{name}: byte-by-byte replay");
    let (co, _) = replay::<P>(&coalesce(&chunks), &cfg);
    let strip = |v: &[Record]| v.iter().map(timing_free).collect::<Vec<_>>();
    assert_eq!(strip(&co), strip(&recs), "{name}: coalesced replay");
    recs
}

/// Replay with every chunk captured only up to `cap` bytes: must not panic; returns records
/// and stats.
pub fn replay_truncated<P: Protocol>(chunks: &[Chunk], cap: usize) -> (Vec<Record>, DriverStats) {
    let cut: Vec<Chunk> = chunks
        .iter()
        .map(|c| Chunk {
            data: c.data[..c.data.len().min(cap)].to_vec(),
            ..c.clone()
        })
        .collect();
    replay::<P>(&cut, &ParserConfig::default())
}

/// Corrupts the first byte that `at` picks in each request chunk `is_query` accepts, one chunk
/// at a time, and checks that exactly that chunk's record disappears: the parser errors,
/// resynchronises, drops the orphaned response and reports everything else unchanged.
pub fn check_corrupted_queries_resync<P: Protocol>(
    proto: &str,
    name: &str,
    is_query: fn(&[u8]) -> bool,
    at: usize,
) -> usize {
    let chunks = load(proto, name);
    let cfg = ParserConfig::default();
    let (want, _) = replay::<P>(&chunks, &cfg);
    let mut tried = 0;
    for (i, c) in chunks.iter().enumerate() {
        if c.dir != Dir::Request || !is_query(&c.data) {
            continue;
        }
        let mut bad = chunks.clone();
        bad[i].data[at] = 0xee;
        let (got, stats) = replay::<P>(&bad, &cfg);
        assert!(stats.parse_errors >= 1, "{name} chunk {i}: {stats:?}");
        let expected: Vec<Record> = want
            .iter()
            .filter(|r| r.request_end_ns != c.ts_exit_ns)
            .cloned()
            .collect();
        assert_eq!(got.len(), want.len() - 1, "{name} chunk {i}");
        assert_eq!(got, expected, "{name} chunk {i}");
        tried += 1;
    }
    tried
}

/// The first chunk of every connection is recognised with certainty (startup / greeting).
pub fn check_detection<P: Protocol>(proto: &str, name: &str) {
    let chunks = load(proto, name);
    let mut seen = std::collections::BTreeSet::new();
    for c in &chunks {
        if seen.insert(c.conn_id) {
            assert_eq!(
                P::detect(c.dir, &c.data),
                agent_protocols::Confidence::Certain,
                "{name} conn {}",
                c.conn_id
            );
        }
    }
}

/// Capture starting mid-connection, at the `skip`-th request chunk: the queries after it are
/// still reported with the same operation, table, rows and error (connection facts unknown).
pub fn check_mid_connection<P: Protocol>(proto: &str, name: &str, skip: usize) {
    let chunks = load(proto, name);
    let cfg = ParserConfig::default();
    let (want, _) = replay::<P>(&chunks, &cfg);
    let start = chunks
        .iter()
        .enumerate()
        .filter(|(_, c)| c.dir == Dir::Request)
        .nth(skip)
        .map(|(i, _)| i)
        .expect("enough request chunks");
    let cut_ns = chunks[start].ts_enter_ns;
    let (got, stats) = replay::<P>(&chunks[start..], &cfg);
    assert_eq!(stats.parse_errors, 0, "{name}: {stats:?}");
    let tail: Vec<&Record> = want.iter().filter(|r| r.start_ns >= cut_ns).collect();
    assert_eq!(got.len(), tail.len(), "{name}: {got:#?}");
    for (g, w) in got.iter().zip(tail) {
        let (gs, ws) = (sql_of(g), sql_of(w));
        assert_eq!(gs.operation, ws.operation);
        assert_eq!(gs.collection, ws.collection);
        assert_eq!(gs.query_sanitized, ws.query_sanitized);
        assert_eq!(gs.rows, ws.rows);
        assert_eq!(gs.error_code, ws.error_code);
        assert_eq!((g.start_ns, g.end_ns), (w.start_ns, w.end_ns));
        // Unknown unless a USE / COM_INIT_DB was seen after the capture started.
        assert!(gs.database.is_none() || gs.database == ws.database);
        assert_eq!(gs.user, None);
    }
}

/// A synthetic large result: one query answered by `rows` rows in 64 KiB chunks.
pub fn big_result(request: Vec<u8>, response: Vec<u8>) -> Vec<Chunk> {
    let mut out = vec![Chunk {
        conn_id: 1,
        dir: Dir::Request,
        bytes: request.len() as u64,
        data: request,
        ts_enter_ns: 1,
        ts_exit_ns: 2,
    }];
    for (i, piece) in response.chunks(64 * 1024).enumerate() {
        out.push(Chunk {
            conn_id: 1,
            dir: Dir::Response,
            bytes: piece.len() as u64,
            data: piece.to_vec(),
            ts_enter_ns: 10 + i as u64,
            ts_exit_ns: 11 + i as u64,
        });
    }
    out
}
