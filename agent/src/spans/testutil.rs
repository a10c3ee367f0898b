//! Synthetic exchanges for unit tests.

use std::net::SocketAddr;
use std::sync::Arc;

use agent_protocols::{
    DbSystem, Detail, GrpcInfo, HttpInfo, ProtocolKind, Record, RedisInfo, SqlInfo,
};

use crate::discovery::Resource;
use crate::model::{ConnMeta, Exchange, Role};
use crate::spans::Attributes;

pub fn addr(s: &str) -> SocketAddr {
    s.parse()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
}

pub fn resource(pid: u32) -> Arc<Resource> {
    let mut a = Attributes::default();
    a.set("service.name", format!("svc{pid}"));
    Arc::new(Resource { pid, attributes: a })
}

/// Times (start, request_end, response_start, end) in monotonic ns.
pub type T4 = (u64, u64, u64, u64);

pub fn record(protocol: ProtocolKind, t: T4, detail: Detail) -> Record {
    Record {
        protocol,
        start_ns: t.0,
        request_end_ns: t.1,
        response_start_ns: t.2,
        end_ns: t.3,
        request_bytes: 100,
        response_bytes: 200,
        detail,
    }
}

#[allow(clippy::too_many_arguments)]
pub fn exchange(
    conn_id: u64,
    pid: u32,
    tid: u32,
    role: Role,
    local: &str,
    remote: &str,
    record: Record,
) -> Exchange {
    Exchange {
        conn: std::sync::Arc::new(ConnMeta {
            conn_id,
            pid,
            fd: 3,
            role,
            local: Some(addr(local)),
            remote: Some(addr(remote)),
            unix_path: None,
            comm: String::new(),
        }),
        tid,
        record,
        seq: 0,
        pure_client: false,
    }
}

pub fn http(method: &str, path: &str, status: Option<u16>) -> HttpInfo {
    HttpInfo {
        method: method.into(),
        path: path.into(),
        version: "1.1".into(),
        status,
        ..Default::default()
    }
}

pub fn http_detail(method: &str, path: &str, status: Option<u16>) -> Detail {
    Detail::Http(Box::new(http(method, path, status)))
}

pub fn pg(op: &str, table: &str) -> Detail {
    Detail::Sql(Box::new(SqlInfo {
        system: DbSystem::Postgresql,
        database: Some("shop".into()),
        user: Some("app".into()),
        application_name: None,
        query_sanitized: Some(format!("{op} * FROM {table} WHERE id = ?").into()),
        query_raw: Some(format!("{op} * FROM {table} WHERE id = 42")),
        operation: Some(op.into()),
        collection: Some(table.into()),
        rows: Some(1),
        error_code: None,
        error_message: None,
        batch_size: None,
        statement: None,
    }))
}

pub fn redis(cmd: &str) -> Detail {
    Detail::Redis(Box::new(RedisInfo {
        command: cmd.into(),
        key: Some("k".into()),
        ..Default::default()
    }))
}

pub fn grpc(path: &str, status: Option<u32>) -> GrpcInfo {
    GrpcInfo {
        path: Some(path.into()),
        authority: Some("greeter:50051".into()),
        stream_id: 1,
        http_status: Some(200),
        grpc_status: status,
        request_messages: 1,
        response_messages: 1,
        ..Default::default()
    }
}
