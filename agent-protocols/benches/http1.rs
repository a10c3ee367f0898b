//! Replays the recorded http1 fixtures through the parser driver: MB/s of captured bytes and
//! records/s.

#[path = "../tests/common/mod.rs"]
mod common;
mod fixture_replay;

use agent_protocols::ProtocolKind;
use criterion::{Criterion, criterion_group, criterion_main};

const FIXTURES: &[&str] = &[
    "http1/chunked.jsonl",
    "http1/close_delimited.jsonl",
    "http1/head.jsonl",
    "http1/keepalive.jsonl",
    "http1/pipelined.jsonl",
];

fn bench(c: &mut Criterion) {
    fixture_replay::bench_fixtures(c, "http1", ProtocolKind::Http1, FIXTURES);
}

criterion_group!(benches, bench);
criterion_main!(benches);
