//! MySQL / MariaDB client/server protocol: greeting and HandshakeResponse41 (user, database,
//! program name), authentication, SSL request, text and prepared-statement commands, OK/ERR/EOF
//! and result sets (with or without CLIENT_DEPRECATE_EOF), multi-results, large packets.
//! Parsing in [`parse`], pairing in [`stitch`], frames and state in [`types`].

pub mod parse;
pub mod stitch;
pub mod types;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use crate::{Confidence, Dir, ParseError, Parsed, ParserConfig, Protocol, ProtocolKind, Record};
pub use types::{Frame, State};

pub struct Mysql;

impl Protocol for Mysql {
    type Frame = Frame;
    type State = State;
    const KIND: ProtocolKind = ProtocolKind::Mysql;

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

fn detect(dir: Dir, head: &[u8]) -> Confidence {
    let Some(h) = head.get(..5) else {
        return Confidence::No;
    };
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    match dir {
        // Greeting: sequence 0, protocol 10, a printable NUL-terminated version string.
        Dir::Response if h[3] == 0 && h[4] == 10 && (20..=1024).contains(&len) => {
            let version = head.get(5..).unwrap_or(&[]);
            match version.iter().position(|&c| c == 0) {
                Some(n) if n > 0 && version[..n].iter().all(|c| c.is_ascii_graphic()) => {
                    Confidence::Certain
                }
                None if version.iter().take(8).all(|c| c.is_ascii_graphic())
                    && version.len() < 8 =>
                {
                    Confidence::Maybe
                }
                _ => Confidence::No,
            }
        }
        // COM_QUERY with sequence 0 and text that looks like SQL.
        Dir::Request
            if h[3] == 0 && h[4] == parse::COM_QUERY && (2..=parse::SANE_PACKET).contains(&len) =>
        {
            let text = head.get(5..(len + 4).min(head.len())).unwrap_or(&[]);
            let printable = text
                .iter()
                .take(64)
                .all(|&c| c.is_ascii_graphic() || c.is_ascii_whitespace() || c >= 0x80);
            if printable
                && text.first().is_some_and(|c| {
                    c.is_ascii_alphabetic() || *c == b'(' || *c == b'/' || c.is_ascii_whitespace()
                })
            {
                Confidence::Maybe
            } else {
                Confidence::No
            }
        }
        _ => Confidence::No,
    }
}
