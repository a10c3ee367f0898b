//! What the parsers hand to the span layer: one request/response exchange with the facts the
//! OpenTelemetry semantic conventions ask for. Strings are owned; records are produced once per
//! exchange, not per byte.

use std::sync::Arc;

use compact_str::CompactString;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProtocolKind {
    Http1,
    Http2,
    Postgres,
    Mysql,
    Redis,
}

impl ProtocolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolKind::Http1 => "http1",
            ProtocolKind::Http2 => "http2",
            ProtocolKind::Postgres => "postgresql",
            ProtocolKind::Mysql => "mysql",
            ProtocolKind::Redis => "redis",
        }
    }
}

/// One request paired with its response (or with none, when the connection ended first).
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub protocol: ProtocolKind,
    /// First byte of the request.
    pub start_ns: u64,
    /// Last byte of the response (or of the request when there was no response).
    pub end_ns: u64,
    /// Last byte of the request; lets the correlator tell which inbound request was open.
    pub request_end_ns: u64,
    /// First byte of the response (0 when none).
    pub response_start_ns: u64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub detail: Detail,
}

/// Boxed: a record moves several times on its way to a span (stitcher output, exchange,
/// hand-off between threads), and the protocol details are most of its size (a record was
/// 360 bytes with them inline, 72 boxed).
#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    Http(Box<HttpInfo>),
    Grpc(Box<GrpcInfo>),
    Sql(Box<SqlInfo>),
    Redis(Box<RedisInfo>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HttpInfo {
    // Short text (methods, most paths, versions, host names, many user agents) is stored
    // inline: no allocation per request for it.
    pub method: CompactString,
    pub path: CompactString,
    /// Without the leading `?`.
    pub query: Option<CompactString>,
    /// "1.0", "1.1", "2".
    pub version: CompactString,
    pub status: Option<u16>,
    pub host: Option<CompactString>,
    pub user_agent: Option<CompactString>,
    pub content_type: Option<String>,
    pub request_content_length: Option<u64>,
    pub response_content_length: Option<u64>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub b3: Option<String>,
    /// Headers kept because they were configured (lower-case name, value).
    pub extra_headers: Vec<(String, String)>,
    /// Upgrade/CONNECT accepted: the connection no longer speaks HTTP/1.
    pub upgraded: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct GrpcInfo {
    /// `:path` without the leading `/`, e.g. `mypkg.Greeter/SayHello`; None when HPACK state was
    /// unknown (capture started mid-connection) and the name could not be decoded.
    pub path: Option<String>,
    pub service: Option<String>,
    pub method: Option<String>,
    pub authority: Option<String>,
    pub stream_id: u32,
    pub http_status: Option<u16>,
    /// Numeric `grpc-status`.
    pub grpc_status: Option<u32>,
    pub grpc_message: Option<String>,
    pub request_messages: u32,
    pub response_messages: u32,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// True when this is plain HTTP/2 rather than gRPC (content-type not application/grpc*).
    pub plain_http2: bool,
    pub http_method: Option<String>,
    /// True when header blocks could not be decoded because the HPACK table is unknown.
    pub headers_unknown: bool,
    /// RST_STREAM or GOAWAY ended the stream.
    pub reset: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbSystem {
    Postgresql,
    Mysql,
    Mariadb,
}

impl DbSystem {
    pub fn as_str(self) -> &'static str {
        match self {
            DbSystem::Postgresql => "postgresql",
            DbSystem::Mysql => "mysql",
            DbSystem::Mariadb => "mariadb",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SqlInfo {
    pub system: DbSystem,
    /// Database name (from startup / handshake / COM_INIT_DB).
    pub database: Option<Arc<str>>,
    pub user: Option<Arc<str>>,
    pub application_name: Option<Arc<str>>,
    /// Query text with literals replaced by `?`. Shared (like the connection's names above)
    /// with every record of the statement: cloning per record was an allocation each.
    pub query_sanitized: Option<Arc<str>>,
    /// Query text as sent; only filled when the parser is configured to keep it.
    pub query_raw: Option<String>,
    /// SELECT, INSERT, ... (upper case).
    pub operation: Option<Arc<str>>,
    /// The table, when the statement names exactly one.
    pub collection: Option<Arc<str>>,
    pub rows: Option<u64>,
    /// SQLSTATE (PostgreSQL) or error number (MySQL), as a string.
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    /// Statements in a pipelined batch / multi-statement query (>= 2 when a batch).
    pub batch_size: Option<u32>,
    /// Prepared statement name or id this execution used.
    pub statement: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RedisInfo {
    /// Upper-case command, e.g. `GET`, `HSET`, `CLIENT SETNAME` keeps only `CLIENT`.
    pub command: String,
    /// First argument (usually the key); other arguments are dropped.
    pub key: Option<String>,
    /// Database index selected by SELECT on this connection, when seen.
    pub db_index: Option<u32>,
    /// Error prefix (`ERR`, `WRONGTYPE`) when the reply was an error.
    pub error_prefix: Option<String>,
    pub error_message: Option<String>,
    /// Number of commands queued in a MULTI/EXEC transaction (on the EXEC record).
    pub batch_size: Option<u32>,
}

/// Appends one finished exchange to a stitcher's output. Most stitcher calls finish one
/// exchange, so the first push reserves room for exactly one: the default growth would reserve
/// four records (over a kilobyte, past the allocator's fast per-thread cache) on every call.
pub(crate) fn push_record(out: &mut Vec<Record>, r: Record) {
    if out.capacity() == 0 {
        out.reserve_exact(1);
    }
    out.push(r);
}
