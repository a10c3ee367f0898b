//! The 9-byte frame header: parsing, and the plausibility checks detection and resync use.

use super::types::*;
use crate::{Confidence, Dir};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    /// Reserved bit as sent (must be clear; receivers ignore it).
    pub reserved: bool,
    pub stream_id: u32,
}

impl FrameHeader {
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let h: &[u8; FRAME_HEADER_LEN] = buf.get(..FRAME_HEADER_LEN)?.try_into().ok()?;
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let sid = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
        Some(Self {
            len,
            kind: h[3],
            flags: h[4],
            reserved: sid & 0x8000_0000 != 0,
            stream_id: sid & 0x7fff_ffff,
        })
    }

    /// Bytes of the whole frame, header included.
    pub fn total(&self) -> usize {
        FRAME_HEADER_LEN + self.len
    }

    /// Could this header start a frame sent in `dir`? Strict: known type, reserved bit clear,
    /// length within the default maximum and fixed where the type fixes it, stream id zero or
    /// not as the type requires, streams the client opens odd.
    pub fn plausible(&self, dir: Dir) -> bool {
        if self.reserved || self.len > DEFAULT_MAX_FRAME_SIZE {
            return false;
        }
        let sid = self.stream_id;
        let client_stream = sid % 2 == 1;
        match self.kind {
            TYPE_DATA | TYPE_HEADERS => {
                sid != 0 && (client_stream || dir == Dir::Response) && self.flags & !0x2d == 0
            }
            TYPE_CONTINUATION => sid != 0 && self.flags & !FLAG_END_HEADERS == 0,
            TYPE_PRIORITY => sid != 0 && self.len == 5 && self.flags == 0,
            TYPE_RST_STREAM => sid != 0 && self.len == 4 && self.flags == 0,
            TYPE_SETTINGS => {
                sid == 0
                    && ((self.flags == 0 && self.len.is_multiple_of(6))
                        || (self.flags == FLAG_ACK && self.len == 0))
            }
            TYPE_PUSH_PROMISE => dir == Dir::Response && client_stream && self.len >= 4,
            TYPE_PING => sid == 0 && self.len == 8 && self.flags & !FLAG_ACK == 0,
            TYPE_GOAWAY => sid == 0 && self.len >= 8 && self.flags == 0,
            TYPE_WINDOW_UPDATE => self.len == 4 && self.flags == 0,
            _ => false,
        }
    }
}

/// A plausible frame header at `at`, and, when the buffer holds the next frame's header too,
/// that one plausible as well.
fn chain_plausible(dir: Dir, buf: &[u8], at: usize) -> bool {
    let Some(h) = buf.get(at..).and_then(FrameHeader::parse) else {
        return false;
    };
    if !h.plausible(dir) {
        return false;
    }
    match at.checked_add(h.total()).and_then(|n| buf.get(n..)) {
        Some(rest) if rest.len() >= FRAME_HEADER_LEN => {
            FrameHeader::parse(rest).is_some_and(|n| n.plausible(dir))
        }
        _ => true,
    }
}

pub fn detect(dir: Dir, head: &[u8]) -> Confidence {
    if dir == Dir::Request {
        let n = head.len().min(PREFACE.len());
        if n >= 16 && head.get(..n) == PREFACE.get(..n) {
            return Confidence::Certain;
        }
    }
    let Some(h) = FrameHeader::parse(head) else {
        return Confidence::No;
    };
    if dir == Dir::Response && h.kind == TYPE_SETTINGS && h.plausible(dir) {
        return Confidence::Maybe;
    }
    // Mid-connection: a frame header, and the next one when it is there.
    if chain_plausible(dir, head, 0) {
        Confidence::Maybe
    } else {
        Confidence::No
    }
}

pub fn find_boundary(dir: Dir, buf: &[u8], from: usize) -> Option<usize> {
    let last = buf.len().checked_sub(FRAME_HEADER_LEN)?;
    (from..=last).find(|&at| {
        (dir == Dir::Request && buf.get(at..).is_some_and(|b| b.starts_with(PREFACE)))
            || chain_plausible(dir, buf, at)
    })
}
