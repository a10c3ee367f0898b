//! PostgreSQL wire protocol (v3): startup and authentication, simple and extended query
//! protocol (named/unnamed statements and portals, pipelines), errors. Parsing in
//! [`parse`], pairing in [`stitch`], frames and connection state in [`types`].

pub mod parse;
pub mod stitch;
pub mod types;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use crate::{Confidence, Dir, ParseError, Parsed, ParserConfig, Protocol, ProtocolKind, Record};
pub use types::{Frame, State};

pub struct Postgres;

impl Protocol for Postgres {
    type Frame = Frame;
    type State = State;
    const KIND: ProtocolKind = ProtocolKind::Postgres;

    fn detect(dir: Dir, head: &[u8]) -> Confidence {
        detect(dir, head)
    }

    fn find_boundary(dir: Dir, buf: &[u8], from: usize) -> Option<usize> {
        (from..buf.len()).find(|&i| parse::plausible_at(dir, buf, i))
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
        st.keep_raw_query = cfg.keep_raw_query;
    }

    fn on_close(
        reqs: &mut VecDeque<Frame>,
        resps: &mut VecDeque<Frame>,
        st: &mut State,
    ) -> Vec<Record> {
        stitch::on_close(reqs, resps, st)
    }
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn detect(dir: Dir, head: &[u8]) -> Confidence {
    match dir {
        Dir::Request => {
            if let (Some(len), Some(code)) = (be32(head, 0), be32(head, 4)) {
                let len = len as usize;
                let certain = match code {
                    parse::PROTO_V3 => (9..=parse::MAX_STARTUP).contains(&len),
                    parse::SSL_REQUEST | parse::GSSENC_REQUEST => len == 8,
                    parse::CANCEL_REQUEST => len == 16,
                    _ => false,
                };
                if certain {
                    return Confidence::Certain;
                }
            }
            match head.first() {
                Some(b'Q' | b'P') if typed_plausible(head) => Confidence::Maybe,
                _ => Confidence::No,
            }
        }
        Dir::Response => match head.first() {
            Some(b'R' | b'Z' | b'T' | b'D' | b'C' | b'E') if typed_plausible(head) => {
                Confidence::Maybe
            }
            _ => Confidence::No,
        },
    }
}

/// A typed message header with a sane length; when the whole message is in `head`, its body
/// looks right for its type.
fn typed_plausible(head: &[u8]) -> bool {
    let (Some(&ty), Some(len)) = (head.first(), be32(head, 1)) else {
        return false;
    };
    let len = len as usize;
    if !(4..=parse::SANE_MSG).contains(&len) {
        return false;
    }
    let Some(body) = head.get(5..len + 1) else {
        return true;
    };
    match ty {
        b'Q' | b'C' => body.last() == Some(&0) && len > 5,
        b'P' => body.iter().filter(|&&c| c == 0).count() >= 2,
        b'Z' => len == 5 && matches!(body.first(), Some(b'I' | b'T' | b'E')),
        b'R' => len >= 8,
        _ => true,
    }
}
