mod sqlcommon;

use agent_protocols::postgres::Postgres;
use agent_protocols::{Detail, ParserConfig};
use sqlcommon::*;

#[test]
fn dump() {
    for name in [
        "psql_simple",
        "psql_multi",
        "pgbench_init",
        "pgbench_simple",
        "pgbench_extended",
        "pgbench_prepared",
        "pgbench_pipeline",
        "psycopg2_prepare",
    ] {
        let chunks = load("postgres", name);
        let (recs, stats) = replay::<Postgres>(&chunks, &ParserConfig::default());
        println!("== {name}: {} records, {stats:?}", recs.len());
        for r in &recs {
            let Detail::Sql(s) = &r.detail else { panic!() };
            println!(
                "{:?} rows={:?} err={:?} batch={:?} stmt={:?} coll={:?} db={:?} app={:?} req={} resp={} t={}..{} {:?}",
                s.operation,
                s.rows,
                s.error_code,
                s.batch_size,
                s.statement,
                s.collection,
                s.database,
                s.application_name,
                r.request_bytes,
                r.response_bytes,
                r.start_ns % 1000000,
                r.end_ns % 1000000,
                s.query_sanitized.as_deref().map(|q| &q[..q.len().min(70)])
            );
        }
    }
}
