//! HTTP/2 + gRPC parser throughput on the recorded fixtures: bytes/s (MB/s) and records/s.

#[path = "../tests/h2common/mod.rs"]
mod h2common;

use agent_protocols::driver::Driver;
use agent_protocols::http2::Http2;
use agent_protocols::{Detail, Dir, ParserConfig};
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

/// `data` with every frame on stream `from` moved to stream `to`.
fn restream(data: &[u8], from: u32, to: u32) -> Vec<u8> {
    let mut out = data.to_vec();
    let mut at = 0;
    while at + 9 <= out.len() {
        let len =
            usize::from(out[at]) << 16 | usize::from(out[at + 1]) << 8 | usize::from(out[at + 2]);
        let sid = u32::from_be_bytes([out[at + 5], out[at + 6], out[at + 7], out[at + 8]]);
        if sid == from {
            out[at + 5..at + 9].copy_from_slice(&to.to_be_bytes());
        }
        at += 9 + len;
    }
    out
}

/// Steady state of a long-lived gRPC channel: after the recorded setup and first call of
/// grpc_big, its second (small) call repeated 1000 times on new streams. Its header blocks are
/// 1-8 bytes of dynamic-table references, as on any warm channel.
fn steady(c: &mut Criterion) {
    let chunks = load("grpc_big");
    let (setup, call) = chunks.split_at(7);
    let (req, resp) = (&call[0], &call[2]);
    assert!(req.dir == Dir::Request && resp.dir == Dir::Response);
    let calls: Vec<(Vec<u8>, Vec<u8>)> = (0..1000u32)
        .map(|k| {
            (
                restream(&req.data, 3, 3 + 2 * k),
                restream(&resp.data, 3, 3 + 2 * k),
            )
        })
        .collect();
    let bytes: usize = calls.iter().map(|(a, b)| a.len() + b.len()).sum();
    let run = || {
        let mut d = Driver::<Http2>::new(&ParserConfig::default());
        for ch in setup {
            d.feed(ch.dir, &ch.data, ch.total, ch.start_ns, ch.end_ns);
        }
        let mut out = Vec::with_capacity(calls.len());
        for (i, (a, b)) in calls.iter().enumerate() {
            let t = 1_000_000 + i as u64 * 10;
            out.extend(d.feed(Dir::Request, a, a.len() as u64, t, t + 1));
            out.extend(d.feed(Dir::Response, b, b.len() as u64, t + 5, t + 6));
        }
        out
    };
    let recs = run();
    assert_eq!(recs.len(), 1000);
    match recs.last().map(|r| &r.detail) {
        Some(Detail::Grpc(g)) => {
            assert_eq!(g.path.as_deref(), Some("helloworld.Greeter/SayHello"));
            assert_eq!((g.stream_id, g.grpc_status), (2001, Some(0)));
        }
        other => panic!("{other:?}"),
    }
    let mut g = c.benchmark_group("http2_steady");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("bytes", |b| b.iter(run));
    g.throughput(Throughput::Elements(1000));
    g.bench_function("records", |b| b.iter(run));
    g.finish();
}

fn bench(c: &mut Criterion) {
    group(c, "http2_small", &SMALL);
    // 20 000 / 34 000-byte messages: bodies are skipped, never copied.
    group(c, "http2_big", &["grpc_big"]);
}

criterion_group!(benches, bench, steady);
criterion_main!(benches);
