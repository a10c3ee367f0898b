//! HTTP/1 frames and per-connection state.

use std::collections::VecDeque;

use compact_str::CompactString;

use crate::Timed;

/// Most request methods remembered while their responses are outstanding.
pub const MAX_PENDING_METHODS: usize = 1024;

/// One parsed message head (request or response), or the end of a chunked body that was
/// streamed after its head was already handed out.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub msg: Message,
    /// Bytes of the start line and headers (including the blank line).
    pub head_bytes: u64,
    pub body: Body,
    pub start_ns: u64,
    pub end_ns: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request(Box<RequestHead>),
    Response(ResponseHead),
    /// Last chunk of a chunked body whose head was emitted earlier (see [`Body::Chunked`]).
    BodyEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// The whole body is known: `wire` bytes on the wire, `data` bytes of payload (chunked
    /// framing removed).
    Done { wire: u64, data: u64 },
    /// The chunked body continues; a [`Message::BodyEnd`] frame carries its totals.
    Chunked,
    /// The body runs until the connection closes (response without length).
    UntilClose,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestHead {
    pub method: CompactString,
    pub path: CompactString,
    pub query: Option<CompactString>,
    pub version: &'static str,
    pub host: Option<CompactString>,
    pub user_agent: Option<CompactString>,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub b3: Option<String>,
    pub extra_headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResponseHead {
    pub version: &'static str,
    pub status: u16,
    pub content_length: Option<u64>,
    /// 101 Switching Protocols or a 2xx answer to CONNECT: HTTP/1 ends here.
    pub upgraded: bool,
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

/// What a response parser must know about the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    Head,
    Connect,
    Other,
}

/// Progress through a chunked body streamed chunk by chunk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkProgress {
    pub wire: u64,
    pub data: u64,
}

#[derive(Debug, Default)]
pub struct State {
    /// Methods of parsed requests whose final response has not been parsed yet.
    pub methods: VecDeque<MethodKind>,
    /// Request frames parsed but not yet stitched (some may still be skipping their body).
    pub outstanding_requests: u64,
    pub extra_headers: Vec<String>,
    pub req_chunk: Option<ChunkProgress>,
    pub resp_chunk: Option<ChunkProgress>,
    /// Response body running until close: captured bytes counted so far.
    pub close_body: Option<u64>,
    /// Bytes of interim (1xx) responses, counted into the final response.
    pub interim_bytes: u64,
    /// A request asked to switch protocols and no final response has been seen yet.
    pub upgrade_requested: bool,
    /// The connection switched protocols: nothing more is HTTP/1.
    pub upgraded: bool,
}
