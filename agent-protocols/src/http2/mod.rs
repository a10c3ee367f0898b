//! HTTP/2 and gRPC.
//!
//! `parse` turns one direction's bytes into stream-level frames: header blocks (HEADERS or
//! PUSH_PROMISE plus CONTINUATION, HPACK-decoded by a decoder per direction), DATA (with gRPC
//! message prefixes counted incrementally, bodies never buffered), RST_STREAM and GOAWAY.
//! Connection-level frames (SETTINGS, PING, WINDOW_UPDATE, PRIORITY, unknown types) are
//! consumed there; SETTINGS adjust the HPACK table limit and maximum frame size of the other
//! direction. `stitch` assembles interleaved streams by id and emits one [`Record`] per stream
//! when its response ends or it is reset.
//!
//! Capture that starts mid-connection or loses bytes: see [`hpack`] for why decoded names are
//! never wrong; what could not be decoded is reported with `headers_unknown`.

mod frame;
mod grpc;
mod hpack;
mod parse;
mod state;
mod stitch;
mod types;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use crate::{Confidence, Dir, ParseError, Parsed, Protocol, ProtocolKind, Record};

pub use state::{Http2Stats, State};
pub use types::{Frame, FrameKind, HeaderFields, PREFACE};

pub struct Http2;

impl Http2 {
    pub fn stats(st: &State) -> Http2Stats {
        st.stats
    }
}

impl Protocol for Http2 {
    type Frame = Frame;
    type State = State;
    const KIND: ProtocolKind = ProtocolKind::Http2;

    fn detect(dir: Dir, head: &[u8]) -> Confidence {
        frame::detect(dir, head)
    }

    fn find_boundary(dir: Dir, buf: &[u8], from: usize) -> Option<usize> {
        frame::find_boundary(dir, buf, from)
    }

    fn parse(dir: Dir, buf: &[u8], st: &mut State) -> Result<Parsed<Frame>, ParseError> {
        let r = parse::parse(dir, buf, st);
        if r.is_err() {
            // The driver resyncs past whatever this was: header blocks may be lost with it.
            st.gap(dir);
        }
        r
    }

    fn stitch(
        reqs: &mut VecDeque<Frame>,
        resps: &mut VecDeque<Frame>,
        st: &mut State,
    ) -> Vec<Record> {
        stitch::stitch(reqs, resps, st)
    }

    fn on_gap(dir: Dir, st: &mut State) {
        st.gap(dir);
    }

    fn on_close(
        reqs: &mut VecDeque<Frame>,
        resps: &mut VecDeque<Frame>,
        st: &mut State,
    ) -> Vec<Record> {
        let mut out = stitch::stitch(reqs, resps, st);
        out.extend(stitch::close(st));
        out
    }
}
