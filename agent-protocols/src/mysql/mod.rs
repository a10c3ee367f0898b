//! Mysql parser (stub until implemented: detects nothing).

use std::collections::VecDeque;

use crate::{Confidence, Dir, ParseError, Parsed, Protocol, ProtocolKind, Record, Timed};

pub struct Mysql;

#[derive(Debug, Default)]
pub struct Frame {
    start_ns: u64,
    end_ns: u64,
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

impl Protocol for Mysql {
    type Frame = Frame;
    type State = ();
    const KIND: ProtocolKind = ProtocolKind::Mysql;

    fn detect(_dir: Dir, _head: &[u8]) -> Confidence {
        Confidence::No
    }
    fn find_boundary(_dir: Dir, _buf: &[u8], _from: usize) -> Option<usize> {
        None
    }
    fn parse(_dir: Dir, _buf: &[u8], _st: &mut ()) -> Result<Parsed<Frame>, ParseError> {
        Err(ParseError::Invalid("not implemented"))
    }
    fn stitch(_reqs: &mut VecDeque<Frame>, _resps: &mut VecDeque<Frame>, _st: &mut ()) -> Vec<Record> {
        Vec::new()
    }
}
