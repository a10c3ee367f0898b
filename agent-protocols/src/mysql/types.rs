//! MySQL/MariaDB frames (one command, or one response unit) and the per-connection state.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use crate::DbSystem;
use crate::sql::{Analyzed, ShapeCache};

/// Prepared statements remembered per connection.
pub const MAX_STATEMENTS: usize = 256;
/// Commands waiting for their response (pipelining is rare in MySQL clients).
pub const MAX_EXPECT: usize = 64;

pub const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
pub const CLIENT_PROTOCOL_41: u32 = 0x200;
pub const CLIENT_SSL: u32 = 0x800;
pub const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
pub const CLIENT_PLUGIN_AUTH: u32 = 0x80000;
pub const CLIENT_CONNECT_ATTRS: u32 = 0x10_0000;
pub const CLIENT_PLUGIN_AUTH_LENENC: u32 = 0x20_0000;
pub const SERVER_MORE_RESULTS_EXISTS: u16 = 0x8;

#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// COM_QUERY.
    Query { sql: Arc<Analyzed> },
    /// COM_STMT_PREPARE.
    Prepare { sql: Arc<Analyzed> },
    /// COM_STMT_EXECUTE; text when the PREPARE was seen.
    Execute {
        stmt_id: u32,
        sql: Option<Arc<Analyzed>>,
    },
    /// Commands answered by OK/ERR without SQL text: PING, INIT_DB (as USE), RESET_CONNECTION...
    Simple { operation: &'static str },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Ok {
        affected_rows: u64,
        more: bool,
    },
    Err {
        code: u16,
        sqlstate: Option<String>,
        message: String,
    },
    /// Column count of a result set: its first packet.
    ResultStart,
    /// EOF/OK closing a result set's rows.
    ResultEnd {
        rows: u64,
        more: bool,
    },
    PrepareOk {
        stmt_id: u32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Msg {
    Req(Request),
    Resp(Response),
}

/// A packet (plus the column definitions and rows skipped before it in the same direction).
pub type Frame = crate::SizedFrame<Msg>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Commands and responses (also when capture started mid-connection).
    #[default]
    Command,
    /// Server greeting seen; the client's HandshakeResponse comes next.
    Handshake,
    /// Authentication exchange until the server's OK/ERR.
    Auth,
    /// SSL requested: the rest is TLS.
    Tls,
}

/// What the response to a command looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// OK, ERR or a text result set (COM_QUERY).
    Query,
    /// PREPARE_OK + definitions, or ERR.
    Prepare,
    /// OK, ERR or a binary result set.
    Execute,
    /// OK or ERR.
    Simple,
    /// Packets up to EOF/ERR, not reported (COM_FIELD_LIST).
    UntilEof,
    /// One packet, not reported (COM_STATISTICS).
    One,
}

/// Where the response parser is inside a multi-packet response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RespPhase {
    #[default]
    Idle,
    /// Definition packets left in this block, how many in the next block, then rows or idle.
    Defs {
        left: u32,
        next_block: u32,
        rows_after: bool,
        expect: Expect,
    },
    /// Right after a block of definitions: an EOF packet may follow (not with DEPRECATE_EOF).
    MaybeEof {
        next_block: u32,
        rows_after: bool,
        expect: Expect,
    },
    Rows {
        rows: u64,
        expect: Expect,
    },
    UntilEof,
}

#[derive(Debug, Default)]
pub struct State {
    pub phase: Phase,
    pub system: Option<DbSystem>,
    pub server_version: Option<String>,
    pub user: Option<Arc<str>>,
    pub database: Option<Arc<str>>,
    pub application_name: Option<Arc<str>>,
    pub client_caps: Option<u32>,
    pub keep_raw_query: bool,
    pub statements: HashMap<u32, Arc<Analyzed>>,
    /// Texts of COM_STMT_PREPAREs waiting for their PREPARE_OK (which carries the id).
    pub pending_prepare: VecDeque<Arc<Analyzed>>,
    pub expect: VecDeque<Expect>,
    pub resp: RespPhase,
    /// Expected sequence id of the next response packet inside a multi-packet response.
    pub resp_seq: u8,
    /// A packet of 0xffffff bytes was seen: the next packet continues it.
    pub req_continues: bool,
    pub resp_continues: bool,
    pub skipped_req: u64,
    pub skipped_resp: u64,
    pub evictions: u64,
    /// Shapes of recent statements (see [`ShapeCache`]).
    pub shapes: ShapeCache,
}

impl State {
    pub fn system(&self) -> DbSystem {
        self.system.unwrap_or(DbSystem::Mysql)
    }

    pub fn push_expect(&mut self, e: Expect) {
        if self.expect.len() >= MAX_EXPECT {
            self.expect.pop_front();
            self.evictions += 1;
        }
        self.expect.push_back(e);
    }

    pub fn remember(&mut self, id: u32, sql: Arc<Analyzed>) {
        if self.statements.len() >= MAX_STATEMENTS
            && !self.statements.contains_key(&id)
            && let Some(k) = self.statements.keys().next().copied()
        {
            self.statements.remove(&k);
            self.evictions += 1;
        }
        self.statements.insert(id, sql);
    }
}
