//! The body shared by the benches that replay recorded fixtures through the generic driver
//! (HTTP/1, Redis): MB/s of captured bytes and records/s.

use std::hint::black_box;

use agent_protocols::{ParserConfig, ProtocolKind};
use criterion::{Criterion, Throughput};

use crate::common;

/// Benchmark groups `<name>_bytes` and `<name>_records` over `fixtures` parsed as `kind`.
pub fn bench_fixtures(c: &mut Criterion, name: &str, kind: ProtocolKind, fixtures: &[&str]) {
    let cfg = ParserConfig::default();
    let all: Vec<Vec<common::Chunk>> = fixtures.iter().map(common::load_fixture).collect();
    let bytes: u64 = all.iter().flatten().map(|c| c.data.len() as u64).sum();
    let records: u64 = all
        .iter()
        .map(|f| common::replay(kind, f, &cfg).records.len() as u64)
        .sum();
    let run = || {
        let mut n = 0;
        for f in &all {
            n += common::replay(kind, black_box(f), &cfg).records.len();
        }
        n
    };
    let mut g = c.benchmark_group(format!("{name}_bytes"));
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("replay_fixtures", |b| b.iter(run));
    g.finish();
    let mut g = c.benchmark_group(format!("{name}_records"));
    g.throughput(Throughput::Elements(records));
    g.bench_function("replay_fixtures", |b| b.iter(run));
    g.finish();
}
