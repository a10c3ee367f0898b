//! Exchange -> span: names, kinds and attributes per the OpenTelemetry semantic conventions
//! (see `shared/semconv.md`). Parent links and trace ids are the correlator's job; this stage
//! only fills what one exchange tells.
//!
//! Exchanges whose role is `Unknown` are skipped (counted by the caller): without knowing which
//! end the traced process is, the span kind and the peer/server attributes would be guesses that
//! can point at the wrong service. Database exchanges seen from the database *server* process
//! are skipped too: the conventions define database spans on the client side only.

mod attrs;
pub mod clock;
mod db;
mod grpc;
mod http;
pub mod redact;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use agent_protocols::Detail;
use compact_str::{CompactString, format_compact};

use crate::discovery::Resource;
use crate::model::{Exchange, Role};
pub use attrs::{AsAttr, AttrRef, AttrValue, Attributes};
pub use clock::ClockOffset;

/// Room for a span's attributes plus the correlator's link attributes without regrowing.
pub(crate) const SPAN_ATTR_CAPACITY: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanKind {
    Server,
    Client,
}

impl SpanKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Server => "SERVER",
            SpanKind::Client => "CLIENT",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusCode {
    Unset,
    Ok,
    Error,
}

impl StatusCode {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusCode::Unset => "UNSET",
            StatusCode::Ok => "OK",
            StatusCode::Error => "ERROR",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SpanStatus {
    pub code: StatusCode,
    /// Only set for `Error`.
    pub message: String,
}

impl SpanStatus {
    pub fn unset() -> Self {
        SpanStatus {
            code: StatusCode::Unset,
            message: String::new(),
        }
    }
    pub fn error(message: impl Into<String>) -> Self {
        SpanStatus {
            code: StatusCode::Error,
            message: message.into(),
        }
    }
}

/// Timing on CLOCK_MONOTONIC, kept for the correlator (same clock for every process on the node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MonoTiming {
    pub start_ns: u64,
    pub end_ns: u64,
    pub request_end_ns: u64,
    /// 0 when there was no response.
    pub response_start_ns: u64,
}

/// Facts the correlator links on; not exported.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkInput {
    pub conn_id: u64,
    /// Number of the exchange on its connection end (see [`crate::model::Exchange::seq`]).
    pub seq: u64,
    pub tid: u32,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// HTTP/2 stream id: on one connection both ends see the same id, so it orders exchanges
    /// better than a count when streams are multiplexed.
    pub stream_id: Option<u32>,
    pub timing: MonoTiming,
    /// Raw W3C `traceparent` / `tracestate` of the request.
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// A client call of a process with no inbound connection: a root as soon as it arrives.
    pub pure_client: bool,
}

/// One finished span, before and after correlation (ids are filled by the correlator).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanData {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent_span_id: Option<[u8; 8]>,
    /// W3C tracestate carried over from an inbound request.
    pub trace_state: Option<String>,
    /// Borrowed when it is a fixed name (HTTP method, common Redis command).
    pub name: Cow<'static, str>,
    pub kind: SpanKind,
    /// Unix epoch ns.
    pub start_unix_ns: u64,
    pub end_unix_ns: u64,
    pub attributes: Attributes,
    pub status: SpanStatus,
    /// Traced process; also the resource key.
    pub pid: u32,
    pub resource: Arc<Resource>,
    pub link: LinkInput,
}

impl SpanData {
    pub fn duration_ns(&self) -> u64 {
        self.end_unix_ns.saturating_sub(self.start_unix_ns)
    }
    pub fn service_name(&self) -> &str {
        self.resource.service_name()
    }
}

/// Released spans, as they travel from the correlator to the exporters. Boxed on purpose:
/// they were held for the linking window and are cache-cold by then, and moving whole spans
/// out of their boxes (and again into every batch) showed in profiles.
#[allow(clippy::vec_box)]
pub type SpanBatch = Vec<Box<SpanData>>;

/// Span-building options.
#[derive(Debug, Clone, Default)]
pub struct SpanConfig {
    /// Put the raw query text in `db.query.text` when the parser kept it (off: sanitized only).
    pub db_raw_query: bool,
}

/// Why an exchange produced no span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    UnknownRole,
    DbServerSide,
}

/// Build the span for one exchange. Ids are zero; the correlator assigns them.
pub fn build_span(
    ex: &Exchange,
    resource: Arc<Resource>,
    clock: &ClockOffset,
    cfg: &SpanConfig,
) -> Result<SpanData, SkipReason> {
    let kind = match ex.conn.role {
        Role::Client => SpanKind::Client,
        Role::Server => SpanKind::Server,
        Role::Unknown => return Err(SkipReason::UnknownRole),
    };
    let rec = &ex.record;
    let mut link = LinkInput {
        conn_id: ex.conn.conn_id,
        seq: ex.seq,
        tid: ex.tid,
        local: ex.conn.local,
        remote: ex.conn.remote,
        stream_id: None,
        timing: MonoTiming {
            start_ns: rec.start_ns,
            end_ns: rec.end_ns.max(rec.start_ns),
            request_end_ns: rec.request_end_ns,
            response_start_ns: rec.response_start_ns,
        },
        traceparent: None,
        tracestate: None,
        pure_client: ex.pure_client,
    };
    let built = match &rec.detail {
        Detail::Http(h) => {
            link.traceparent = h.traceparent.clone();
            link.tracestate = h.tracestate.clone();
            http::build_http(kind, &ex.conn, h)
        }
        Detail::Grpc(g) => {
            link.traceparent = g.traceparent.clone();
            link.tracestate = g.tracestate.clone();
            link.stream_id = Some(g.stream_id);
            if g.plain_http2 {
                http::build_http2_plain(kind, &ex.conn, g)
            } else {
                grpc::build_grpc(kind, &ex.conn, g)
            }
        }
        Detail::Sql(s) => {
            if kind == SpanKind::Server {
                return Err(SkipReason::DbServerSide);
            }
            db::build_sql(&ex.conn, s, cfg)
        }
        Detail::Redis(r) => {
            if kind == SpanKind::Server {
                return Err(SkipReason::DbServerSide);
            }
            db::build_redis(&ex.conn, r)
        }
    };
    Ok(SpanData {
        trace_id: [0; 16],
        span_id: [0; 8],
        parent_span_id: None,
        trace_state: None,
        name: built.name,
        kind,
        start_unix_ns: clock.to_unix_ns(link.timing.start_ns),
        end_unix_ns: clock.to_unix_ns(link.timing.end_ns),
        attributes: built.attributes,
        status: built.status,
        pid: ex.conn.pid,
        resource,
        link,
    })
}

/// What a protocol builder returns.
pub(crate) struct Built {
    pub name: Cow<'static, str>,
    pub attributes: Attributes,
    pub status: SpanStatus,
}

/// An address as text; IPv4 (nearly every span) without the formatting machinery, which
/// showed in profiles at tens of thousands of spans per second, and inline (no allocation).
pub(crate) fn ip_string(ip: std::net::IpAddr) -> CompactString {
    match ip {
        std::net::IpAddr::V4(v4) => {
            // Digits into a stack buffer first: pushing chars one by one onto the inline
            // string re-checks its capacity each time and showed in profiles.
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                if octet >= 100 {
                    buf[n] = b'0' + octet / 100;
                    n += 1;
                }
                if octet >= 10 {
                    buf[n] = b'0' + octet / 10 % 10;
                    n += 1;
                }
                buf[n] = b'0' + octet % 10;
                n += 1;
            }
            // Only ASCII digits and dots were written, so the UTF-8 check cannot fail.
            CompactString::from(std::str::from_utf8(&buf[..n]).unwrap_or_default())
        }
        std::net::IpAddr::V6(v6) => format_compact!("{v6}"),
    }
}

/// `network.peer.*` from the remote socket address.
pub(crate) fn set_peer(attrs: &mut Attributes, remote: Option<SocketAddr>) {
    if let Some(r) = remote {
        set_peer_text(attrs, &ip_string(r.ip()), r.port());
    }
}

/// `network.peer.*` from an address already written as text (builders that also put the
/// peer's address in another attribute format it once).
pub(crate) fn set_peer_text(attrs: &mut Attributes, ip: &str, port: u16) {
    attrs.push("network.peer.address", ip);
    attrs.push("network.peer.port", i64::from(port));
}

/// Split `host[:port]` (IPv6 in brackets allowed) into host and optional port; borrows.
pub(crate) fn split_host_port(s: &str) -> (&str, Option<u16>) {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host, port);
        }
        return (s, None);
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse::<u16>() {
            Ok(port) => (h, Some(port)),
            Err(_) => (s, None),
        },
        _ => (s, None),
    }
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests;
