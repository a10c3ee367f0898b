//! Replays the recorded http1 fixtures through the parser driver: MB/s of captured bytes and
//! records/s.

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use agent_protocols::{ParserConfig, ProtocolKind};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const FIXTURES: &[&str] = &[
    "http1/chunked.jsonl",
    "http1/close_delimited.jsonl",
    "http1/head.jsonl",
    "http1/keepalive.jsonl",
    "http1/pipelined.jsonl",
];

fn bench(c: &mut Criterion) {
    let cfg = ParserConfig::default();
    let all: Vec<Vec<common::Chunk>> = FIXTURES.iter().map(common::load_fixture).collect();
    let bytes: u64 = all.iter().flatten().map(|c| c.data.len() as u64).sum();
    let records: u64 = all
        .iter()
        .map(|f| common::replay(ProtocolKind::Http1, f, &cfg).records.len() as u64)
        .sum();
    let run = || {
        let mut n = 0;
        for f in &all {
            n += common::replay(ProtocolKind::Http1, black_box(f), &cfg)
                .records
                .len();
        }
        n
    };
    let mut g = c.benchmark_group("http1_bytes");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("replay_fixtures", |b| b.iter(run));
    g.finish();
    let mut g = c.benchmark_group("http1_records");
    g.throughput(Throughput::Elements(records));
    g.bench_function("replay_fixtures", |b| b.iter(run));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
