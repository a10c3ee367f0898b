//! HTTP/1 message heads (via `httparse`) and body framing: content-length, chunked (whole or
//! streamed chunk by chunk), close-delimited, none.

use std::mem::MaybeUninit;

use compact_str::CompactString;

use super::types::{
    Body, ChunkProgress, Frame, MAX_PENDING_METHODS, Message, MethodKind, RequestHead,
    ResponseHead, State,
};
use crate::{Confidence, Dir, ParseError, Parsed};

/// Largest start line + headers accepted.
pub const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 96;
/// A chunked body not complete within this many buffered bytes is streamed chunk by chunk.
const STREAM_AT: usize = 4096;
const MAX_CHUNK_LINE: usize = 1024;

pub const METHODS: &[&[u8]] = &[
    b"GET",
    b"POST",
    b"PUT",
    b"DELETE",
    b"HEAD",
    b"OPTIONS",
    b"PATCH",
    b"CONNECT",
    b"TRACE",
    b"PROPFIND",
    b"PROPPATCH",
    b"MKCOL",
    b"COPY",
    b"MOVE",
    b"LOCK",
    b"UNLOCK",
    b"PURGE",
];

type Res = Result<Parsed<Frame>, ParseError>;

pub fn parse(dir: Dir, buf: &[u8], st: &mut State) -> Res {
    if buf.is_empty() {
        return Ok(Parsed::Partial);
    }
    if st.upgraded {
        return Ok(Parsed::Skip {
            consumed: buf.len(),
        });
    }
    match dir {
        Dir::Request => {
            if let Some(p) = st.req_chunk {
                match chunk_step(buf, p)? {
                    Step::Parsed(r, next) => {
                        st.req_chunk = next;
                        return Ok(r);
                    }
                    // Chunk framing was lost: what follows is a new message.
                    Step::NotChunk => st.req_chunk = None,
                }
            }
            if st.upgrade_requested && detect(Dir::Request, buf) == Confidence::No {
                // Bytes of the protocol the client is switching to, sent before the answer.
                return Ok(Parsed::Skip {
                    consumed: buf.len(),
                });
            }
            parse_request(buf, st)
        }
        Dir::Response => {
            if let Some(n) = st.close_body {
                st.close_body = Some(n.saturating_add(buf.len() as u64));
                return Ok(Parsed::Skip {
                    consumed: buf.len(),
                });
            }
            if let Some(p) = st.resp_chunk {
                match chunk_step(buf, p)? {
                    Step::Parsed(r, next) => {
                        st.resp_chunk = next;
                        return Ok(r);
                    }
                    Step::NotChunk => st.resp_chunk = None,
                }
            }
            parse_response(buf, st)
        }
    }
}

fn version(v: Option<u8>) -> &'static str {
    match v {
        Some(0) => "1.0",
        _ => "1.1",
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

/// Short header text stored inline (no allocation up to 24 bytes).
fn short_text(v: &[u8]) -> CompactString {
    match std::str::from_utf8(v) {
        Ok(s) => CompactString::from(s),
        Err(_) => CompactString::from(String::from_utf8_lossy(v)),
    }
}

fn head_status(
    r: Result<httparse::Status<usize>, httparse::Error>,
    buf: &[u8],
) -> Result<Option<usize>, ParseError> {
    match r {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => Err(ParseError::TooLarge {
            size: buf.len(),
            max: MAX_HEAD,
        }),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(ParseError::TooLarge {
            size: MAX_HEADERS + 1,
            max: MAX_HEADERS,
        }),
        Err(_) => Err(ParseError::Invalid("malformed HTTP/1 head")),
    }
}

/// Body framing announced by headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
    None,
}

struct Common {
    content_length: Option<u64>,
    chunked: bool,
    upgrade: bool,
    connection_upgrade: bool,
}

fn content_length(v: &[u8]) -> Result<u64, ParseError> {
    let s = std::str::from_utf8(v)
        .map_err(|_| ParseError::Invalid("content-length not ASCII"))?
        .trim();
    // Tolerate `n, n` (duplicated header folded by a proxy) when the values agree.
    let mut it = s.split(',').map(str::trim);
    let first = it.next().unwrap_or("");
    if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ParseError::Invalid("bad content-length"));
    }
    let n: u64 = first
        .parse()
        .map_err(|_| ParseError::Invalid("bad content-length"))?;
    if it.any(|o| o != first) {
        return Err(ParseError::Invalid("conflicting content-length"));
    }
    Ok(n)
}

fn common(headers: &[httparse::Header<'_>]) -> Result<Common, ParseError> {
    let mut c = Common {
        content_length: None,
        chunked: false,
        upgrade: false,
        connection_upgrade: false,
    };
    for h in headers {
        let n = h.name;
        if n.eq_ignore_ascii_case("content-length") {
            let v = content_length(h.value)?;
            if c.content_length.is_some_and(|o| o != v) {
                return Err(ParseError::Invalid("conflicting content-length"));
            }
            c.content_length = Some(v);
        } else if n.eq_ignore_ascii_case("transfer-encoding") {
            // Chunked must be the last coding; anything else is length-less.
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or(b"");
            c.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
        } else if n.eq_ignore_ascii_case("upgrade") {
            c.upgrade = true;
        } else if n.eq_ignore_ascii_case("connection") {
            c.connection_upgrade = h
                .value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
        }
    }
    Ok(c)
}

/// Room for the headers of one head, left uninitialised: httparse writes only the slots it
/// fills, so each parse does not first zero 96 headers (3 KiB), which showed in profiles.
fn header_slots<'b>() -> [MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

fn parse_request(buf: &[u8], st: &mut State) -> Res {
    let mut headers = header_slots();
    let mut req = httparse::Request::new(&mut []);
    let Some(head_len) = head_status(req.parse_with_uninit_headers(buf, &mut headers), buf)? else {
        return Ok(Parsed::Partial);
    };
    let method = req.method.unwrap_or("");
    let target = req.path.unwrap_or("");
    let c = common(req.headers)?;
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (CompactString::from(p), Some(CompactString::from(q))),
        None => (CompactString::from(target), None),
    };
    let mut h = RequestHead {
        method: CompactString::from(method),
        path,
        query,
        version: version(req.version),
        content_length: c.content_length,
        ..RequestHead::default()
    };
    for hd in req.headers.iter() {
        let n = hd.name;
        // Host and User-Agent are short: stored inline.
        let short = if n.eq_ignore_ascii_case("host") {
            &mut h.host
        } else if n.eq_ignore_ascii_case("user-agent") {
            &mut h.user_agent
        } else {
            let slot = if n.eq_ignore_ascii_case("content-type") {
                &mut h.content_type
            } else if n.eq_ignore_ascii_case("traceparent") {
                &mut h.traceparent
            } else if n.eq_ignore_ascii_case("tracestate") {
                &mut h.tracestate
            } else if n.eq_ignore_ascii_case("b3") {
                &mut h.b3
            } else {
                if let Some(e) = st.extra_headers.iter().find(|e| n.eq_ignore_ascii_case(e)) {
                    h.extra_headers.push((e.clone(), text(hd.value)));
                }
                continue;
            };
            if slot.is_none() {
                *slot = Some(text(hd.value));
            }
            continue;
        };
        if short.is_none() {
            *short = Some(short_text(hd.value));
        }
    }
    let kind = match method {
        "HEAD" => MethodKind::Head,
        "CONNECT" => MethodKind::Connect,
        _ => MethodKind::Other,
    };
    let framing = if c.chunked {
        Framing::Chunked
    } else if let Some(n) = c.content_length {
        Framing::Length(n)
    } else {
        Framing::None
    };
    let out = body(
        buf,
        head_len,
        framing,
        Message::Request(Box::new(h)),
        &mut st.req_chunk,
    )?;
    if !matches!(out, Parsed::Partial) {
        if st.methods.len() >= MAX_PENDING_METHODS {
            st.methods.pop_front();
        }
        st.methods.push_back(kind);
        st.outstanding_requests = st.outstanding_requests.saturating_add(1);
        if kind == MethodKind::Connect || (c.upgrade && c.connection_upgrade) {
            st.upgrade_requested = true;
        }
    }
    Ok(out)
}

fn parse_response(buf: &[u8], st: &mut State) -> Res {
    let mut headers = header_slots();
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    );
    let Some(head_len) = head_status(parsed, buf)? else {
        return Ok(Parsed::Partial);
    };
    let status = resp.code.unwrap_or(0);
    let c = common(resp.headers)?;
    let answering = st.methods.front().copied().unwrap_or(MethodKind::Other);
    let upgraded =
        status == 101 || (answering == MethodKind::Connect && (200..300).contains(&status));
    if (100..200).contains(&status) && status != 101 {
        // Interim (100 Continue, 103 Early Hints): the final response follows and accounts
        // for these bytes.
        st.interim_bytes = st.interim_bytes.saturating_add(head_len as u64);
        return Ok(Parsed::Skip { consumed: head_len });
    }
    let h = ResponseHead {
        version: version(resp.version),
        status,
        content_length: c.content_length,
        upgraded,
    };
    let framing = if upgraded || answering == MethodKind::Head || status == 204 || status == 304 {
        Framing::None
    } else if c.chunked {
        Framing::Chunked
    } else if let Some(n) = c.content_length {
        Framing::Length(n)
    } else {
        // No length: the body runs until the server closes the connection.
        st.methods.pop_front();
        st.upgrade_requested = false;
        st.close_body = Some(buf.len().saturating_sub(head_len) as u64);
        return Ok(Parsed::Frame {
            frame: Frame {
                msg: Message::Response(h),
                head_bytes: (head_len as u64).saturating_add(std::mem::take(&mut st.interim_bytes)),
                body: Body::UntilClose,
                start_ns: 0,
                end_ns: 0,
            },
            consumed: buf.len(),
        });
    };
    let mut out = body(
        buf,
        head_len,
        framing,
        Message::Response(h),
        &mut st.resp_chunk,
    )?;
    if let Parsed::Frame { frame, .. } = &mut out {
        frame.head_bytes = frame
            .head_bytes
            .saturating_add(std::mem::take(&mut st.interim_bytes));
        st.methods.pop_front();
        st.upgrade_requested = false;
        if upgraded {
            st.upgraded = true;
        }
    }
    Ok(out)
}

/// Frames a message whose head is `buf[..head_len]`.
fn body(
    buf: &[u8],
    head_len: usize,
    framing: Framing,
    msg: Message,
    chunk: &mut Option<ChunkProgress>,
) -> Res {
    let frame = |body| Frame {
        msg,
        head_bytes: head_len as u64,
        body,
        start_ns: 0,
        end_ns: 0,
    };
    match framing {
        Framing::None => Ok(Parsed::Frame {
            frame: frame(Body::Done { wire: 0, data: 0 }),
            consumed: head_len,
        }),
        Framing::Length(n) => {
            let consumed = usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_add(head_len))
                .ok_or(ParseError::TooLarge {
                    size: usize::MAX,
                    max: usize::MAX / 2,
                })?;
            Ok(Parsed::Frame {
                frame: frame(Body::Done { wire: n, data: n }),
                consumed,
            })
        }
        Framing::Chunked => match scan_chunks(buf, head_len)? {
            Chunks::Done { end, data } => Ok(Parsed::Frame {
                frame: frame(Body::Done {
                    wire: (end - head_len) as u64,
                    data,
                }),
                consumed: end,
            }),
            Chunks::More {
                complete,
                data,
                open_chunk,
            } => {
                // A chunk whose data runs past the buffer: hand out the head and let the driver
                // skip to the chunk's end (even over bytes the capture lost); stream the rest.
                let (consumed, data) = match open_chunk {
                    Some((end, size)) => (end, data.saturating_add(size)),
                    None if buf.len() - head_len >= STREAM_AT => (complete, data),
                    None => return Ok(Parsed::Partial),
                };
                *chunk = Some(ChunkProgress {
                    wire: (consumed - head_len) as u64,
                    data,
                });
                Ok(Parsed::Frame {
                    frame: frame(Body::Chunked),
                    consumed,
                })
            }
        },
    }
}

enum Chunks {
    /// Body complete: ends at `end`, carrying `data` payload bytes.
    Done { end: usize, data: u64 },
    /// Chunks up to `complete` are whole (`data` payload bytes); `open_chunk` is the end and
    /// size of the next chunk when its header is whole but its data runs past the buffer.
    More {
        complete: usize,
        data: u64,
        open_chunk: Option<(usize, u64)>,
    },
}

enum ChunkLine {
    /// Size and the offset just past the line's CRLF.
    Size(u64, usize),
    Partial,
    /// Not a chunk-size line at all.
    NotChunk,
}

fn chunk_line(buf: &[u8], pos: usize) -> Result<ChunkLine, ParseError> {
    let rest = buf.get(pos..).unwrap_or(&[]);
    let digits = rest.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Ok(if rest.is_empty() {
            ChunkLine::Partial
        } else {
            ChunkLine::NotChunk
        });
    }
    if digits > 15 {
        return Err(ParseError::Invalid("chunk size too long"));
    }
    match rest.get(digits) {
        None => return Ok(ChunkLine::Partial),
        Some(b'\r' | b';' | b' ' | b'\t') => {}
        Some(_) => return Ok(ChunkLine::NotChunk),
    }
    let size = std::str::from_utf8(rest.get(..digits).unwrap_or(&[]))
        .ok()
        .and_then(|s| u64::from_str_radix(s, 16).ok())
        .ok_or(ParseError::Invalid("bad chunk size"))?;
    match find_crlf(rest, digits) {
        Some(i) => Ok(ChunkLine::Size(size, pos + i + 2)),
        None if rest.len() > MAX_CHUNK_LINE => Err(ParseError::Invalid("chunk line too long")),
        None => Ok(ChunkLine::Partial),
    }
}

fn find_crlf(b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|i| i + from)
}

/// Trailer section after the last chunk: lines until an empty line. Returns its end.
fn trailers(buf: &[u8], pos: usize) -> Result<Option<usize>, ParseError> {
    let mut at = pos;
    loop {
        match find_crlf(buf, at) {
            Some(i) if i == at => return Ok(Some(i + 2)),
            Some(i) => at = i + 2,
            None if buf.len().saturating_sub(pos) > MAX_HEAD => {
                return Err(ParseError::TooLarge {
                    size: buf.len() - pos,
                    max: MAX_HEAD,
                });
            }
            None => return Ok(None),
        }
    }
}

fn chunk_end(after_line: usize, size: u64) -> Result<usize, ParseError> {
    usize::try_from(size)
        .ok()
        .and_then(|s| after_line.checked_add(s)?.checked_add(2))
        .ok_or(ParseError::Invalid("chunk too large"))
}

fn scan_chunks(buf: &[u8], start: usize) -> Result<Chunks, ParseError> {
    let mut pos = start;
    let mut data = 0u64;
    loop {
        let more = |open_chunk| Chunks::More {
            complete: pos,
            data,
            open_chunk,
        };
        match chunk_line(buf, pos)? {
            ChunkLine::Partial => return Ok(more(None)),
            ChunkLine::NotChunk => return Err(ParseError::Invalid("bad chunk framing")),
            ChunkLine::Size(0, after) => {
                return Ok(match trailers(buf, after)? {
                    Some(end) => Chunks::Done { end, data },
                    None => more(None),
                });
            }
            ChunkLine::Size(n, after) => {
                let end = chunk_end(after, n)?;
                if end > buf.len() {
                    return Ok(more(Some((end, n))));
                }
                if buf.get(end - 2..end) != Some(b"\r\n") {
                    return Err(ParseError::Invalid("chunk not followed by CRLF"));
                }
                data = data.saturating_add(n);
                pos = end;
            }
        }
    }
}

enum Step {
    Parsed(Parsed<Frame>, Option<ChunkProgress>),
    NotChunk,
}

/// One step through a streamed chunked body: skip one chunk, or finish with a `BodyEnd`.
fn chunk_step(buf: &[u8], p: ChunkProgress) -> Result<Step, ParseError> {
    match chunk_line(buf, 0)? {
        ChunkLine::Partial => Ok(Step::Parsed(Parsed::Partial, Some(p))),
        ChunkLine::NotChunk => Ok(Step::NotChunk),
        ChunkLine::Size(0, after) => match trailers(buf, after)? {
            Some(end) => Ok(Step::Parsed(
                Parsed::Frame {
                    frame: Frame {
                        msg: Message::BodyEnd,
                        head_bytes: 0,
                        body: Body::Done {
                            wire: p.wire.saturating_add(end as u64),
                            data: p.data,
                        },
                        start_ns: 0,
                        end_ns: 0,
                    },
                    consumed: end,
                },
                None,
            )),
            None => Ok(Step::Parsed(Parsed::Partial, Some(p))),
        },
        ChunkLine::Size(n, after) => {
            let end = chunk_end(after, n)?;
            Ok(Step::Parsed(
                Parsed::Skip { consumed: end },
                Some(ChunkProgress {
                    wire: p.wire.saturating_add(end as u64),
                    data: p.data.saturating_add(n),
                }),
            ))
        }
    }
}

fn method_at(buf: &[u8]) -> Option<usize> {
    METHODS.iter().find_map(|m| {
        let n = m.len();
        (buf.get(..n) == Some(m) && buf.get(n) == Some(&b' ')).then_some(n + 1)
    })
}

fn is_method_prefix(buf: &[u8]) -> bool {
    METHODS
        .iter()
        .any(|m| buf.len() <= m.len() && m.starts_with(buf))
}

/// `HTTP/1.x NNN` — returns Some(true) when complete, Some(false) when a valid prefix.
fn status_line(buf: &[u8]) -> Option<bool> {
    const P: &[u8] = b"HTTP/1.";
    let n = buf.len().min(P.len());
    if buf.get(..n)? != P.get(..n)? {
        return None;
    }
    let rest = buf.get(P.len()..).unwrap_or(&[]);
    let ok = |i: usize, f: fn(u8) -> bool| rest.get(i).is_none_or(|&b| f(b));
    let valid = ok(0, |b| b == b'0' || b == b'1')
        && ok(1, |b| b == b' ')
        && ok(2, |b| b.is_ascii_digit())
        && ok(3, |b| b.is_ascii_digit())
        && ok(4, |b| b.is_ascii_digit());
    valid.then_some(rest.len() >= 5)
}

pub fn detect(dir: Dir, head: &[u8]) -> Confidence {
    match dir {
        Dir::Request => {
            let Some(after) = method_at(head) else {
                return if !head.is_empty() && is_method_prefix(head) {
                    Confidence::Maybe
                } else {
                    Confidence::No
                };
            };
            let rest = head.get(after..).unwrap_or(&[]);
            let line_end = rest
                .iter()
                .position(|&b| b == b'\r' || b == b'\n')
                .unwrap_or(rest.len());
            let line = rest.get(..line_end).unwrap_or(&[]);
            if line.first().is_some_and(|&b| b == b' ' || b < 0x21) {
                return Confidence::No;
            }
            match line.iter().position(|&b| b == b' ') {
                Some(sp) => {
                    let v = line.get(sp + 1..).unwrap_or(&[]);
                    if v.len() >= 7 {
                        if v.starts_with(b"HTTP/1.") {
                            Confidence::Certain
                        } else {
                            Confidence::No
                        }
                    } else if b"HTTP/1.".starts_with(v) {
                        Confidence::Maybe
                    } else {
                        Confidence::No
                    }
                }
                None if line_end == rest.len() => Confidence::Maybe,
                None => Confidence::No,
            }
        }
        Dir::Response => match status_line(head) {
            Some(true) => Confidence::Certain,
            Some(false) if !head.is_empty() => Confidence::Maybe,
            _ => Confidence::No,
        },
    }
}

pub fn find_boundary(dir: Dir, buf: &[u8], from: usize) -> Option<usize> {
    (from..buf.len()).find(|&i| {
        let at = buf.get(i..).unwrap_or(&[]);
        // Message starts follow a line end (or the buffer start).
        let line_start = i == 0 || buf.get(i - 1) == Some(&b'\n');
        line_start
            && match dir {
                Dir::Request => method_at(at).is_some(),
                Dir::Response => status_line(at) == Some(true),
            }
    })
}
