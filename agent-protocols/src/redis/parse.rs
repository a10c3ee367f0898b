//! Commands (RESP arrays of bulk strings, or inline) and replies (any RESP2/RESP3 value).

use super::resp::{self, Item, Scan, Summary};
use super::types::{Command, Frame, Message, Reply, State};
use crate::{Confidence, Dir, ParseError, Parsed};

const MAX_INLINE: usize = 64 * 1024;
const MAX_COMMAND: usize = 32;
const MAX_KEY: usize = 256;
const MAX_ERROR: usize = 512;
/// An incomplete value this big is handed out now and the rest skipped as it arrives, rather
/// than buffered (large MGET/LRANGE/COMMAND DOCS replies, huge MSETs).
pub const STREAM_AT: usize = 16 * 1024;

/// Commands whose first argument is not a key, or must never be kept (credentials).
const NO_KEY: &[&str] = &[
    "AUTH",
    "HELLO",
    "SELECT",
    "PING",
    "ECHO",
    "CLIENT",
    "CONFIG",
    "ACL",
    "INFO",
    "MIGRATE",
    "SCRIPT",
    "FUNCTION",
    "DEBUG",
    "EVAL",
    "EVAL_RO",
    "EVALSHA",
    "EVALSHA_RO",
    "FCALL",
    "FCALL_RO",
    "MODULE",
    "SHUTDOWN",
    "REPLICAOF",
    "SLAVEOF",
    "CLUSTER",
    "COMMAND",
    "LATENCY",
    "MEMORY",
    "SLOWLOG",
    "OBJECT",
    "XINFO",
    "XGROUP",
    "PUBSUB",
];

/// Command words accepted as the start of an inline command.
pub const KNOWN: &[&str] = &[
    "PING",
    "GET",
    "SET",
    "DEL",
    "EXISTS",
    "INCR",
    "DECR",
    "INCRBY",
    "EXPIRE",
    "TTL",
    "KEYS",
    "MGET",
    "MSET",
    "HGET",
    "HSET",
    "HGETALL",
    "LPUSH",
    "RPUSH",
    "LPOP",
    "RPOP",
    "LRANGE",
    "SADD",
    "SMEMBERS",
    "ZADD",
    "ZRANGE",
    "SELECT",
    "AUTH",
    "HELLO",
    "INFO",
    "QUIT",
    "MULTI",
    "EXEC",
    "DISCARD",
    "WATCH",
    "SUBSCRIBE",
    "PSUBSCRIBE",
    "PUBLISH",
    "FLUSHDB",
    "FLUSHALL",
    "DBSIZE",
    "ECHO",
    "CLIENT",
    "CONFIG",
    "SCAN",
    "TYPE",
    "APPEND",
    "STRLEN",
    "SETEX",
    "GETSET",
    "MONITOR",
];

type Res = Result<Parsed<Frame>, ParseError>;

pub fn parse(dir: Dir, buf: &[u8], st: &mut State) -> Res {
    let Some(&first) = buf.first() else {
        return Ok(Parsed::Partial);
    };
    let skip = match dir {
        Dir::Request => &mut st.req_skip,
        Dir::Response => &mut st.resp_skip,
    };
    if *skip > 0 {
        let s = resp::skip_values(buf, *skip).inspect_err(|_| *skip = 0)?;
        *skip = s.pending;
        return Ok(if s.consumed == 0 {
            Parsed::Partial
        } else {
            Parsed::Skip {
                consumed: s.consumed,
            }
        });
    }
    match dir {
        Dir::Request => {
            let out = if first == b'*' {
                command(buf, &mut st.req_skip)?
            } else if is_type_byte(first) {
                return Err(ParseError::Invalid("RESP command is not an array"));
            } else {
                inline(buf)?
            };
            if matches!(out, Parsed::Frame { .. }) {
                st.outstanding_requests = st.outstanding_requests.saturating_add(1);
            }
            Ok(out)
        }
        Dir::Response => reply(buf, &mut st.resp_skip),
    }
}

fn is_type_byte(b: u8) -> bool {
    b"+-:$*_#,(!=%~>|;.".contains(&b)
}

fn text(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(b.get(..max.min(b.len())).unwrap_or(&[])).into_owned()
}

fn item_bytes<'a>(buf: &'a [u8], it: &Option<Item>) -> Option<&'a [u8]> {
    match it {
        Some(Item::Str(r)) => buf.get(r.clone()),
        _ => None,
    }
}

fn build_command(name: &[u8], first_arg: Option<&[u8]>, args: u32) -> Command {
    let command = text(name, MAX_COMMAND).to_ascii_uppercase();
    let select_db = if command == "SELECT" {
        first_arg
            .and_then(|a| std::str::from_utf8(a).ok())
            .and_then(|s| s.parse().ok())
    } else {
        None
    };
    let key = if NO_KEY.contains(&command.as_str()) {
        None
    } else {
        first_arg.map(|a| text(a, MAX_KEY))
    };
    Command {
        command,
        key,
        args,
        select_db,
    }
}

fn frame(msg: Message, consumed: usize) -> Parsed<Frame> {
    Parsed::Frame {
        frame: Frame {
            msg,
            bytes: consumed as u64,
            start_ns: 0,
            end_ns: 0,
        },
        consumed,
    }
}

/// An incomplete value big enough to hand out now: where to cut it and its summary.
fn early(scan: Scan, buf_len: usize, skip: &mut u64) -> Option<(usize, Summary)> {
    match scan {
        Scan::Done(end, sum) | Scan::Beyond(end, sum) => Some((end, sum)),
        Scan::Partial { resume: Some(r) } if buf_len >= STREAM_AT && r.at > 0 => {
            *skip = r.pending;
            Some((r.at, r.summary))
        }
        Scan::Partial { .. } => None,
    }
}

fn command(buf: &[u8], skip: &mut u64) -> Res {
    let Some((end, sum)) = early(resp::scan(buf)?, buf.len(), skip) else {
        return Ok(Parsed::Partial);
    };
    let n = sum.root_len.unwrap_or(0);
    if sum.root != b'*' || n <= 0 {
        // `*0`, `*-1`: nothing to trace.
        return Ok(Parsed::Skip { consumed: end });
    }
    let name =
        item_bytes(buf, &sum.items[0]).ok_or(ParseError::Invalid("command name not a string"))?;
    let arg = item_bytes(buf, &sum.items[1]);
    let args = u32::try_from(n - 1).unwrap_or(u32::MAX);
    Ok(frame(Message::Command(build_command(name, arg, args)), end))
}

fn inline(buf: &[u8]) -> Res {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_INLINE {
            Err(ParseError::TooLarge {
                size: buf.len(),
                max: MAX_INLINE,
            })
        } else {
            Ok(Parsed::Partial)
        };
    };
    let line = buf.get(..nl).unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|w| !w.is_empty())
        .map(|w| {
            w.strip_prefix(b"\"")
                .and_then(|w| w.strip_suffix(b"\""))
                .unwrap_or(w)
        });
    let Some(name) = words.next() else {
        // Empty lines are ignored by the server.
        return Ok(Parsed::Skip { consumed: nl + 1 });
    };
    if !name
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-' || *b == b'|')
    {
        return Err(ParseError::Invalid("inline command is not a word"));
    }
    let arg = words.next();
    let args = 1 + words.count();
    let args = if arg.is_some() { args } else { 0 };
    Ok(frame(
        Message::Command(build_command(
            name,
            arg,
            u32::try_from(args).unwrap_or(u32::MAX),
        )),
        nl + 1,
    ))
}

fn short_lower(buf: &[u8], it: &Option<Item>) -> Option<String> {
    item_bytes(buf, it)
        .filter(|b| b.len() <= 16)
        .map(|b| text(b, 16).to_ascii_lowercase())
}

fn summarize(buf: &[u8], sum: &Summary) -> Reply {
    let root_text = |max| {
        sum.root_str
            .clone()
            .and_then(|r| buf.get(r))
            .map(|b| text(b, max))
    };
    match sum.root {
        b'+' => Reply::Status(root_text(16).unwrap_or_default()),
        b'-' | b'!' => {
            let message = root_text(MAX_ERROR).unwrap_or_default();
            let prefix = message.split(' ').next().unwrap_or("").to_owned();
            Reply::Error { prefix, message }
        }
        b'*' | b'~' | b'>' if sum.root_len.is_none_or(|n| n >= 0) => {
            let first = short_lower(buf, &sum.items[0]);
            let third = match sum.items[2] {
                Some(Item::Int(i)) => Some(i),
                _ => None,
            };
            if sum.root == b'>' {
                Reply::Push { first, third }
            } else {
                Reply::Array { first, third }
            }
        }
        _ => Reply::Other,
    }
}

fn reply(buf: &[u8], skip: &mut u64) -> Res {
    match early(resp::scan(buf)?, buf.len(), skip) {
        Some((end, sum)) => Ok(frame(Message::Reply(summarize(buf, &sum)), end)),
        None => Ok(Parsed::Partial),
    }
}

fn array_command_head(head: &[u8]) -> Confidence {
    // `*<digits>\r\n$`
    let digits = head
        .iter()
        .skip(1)
        .take_while(|b| b.is_ascii_digit())
        .count();
    let rest = head.get(1 + digits..).unwrap_or(&[]);
    if digits == 0 {
        return if rest.is_empty() {
            Confidence::Maybe
        } else {
            Confidence::No
        };
    }
    if digits > 10 {
        return Confidence::No;
    }
    let want = b"\r\n$";
    let n = rest.len().min(want.len());
    if rest.get(..n) != want.get(..n) {
        Confidence::No
    } else if n == want.len() {
        Confidence::Certain
    } else {
        Confidence::Maybe
    }
}

fn known_inline(head: &[u8]) -> bool {
    let end = head
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n');
    let Some(end) = end else { return false };
    let word = head.get(..end).unwrap_or(&[]);
    KNOWN
        .iter()
        .any(|k| k.as_bytes().eq_ignore_ascii_case(word))
}

fn reply_head(head: &[u8]) -> bool {
    let Some((&t, rest)) = head.split_first() else {
        return false;
    };
    let line_end = rest.iter().position(|&b| b == b'\r').unwrap_or(rest.len());
    let line = rest.get(..line_end).unwrap_or(&[]);
    let complete = rest.get(line_end..line_end + 2) == Some(b"\r\n".as_slice());
    let numeric = |l: &[u8]| {
        let l = l.strip_prefix(b"-").unwrap_or(l);
        !l.is_empty() && l.len() <= 20 && l.iter().all(u8::is_ascii_digit)
    };
    complete
        && match t {
            b'+' | b'-' => !line.is_empty() && line.iter().all(|&b| (0x20..0x7f).contains(&b)),
            b':' | b'$' | b'*' | b'%' | b'~' | b'>' => numeric(line),
            b'_' => line.is_empty(),
            _ => false,
        }
}

pub fn detect(dir: Dir, head: &[u8]) -> Confidence {
    match (dir, head.first()) {
        (_, None) => Confidence::No,
        (Dir::Request, Some(b'*')) => array_command_head(head),
        (Dir::Request, Some(_)) if known_inline(head) => Confidence::Maybe,
        (Dir::Request, Some(_)) => Confidence::No,
        (Dir::Response, Some(_)) if reply_head(head) => Confidence::Maybe,
        (Dir::Response, Some(_)) => Confidence::No,
    }
}

pub fn find_boundary(dir: Dir, buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find(|&i| {
        let line_start = i == 0 || buf.get(i - 1) == Some(&b'\n');
        let at = buf.get(i..).unwrap_or(&[]);
        line_start
            && match dir {
                Dir::Request => array_command_head(at) == Confidence::Certain,
                Dir::Response => reply_head(at),
            }
    })
}
