//! PostgreSQL frames (one protocol message each, or a message plus skipped rows) and the
//! per-connection state.

use std::collections::HashMap;
use std::sync::Arc;

use crate::sql::{Analyzed, ShapeCache};

/// Prepared statements and portals remembered per connection, each.
pub const MAX_NAMED: usize = 256;

/// Front-end (client) messages that take part in request/response pairing.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Simple query `Q` (possibly several statements).
    Query { sql: Arc<Analyzed> },
    /// `P`: statement name ("" for unnamed) and text.
    Parse { name: String, sql: Arc<Analyzed> },
    /// `B`: portal bound to a statement; text when the statement is known.
    Bind {
        statement: String,
        sql: Option<Arc<Analyzed>>,
    },
    /// `D` (describe statement or portal).
    Describe,
    /// `E`: runs a portal; statement name and text when known.
    Execute {
        statement: Option<String>,
        sql: Option<Arc<Analyzed>>,
    },
    /// `S`: ends an extended-protocol group; answered by ReadyForQuery.
    Sync,
    /// `F` (fast-path function call): answered by FunctionCallResponse + ReadyForQuery; ends a
    /// group, reported by no record.
    FunctionCall,
}

/// Back-end (server) messages that take part in pairing.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    ParseComplete,
    BindComplete,
    /// RowDescription or NoData (answers Describe; starts a simple-query result).
    Described,
    /// CommandComplete: tag (e.g. "INSERT 0 1") and its row count (else the DataRows seen).
    Command {
        tag: String,
        rows: Option<u64>,
    },
    EmptyQuery,
    /// PortalSuspended: Execute hit its row limit.
    Suspended {
        rows: u64,
    },
    Error {
        code: Option<String>,
        message: Option<String>,
    },
    /// ReadyForQuery with its transaction status byte.
    Ready {
        status: u8,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Req(Request),
    Resp(Response),
}

/// A message (plus the DataRows, notices and flushes skipped just before it in the same
/// direction).
pub type Frame = crate::SizedFrame<Msg>;

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Normal message flow (also when capture started mid-connection).
    #[default]
    Normal,
    /// SSLRequest sent: the server answers with one byte, 'S' or 'N'.
    SslRequested,
    /// GSSENCRequest sent: the server answers with one byte, 'G' or 'N'.
    GssRequested,
    /// Authentication in progress: messages until ReadyForQuery are not queries.
    Auth,
    /// Encryption accepted: the rest is TLS/GSS, nothing to parse.
    Encrypted,
}

/// A prepared statement or portal: the statement's name and text.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub statement: String,
    pub sql: Arc<Analyzed>,
}

#[derive(Debug, Default)]
pub struct State {
    pub phase: Phase,
    pub user: Option<Arc<str>>,
    pub database: Option<Arc<str>>,
    pub application_name: Option<Arc<str>>,
    pub keep_raw_query: bool,
    /// Named (and the unnamed, "") statements by name.
    pub statements: HashMap<String, Arc<Analyzed>>,
    /// Portals by name, with the statement they were bound to.
    pub portals: HashMap<String, Prepared>,
    /// DataRows since the last response frame.
    pub rows: u64,
    /// Skipped bytes not yet attributed to a frame, per direction.
    pub skipped_req: u64,
    pub skipped_resp: u64,
    /// Maps or other bounded structures that dropped entries.
    pub evictions: u64,
    /// Shapes of recent statements (see [`ShapeCache`]).
    pub shapes: ShapeCache,
}

/// Inserts into a bounded map, evicting an arbitrary entry when full.
pub fn bounded_insert<V>(map: &mut HashMap<String, V>, key: String, v: V, evictions: &mut u64) {
    if map.len() >= MAX_NAMED
        && !map.contains_key(&key)
        && let Some(k) = map.keys().next().cloned()
    {
        map.remove(&k);
        *evictions += 1;
    }
    map.insert(key, v);
}
