//! Fixture loading and replay for the HTTP/2 replay tests (fixture format: COMMON.md).

#![allow(dead_code)]

use agent_protocols::driver::{Driver, DriverStats};
use agent_protocols::http2::Http2;
use agent_protocols::{Dir, ParserConfig, Record};
use base64::Engine;

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

pub fn load(name: &str) -> Vec<Chunk> {
    let text = std::fs::read_to_string(fixture_path(name)).expect("fixture readable");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("fixture line is JSON");
            let s = |k: &str| v[k].as_str().expect(k).to_owned();
            let n = |k: &str| v[k].as_u64().expect(k);
            let egress = s("direction") == "egress";
            let client = s("role") == "client";
            let dir = if egress == client {
                Dir::Request
            } else {
                Dir::Response
            };
            let data = base64::engine::general_purpose::STANDARD
                .decode(s("payload_b64"))
                .expect("base64 payload");
            assert_eq!(data.len() as u64, n("captured"));
            Chunk {
                dir,
                data,
                total: n("bytes"),
                start_ns: n("ts_enter_ns"),
                end_ns: n("ts_exit_ns"),
            }
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
