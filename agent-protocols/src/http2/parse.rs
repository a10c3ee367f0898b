//! One direction's bytes -> frames. Connection-level frames (SETTINGS, PING, WINDOW_UPDATE,
//! PRIORITY, unknown types) are consumed here; stream-level ones become [`Frame`]s.

use std::borrow::Cow;

use super::frame::FrameHeader;
use super::state::State;
use super::types::*;
use crate::{Dir, ParseError, Parsed};

type Result<T> = std::result::Result<Parsed<T>, ParseError>;

pub fn parse(dir: Dir, buf: &[u8], st: &mut State) -> Result<Frame> {
    if dir == Dir::Request && buf.first() == Some(&b'P') {
        let n = buf.len().min(PREFACE.len());
        if buf.get(..n) == PREFACE.get(..n) {
            if n < PREFACE.len() {
                return Ok(Parsed::Partial);
            }
            st.stats.prefaces += 1;
            return Ok(Parsed::Skip {
                consumed: PREFACE.len(),
            });
        }
    }
    let Some(h) = FrameHeader::parse(buf) else {
        return Ok(Parsed::Partial);
    };
    let max = st.dir_mut(dir).max_frame;
    if h.len > max {
        return Err(ParseError::TooLarge { size: h.len, max });
    }
    match h.kind {
        TYPE_DATA => data(dir, buf, h, st),
        TYPE_HEADERS | TYPE_PUSH_PROMISE => headers(dir, buf, h, st),
        TYPE_CONTINUATION => {
            // Its HEADERS was not seen (capture started late, bytes lost, block too large).
            let r = control(buf, h);
            if matches!(r, Ok(Parsed::Skip { .. })) {
                st.dir_mut(dir).hpack.restart();
                st.stats.header_blocks_skipped += 1;
            }
            r
        }
        TYPE_RST_STREAM => rst_stream(buf, h, st),
        TYPE_SETTINGS => settings(dir, buf, h, st),
        TYPE_GOAWAY => goaway(buf, h),
        _ => control(buf, h),
    }
}

/// A frame consumed whole without a result; waited for in full when small, else skipped as
/// it arrives.
fn control(buf: &[u8], h: FrameHeader) -> Result<Frame> {
    if buf.len() < h.total() && h.len <= DEFAULT_MAX_FRAME_SIZE {
        return Ok(Parsed::Partial);
    }
    Ok(Parsed::Skip {
        consumed: h.total(),
    })
}

/// The payload bytes present in `buf` (all of them once the frame is complete).
fn payload(buf: &[u8], h: FrameHeader) -> &[u8] {
    buf.get(FRAME_HEADER_LEN..h.total().min(buf.len()))
        .unwrap_or_default()
}

fn data(dir: Dir, buf: &[u8], h: FrameHeader, st: &mut State) -> Result<Frame> {
    if h.stream_id == 0 {
        return Err(ParseError::Invalid("DATA on stream 0"));
    }
    let seen = payload(buf, h);
    let (start, end) = if h.flags & FLAG_PADDED != 0 {
        let Some(&pad) = seen.first() else {
            return Ok(Parsed::Partial);
        };
        let end = h
            .len
            .checked_sub(usize::from(pad))
            .filter(|&e| e >= 1)
            .ok_or(ParseError::Invalid("DATA padding longer than frame"))?;
        (1, end)
    } else {
        (0, h.len)
    };
    let visible = seen.get(start..end.min(seen.len())).unwrap_or_default();
    let unseen = (end - start).saturating_sub(visible.len()) as u64;
    let end_stream = h.flags & FLAG_END_STREAM != 0;

    let d = st.dir_mut(dir);
    // An incomplete frame is handed over now (its tail skipped by the driver as it arrives, or
    // lost to a truncated capture) when the unseen bytes lie inside a message body, so nothing
    // is lost by not looking at them. Otherwise wait for more: for the whole frame when it is
    // at most the default maximum size, else for at most that much payload (memory stays
    // bounded; a larger frame still unclear then is handed over and its count given up).
    // Waiting matters when the visible part ends before or inside a message prefix, e.g. a
    // chunk that ends right after a large frame's header.
    if buf.len() < wait_for(h) {
        let mut probe = d.counters.get(&h.stream_id).copied().unwrap_or_default();
        probe.feed(visible);
        if !probe.skips_losslessly(unseen) {
            return Ok(Parsed::Partial);
        }
    }
    let room = d.counters.len() < MAX_OPEN_STREAMS;
    let counter = if room || d.counters.contains_key(&h.stream_id) {
        Some(d.counters.entry(h.stream_id).or_default())
    } else {
        None
    };
    let (messages, grpc_framed) = match counter {
        Some(c) => {
            let n = c.feed(visible);
            c.skip(unseen);
            (n, c.looks_grpc(end_stream))
        }
        None => {
            st.stats.counters_dropped += 1;
            (0, false)
        }
    };
    if end_stream {
        st.dir_mut(dir).counters.remove(&h.stream_id);
    }
    Ok(Parsed::Frame {
        frame: Frame::new(
            h.stream_id,
            FrameKind::Data {
                payload_len: h.len as u32,
                messages,
                grpc_framed,
                end_stream,
            },
            h.total() as u64,
        ),
        consumed: h.total(),
    })
}

/// Bytes of a DATA frame (header included) worth buffering before handing it over incomplete.
fn wait_for(h: FrameHeader) -> usize {
    h.total().min(FRAME_HEADER_LEN + DEFAULT_MAX_FRAME_SIZE)
}

/// HEADERS (or PUSH_PROMISE) with its CONTINUATION frames, decoded as one block.
fn headers(dir: Dir, buf: &[u8], h: FrameHeader, st: &mut State) -> Result<Frame> {
    if h.stream_id == 0 {
        return Err(ParseError::Invalid("HEADERS on stream 0"));
    }
    let push = h.kind == TYPE_PUSH_PROMISE;
    let end_stream = !push && h.flags & FLAG_END_STREAM != 0;
    let unknown = |st: &mut State, consumed: usize| {
        st.dir_mut(dir).hpack.restart();
        st.stats.header_blocks_skipped += 1;
        done(h, push, end_stream, None, consumed)
    };
    if h.len > MAX_HEADER_BLOCK {
        return unknown(st, h.total());
    }
    if buf.len() < h.total() {
        return Ok(Parsed::Partial);
    }
    let first = fragment(payload(buf, h), h)?;

    let mut block = Cow::Borrowed(first);
    let mut at = h.total();
    let mut last = h;
    while last.flags & FLAG_END_HEADERS == 0 {
        let Some(c) = buf.get(at..).and_then(FrameHeader::parse) else {
            return Ok(Parsed::Partial);
        };
        if c.kind != TYPE_CONTINUATION || c.stream_id != h.stream_id {
            // Protocol error by the sender (or lost bytes): the block is incomplete.
            return unknown(st, h.total());
        }
        if block.len().saturating_add(c.len) > MAX_HEADER_BLOCK {
            return unknown(st, h.total());
        }
        let Some(frag) = buf.get(at + FRAME_HEADER_LEN..at + c.total()) else {
            return Ok(Parsed::Partial);
        };
        block.to_mut().extend_from_slice(frag);
        at += c.total();
        last = c;
    }

    if end_stream {
        st.dir_mut(dir).counters.remove(&h.stream_id);
    }
    let fields = match st.dir_mut(dir).hpack.decode(&block) {
        Ok(f) => Some(Box::new(f)),
        Err(_) => {
            st.stats.header_blocks_corrupt += 1;
            None
        }
    };
    done(h, push, end_stream, fields, at)
}

fn done(
    h: FrameHeader,
    push: bool,
    end_stream: bool,
    fields: Option<Box<HeaderFields>>,
    consumed: usize,
) -> Result<Frame> {
    if push {
        // Decoded only to keep the HPACK table in step; pushed streams are not traced.
        return Ok(Parsed::Skip { consumed });
    }
    Ok(Parsed::Frame {
        frame: Frame::new(
            h.stream_id,
            FrameKind::Headers { fields, end_stream },
            consumed as u64,
        ),
        consumed,
    })
}

/// The header block fragment of a complete HEADERS / PUSH_PROMISE payload.
fn fragment(p: &[u8], h: FrameHeader) -> std::result::Result<&[u8], ParseError> {
    let bad = ParseError::Invalid("HEADERS padding or priority longer than frame");
    let mut start = 0usize;
    let mut end = p.len();
    if h.flags & FLAG_PADDED != 0 {
        let pad = usize::from(*p.first().ok_or(bad.clone())?);
        start = 1;
        end = end.checked_sub(pad).ok_or(bad.clone())?;
    }
    if h.kind == TYPE_PUSH_PROMISE {
        start += 4;
    } else if h.flags & FLAG_PRIORITY != 0 {
        start += 5;
    }
    p.get(start..end).ok_or(bad)
}

fn rst_stream(buf: &[u8], h: FrameHeader, st: &mut State) -> Result<Frame> {
    if h.stream_id == 0 || h.len != 4 {
        return Err(ParseError::Invalid("malformed RST_STREAM"));
    }
    let Some(p) = buf.get(FRAME_HEADER_LEN..h.total()) else {
        return Ok(Parsed::Partial);
    };
    let error_code = u32::from_be_bytes(p.try_into().map_err(|_| ParseError::Invalid("RST"))?);
    st.req.counters.remove(&h.stream_id);
    st.resp.counters.remove(&h.stream_id);
    Ok(Parsed::Frame {
        frame: Frame::new(
            h.stream_id,
            FrameKind::RstStream { error_code },
            h.total() as u64,
        ),
        consumed: h.total(),
    })
}

fn settings(dir: Dir, buf: &[u8], h: FrameHeader, st: &mut State) -> Result<Frame> {
    if h.stream_id != 0 || !h.len.is_multiple_of(6) || (h.flags & FLAG_ACK != 0 && h.len != 0) {
        return Err(ParseError::Invalid("malformed SETTINGS"));
    }
    if h.len > DEFAULT_MAX_FRAME_SIZE {
        return Err(ParseError::Invalid("SETTINGS too long"));
    }
    let Some(p) = buf.get(FRAME_HEADER_LEN..h.total()) else {
        return Ok(Parsed::Partial);
    };
    // The sender's settings bind what its peer sends: the other direction.
    let other = st.other_mut(dir);
    for s in p.chunks_exact(6) {
        if let [a, b, v0, v1, v2, v3] = *s {
            let value = u32::from_be_bytes([v0, v1, v2, v3]) as usize;
            match u16::from_be_bytes([a, b]) {
                0x1 => other.hpack.set_allowed(value),
                0x5 if (DEFAULT_MAX_FRAME_SIZE..=MAX_FRAME_LEN).contains(&value) => {
                    other.max_frame = value
                }
                _ => {}
            }
        }
    }
    Ok(Parsed::Skip {
        consumed: h.total(),
    })
}

fn goaway(buf: &[u8], h: FrameHeader) -> Result<Frame> {
    if h.stream_id != 0 || h.len < 8 {
        return Err(ParseError::Invalid("malformed GOAWAY"));
    }
    // Debug data after the first 8 bytes is skipped as it arrives.
    let Some(&[a, b, c, d, e, f, g, i]) = buf.get(FRAME_HEADER_LEN..FRAME_HEADER_LEN + 8) else {
        return Ok(Parsed::Partial);
    };
    if buf.len() < h.total() && h.len <= DEFAULT_MAX_FRAME_SIZE {
        return Ok(Parsed::Partial);
    }
    Ok(Parsed::Frame {
        frame: Frame::new(
            0,
            FrameKind::GoAway {
                last_stream_id: u32::from_be_bytes([a, b, c, d]) & 0x7fff_ffff,
                error_code: u32::from_be_bytes([e, f, g, i]),
            },
            h.total() as u64,
        ),
        consumed: h.total(),
    })
}
