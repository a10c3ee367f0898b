//! Redis frames and per-connection state.

use crate::Timed;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub msg: Message,
    /// Wire size of the command or reply.
    pub bytes: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Command(Command),
    Reply(Reply),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Command {
    /// Upper case.
    pub command: String,
    /// First argument, unless the command's first argument is not a key or is sensitive.
    pub key: Option<String>,
    /// Arguments after the command name.
    pub args: u32,
    /// The database a SELECT asks for.
    pub select_db: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+...` (first bytes kept: `OK`, `QUEUED`, `PONG`).
    Status(String),
    /// `-PREFIX message` or `!` blob error.
    Error {
        prefix: String,
        message: String,
    },
    /// Array or set, with its first element when that is a short string (lower case) and its
    /// third when an integer: enough to recognise pub/sub messages and confirmations.
    Array {
        first: Option<String>,
        third: Option<i64>,
    },
    /// RESP3 out-of-band push (`>`), never a reply to a command.
    Push {
        first: Option<String>,
        third: Option<i64>,
    },
    Other,
}

impl Timed for Frame {
    fn set_timing(&mut self, start_ns: u64, end_ns: u64) {
        self.start_ns = start_ns;
        self.end_ns = end_ns;
    }
    fn start_ns(&self) -> u64 {
        self.start_ns
    }
}

#[derive(Debug, Default)]
pub struct State {
    /// Set by SELECT (and RESET); carried by every later record.
    pub db_index: Option<u32>,
    pub in_multi: bool,
    /// Commands answered `+QUEUED` since MULTI.
    pub queued: u32,
    /// Subscribed to at least one channel or pattern (pub/sub mode).
    pub subscribed: bool,
    /// Further confirmations of a multi-channel (UN)SUBSCRIBE still to come.
    pub extra_confirms: u32,
    /// Elements of a big command / reply, handed out early, still to skip per direction.
    pub req_skip: u64,
    pub resp_skip: u64,
    /// Command frames parsed but not yet stitched.
    pub outstanding_requests: u64,
}
