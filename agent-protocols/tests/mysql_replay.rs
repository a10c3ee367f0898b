//! Replays of real MariaDB traffic (see fixtures-tools/record_sql.py) through the driver.

mod sqlcommon;

use agent_protocols::mysql::Mysql;
use agent_protocols::{DbSystem, ParserConfig};
use proptest::prelude::*;
use sqlcommon::*;

const FIXTURES: &[(&str, &[Exp])] = &[
    (
        "mariadb_client",
        &[
            (
                "CREATE",
                None,
                Some(0),
                None,
                None,
                None,
                Some("CREATE TABLE IF NOT EXISTS items (id INT"),
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
                Some("1146"),
                None,
                None,
                Some("SELECT * FROM missing_table"),
            ),
            (
                "PREPARE",
                None,
                Some(0),
                None,
                None,
                None,
                Some("PREPARE s FROM ?"),
            ),
            ("SET", None, Some(0), None, None, None, Some("SET @a = ?")),
            (
                "EXECUTE",
                None,
                Some(1),
                None,
                None,
                None,
                Some("EXECUTE s USING @a"),
            ),
            (
                "DEALLOCATE",
                None,
                Some(0),
                None,
                None,
                None,
                Some("DEALLOCATE PREPARE s"),
            ),
            (
                "SELECT",
                None,
                Some(1),
                None,
                None,
                None,
                Some("SELECT DATABASE()"),
            ),
            ("USE", None, Some(0), None, None, None, None),
            ("SELECT", None, Some(1), None, None, None, Some("SELECT ?")),
        ],
    ),
    (
        "connector_prepared",
        &[
            (
                "SET",
                None,
                Some(0),
                None,
                None,
                None,
                Some("SET NAMES ? COLLATE ?"),
            ),
            (
                "SET",
                None,
                Some(0),
                None,
                None,
                None,
                Some("SET @@session.autocommit = OFF"),
            ),
            ("PING", None, Some(0), None, None, None, None),
            (
                "PREPARE",
                Some("items"),
                None,
                None,
                Some("1"),
                None,
                Some("SELECT id, name FROM items WHERE id = ?"),
            ),
            ("RESET", None, Some(0), None, None, None, None),
            (
                "SELECT",
                Some("items"),
                Some(1),
                None,
                Some("1"),
                None,
                Some("SELECT id, name FROM items WHERE id = ?"),
            ),
            ("RESET", None, Some(0), None, None, None, None),
            (
                "SELECT",
                Some("items"),
                Some(1),
                None,
                Some("1"),
                None,
                Some("SELECT id, name FROM items WHERE id = ?"),
            ),
            ("PING", None, Some(0), None, None, None, None),
            (
                "SELECT",
                Some("items"),
                Some(1),
                None,
                None,
                None,
                Some("SELECT COUNT(*) FROM items"),
            ),
            (
                "SELECT",
                Some("nope"),
                None,
                Some("1146"),
                None,
                None,
                Some("SELECT * FROM nope"),
            ),
            ("PING", None, Some(0), None, None, None, None),
        ],
    ),
];

fn conn(name: &str) -> Conn {
    Conn {
        system: DbSystem::Mariadb,
        // The mariadb client switches to `mysql` with `use` before its last query.
        database: if name == "mariadb_client" {
            |i| Some(if i >= 10 { "mysql" } else { "shop" })
        } else {
            |_| Some("shop")
        },
        user: Some("root"),
        application_name: if name == "mariadb_client" {
            Some("mysql")
        } else {
            None
        },
    }
}

#[test]
fn fixtures_replay_to_expected_records() {
    for (name, expected) in FIXTURES {
        check_fixture::<Mysql>("mysql", name, expected, &conn(name));
    }
}

#[test]
fn corrupted_query_is_dropped_and_the_rest_resyncs() {
    let mut tried = 0;
    for (name, _) in FIXTURES {
        tried += check_corrupted_queries_resync::<Mysql>(
            "mysql",
            name,
            |d| {
                d.len() > 5
                    && d[3] == 0
                    && d[4] == 3
                    && (usize::from(d[0]) | usize::from(d[1]) << 8 | usize::from(d[2]) << 16) + 4
                        == d.len()
            },
            4,
        );
    }
    assert!(tried >= 10, "only {tried} chunks tried");
}

#[test]
fn connections_are_detected_from_their_first_bytes() {
    for (name, _) in FIXTURES {
        check_detection::<Mysql>("mysql", name);
    }
}

#[test]
fn capture_starting_mid_connection() {
    for skip in 2..6 {
        check_mid_connection::<Mysql>("mysql", "mariadb_client", skip);
    }
}

#[test]
fn keep_raw_query_fills_query_raw() {
    let chunks = load("mysql", FIXTURES[0].0);
    let cfg = ParserConfig {
        keep_raw_query: true,
        ..ParserConfig::default()
    };
    let (recs, _) = replay::<Mysql>(&chunks, &cfg);
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
        let chunks = load("mysql", name);
        for cap in [0, 5, 16, 64, 200] {
            let (recs, stats) = replay_truncated::<Mysql>(&chunks, cap);
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
        let chunks = load("mysql", name);
        let (want, _) = replay::<Mysql>(&chunks, &ParserConfig::default());
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
        let (got, stats) = replay::<Mysql>(&re, &ParserConfig::default());
        prop_assert_eq!(stats.parse_errors, 0);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn corrupted_bytes_never_panic(idx in 0..FIXTURES.len(), flips in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<u8>()), 1..6)) {
        let (name, expected) = FIXTURES[idx];
        let mut chunks = load("mysql", name);
        let n = chunks.len();
        for (c, at, b) in flips {
            let ch = &mut chunks[c % n];
            if !ch.data.is_empty() {
                let i = at % ch.data.len();
                ch.data[i] ^= b | 1;
            }
        }
        let (recs, _) = replay::<Mysql>(&chunks, &ParserConfig::default());
        prop_assert!(recs.len() <= expected.len() + n);
    }
}
