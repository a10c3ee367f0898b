mod sqlcommon;

use agent_protocols::mysql::Mysql;
use agent_protocols::{Detail, ParserConfig};
use sqlcommon::*;

#[test]
fn dump() {
    for name in ["mariadb_client", "connector_prepared"] {
        let chunks = load("mysql", name);
        let (recs, stats) = replay::<Mysql>(&chunks, &ParserConfig::default());
        println!("== {name}: {} records, {stats:?}", recs.len());
        for r in &recs {
            let Detail::Sql(s) = &r.detail else { panic!() };
            println!(
                "{:?} {:?} rows={:?} err={:?}/{:?} batch={:?} stmt={:?} coll={:?} db={:?} user={:?} app={:?} req={} resp={} {:?}",
                s.system,
                s.operation,
                s.rows,
                s.error_code,
                s.error_message,
                s.batch_size,
                s.statement,
                s.collection,
                s.database,
                s.user,
                s.application_name,
                r.request_bytes,
                r.response_bytes,
                s.query_sanitized.as_deref().map(|q| &q[..q.len().min(70)])
            );
        }
    }
}
