//! Frames the HTTP/2 parser hands to the stitcher, and the header fields it keeps.

use crate::Timed;

/// Client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Length of the frame header.
pub const FRAME_HEADER_LEN: usize = 9;
/// Largest frame length the 24-bit length field can carry (also the largest legal
/// SETTINGS_MAX_FRAME_SIZE).
pub const MAX_FRAME_LEN: usize = (1 << 24) - 1;
/// Default SETTINGS_MAX_FRAME_SIZE; DATA frames up to this size are waited for in full.
pub const DEFAULT_MAX_FRAME_SIZE: usize = 16_384;
/// Largest header block (HEADERS + CONTINUATION payloads) decoded; bigger blocks are skipped
/// and the HPACK decoder of that direction restarts empty.
pub const MAX_HEADER_BLOCK: usize = 32 * 1024;
/// Largest decoded header list (RFC 9113 §6.5.2 accounting: name + value + 32 per field)
/// from which fields are kept; decoding goes on past it so the HPACK table stays in sync.
pub const MAX_HEADER_LIST: usize = 64 * 1024;
/// Longest header value kept (longer values are cut at a character boundary).
pub const MAX_VALUE_LEN: usize = 1024;
/// HPACK's initial dynamic table size (RFC 7541 §4.2, SETTINGS_HEADER_TABLE_SIZE default).
pub const DEFAULT_HPACK_TABLE: u32 = 4096;
/// Largest HPACK dynamic table a decoder accepts (memory bound per direction).
pub const MAX_HPACK_TABLE: usize = 64 * 1024;
/// Open streams assembled per connection; the oldest is dropped beyond it.
pub const MAX_OPEN_STREAMS: usize = 1024;

pub const TYPE_DATA: u8 = 0;
pub const TYPE_HEADERS: u8 = 1;
pub const TYPE_PRIORITY: u8 = 2;
pub const TYPE_RST_STREAM: u8 = 3;
pub const TYPE_SETTINGS: u8 = 4;
pub const TYPE_PUSH_PROMISE: u8 = 5;
pub const TYPE_PING: u8 = 6;
pub const TYPE_GOAWAY: u8 = 7;
pub const TYPE_WINDOW_UPDATE: u8 = 8;
pub const TYPE_CONTINUATION: u8 = 9;

pub const FLAG_END_STREAM: u8 = 0x1;
pub const FLAG_ACK: u8 = 0x1;
pub const FLAG_END_HEADERS: u8 = 0x4;
pub const FLAG_PADDED: u8 = 0x8;
pub const FLAG_PRIORITY: u8 = 0x20;

/// The header fields a record needs, taken from one decoded header block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderFields {
    pub method: Option<String>,
    pub path: Option<String>,
    pub authority: Option<String>,
    pub status: Option<u16>,
    pub content_type: Option<String>,
    pub grpc_status: Option<u32>,
    /// Percent-decoded.
    pub grpc_message: Option<String>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    /// `te: trailers` (sent by gRPC clients).
    pub te_trailers: bool,
    /// Some fields of the block referenced HPACK table entries this decoder never saw (capture
    /// started mid-connection or lost bytes): the fields above are right, but others may be
    /// missing.
    pub unknown: bool,
}

/// What one parsed unit carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameKind {
    /// HEADERS plus its CONTINUATION frames. `fields` is None when the block could not be
    /// decoded at all (too large, corrupt).
    Headers {
        fields: Option<Box<HeaderFields>>,
        end_stream: bool,
    },
    /// `messages`: gRPC length-prefixed messages that start in this frame's payload;
    /// `grpc_framed`: the stream's payload so far is valid gRPC framing (flag bytes 0/1, and at
    /// END_STREAM a message boundary).
    Data {
        payload_len: u32,
        messages: u32,
        grpc_framed: bool,
        end_stream: bool,
    },
    RstStream {
        error_code: u32,
    },
    GoAway {
        last_stream_id: u32,
        error_code: u32,
    },
}

/// One stream-level unit: a header block, a DATA frame, RST_STREAM or GOAWAY (stream 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub stream_id: u32,
    pub kind: FrameKind,
    /// Bytes on the wire, frame headers included.
    pub wire_len: u64,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Frame {
    pub fn new(stream_id: u32, kind: FrameKind, wire_len: u64) -> Self {
        Self {
            stream_id,
            kind,
            wire_len,
            start_ns: 0,
            end_ns: 0,
        }
    }
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
