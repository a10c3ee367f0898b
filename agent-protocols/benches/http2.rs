//! HTTP/2 + gRPC parser throughput on the recorded fixtures: bytes/s (MB/s) and records/s.

#[path = "../tests/h2common/mod.rs"]
mod h2common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use h2common::{Chunk, load, replay, total_bytes};

/// Small messages: parsing and HPACK dominate.
const SMALL: [&str; 5] = [
    "grpc_unary",
    "grpc_stream",
    "grpc_concurrent",
    "h2c_nginx",
    "h2c_nginx_nghttp",
];

fn load_all(names: &[&str]) -> Vec<Vec<Chunk>> {
    names.iter().map(|f| load(f)).collect()
}

fn run(conns: &[Vec<Chunk>]) -> usize {
    conns.iter().map(|c| replay(c).0.len()).sum()
}

fn group(c: &mut Criterion, name: &str, names: &[&str]) {
    let conns = load_all(names);
    let bytes: usize = conns.iter().map(|c| total_bytes(c)).sum();
    let records = run(&conns);

    let mut g = c.benchmark_group(name);
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("bytes", |b| b.iter(|| run(std::hint::black_box(&conns))));
    g.throughput(Throughput::Elements(records as u64));
    g.bench_function("records", |b| b.iter(|| run(std::hint::black_box(&conns))));
    g.finish();
}

fn bench(c: &mut Criterion) {
    group(c, "http2_small", &SMALL);
    // 20 000 / 34 000-byte messages: bodies are skipped, never copied.
    group(c, "http2_big", &["grpc_big"]);
}

criterion_group!(benches, bench);
criterion_main!(benches);
