//! Replays the recorded redis fixtures through the parser driver: MB/s of captured bytes and
//! records/s.

#[path = "../tests/common/mod.rs"]
mod common;
mod fixture_replay;

use agent_protocols::ProtocolKind;
use criterion::{Criterion, criterion_group, criterion_main};

const FIXTURES: &[&str] = &[
    "redis/commands.jsonl",
    "redis/inline_pipe.jsonl",
    "redis/pipeline.jsonl",
    "redis/pubsub.jsonl",
    "redis/resp3.jsonl",
];

fn bench(c: &mut Criterion) {
    fixture_replay::bench_fixtures(c, "redis", ProtocolKind::Redis, FIXTURES);
}

criterion_group!(benches, bench);
criterion_main!(benches);
