//! Throughput of the Mysql parser + stitcher on the recorded fixtures: MB/s (bytes group) and
//! records/s (records group), replaying all chunks through fresh drivers each iteration.

#[path = "../tests/sqlcommon/mod.rs"]
mod sqlcommon;

use agent_protocols::ParserConfig;
use agent_protocols::mysql::Mysql;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const FIXTURES: &[&str] = &["mariadb_client", "connector_prepared"];

fn bench(c: &mut Criterion) {
    let cfg = ParserConfig::default();
    let sets: Vec<_> = FIXTURES
        .iter()
        .map(|n| (*n, sqlcommon::load("mysql", n)))
        .collect();
    let mut g = c.benchmark_group("mysql/bytes");
    for (name, chunks) in &sets {
        let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(*name, |b| {
            b.iter(|| black_box(sqlcommon::replay::<Mysql>(chunks, &cfg)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("mysql/records");
    for (name, chunks) in &sets {
        let n = sqlcommon::replay::<Mysql>(chunks, &cfg).0.len();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(*name, |b| {
            b.iter(|| black_box(sqlcommon::replay::<Mysql>(chunks, &cfg)))
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(std::time::Duration::from_millis(300)).measurement_time(std::time::Duration::from_secs(1)).sample_size(20);
    targets = bench
}
criterion_main!(benches);
