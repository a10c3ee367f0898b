//! HTTP/2 + gRPC parser throughput on the recorded fixtures: bytes/s (MB/s) and records/s.

#[path = "../tests/h2common/mod.rs"]
mod h2common;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use h2common::{Chunk, load, replay, total_bytes};

const FIXTURES: [&str; 3] = ["grpc_unary", "grpc_stream", "grpc_concurrent"];

fn all() -> Vec<Vec<Chunk>> {
    FIXTURES.iter().map(|f| load(f)).collect()
}

fn run(conns: &[Vec<Chunk>]) -> usize {
    conns.iter().map(|c| replay(c).0.len()).sum()
}

fn bench(c: &mut Criterion) {
    let conns = all();
    let bytes: usize = conns.iter().map(|c| total_bytes(c)).sum();
    let records = run(&conns);

    let mut g = c.benchmark_group("http2");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("bytes", |b| b.iter(|| run(std::hint::black_box(&conns))));
    g.throughput(Throughput::Elements(records as u64));
    g.bench_function("records", |b| b.iter(|| run(std::hint::black_box(&conns))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
