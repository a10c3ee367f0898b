//! Fixture loading and replay shared by the protocol replay tests and benches.
//!
//! A fixture is JSON lines in the `tracewire capture --json` data-event format (see
//! `tests/fixtures/record.py`). Each line becomes a [`Chunk`]; [`replay`] feeds chunks through
//! one [`Stream`] per connection and collects records and driver counters.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use agent_protocols::driver::DriverStats;
use agent_protocols::stream::Stream;
use agent_protocols::{Dir, ParserConfig, ProtocolKind, Record};
use base64::Engine;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub conn_id: u64,
    pub dir: Dir,
    /// Captured bytes (a prefix of what was transferred).
    pub data: Vec<u8>,
    /// Bytes the application transferred.
    pub total: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(serde::Deserialize)]
struct Event {
    kind: String,
    conn_id: u64,
    role: String,
    direction: String,
    bytes: u64,
    captured: u64,
    ts_enter_ns: u64,
    ts_exit_ns: u64,
    payload_b64: String,
}

pub fn fixture_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// Loads a fixture (path relative to `tests/fixtures/`, or absolute). Panics on a bad file: a
/// broken fixture is a broken test.
pub fn load_fixture(path: impl AsRef<Path>) -> Vec<Chunk> {
    let p = path.as_ref();
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        fixture_path(&p.to_string_lossy())
    };
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .filter_map(|(i, l)| {
            let ev: Event = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", p.display(), i + 1));
            if ev.kind != "data" {
                return None;
            }
            let data = base64::engine::general_purpose::STANDARD
                .decode(&ev.payload_b64)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", p.display(), i + 1));
            assert_eq!(data.len() as u64, ev.captured, "{}:{}", p.display(), i + 1);
            // The client sends requests; the server receives them.
            let dir = match (ev.role.as_str(), ev.direction.as_str()) {
                ("client", "egress") | ("server", "ingress") => Dir::Request,
                ("client", "ingress") | ("server", "egress") => Dir::Response,
                other => panic!("{}:{}: bad role/direction {other:?}", p.display(), i + 1),
            };
            Some(Chunk {
                conn_id: ev.conn_id,
                dir,
                data,
                total: ev.bytes,
                start_ns: ev.ts_enter_ns,
                end_ns: ev.ts_exit_ns,
            })
        })
        .collect()
}

#[derive(Debug, Default)]
pub struct Replay {
    /// Records with their connection id, in the order they were produced (closes last).
    pub records: Vec<(u64, Record)>,
    pub stats: DriverStats,
}

impl Replay {
    pub fn records_of(&self, conn: u64) -> Vec<&Record> {
        self.records
            .iter()
            .filter(|(c, _)| *c == conn)
            .map(|(_, r)| r)
            .collect()
    }
}

/// Feeds every chunk to its connection's stream of protocol `kind`, then closes all
/// connections (in id order).
pub fn replay(kind: ProtocolKind, chunks: &[Chunk], cfg: &ParserConfig) -> Replay {
    let mut streams: BTreeMap<u64, Stream> = BTreeMap::new();
    let mut out = Replay::default();
    for c in chunks {
        let s = streams
            .entry(c.conn_id)
            .or_insert_with(|| Stream::new(kind, cfg));
        for r in s.feed(c.dir, &c.data, c.total, c.start_ns, c.end_ns) {
            out.records.push((c.conn_id, r));
        }
    }
    for (id, s) in streams.iter_mut() {
        for r in s.close() {
            out.records.push((*id, r));
        }
        out.stats.add(&s.stats());
    }
    out
}

/// Like [`replay`], but each connection's protocol is chosen by detection on its first chunk
/// (as conntrack does); connections nothing recognises are ignored.
pub fn replay_detected(chunks: &[Chunk], cfg: &ParserConfig) -> Replay {
    let mut kinds: BTreeMap<u64, Option<ProtocolKind>> = BTreeMap::new();
    for c in chunks {
        kinds
            .entry(c.conn_id)
            .or_insert_with(|| agent_protocols::stream::choose(c.dir, &c.data));
    }
    let mut out = Replay::default();
    for (id, kind) in kinds {
        let Some(kind) = kind else { continue };
        let mine: Vec<Chunk> = chunks.iter().filter(|c| c.conn_id == id).cloned().collect();
        let r = replay(kind, &mine, cfg);
        out.records.extend(r.records);
        out.stats.add(&r.stats);
    }
    out
}

/// Splits every chunk into pieces at the given cut points (relative to each chunk; the same
/// timestamps). The transferred total is spread so truncation stays at the end.
pub fn split_chunk(c: &Chunk, cuts: &[usize]) -> Vec<Chunk> {
    let mut out = Vec::new();
    let mut prev = 0usize;
    let mut points: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&k| k > 0 && k < c.data.len())
        .collect();
    points.sort_unstable();
    points.dedup();
    points.push(c.data.len());
    let n = points.len();
    for (i, &k) in points.iter().enumerate() {
        let data = c.data[prev..k].to_vec();
        let total = if i + 1 == n {
            c.total - prev as u64
        } else {
            data.len() as u64
        };
        out.push(Chunk {
            data,
            total,
            ..c.clone()
        });
        prev = k;
    }
    out
}

/// The chunks with chunk `i` cut into two at `at`.
pub fn split_at(chunks: &[Chunk], i: usize, at: usize) -> Vec<Chunk> {
    let mut v = Vec::with_capacity(chunks.len() + 1);
    for (j, c) in chunks.iter().enumerate() {
        if j == i {
            v.extend(split_chunk(c, &[at]));
        } else {
            v.push(c.clone());
        }
    }
    v
}

/// The chunks with chunk `i` captured only up to `keep` bytes (the rest lost by the capture).
pub fn truncate(chunks: &[Chunk], i: usize, keep: usize) -> Vec<Chunk> {
    let mut v = chunks.to_vec();
    if let Some(c) = v.get_mut(i) {
        c.data.truncate(keep);
    }
    v
}

/// Records with their connection, for equality checks across chunkings.
pub fn plain(r: &Replay) -> Vec<(u64, Record)> {
    r.records.clone()
}
