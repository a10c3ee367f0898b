//! Throughput of the Postgres parser + stitcher on the recorded fixtures: MB/s (bytes group) and
//! records/s (records group), replaying all chunks through fresh drivers each iteration.

#[path = "../tests/sqlcommon/mod.rs"]
mod sqlcommon;

use agent_protocols::ParserConfig;
use agent_protocols::postgres::Postgres;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const FIXTURES: &[&str] = &[
    "psql_simple",
    "pgbench_simple",
    "pgbench_prepared",
    "pgbench_pipeline",
];

/// SELECT answered by 10,000 rows of ~100 bytes.
fn synthetic() -> Vec<sqlcommon::Chunk> {
    let msg = |ty: u8, body: &[u8]| {
        let mut v = vec![ty];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    };
    let mut resp = msg(
        b'T',
        b"\0\x01a\0\0\0\0\0\0\0\0\0\0\x19\xff\xff\xff\xff\xff\xff\0\0",
    );
    let mut row = vec![0, 1, 0, 0, 0, 90];
    row.extend_from_slice(&[b'x'; 90]);
    for _ in 0..10_000 {
        resp.extend(msg(b'D', &row));
    }
    resp.extend(msg(b'C', b"SELECT 10000\0"));
    resp.extend(msg(b'Z', b"I"));
    sqlcommon::big_result(msg(b'Q', b"SELECT a FROM big\0"), resp)
}

fn bench(c: &mut Criterion) {
    let cfg = ParserConfig::default();
    let mut sets: Vec<_> = FIXTURES
        .iter()
        .map(|n| (*n, sqlcommon::load("postgres", n)))
        .collect();
    let synth = synthetic();
    let (recs, _) = sqlcommon::replay::<Postgres>(&synth, &cfg);
    match recs.as_slice() {
        [r] => match &r.detail {
            agent_protocols::Detail::Sql(s) => assert_eq!(s.rows, Some(10_000)),
            other => panic!("{other:?}"),
        },
        other => panic!("synthetic replay gave {other:?}"),
    }
    sets.push(("synthetic_10k_rows", synth));
    let mut g = c.benchmark_group("postgres/bytes");
    for (name, chunks) in &sets {
        let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
        g.throughput(Throughput::Bytes(bytes as u64));
        g.bench_function(*name, |b| {
            b.iter(|| black_box(sqlcommon::replay::<Postgres>(chunks, &cfg)))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("postgres/records");
    for (name, chunks) in &sets {
        let n = sqlcommon::replay::<Postgres>(chunks, &cfg).0.len();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(*name, |b| {
            b.iter(|| black_box(sqlcommon::replay::<Postgres>(chunks, &cfg)))
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
