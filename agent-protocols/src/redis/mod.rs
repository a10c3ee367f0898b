//! Redis (RESP2 and RESP3): array and inline commands, pipelining, MULTI/EXEC, SELECT,
//! pub/sub (pushes and messages are never taken for replies), error replies.

mod parse;
mod resp;
mod stitch;
mod types;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

pub use types::{Command, Frame, Message, Reply, State};

use crate::{Confidence, Dir, ParseError, Parsed, Protocol, ProtocolKind, Record};

pub struct Redis;

impl Protocol for Redis {
    type Frame = Frame;
    type State = State;
    const KIND: ProtocolKind = ProtocolKind::Redis;

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

    fn on_close(
        reqs: &mut VecDeque<Frame>,
        resps: &mut VecDeque<Frame>,
        st: &mut State,
    ) -> Vec<Record> {
        stitch::on_close(reqs, resps, st)
    }
}
