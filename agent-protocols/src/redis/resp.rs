//! A non-recursive RESP2/RESP3 scanner: finds where one value ends and keeps a small summary
//! (root type, the first few top-level elements). Nesting depth, element counts and line
//! lengths are bounded, so hostile input costs a bounded stack and a clear error.

use std::ops::Range;

use crate::ParseError;

pub const MAX_DEPTH: usize = 32;
pub const MAX_ELEMENTS: u64 = 1 << 20;
pub const MAX_LINE: usize = 64 * 1024;
pub const MAX_BULK: u64 = 512 * 1024 * 1024;
/// Top-level elements of the root aggregate kept in the summary.
pub const KEPT_ITEMS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Item {
    /// Bulk/simple string contents, as a range of the scanned buffer.
    Str(Range<usize>),
    Int(i64),
    #[default]
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Summary {
    /// Type byte of the root value (after any attribute).
    pub root: u8,
    /// Aggregate element count or bulk length of the root (-1 for null; None when streamed).
    pub root_len: Option<i64>,
    /// Contents of a root simple string / error / blob (when inside the buffer).
    pub root_str: Option<Range<usize>>,
    pub items: [Option<Item>; KEPT_ITEMS],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    /// One whole value ends at this offset.
    Done(usize, Summary),
    /// The value ends at this offset, past the buffer: only a final bulk payload is missing.
    Beyond(usize, Summary),
    /// Incomplete. `resume` is set when the value could be handed out now and its rest
    /// skipped: the offset where the next unread element starts, and how many elements are
    /// still to read (none of them inside a streamed aggregate).
    Partial { resume: Option<Resume> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    pub at: usize,
    pub pending: u64,
    pub summary: Summary,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Agg,
    StreamAgg,
    StreamStr,
    Attr,
}

#[derive(Debug, Clone, Copy)]
struct Level {
    remaining: u64,
    kind: Kind,
}

pub fn find_crlf(b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| i + from)
}

pub fn parse_int(line: &[u8]) -> Option<i64> {
    if line.is_empty() || line.len() > 20 {
        return None;
    }
    std::str::from_utf8(line).ok()?.parse().ok()
}

struct Stack {
    levels: [Level; MAX_DEPTH],
    len: usize,
}

impl Stack {
    fn push(&mut self, l: Level) -> Result<(), ParseError> {
        let slot = self
            .levels
            .get_mut(self.len)
            .ok_or(ParseError::Invalid("RESP nesting too deep"))?;
        *slot = l;
        self.len += 1;
        Ok(())
    }
    fn top(&mut self) -> Option<&mut Level> {
        self.len.checked_sub(1).and_then(|i| self.levels.get_mut(i))
    }
    fn pop(&mut self) -> Option<Level> {
        let i = self.len.checked_sub(1)?;
        self.len = i;
        self.levels.get(i).copied()
    }
    fn as_slice(&self) -> &[Level] {
        self.levels.get(..self.len).unwrap_or(&[])
    }
}

fn partial(stack: &Stack, at: usize, summary: Summary) -> Scan {
    let levels = stack.as_slice();
    let countable = levels
        .iter()
        .all(|l| matches!(l.kind, Kind::Agg | Kind::Attr));
    let pending = levels
        .iter()
        .fold(0u64, |n, l| n.saturating_add(l.remaining));
    let resume = (countable && pending > 0).then_some(Resume {
        at,
        pending,
        summary,
    });
    Scan::Partial { resume }
}

/// Outcome of skipping the rest of a value handed out early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// Bytes to drop (may run past the buffer when a bulk payload does).
    pub consumed: usize,
    /// Elements still to skip after those bytes.
    pub pending: u64,
}

/// Skips up to `pending` elements at the start of `buf` without keeping anything: nested
/// aggregates add their element counts to a flat counter, so depth costs nothing.
pub fn skip_values(buf: &[u8], mut pending: u64) -> Result<Skipped, ParseError> {
    let mut pos = 0usize;
    while pending > 0 {
        let Some(&t) = buf.get(pos) else { break };
        let Some(line_end) = find_crlf(buf, pos + 1) else {
            if buf.len() - pos > MAX_LINE {
                return Err(ParseError::TooLarge {
                    size: buf.len() - pos,
                    max: MAX_LINE,
                });
            }
            break;
        };
        let line = buf.get(pos + 1..line_end).unwrap_or(&[]);
        let next = line_end + 2;
        match t {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {
                pending -= 1;
                pos = next;
            }
            b'$' | b'!' | b'=' => {
                let n = parse_int(line).ok_or(ParseError::Invalid("bad RESP length"))?;
                pending -= 1;
                pos = next;
                if n >= 0 {
                    let end = usize::try_from(n)
                        .ok()
                        .and_then(|n| next.checked_add(n)?.checked_add(2))
                        .ok_or(ParseError::Invalid("RESP length overflow"))?;
                    pos = end;
                    if end > buf.len() {
                        break;
                    }
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let n = parse_int(line).ok_or(ParseError::Invalid("bad RESP count"))?;
                let n = u64::try_from(n).unwrap_or(0);
                if n > MAX_ELEMENTS {
                    return Err(ParseError::TooLarge {
                        size: n as usize,
                        max: MAX_ELEMENTS as usize,
                    });
                }
                let count = if t == b'%' || t == b'|' { n * 2 } else { n };
                if t != b'|' {
                    pending -= 1;
                }
                pending = pending.saturating_add(count);
                pos = next;
            }
            _ => return Err(ParseError::Invalid("bad RESP type byte while skipping")),
        }
    }
    Ok(Skipped {
        consumed: pos,
        pending,
    })
}

/// Scans one RESP value at the start of `buf`.
pub fn scan(buf: &[u8]) -> Result<Scan, ParseError> {
    let mut stack = Stack {
        levels: [Level {
            remaining: 0,
            kind: Kind::Agg,
        }; MAX_DEPTH],
        len: 0,
    };
    let mut sum = Summary::default();
    let mut root_seen = false;
    let mut item_idx = 0usize;
    let mut pos = 0usize;
    loop {
        let Some(&t) = buf.get(pos) else {
            return Ok(partial(&stack, pos, sum));
        };
        let Some(line_end) = find_crlf(buf, pos + 1) else {
            return if buf.len() - pos > MAX_LINE {
                Err(ParseError::TooLarge {
                    size: buf.len() - pos,
                    max: MAX_LINE,
                })
            } else {
                Ok(partial(&stack, pos, sum))
            };
        };
        let line = buf.get(pos + 1..line_end).unwrap_or(&[]);
        if t != b';' && stack.as_slice().last().map(|l| l.kind) == Some(Kind::StreamStr) {
            return Err(ParseError::Invalid("RESP streamed string without chunk"));
        }
        let next = line_end + 2;
        // Where this header sits: the root value, or a direct element of the root aggregate.
        let is_root = stack.len == 0 && t != b'|';
        let top_item = stack.len == 1
            && root_seen
            && stack
                .as_slice()
                .first()
                .is_some_and(|l| l.kind != Kind::Attr)
            && t != b'|'
            && t != b';'
            && t != b'.';
        let slot = if top_item {
            let i = item_idx;
            item_idx += 1;
            sum.items.get_mut(i)
        } else {
            None
        };
        if is_root {
            sum.root = t;
            root_seen = true;
        }
        let mut completed = true;
        match t {
            b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => {
                if t == b':' && parse_int(line).is_none() {
                    return Err(ParseError::Invalid("bad RESP integer"));
                }
                if is_root && (t == b'+' || t == b'-') {
                    sum.root_str = Some(pos + 1..line_end);
                }
                if let Some(s) = slot {
                    *s = Some(match t {
                        b'+' => Item::Str(pos + 1..line_end),
                        b':' => Item::Int(parse_int(line).unwrap_or(0)),
                        _ => Item::Other,
                    });
                }
                pos = next;
            }
            b'$' | b'!' | b'=' if line == b"?" => {
                stack.push(Level {
                    remaining: 0,
                    kind: Kind::StreamStr,
                })?;
                if is_root {
                    sum.root_len = None;
                }
                if let Some(s) = slot {
                    *s = Some(Item::Other);
                }
                completed = false;
                pos = next;
            }
            b'$' | b'!' | b'=' => {
                let n = parse_int(line).ok_or(ParseError::Invalid("bad RESP length"))?;
                if is_root {
                    sum.root_len = Some(n);
                }
                if n < 0 {
                    if let Some(s) = slot {
                        *s = Some(Item::Other);
                    }
                    pos = next;
                } else {
                    let n = n as u64;
                    if n > MAX_BULK {
                        return Err(ParseError::TooLarge {
                            size: usize::try_from(n).unwrap_or(usize::MAX),
                            max: MAX_BULK as usize,
                        });
                    }
                    let end = usize::try_from(n)
                        .ok()
                        .and_then(|n| next.checked_add(n)?.checked_add(2))
                        .ok_or(ParseError::Invalid("RESP length overflow"))?;
                    if end > buf.len() {
                        // Only plain bulk strings are worth skipping unseen; errors and
                        // verbatim strings are short and wanted whole.
                        // The command name and key must be seen whole.
                        let last = t == b'$'
                            && !(top_item && item_idx <= 2)
                            && stack
                                .as_slice()
                                .iter()
                                .all(|l| l.kind == Kind::Agg && l.remaining == 1);
                        if let Some(s) = slot {
                            *s = Some(Item::Other);
                        }
                        return Ok(if last {
                            Scan::Beyond(end, sum)
                        } else {
                            partial(&stack, pos, sum)
                        });
                    }
                    if buf.get(end - 2..end) != Some(b"\r\n") {
                        return Err(ParseError::Invalid("RESP bulk not followed by CRLF"));
                    }
                    if is_root && t != b'$' {
                        sum.root_str = Some(next..end - 2);
                    }
                    if let Some(s) = slot {
                        *s = Some(Item::Str(next..end - 2));
                    }
                    pos = end;
                }
            }
            b';' => {
                if stack.as_slice().last().map(|l| l.kind) != Some(Kind::StreamStr) {
                    return Err(ParseError::Invalid("RESP chunk outside streamed string"));
                }
                let n = parse_int(line)
                    .filter(|&n| n >= 0)
                    .ok_or(ParseError::Invalid("bad RESP chunk length"))?;
                if n == 0 {
                    stack.pop();
                    pos = next;
                } else {
                    let end = usize::try_from(n)
                        .ok()
                        .and_then(|n| next.checked_add(n)?.checked_add(2))
                        .ok_or(ParseError::Invalid("RESP length overflow"))?;
                    if end > buf.len() {
                        return Ok(Scan::Partial { resume: None });
                    }
                    completed = false;
                    pos = end;
                }
            }
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                if let Some(s) = slot {
                    *s = Some(Item::Other);
                }
                pos = next;
                if line == b"?" {
                    if is_root {
                        sum.root_len = None;
                    }
                    stack.push(Level {
                        remaining: 0,
                        kind: Kind::StreamAgg,
                    })?;
                    completed = false;
                } else {
                    let n = parse_int(line).ok_or(ParseError::Invalid("bad RESP count"))?;
                    if is_root {
                        sum.root_len = Some(n);
                    }
                    if n >= 0 {
                        let n = n as u64;
                        if n > MAX_ELEMENTS {
                            return Err(ParseError::TooLarge {
                                size: n as usize,
                                max: MAX_ELEMENTS as usize,
                            });
                        }
                        let count = if t == b'%' || t == b'|' { n * 2 } else { n };
                        let kind = if t == b'|' { Kind::Attr } else { Kind::Agg };
                        if count > 0 {
                            stack.push(Level {
                                remaining: count,
                                kind,
                            })?;
                            completed = false;
                        } else if kind == Kind::Attr {
                            completed = false;
                        }
                    } else if t != b'*' {
                        return Err(ParseError::Invalid("negative RESP3 count"));
                    }
                }
            }
            b'.' => {
                if stack.as_slice().last().map(|l| l.kind) != Some(Kind::StreamAgg) {
                    return Err(ParseError::Invalid(
                        "RESP end marker outside streamed aggregate",
                    ));
                }
                stack.pop();
                pos = next;
            }
            _ => return Err(ParseError::Invalid("bad RESP type byte")),
        }
        // A value finished: count it against the aggregates that contain it.
        while completed {
            let Some(l) = stack.top() else {
                return Ok(Scan::Done(pos, sum));
            };
            match l.kind {
                Kind::StreamAgg | Kind::StreamStr => completed = false,
                Kind::Agg | Kind::Attr => {
                    l.remaining = l.remaining.saturating_sub(1);
                    if l.remaining == 0 {
                        // An attribute annotates the next value; it is not one itself.
                        completed = stack.pop().is_some_and(|l| l.kind == Kind::Agg);
                    } else {
                        completed = false;
                    }
                }
            }
        }
    }
}
