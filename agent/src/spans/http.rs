//! HTTP server/client spans (stable HTTP semantic conventions).

use agent_protocols::{GrpcInfo, HttpInfo};
use compact_str::ToCompactString;

use super::redact::redact_query;
use super::{Attributes, Built, SpanKind, SpanStatus, ip_string, set_peer_text, split_host_port};
use crate::model::ConnMeta;

const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY",
];

/// The request fields an HTTP span needs, common to HTTP/1 and plain HTTP/2.
struct Req<'a> {
    method: &'a str,
    path: &'a str,
    query: Option<&'a str>,
    version: &'a str,
    status: Option<u16>,
    host: Option<&'a str>,
    user_agent: Option<&'a str>,
}

pub(crate) fn build_http(kind: SpanKind, conn: &ConnMeta, h: &HttpInfo) -> Built {
    build(
        kind,
        conn,
        &Req {
            method: &h.method,
            path: &h.path,
            query: h.query.as_deref(),
            version: &h.version,
            status: h.status,
            host: h.host.as_deref(),
            user_agent: h.user_agent.as_deref(),
        },
    )
}

/// HTTP/2 that is not gRPC.
pub(crate) fn build_http2_plain(kind: SpanKind, conn: &ConnMeta, g: &GrpcInfo) -> Built {
    let full = g.path.as_deref().unwrap_or("/");
    let (path, query) = match full.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (full, None),
    };
    build(
        kind,
        conn,
        &Req {
            method: g.http_method.as_deref().unwrap_or(""),
            path,
            query,
            version: "2",
            status: g.http_status,
            host: g.authority.as_deref(),
            user_agent: None,
        },
    )
}

fn build(kind: SpanKind, conn: &ConnMeta, r: &Req<'_>) -> Built {
    let mut a = Attributes::with_capacity(super::SPAN_ATTR_CAPACITY);
    let known = KNOWN_METHODS.iter().copied().find(|m| *m == r.method);
    let name = known.unwrap_or("HTTP");
    match known {
        Some(m) => a.push("http.request.method", m),
        None => {
            a.push("http.request.method", "_OTHER");
            a.push("http.request.method_original", r.method);
        }
    }
    if !r.version.is_empty() {
        a.push("network.protocol.version", r.version);
    }
    let query = r.query.filter(|q| !q.is_empty()).map(redact_query);
    let path = if r.path.is_empty() { "/" } else { r.path };
    // The authority: Host header, else the server socket address.
    let server_sock = match kind {
        SpanKind::Server => conn.local,
        SpanKind::Client => conn.remote,
    };
    // The peer's address as text, formatted once: it is also client.address (server spans)
    // or the server's address (client spans without a Host header).
    let peer_ip = conn.remote.map(|r| ip_string(r.ip()));
    let local_ip;
    let (server_addr, server_port) = match r.host.filter(|h| !h.is_empty()) {
        Some(h) => {
            let (host, port) = split_host_port(h);
            (Some(host), Some(port.unwrap_or(80)))
        }
        None => {
            // A client's server is its peer, already formatted.
            let text = match kind {
                SpanKind::Server => {
                    local_ip = server_sock.map(|s| ip_string(s.ip()));
                    local_ip.as_deref()
                }
                SpanKind::Client => peer_ip.as_deref(),
            };
            (text, server_sock.map(|s| s.port()))
        }
    };
    match kind {
        SpanKind::Server => {
            a.push("url.path", path);
            a.push("url.scheme", "http");
            if let Some(q) = &query {
                a.push("url.query", q);
            }
            if r.host.is_some() {
                if let Some(h) = server_addr {
                    a.push("server.address", h);
                }
                if let Some(p) = server_port {
                    a.push("server.port", i64::from(p));
                }
            }
            if let Some(ip) = &peer_ip {
                a.push("client.address", ip);
            }
        }
        SpanKind::Client => {
            // url.full = http://authority/path?query, written in parts (no formatting): the
            // port only when not 80, an IPv6 host in brackets, "localhost" when unknown.
            let host = server_addr.unwrap_or("localhost");
            let (open, close) = if host.contains(':') {
                ("[", "]")
            } else {
                ("", "")
            };
            let mut port_text = itoa::Buffer::new();
            let (colon, port) = match (server_addr, server_port) {
                (Some(_), Some(p)) if p != 80 => (":", port_text.format(p)),
                _ => ("", ""),
            };
            let (qmark, q) = match &query {
                Some(q) => ("?", q.as_ref()),
                None => ("", ""),
            };
            a.push_concat(
                "url.full",
                &["http://", open, host, close, colon, port, path, qmark, q],
            );
            if let Some(h) = server_addr {
                a.push("server.address", h);
            }
            if let Some(p) = server_port {
                a.push("server.port", i64::from(p));
            }
        }
    }
    if let (Some(remote), Some(ip)) = (conn.remote, &peer_ip) {
        set_peer_text(&mut a, ip, remote.port());
    }
    if let Some(ua) = r.user_agent {
        a.push("user_agent.original", ua);
    }
    let error_floor = match kind {
        SpanKind::Server => 500,
        SpanKind::Client => 400,
    };
    let status = match r.status {
        Some(code) => {
            a.push("http.response.status_code", i64::from(code));
            if code >= error_floor {
                a.push("error.type", code.to_compact_string());
                SpanStatus::error(String::new())
            } else {
                SpanStatus::unset()
            }
        }
        None => {
            a.push("error.type", "_OTHER");
            SpanStatus::error("no response")
        }
    };
    Built {
        name: name.into(),
        attributes: a,
        status,
    }
}
