//! The values handed from conntrack to the span layer.

use std::net::SocketAddr;
use std::sync::Arc;

pub use agent_protocols::Record;

/// One connection end as the kernel keys it (the `struct sock` address in CONNS and
/// SAMPLE_ALLOW) with the id that tells it from a later socket at the same address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnKey {
    pub sock: u64,
    pub conn_id: u64,
}

/// Which end of a connection the traced process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The process connected (it sends requests).
    Client,
    /// The process accepted (it answers requests).
    Server,
    /// Not known (connection predates the agent and traffic did not tell).
    Unknown,
}

/// What conntrack knows of one connection, as seen from one process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnMeta {
    /// Unique for the agent's lifetime even when fd numbers or sockets are reused.
    pub conn_id: u64,
    /// Process (tgid) that owns the socket.
    pub pid: u32,
    pub fd: i32,
    pub role: Role,
    /// None for Unix-domain sockets.
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
    /// Unix-domain socket path when known.
    pub unix_path: Option<String>,
    /// Kernel task name of the owner when the connection was seen (empty when unknown).
    pub comm: String,
}

/// One finished request/response exchange on a connection, with the thread that did the I/O.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// Shared by every exchange of one connection.
    pub conn: Arc<ConnMeta>,
    /// Server side: the thread that read the request. Client side: the thread that wrote it.
    pub tid: u32,
    pub record: Record,
    /// Number of this exchange on its connection end, from 0. Both ends of a connection
    /// capture the same exchanges, so they number them alike.
    pub seq: u64,
    /// The process had no inbound connection (server or unknown role) when this exchange
    /// completed: a client call of such a process has no parent span to wait for.
    pub pure_client: bool,
}
