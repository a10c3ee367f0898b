//! Fixture loading and replay for the HTTP/2 replay tests (fixture format: COMMON.md).

#![allow(dead_code)]

#[path = "../common/mod.rs"]
mod common;

use agent_protocols::driver::{Driver, DriverStats};
use agent_protocols::http2::Http2;
use agent_protocols::{Dir, ParserConfig, Record};

#[derive(Debug, Clone)]
pub struct Chunk {
    pub dir: Dir,
    pub data: Vec<u8>,
    /// Bytes the application transferred (`data` is the captured prefix).
    pub total: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

pub fn fixture_path(name: &str) -> String {
    format!(
        "{}/tests/fixtures/http2/{name}.jsonl",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Loads `tests/fixtures/http2/<name>.jsonl` with the shared fixture loader.
pub fn load(name: &str) -> Vec<Chunk> {
    common::load_fixture(fixture_path(name))
        .into_iter()
        .map(|c| Chunk {
            dir: c.dir,
            data: c.data,
            total: c.total,
            start_ns: c.start_ns,
            end_ns: c.end_ns,
        })
        .collect()
}

/// Feeds chunks through a fresh driver and closes it: records and driver counters.
pub fn replay(chunks: &[Chunk]) -> (Vec<Record>, DriverStats) {
    let mut d = Driver::<Http2>::new(&ParserConfig::default());
    let mut out = Vec::new();
    for c in chunks {
        out.extend(d.feed(c.dir, &c.data, c.total, c.start_ns, c.end_ns));
    }
    out.extend(d.close());
    (out, *d.stats())
}

/// Every chunk split in two at every byte offset, in turn (same timestamps for both halves).
pub fn split_at(chunks: &[Chunk], offset: usize) -> Vec<Chunk> {
    let mut out = Vec::with_capacity(chunks.len() + 1);
    let mut seen = 0usize;
    for c in chunks {
        let len = c.data.len();
        if offset > seen && offset < seen + len && c.total == len as u64 {
            let k = offset - seen;
            let mut a = c.clone();
            a.data.truncate(k);
            a.total = k as u64;
            let mut b = c.clone();
            b.data.drain(..k);
            b.total = (len - k) as u64;
            out.push(a);
            out.push(b);
        } else {
            out.push(c.clone());
        }
        seen += len;
    }
    out
}

pub fn total_bytes(chunks: &[Chunk]) -> usize {
    chunks.iter().map(|c| c.data.len()).sum()
}
