//! Database client spans (PostgreSQL, MySQL/MariaDB, Redis).

use std::borrow::Cow;

use agent_protocols::{RedisInfo, SqlInfo};

use super::{Attributes, Built, SpanConfig, SpanStatus, ip_string, set_peer_text};
use crate::model::ConnMeta;

/// Commands frequent enough that their span names are worth not allocating.
fn common_command(cmd: &str) -> Option<&'static str> {
    const COMMON: &[&str] = &[
        "GET", "SET", "DEL", "INCR", "EXPIRE", "MGET", "MSET", "HGET", "HSET", "HGETALL", "LPUSH",
        "RPUSH", "LPOP", "RPOP", "LRANGE", "SADD", "SMEMBERS", "ZADD", "ZRANGE", "EXISTS", "PING",
        "SETEX", "TTL", "PUBLISH", "EVALSHA",
    ];
    COMMON.iter().copied().find(|c| *c == cmd)
}

/// The server is the peer: its address is formatted once for both attributes.
fn set_server(a: &mut Attributes, conn: &ConnMeta) {
    if let Some(r) = conn.remote {
        let ip = ip_string(r.ip());
        a.push("server.address", &ip);
        a.push("server.port", i64::from(r.port()));
        set_peer_text(a, &ip, r.port());
    } else if let Some(p) = &conn.unix_path {
        a.push("server.address", p);
    }
}

pub(crate) fn build_sql(conn: &ConnMeta, s: &SqlInfo, cfg: &SpanConfig) -> Built {
    let mut a = Attributes::with_capacity(super::SPAN_ATTR_CAPACITY);
    let system = s.system.as_str();
    a.push("db.system.name", system);
    if let Some(db) = s.database.as_deref().filter(|d| !d.is_empty()) {
        a.push("db.namespace", db);
    }
    let op = s.operation.as_deref().filter(|o| !o.is_empty());
    let coll = s.collection.as_deref().filter(|c| !c.is_empty());
    if let Some(op) = op {
        a.push("db.operation.name", op);
    }
    if let Some(c) = coll {
        a.push("db.collection.name", c);
    }
    let text = if cfg.db_raw_query {
        s.query_raw.as_deref().or(s.query_sanitized.as_deref())
    } else {
        s.query_sanitized.as_deref()
    };
    if let Some(t) = text {
        a.push("db.query.text", t);
    }
    let summary = match (op, coll) {
        (Some(o), Some(c)) => Some(format!("{o} {c}")),
        (Some(o), None) => Some(o.to_string()),
        (None, Some(c)) => Some(c.to_string()),
        (None, None) => None,
    };
    if let Some(sm) = &summary {
        a.push("db.query.summary", sm);
    }
    let name = summary.unwrap_or_else(|| system.to_string());
    if let Some(b) = s.batch_size.filter(|b| *b >= 2) {
        a.push("db.operation.batch.size", i64::from(b));
    }
    set_server(&mut a, conn);
    let status = match s.error_code.as_deref().filter(|c| !c.is_empty()) {
        Some(code) => {
            a.push("db.response.status_code", code);
            a.push("error.type", code);
            SpanStatus::error(s.error_message.clone().unwrap_or_default())
        }
        None => SpanStatus::unset(),
    };
    Built {
        name: name.into(),
        attributes: a,
        status,
    }
}

pub(crate) fn build_redis(conn: &ConnMeta, r: &RedisInfo) -> Built {
    let mut a = Attributes::with_capacity(super::SPAN_ATTR_CAPACITY);
    a.push("db.system.name", "redis");
    let name = if r.command.is_empty() {
        Cow::Borrowed("redis")
    } else {
        let cmd = r.command.as_str();
        let name = common_command(cmd).map_or_else(|| Cow::Owned(cmd.to_owned()), Cow::Borrowed);
        a.push("db.operation.name", &name);
        name
    };
    match r.db_index.unwrap_or(0) {
        0 => a.push("db.namespace", "0"),
        n => a.push("db.namespace", n.to_string()),
    }
    if let Some(b) = r.batch_size.filter(|b| *b >= 2) {
        a.push("db.operation.batch.size", i64::from(b));
    }
    set_server(&mut a, conn);
    let status = match r.error_prefix.as_deref().filter(|c| !c.is_empty()) {
        Some(prefix) => {
            a.push("db.response.status_code", prefix);
            a.push("error.type", prefix);
            SpanStatus::error(r.error_message.clone().unwrap_or_default())
        }
        None => SpanStatus::unset(),
    };
    Built {
        name,
        attributes: a,
        status,
    }
}
