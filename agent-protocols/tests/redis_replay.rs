//! Redis fixtures recorded from redis-py, redis-cli, redis-benchmark and a raw RESP3 client
//! against redis-server, replayed whole, split at every byte, in random chunkings, truncated
//! and corrupted.

mod common;

use agent_protocols::{Detail, Dir, ParserConfig, ProtocolKind, Record, RedisInfo};
use common::*;
use proptest::prelude::*;

const FIXTURES: &[&str] = &[
    "redis/commands.jsonl",
    "redis/inline_pipe.jsonl",
    "redis/pipeline.jsonl",
    "redis/pubsub.jsonl",
    "redis/resp3.jsonl",
];

fn cfg() -> ParserConfig {
    ParserConfig::default()
}

fn info(r: &Record) -> &RedisInfo {
    match &r.detail {
        Detail::Redis(i) => i,
        d => panic!("not redis: {d:?}"),
    }
}

fn run(chunks: &[Chunk]) -> Replay {
    replay(ProtocolKind::Redis, chunks, &cfg())
}

fn check_timing(r: &Replay) {
    for (_, rec) in &r.records {
        assert_eq!(rec.protocol, ProtocolKind::Redis);
        assert!(
            rec.start_ns > 0 && rec.start_ns <= rec.request_end_ns,
            "{rec:?}"
        );
        assert!(
            rec.response_start_ns > 0 && rec.response_start_ns <= rec.end_ns,
            "{rec:?}"
        );
        assert!(rec.request_end_ns <= rec.end_ns, "{rec:?}");
        assert!(rec.request_bytes > 0 && rec.response_bytes > 0, "{rec:?}");
    }
    assert_eq!(r.stats.parse_errors, 0);
    assert_eq!(r.stats.bytes_lost, 0);
}

fn request_total(chunks: &[Chunk]) -> u64 {
    chunks
        .iter()
        .filter(|c| c.dir == Dir::Request)
        .map(|c| c.total)
        .sum()
}

fn ri(command: &str, key: Option<&str>, db: Option<u32>) -> RedisInfo {
    RedisInfo {
        command: command.into(),
        key: key.map(Into::into),
        db_index: db,
        ..RedisInfo::default()
    }
}

fn err(mut i: RedisInfo, prefix: &str, message: &str) -> RedisInfo {
    i.error_prefix = Some(prefix.into());
    i.error_message = Some(message.into());
    i
}

fn infos(r: &Replay) -> Vec<RedisInfo> {
    r.records.iter().map(|(_, x)| info(x).clone()).collect()
}

#[test]
fn commands_select_auth_multi_errors() {
    let chunks = load_fixture("redis/commands.jsonl");
    let r = run(&chunks);
    check_timing(&r);
    let mut exec = ri("EXEC", None, Some(2));
    exec.batch_size = Some(2);
    assert_eq!(
        infos(&r),
        vec![
            ri("SET", Some("user:1"), None),
            ri("GET", Some("user:1"), None),
            err(
                ri("LPUSH", Some("user:1"), None),
                "WRONGTYPE",
                "WRONGTYPE Operation against a key holding the wrong kind of value"
            ),
            ri("INCRBY", Some("visits"), None),
            ri("HSET", Some("h:1"), None),
            ri("HGETALL", Some("h:1"), None),
            ri("SELECT", None, Some(2)),
            ri("SET", Some("k2"), Some(2)),
            // AUTH's argument (a password) is never kept.
            err(
                ri("AUTH", None, Some(2)),
                "ERR",
                "ERR AUTH <password> called without any password configured for the default user. \
                 Are you sure your configuration is correct?"
            ),
            ri("MULTI", None, Some(2)),
            ri("INCRBY", Some("visits"), Some(2)),
            ri("SET", Some("k3"), Some(2)),
            exec,
            err(
                ri("FROBNICATE", Some("x"), Some(2)),
                "ERR",
                "ERR unknown command 'FROBNICATE', with args beginning with: 'x' "
            ),
            ri("DEL", Some("k2"), Some(2)),
            ri("PING", None, Some(2)),
        ]
    );
    let sum: u64 = r.records.iter().map(|(_, x)| x.request_bytes).sum();
    assert_eq!(sum, request_total(&chunks));
    let sum: u64 = r.records.iter().map(|(_, x)| x.response_bytes).sum();
    let total: u64 = chunks
        .iter()
        .filter(|c| c.dir == Dir::Response)
        .map(|c| c.total)
        .sum();
    assert_eq!(sum, total);
    // The first exchange is one chunk each way.
    let first = &r.records[0].1;
    assert_eq!(
        (first.start_ns, first.request_end_ns),
        (chunks[0].start_ns, chunks[0].end_ns)
    );
    assert_eq!(
        (first.response_start_ns, first.end_ns),
        (chunks[1].start_ns, chunks[1].end_ns)
    );
    assert_eq!(
        (first.request_bytes, first.response_bytes),
        (chunks[0].total, 5)
    );
    // MULTI..EXEC went in one write and came back in one read.
    let multi = &r.records[9].1;
    let exec = &r.records[12].1;
    assert_eq!((multi.start_ns, multi.end_ns), (exec.start_ns, exec.end_ns));
}

#[test]
fn inline_commands_via_redis_cli_pipe() {
    let chunks = load_fixture("redis/inline_pipe.jsonl");
    let r = run(&chunks);
    check_timing(&r);
    assert_eq!(
        infos(&r),
        vec![
            ri("SET", Some("greeting"), None),
            ri("GET", Some("greeting"), None),
            err(
                ri("INCR", Some("greeting"), None),
                "ERR",
                "ERR value is not an integer or out of range"
            ),
            ri("PING", None, None),
            ri("DEL", Some("greeting"), None),
            ri("ECHO", None, None),
        ]
    );
    // One empty line (ignored by the server) is not part of any command.
    let sum: u64 = r.records.iter().map(|(_, x)| x.request_bytes).sum();
    assert_eq!(sum + 2, request_total(&chunks));
}

#[test]
fn benchmark_pipelining_pairs_in_order() {
    let chunks = load_fixture("redis/pipeline.jsonl");
    let r = run(&chunks);
    check_timing(&r);
    let c1: Vec<_> = r.records_of(1).iter().map(|x| info(x).clone()).collect();
    assert_eq!(c1, vec![ri("CONFIG", None, None), ri("CONFIG", None, None)]);
    let sets = r.records_of(2);
    let gets = r.records_of(3);
    assert_eq!((sets.len(), gets.len()), (48, 48));
    for (s, g) in sets.iter().zip(&gets) {
        assert_eq!(*info(s), ri("SET", Some("key:__rand_int__"), None));
        assert_eq!(*info(g), ri("GET", Some("key:__rand_int__"), None));
        assert_eq!((s.response_bytes, g.response_bytes), (5, 9));
    }
    // 16 commands per write: records of one batch share the request chunk's timing.
    assert_eq!(sets[0].start_ns, sets[15].start_ns);
    assert_ne!(sets[15].start_ns, sets[16].start_ns);
}

#[test]
fn pubsub_messages_are_not_replies() {
    let chunks = load_fixture("redis/pubsub.jsonl");
    let r = run(&chunks);
    check_timing(&r);
    assert_eq!(
        infos(&r),
        vec![
            ri("SUBSCRIBE", Some("news"), None),
            ri("PUBLISH", Some("news"), None),
            ri("PUBLISH", Some("sports"), None),
        ]
    );
    let sub = r.records_of(1);
    assert_eq!(sub.len(), 1);
    assert_eq!(sub[0].response_start_ns, chunks[1].start_ns);
}

#[test]
fn resp3_types_and_invalidation_push() {
    let chunks = load_fixture("redis/resp3.jsonl");
    let r = run(&chunks);
    check_timing(&r);
    let cmds: Vec<_> = infos(&r).into_iter().map(|i| (i.command, i.key)).collect();
    let want: Vec<(String, Option<String>)> = [
        ("HELLO", None),
        ("HSET", Some("h:3")),
        ("HGETALL", Some("h:3")),
        ("SADD", Some("s:1")),
        ("SMEMBERS", Some("s:1")),
        ("CLIENT", None),
        ("SET", Some("user:9")),
        ("GET", Some("user:9")),
        ("ZADD", Some("z")),
        ("ZSCORE", Some("z")),
        ("HGET", Some("nokey")),
        ("PING", None),
    ]
    .iter()
    .map(|(c, k)| (c.to_string(), k.map(str::to_string)))
    .collect();
    assert_eq!(cmds, want);
    // The invalidation push (its own chunk) is not the ZADD reply.
    let zadd = &r.records[8].1;
    assert_eq!(zadd.response_bytes, 4);
}

#[test]
fn detection_picks_redis() {
    for f in FIXTURES {
        let chunks = load_fixture(f);
        let r = replay_detected(&chunks, &cfg());
        assert_eq!(plain(&r), plain(&run(&chunks)), "{f}");
    }
}

#[test]
fn split_at_every_byte() {
    for f in FIXTURES {
        let chunks = load_fixture(f);
        let want = plain(&run(&chunks));
        for i in 0..chunks.len() {
            for at in 1..chunks[i].data.len() {
                let got = run(&split_at(&chunks, i, at));
                assert_eq!(plain(&got), want, "{f}: chunk {i} split at {at}");
                assert_eq!(got.stats.parse_errors, 0, "{f}: chunk {i} split at {at}");
            }
        }
    }
}

#[test]
fn truncated_final_bulk_keeps_records() {
    // A GET reply whose value the capture lost still pairs, with the right size.
    let chunks = load_fixture("redis/commands.jsonl");
    let want = plain(&run(&chunks));
    let got = run(&truncate(&chunks, 3, 5)); // "$5\r\nalice\r\n" -> "$5\r\na"
    assert_eq!(plain(&got), want);
    assert_eq!(got.stats.bytes_lost, 0);
}

#[test]
fn truncated_pipeline_batch_resyncs() {
    let chunks = load_fixture("redis/pipeline.jsonl");
    let want = run(&chunks);
    // The second batch of SETs loses its tail: the commands in it can't all be seen.
    let i = chunks
        .iter()
        .position(|c| c.conn_id == 2 && c.dir == Dir::Request)
        .unwrap()
        + 2;
    let got = run(&truncate(&chunks, i, 100));
    assert!(got.stats.bytes_lost > 0);
    assert!(got.records.len() < want.records.len());
    // The GET connection is untouched.
    assert_eq!(got.records_of(3), want.records_of(3));
}

#[test]
fn corrupted_command_resyncs() {
    let chunks = load_fixture("redis/commands.jsonl");
    let want = run(&chunks);
    let mut bad = chunks.clone();
    bad[2].data[0] = b'?'; // GET user:1 no longer parses
    let got = run(&bad);
    assert_eq!(got.stats.parse_errors, 1);
    assert_eq!(got.records.len(), want.records.len() - 1);
    assert_eq!(got.records[1].1, want.records[2].1);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_chunkings(which in 0..FIXTURES.len(), cuts in prop::collection::vec(0usize..800, 0..24)) {
        let chunks = load_fixture(FIXTURES[which]);
        let want = plain(&run(&chunks));
        let mut pieces = Vec::new();
        for c in &chunks {
            let mine: Vec<usize> = cuts.iter().map(|k| k % (c.data.len() + 1)).collect();
            pieces.extend(split_chunk(c, &mine));
        }
        prop_assert_eq!(plain(&run(&pieces)), want);
    }

    #[test]
    fn corruption_never_panics(which in 0..FIXTURES.len(), flips in prop::collection::vec((0usize..64, 0usize..2000, any::<u8>()), 1..8)) {
        let mut chunks = load_fixture(FIXTURES[which]);
        let n = chunks.len();
        for (i, at, b) in flips {
            let c = &mut chunks[i % n];
            if !c.data.is_empty() {
                let at = at % c.data.len();
                c.data[at] = b;
            }
        }
        let got = run(&chunks);
        prop_assert!(got.records.len() <= 200);
    }

    #[test]
    fn random_truncation_never_panics(which in 0..FIXTURES.len(), i in 0usize..64, keep in 0usize..2000) {
        let chunks = load_fixture(FIXTURES[which]);
        let i = i % chunks.len();
        let keep = keep % (chunks[i].data.len() + 1);
        let got = run(&truncate(&chunks, i, keep));
        prop_assert!(got.records.len() <= run(&chunks).records.len());
    }
}
