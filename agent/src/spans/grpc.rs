//! gRPC spans (RPC semantic conventions, `rpc.system.name = grpc`).

use agent_protocols::GrpcInfo;

use super::{Attributes, Built, SpanKind, SpanStatus, ip_string, set_peer, split_host_port};
use crate::model::ConnMeta;

/// gRPC status code number -> name.
pub fn grpc_code_name(code: u32) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "_OTHER",
    }
}

/// Codes that make a SERVER span an error (the others are the caller's fault).
fn server_error(code: u32) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

pub(crate) fn build_grpc(kind: SpanKind, conn: &ConnMeta, g: &GrpcInfo) -> Built {
    let mut a = Attributes::with_capacity(super::SPAN_ATTR_CAPACITY);
    a.push("rpc.system.name", "grpc");
    let method = g
        .path
        .as_deref()
        .map(|p| p.trim_start_matches('/'))
        .filter(|p| !p.is_empty());
    let name = match method {
        Some(m) => {
            a.push("rpc.method", m);
            m.to_string()
        }
        None => {
            a.push("rpc.method", "_OTHER");
            "grpc".to_string()
        }
    };
    a.push("network.protocol.version", "2");
    let server_sock = match kind {
        SpanKind::Server => conn.local,
        SpanKind::Client => conn.remote,
    };
    match g.authority.as_deref().filter(|s| !s.is_empty()) {
        Some(auth) => {
            let (h, p) = split_host_port(auth);
            a.push("server.address", h);
            if let Some(p) = p.or(server_sock.map(|s| s.port())) {
                a.push("server.port", i64::from(p));
            }
        }
        None => {
            if let Some(s) = server_sock {
                a.push("server.address", ip_string(s.ip()));
                a.push("server.port", i64::from(s.port()));
            }
        }
    }
    set_peer(&mut a, conn.remote);
    let message = g.grpc_message.clone().unwrap_or_default();
    let status = match g.grpc_status {
        Some(code) => {
            let name = grpc_code_name(code);
            a.push("rpc.response.status_code", name);
            let is_err = match kind {
                SpanKind::Client => code != 0,
                SpanKind::Server => server_error(code),
            };
            if is_err {
                a.push("error.type", name);
                SpanStatus::error(message)
            } else {
                SpanStatus::unset()
            }
        }
        None => {
            // No status: the stream was reset or the connection ended before trailers.
            a.push("error.type", "_OTHER");
            SpanStatus::error(if g.reset {
                "stream reset"
            } else {
                "no grpc-status"
            })
        }
    };
    Built {
        name: name.into(),
        attributes: a,
        status,
    }
}
