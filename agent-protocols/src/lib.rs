//! Incremental, I/O-free protocol parsers.
//!
//! Each protocol lives in its own module behind [`Protocol`]: `parse` turns the bytes of one
//! direction of one connection into frames, `stitch` pairs request frames with response frames
//! into [`Record`]s. [`driver::Driver`] is the one generic loop (buffering, gaps, resync, caps)
//! shared by every protocol, and [`stream::Stream`] dispatches over protocols with an enum.

pub mod driver;
pub mod record;
pub mod sql;
pub mod stream;

pub mod http1;
pub mod http2;
pub mod mysql;
pub mod postgres;
pub mod redis;

#[cfg(test)]
pub mod testutil;

use std::collections::VecDeque;

pub use record::*;

/// Which side of the exchange bytes come from: the party that sends requests (the client) or the
/// party that answers them (the server). Conntrack maps ingress/egress plus role onto this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    Request,
    Response,
}

/// How sure detection is that a byte stream speaks a protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confidence {
    No,
    /// Could be this protocol, but the bytes are also plausible for others.
    Maybe,
    /// A signature only this protocol produces (a method + version line, a preface, a magic).
    Certain,
}

/// The result of one parse step. `Partial` consumes nothing: call again with more bytes.
///
/// `consumed` may exceed the buffer length: the frame's tail (e.g. an HTTP body longer than the
/// capture) is skipped by the driver as it arrives, including bytes lost to truncated capture.
#[derive(Debug)]
pub enum Parsed<F> {
    Frame { frame: F, consumed: usize },
    Skip { consumed: usize },
    Partial,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("not this protocol: {0}")]
    Invalid(&'static str),
    #[error("frame of {size} bytes is over the {max}-byte limit")]
    TooLarge { size: usize, max: usize },
}

/// Timing the driver stamps on every frame: first byte seen, last byte seen.
pub trait Timed {
    fn set_timing(&mut self, start_ns: u64, end_ns: u64);
    fn start_ns(&self) -> u64;
}

/// A frame that is one message plus its wire size (including bytes skipped just before it in
/// the same direction), stamped with timing by the driver. Shared by the SQL parsers.
#[derive(Debug, Clone, PartialEq)]
pub struct SizedFrame<M> {
    pub msg: M,
    pub size: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl<M> SizedFrame<M> {
    pub fn new(msg: M, size: u64) -> Self {
        Self {
            msg,
            size,
            start_ns: 0,
            end_ns: 0,
        }
    }
}

/// Drops the answers that ended before `since` (when the request they would be paired with
/// started): they answer something the capture lost. They are a prefix of the queue, since
/// frames arrive in time order. Shared by the SQL stitchers.
pub fn drop_answers_ended_before<M>(answers: &mut VecDeque<SizedFrame<M>>, since: u64) {
    while answers.front().is_some_and(|f| f.end_ns < since) {
        answers.pop_front();
    }
}

impl<M> Timed for SizedFrame<M> {
    fn set_timing(&mut self, start_ns: u64, end_ns: u64) {
        self.start_ns = start_ns;
        self.end_ns = end_ns;
    }
    fn start_ns(&self) -> u64 {
        self.start_ns
    }
}

pub trait Protocol: 'static {
    /// Small and owned; one request or one response message.
    type Frame: Timed + std::fmt::Debug + Send;
    /// Per-connection state (startup phase, HPACK tables, prepared statements, ...).
    type State: Default + Send;
    const KIND: ProtocolKind;

    /// Stateless and cheap; looks at the first bytes of one direction of a connection.
    fn detect(dir: Dir, head: &[u8]) -> Confidence;
    /// First offset at or after `from` where a frame plausibly starts (resync after lost bytes).
    fn find_boundary(dir: Dir, buf: &[u8], from: usize) -> Option<usize>;
    fn parse(dir: Dir, buf: &[u8], st: &mut Self::State)
    -> Result<Parsed<Self::Frame>, ParseError>;
    /// Pairs frames in order; leaves unmatched frames queued; returns finished records.
    fn stitch(
        reqs: &mut VecDeque<Self::Frame>,
        resps: &mut VecDeque<Self::Frame>,
        st: &mut Self::State,
    ) -> Vec<Record>;

    /// Applies configuration to a new connection's state.
    fn configure(_st: &mut Self::State, _cfg: &ParserConfig) {}

    /// Bytes of `dir` were lost (not captured, dropped over the buffer cap, or resynced past):
    /// state that depends on seeing every byte (e.g. HPACK tables) must not be trusted as is.
    fn on_gap(_dir: Dir, _st: &mut Self::State) {}

    /// The connection ended; report what is still worth reporting (e.g. unanswered requests).
    fn on_close(
        _reqs: &mut VecDeque<Self::Frame>,
        _resps: &mut VecDeque<Self::Frame>,
        _st: &mut Self::State,
    ) -> Vec<Record> {
        Vec::new()
    }
}

/// Settings shared by all parsers of one agent.
#[derive(Debug, Clone)]
pub struct ParserConfig {
    /// Cap of buffered bytes per direction while a frame is incomplete.
    pub max_buffer: usize,
    /// Cap of frames waiting for their counterpart per direction.
    pub max_queued_frames: usize,
    /// Keep SQL text as sent (with literals) in `SqlInfo::query_raw`.
    pub keep_raw_query: bool,
    /// Extra HTTP headers to keep (lower-case names).
    pub extra_http_headers: Vec<String>,
}

impl Default for ParserConfig {
    fn default() -> Self {
        Self {
            max_buffer: 64 * 1024,
            max_queued_frames: 1024,
            keep_raw_query: false,
            extra_http_headers: Vec::new(),
        }
    }
}
