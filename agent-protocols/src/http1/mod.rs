//! HTTP/1.0 and HTTP/1.1: request/response heads via `httparse`, bodies by content-length,
//! chunked framing (streamed when large), or connection close; keep-alive, pipelining,
//! interim 1xx responses, HEAD, and protocol upgrades (101 / CONNECT).

mod parse;
mod stitch;
mod types;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

pub use types::{Body, Frame, Message, RequestHead, ResponseHead, State};

use crate::{Confidence, Dir, ParseError, Parsed, ParserConfig, Protocol, ProtocolKind, Record};

pub struct Http1;

impl Protocol for Http1 {
    type Frame = Frame;
    type State = State;
    const KIND: ProtocolKind = ProtocolKind::Http1;

    fn detect(dir: Dir, head: &[u8]) -> Confidence {
        parse::detect(dir, head)
    }

    fn find_boundary(dir: Dir, buf: &[u8], from: usize) -> Option<usize> {
        parse::find_boundary(dir, buf, from)
    }

    fn parse(dir: Dir, buf: &[u8], st: &mut State) -> Result<Parsed<Frame>, ParseError> {
        parse::parse(dir, buf, st)
    }

    fn stitch(
        reqs: &mut VecDeque<Frame>,
        resps: &mut VecDeque<Frame>,
        st: &mut State,
    ) -> Vec<Record> {
        stitch::stitch(reqs, resps, st)
    }

    fn configure(st: &mut State, cfg: &ParserConfig) {
        st.extra_headers = cfg
            .extra_http_headers
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
    }

    fn on_close(
        reqs: &mut VecDeque<Frame>,
        resps: &mut VecDeque<Frame>,
        st: &mut State,
    ) -> Vec<Record> {
        stitch::on_close(reqs, resps, st)
    }
}
