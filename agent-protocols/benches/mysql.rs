//! Throughput of the Mysql parser + stitcher on the recorded fixtures: MB/s (bytes group) and
//! records/s (records group), replaying all chunks through fresh drivers each iteration.

#[path = "../tests/sqlcommon/mod.rs"]
mod sqlcommon;

use agent_protocols::ParserConfig;
use agent_protocols::mysql::Mysql;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

const FIXTURES: &[&str] = &["mariadb_client", "connector_prepared"];

/// SELECT answered by 10,000 rows of ~100 bytes.
fn synthetic() -> Vec<sqlcommon::Chunk> {
    let pkt = |seq: &mut u8, payload: &[u8]| {
        let n = payload.len();
        let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, *seq];
        *seq = seq.wrapping_add(1);
        v.extend_from_slice(payload);
        v
    };
    let req = pkt(&mut 0, b"\x03SELECT a FROM big");
    let mut seq = 1u8;
    let mut pkt = |payload: &[u8]| pkt(&mut seq, payload);
    let mut resp = pkt(&[1]);
    resp.extend(pkt(b"\x03def\x02db\x03big\x03big\x01a\x01a\x0c\x21\x00\x20\x00\x00\x00\xfd\x00\x00\x00\x00\x00"));
    resp.extend(pkt(&[0xfe, 0, 0, 2, 0]));
    let mut row = vec![90];
    row.extend_from_slice(&[b'x'; 90]);
    for _ in 0..10_000 {
        resp.extend(pkt(&row));
    }
    resp.extend(pkt(&[0xfe, 0, 0, 2, 0]));
    sqlcommon::big_result(req, resp)
}

fn bench(c: &mut Criterion) {
    let cfg = ParserConfig::default();
    let mut sets: Vec<_> = FIXTURES
        .iter()
        .map(|n| (*n, sqlcommon::load("mysql", n)))
        .collect();
    let synth = synthetic();
    let (recs, _) = sqlcommon::replay::<Mysql>(&synth, &cfg);
    match recs.as_slice() {
        [r] => match &r.detail {
            agent_protocols::Detail::Sql(s) => assert_eq!(s.rows, Some(10_000)),
            other => panic!("{other:?}"),
        },
        other => panic!("synthetic replay gave {other:?}"),
    }
    sets.push(("synthetic_10k_rows", synth));
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
