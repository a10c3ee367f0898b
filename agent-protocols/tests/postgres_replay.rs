//! Replays of real PostgreSQL traffic (see fixtures-tools/record_sql.py) through the driver.

mod sqlcommon;

use agent_protocols::postgres::Postgres;
use agent_protocols::{DbSystem, ParserConfig};
use proptest::prelude::*;
use sqlcommon::*;

const FIXTURES: &[(&str, &[Exp])] = &[
    (
        "psql_simple",
        &[
            (
                "CREATE",
                None,
                None,
                None,
                None,
                None,
                Some("CREATE TABLE IF NOT EXISTS items (id int"),
            ),
            (
                "INSERT",
                Some("items"),
                Some(3),
                None,
                None,
                None,
                Some("INSERT INTO items VALUES (?, ?, ?), (?, "),
            ),
            (
                "SELECT",
                Some("items"),
                Some(2),
                None,
                None,
                None,
                Some("SELECT id, name FROM items WHERE price >"),
            ),
            (
                "UPDATE",
                Some("items"),
                Some(2),
                None,
                None,
                None,
                Some("UPDATE items SET price = ? WHERE id IN ("),
            ),
            (
                "SELECT",
                Some("missing_table"),
                None,
                Some("42P01"),
                None,
                None,
                Some("SELECT * FROM missing_table;"),
            ),
            ("SELECT", None, Some(1), None, None, None, Some("SELECT ?;")),
            (
                "SELECT",
                None,
                Some(1),
                None,
                None,
                None,
                Some("SELECT ?, ?;"),
            ),
            (
                "DELETE",
                Some("items"),
                Some(3),
                None,
                None,
                None,
                Some("DELETE FROM items;"),
            ),
        ],
    ),
    (
        "psql_multi",
        &[(
            "BEGIN",
            None,
            Some(4),
            None,
            None,
            Some(4),
            Some("BEGIN; SELECT ? AS a; SELECT generate_se"),
        )],
    ),
    (
        "pgbench_init",
        &[
            (
                "DROP",
                None,
                None,
                None,
                None,
                None,
                Some("drop table if exists pgbench_accounts, p"),
            ),
            (
                "CREATE",
                None,
                None,
                None,
                None,
                None,
                Some("create table pgbench_history(tid int, bi"),
            ),
            (
                "CREATE",
                None,
                None,
                None,
                None,
                None,
                Some("create table pgbench_tellers(tid int not"),
            ),
            (
                "CREATE",
                None,
                None,
                None,
                None,
                None,
                Some("create table pgbench_accounts(aid int no"),
            ),
            (
                "CREATE",
                None,
                None,
                None,
                None,
                None,
                Some("create table pgbench_branches(bid int no"),
            ),
            ("BEGIN", None, None, None, None, None, Some("begin")),
            (
                "TRUNCATE",
                None,
                None,
                None,
                None,
                None,
                Some("truncate table pgbench_accounts, pgbench"),
            ),
            (
                "INSERT",
                None,
                Some(1),
                None,
                None,
                None,
                Some("insert into pgbench_branches(bid, bbalan"),
            ),
            (
                "INSERT",
                None,
                Some(10),
                None,
                None,
                None,
                Some("insert into pgbench_tellers(tid, bid, tb"),
            ),
            (
                "INSERT",
                None,
                Some(100000),
                None,
                None,
                None,
                Some("insert into pgbench_accounts(aid, bid, a"),
            ),
            ("COMMIT", None, None, None, None, None, Some("commit")),
            (
                "ALTER",
                None,
                None,
                None,
                None,
                None,
                Some("alter table pgbench_branches add primary"),
            ),
            (
                "ALTER",
                None,
                None,
                None,
                None,
                None,
                Some("alter table pgbench_tellers add primary "),
            ),
            (
                "ALTER",
                None,
                None,
                None,
                None,
                None,
                Some("alter table pgbench_accounts add primary"),
            ),
        ],
    ),
    (
        "pgbench_simple",
        &[
            (
                "SELECT",
                Some("pgbench_branches"),
                Some(1),
                None,
                None,
                None,
                Some("select count(*) from pgbench_branches"),
            ),
            (
                "SELECT",
                None,
                Some(1),
                None,
                None,
                None,
                Some("select o.n, p.partstrat, pg_catalog.coun"),
            ),
            (
                "VACUUM",
                None,
                None,
                None,
                None,
                None,
                Some("vacuum pgbench_branches"),
            ),
            (
                "VACUUM",
                None,
                None,
                None,
                None,
                None,
                Some("vacuum pgbench_tellers"),
            ),
            (
                "TRUNCATE",
                None,
                None,
                None,
                None,
                None,
                Some("truncate pgbench_history"),
            ),
            ("BEGIN", None, None, None, None, None, Some("BEGIN;")),
            (
                "UPDATE",
                Some("pgbench_accounts"),
                Some(1),
                None,
                None,
                None,
                Some("UPDATE pgbench_accounts SET abalance = a"),
            ),
            (
                "SELECT",
                Some("pgbench_accounts"),
                Some(1),
                None,
                None,
                None,
                Some("SELECT abalance FROM pgbench_accounts WH"),
            ),
            (
                "UPDATE",
                Some("pgbench_tellers"),
                Some(1),
                None,
                None,
                None,
                Some("UPDATE pgbench_tellers SET tbalance = tb"),
            ),
            (
                "UPDATE",
                Some("pgbench_branches"),
                Some(1),
                None,
                None,
                None,
                Some("UPDATE pgbench_branches SET bbalance = b"),
            ),
            (
                "INSERT",
                Some("pgbench_history"),
                Some(1),
                None,
                None,
                None,
                Some("INSERT INTO pgbench_history (tid, bid, a"),
            ),
            ("END", None, None, None, None, None, Some("END;")),
            ("BEGIN", None, None, None, None, None, Some("BEGIN;")),
            (
                "UPDATE",
                Some("pgbench_accounts"),
                Some(1),
                None,
                None,
                None,
                Some("UPDATE pgbench_accounts SET abalance = a"),
            ),
            (
                "SELECT",
                Some("pgbench_accounts"),
                Some(1),
                None,
                None,
                None,
                Some("SELECT abalance FROM pgbench_accounts WH"),
            ),
            (
                "UPDATE",
                Some("pgbench_tellers"),
                Some(1),
                None,
                None,
                None,
                Some("UPDATE pgbench_tellers SET tbalance = tb"),
            ),
            (
                "UPDATE",
                Some("pgbench_branches"),
                Some(1),
                None,
                None,
                None,
                Some("UPDATE pgbench_branches SET bbalance = b"),
            ),
            (
                "INSERT",
                Some("pgbench_history"),
                Some(1),
                None,
                None,
                None,
                Some("INSERT INTO pgbench_history (tid, bid, a"),
            ),
            ("END", None, None, None, None, None, Some("END;")),
        ],
    ),
    (
        "pgbench_extended",
        &[
            (
                "SELECT",
                Some("pgbench_branches"),
                Some(1),
                None,
                None,
                None,
                Some("select count(*) from pgbench_branches"),
            ),
            (
                "SELECT",
                None,
                Some(1),
                None,
                None,
                None,
                Some("select o.n, p.partstrat, pg_catalog.coun"),
            ),
            (
                "VACUUM",
                None,
                None,
                None,
                None,
                None,
                Some("vacuum pgbench_branches"),
            ),
            (
                "VACUUM",
                None,
                None,
                None,
                None,
                None,
                Some("vacuum pgbench_tellers"),
            ),
            (
                "TRUNCATE",
                None,
                None,
                None,
                None,
                None,
                Some("truncate pgbench_history"),
            ),
            ("BEGIN", None, None, None, None, None, Some("BEGIN;")),
            (
                "UPDATE",
                Some("pgbench_accounts"),
                Some(1),
                None,
                None,
                None,
                Some("UPDATE pgbench_accounts SET abalance = a"),
            ),
            (
                "SELECT",
                Some("pgbench_accounts"),
                Some(1),
                None,
                None,
                None,
                Some("SELECT abalance FROM pgbench_accounts WH"),
            ),
            (
                "UPDATE",
                Some("pgbench_tellers"),
                Some(1),
                None,
                None,
                None,
                Some("UPDATE pgbench_tellers SET tbalance = tb"),
            ),
            (
                "UPDATE",
                Some("pgbench_branches"),
                Some(1),
                None,
                None,
                None,
                Some("UPDATE pgbench_branches SET bbalance = b"),
            ),
            (
                "INSERT",
                Some("pgbench_history"),
                Some(1),
                None,
                None,
                None,
                Some("INSERT INTO pgbench_history (tid, bid, a"),
            ),
            ("END", None, None, None, None, None, Some("END;")),
            ("BEGIN", None, None, None, None, None, Some("BEGIN;")),
            (
                "UPDATE",
                Some("pgbench_accounts"),
                Some(1),
                None,
                None,
                None,
                Some("UPDATE pgbench_accounts SET abalance = a"),
            ),
            (
                "SELECT",
                Some("pgbench_accounts"),
                Some(1),
                None,
                None,
                None,
                Some("SELECT abalance FROM pgbench_accounts WH"),
            ),
            (
                "UPDATE",
                Some("pgbench_tellers"),
                Some(1),
                None,
                None,
                None,
                Some("UPDATE pgbench_tellers SET tbalance = tb"),
            ),
            (
                "UPDATE",
                Some("pgbench_branches"),
                Some(1),
                None,
                None,
                None,
                Some("UPDATE pgbench_branches SET bbalance = b"),
            ),
            (
                "INSERT",
                Some("pgbench_history"),
                Some(1),
                None,
                None,
                None,
                Some("INSERT INTO pgbench_history (tid, bid, a"),
            ),
            ("END", None, None, None, None, None, Some("END;")),
        ],
    ),
    (
        "pgbench_prepared",
        &[
            (
                "SELECT",
                Some("pgbench_branches"),
                Some(1),
                None,
                None,
                None,
                Some("select count(*) from pgbench_branches"),
            ),
            (
                "SELECT",
                None,
                Some(1),
                None,
                None,
                None,
                Some("select o.n, p.partstrat, pg_catalog.coun"),
            ),
            (
                "VACUUM",
                None,
                None,
                None,
                None,
                None,
                Some("vacuum pgbench_branches"),
            ),
            (
                "VACUUM",
                None,
                None,
                None,
                None,
                None,
                Some("vacuum pgbench_tellers"),
            ),
            (
                "TRUNCATE",
                None,
                None,
                None,
                None,
                None,
                Some("truncate pgbench_history"),
            ),
            ("BEGIN", None, None, None, Some("P_0"), None, Some("BEGIN;")),
            (
                "UPDATE",
                Some("pgbench_accounts"),
                Some(1),
                None,
                Some("P_1"),
                None,
                Some("UPDATE pgbench_accounts SET abalance = a"),
            ),
            (
                "SELECT",
                Some("pgbench_accounts"),
                Some(1),
                None,
                Some("P_2"),
                None,
                Some("SELECT abalance FROM pgbench_accounts WH"),
            ),
            (
                "UPDATE",
                Some("pgbench_tellers"),
                Some(1),
                None,
                Some("P_3"),
                None,
                Some("UPDATE pgbench_tellers SET tbalance = tb"),
            ),
            (
                "UPDATE",
                Some("pgbench_branches"),
                Some(1),
                None,
                Some("P_4"),
                None,
                Some("UPDATE pgbench_branches SET bbalance = b"),
            ),
            (
                "INSERT",
                Some("pgbench_history"),
                Some(1),
                None,
                Some("P_5"),
                None,
                Some("INSERT INTO pgbench_history (tid, bid, a"),
            ),
            ("END", None, None, None, Some("P_6"), None, Some("END;")),
            ("BEGIN", None, None, None, Some("P_0"), None, Some("BEGIN;")),
            (
                "UPDATE",
                Some("pgbench_accounts"),
                Some(1),
                None,
                Some("P_1"),
                None,
                Some("UPDATE pgbench_accounts SET abalance = a"),
            ),
            (
                "SELECT",
                Some("pgbench_accounts"),
                Some(1),
                None,
                Some("P_2"),
                None,
                Some("SELECT abalance FROM pgbench_accounts WH"),
            ),
            (
                "UPDATE",
                Some("pgbench_tellers"),
                Some(1),
                None,
                Some("P_3"),
                None,
                Some("UPDATE pgbench_tellers SET tbalance = tb"),
            ),
            (
                "UPDATE",
                Some("pgbench_branches"),
                Some(1),
                None,
                Some("P_4"),
                None,
                Some("UPDATE pgbench_branches SET bbalance = b"),
            ),
            (
                "INSERT",
                Some("pgbench_history"),
                Some(1),
                None,
                Some("P_5"),
                None,
                Some("INSERT INTO pgbench_history (tid, bid, a"),
            ),
            ("END", None, None, None, Some("P_6"), None, Some("END;")),
        ],
    ),
    (
        "pgbench_pipeline",
        &[
            (
                "SELECT",
                Some("pgbench_accounts"),
                Some(1),
                None,
                None,
                Some(3),
                Some("SELECT abalance FROM pgbench_accounts WH"),
            ),
            (
                "UPDATE",
                Some("pgbench_accounts"),
                Some(1),
                None,
                None,
                Some(3),
                Some("UPDATE pgbench_accounts SET abalance = a"),
            ),
            (
                "SELECT",
                Some("pgbench_branches"),
                Some(1),
                None,
                None,
                Some(3),
                Some("SELECT count(*) FROM pgbench_branches;"),
            ),
            (
                "SELECT",
                Some("pgbench_accounts"),
                Some(1),
                None,
                None,
                Some(3),
                Some("SELECT abalance FROM pgbench_accounts WH"),
            ),
            (
                "UPDATE",
                Some("pgbench_accounts"),
                Some(1),
                None,
                None,
                Some(3),
                Some("UPDATE pgbench_accounts SET abalance = a"),
            ),
            (
                "SELECT",
                Some("pgbench_branches"),
                Some(1),
                None,
                None,
                Some(3),
                Some("SELECT count(*) FROM pgbench_branches;"),
            ),
        ],
    ),
    (
        "psycopg2_prepare",
        &[
            ("BEGIN", None, None, None, None, None, Some("BEGIN")),
            (
                "PREPARE",
                None,
                None,
                None,
                None,
                None,
                Some("PREPARE getacct (int) AS SELECT aid, aba"),
            ),
            (
                "EXECUTE",
                None,
                Some(1),
                None,
                None,
                None,
                Some("EXECUTE getacct (?)"),
            ),
            (
                "SELECT",
                Some("pgbench_branches"),
                Some(1),
                None,
                None,
                None,
                Some("SELECT bid FROM pgbench_branches WHERE b"),
            ),
            (
                "SELECT",
                Some("no_such_table"),
                None,
                Some("42P01"),
                None,
                None,
                Some("SELECT * FROM no_such_table WHERE x = ?"),
            ),
            ("ROLLBACK", None, None, None, None, None, Some("ROLLBACK")),
        ],
    ),
];

fn conn(name: &str) -> Conn {
    Conn {
        system: DbSystem::Postgresql,
        database: |_| Some("postgres"),
        user: Some("postgres"),
        application_name: Some(match name {
            "psql_simple" => "psqltest",
            "psql_multi" => "psql",
            "psycopg2_prepare" => "pyapp",
            _ => "pgbench",
        }),
    }
}

#[test]
fn fixtures_replay_to_expected_records() {
    for (name, expected) in FIXTURES {
        check_fixture::<Postgres>("postgres", name, expected, &conn(name));
    }
}

#[test]
fn corrupted_query_is_dropped_and_the_rest_resyncs() {
    let mut tried = 0;
    for (name, _) in FIXTURES {
        tried += check_corrupted_queries_resync::<Postgres>(
            "postgres",
            name,
            |d| {
                d.len() > 5
                    && d[0] == b'Q'
                    && u32::from_be_bytes([d[1], d[2], d[3], d[4]]) as usize + 1 == d.len()
            },
            0,
        );
    }
    assert!(tried >= 10, "only {tried} chunks tried");
}

#[test]
fn connections_are_detected_from_their_first_bytes() {
    for (name, _) in FIXTURES {
        check_detection::<Postgres>("postgres", name);
    }
}

#[test]
fn capture_starting_mid_connection() {
    for skip in 2..6 {
        check_mid_connection::<Postgres>("postgres", "psql_simple", skip);
    }
}

#[test]
fn keep_raw_query_fills_query_raw() {
    let chunks = load("postgres", FIXTURES[0].0);
    let cfg = ParserConfig {
        keep_raw_query: true,
        ..ParserConfig::default()
    };
    let (recs, _) = replay::<Postgres>(&chunks, &cfg);
    assert!(!recs.is_empty());
    for r in &recs {
        let agent_protocols::Detail::Sql(s) = &r.detail else {
            panic!()
        };
        assert_eq!(s.query_raw.is_some(), s.query_sanitized.is_some());
    }
}

#[test]
fn truncated_capture_does_not_panic_and_counts_losses() {
    for (name, expected) in FIXTURES {
        let chunks = load("postgres", name);
        for cap in [0, 5, 16, 64, 200] {
            let (recs, stats) = replay_truncated::<Postgres>(&chunks, cap);
            let lost: usize = chunks
                .iter()
                .map(|c| c.data.len().saturating_sub(cap))
                .sum();
            if lost > 0 {
                assert!(
                    stats.bytes_lost > 0 || stats.frames > 0,
                    "{name} cap {cap}: {stats:?}"
                );
            }
            assert!(
                recs.len() <= expected.len() + chunks.len(),
                "{name} cap {cap}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_chunking_gives_same_records(idx in 0..FIXTURES.len(), seed in any::<u64>()) {
        let (name, _) = FIXTURES[idx];
        let chunks = load("postgres", name);
        let (want, _) = replay::<Postgres>(&chunks, &ParserConfig::default());
        let mut s = seed | 1;
        let re = rechunk(&chunks, |_, len| {
            let mut v = Vec::new();
            let mut left = len;
            while left > 0 {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                let n = 1 + (s as usize % 97).min(left - 1);
                v.push(n);
                left -= n;
            }
            v
        });
        let (got, stats) = replay::<Postgres>(&re, &ParserConfig::default());
        prop_assert_eq!(stats.parse_errors, 0);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn corrupted_bytes_never_panic(idx in 0..FIXTURES.len(), flips in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 1..6)) {
        let (name, expected) = FIXTURES[idx];
        let mut chunks = load("postgres", name);
        let n = chunks.len();
        for (c, at, b) in flips {
            let ch = &mut chunks[c % n];
            if !ch.data.is_empty() {
                let i = at % ch.data.len();
                ch.data[i] ^= b | 1;
            }
        }
        let (recs, _) = replay::<Postgres>(&chunks, &ParserConfig::default());
        prop_assert!(recs.len() <= expected.len() + n);
    }
}
