//! PostgreSQL wire messages -> frames, one message per call. Messages that take no part in
//! pairing (authentication, parameter status, notices, DataRows, ...) become `Skip`s that
//! update the connection state; their bytes are carried into the next frame's size.

use std::sync::Arc;

use super::types::{Frame, Msg, Phase, Prepared, Request, Response, State, bounded_insert};
use crate::sql::{Analyzed, Dialect};
use crate::{Dir, ParseError, Parsed};

/// Largest message accepted at all (bigger: not PostgreSQL, or not worth following).
pub const MAX_MSG: usize = 64 * 1024 * 1024;
/// Largest length find_boundary/detect consider plausible.
pub const SANE_MSG: usize = 1024 * 1024;
/// Bytes of a message needed to parse it (DataRow and CopyData: only their header, the body is
/// skipped unread); longer messages are parsed from this prefix and their
/// tail is skipped (via `consumed` > buffer length).
pub const HEAD_CAP: usize = 16 * 1024;

pub const PROTO_V3: u32 = 196_608;
pub const SSL_REQUEST: u32 = 80_877_103;
pub const GSSENC_REQUEST: u32 = 80_877_104;
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// Startup packets are small; anything longer is not one.
pub const MAX_STARTUP: usize = 10_000;

pub const REQUEST_TYPES: &[u8] = b"QPBDESHCXFdcfp";
pub const RESPONSE_TYPES: &[u8] = b"RSKZTDCEIN123ntsAGHWcdvV";

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// A NUL-terminated string at `*at`, advancing past the NUL.
fn cstr<'a>(b: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let rest = b.get(*at..)?;
    let n = rest.iter().position(|&c| c == 0)?;
    *at += n + 1;
    rest.get(..n)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b.get(..256).unwrap_or(b)).into_owned()
}

pub fn parse(dir: Dir, buf: &[u8], st: &mut State) -> Result<Parsed<Frame>, ParseError> {
    if st.phase == Phase::Encrypted {
        return Ok(Parsed::Skip {
            consumed: buf.len(),
        });
    }
    match dir {
        Dir::Request => parse_request(buf, st),
        Dir::Response => parse_response(buf, st),
    }
}

/// The typed message at the buffer start: (type, body, total length). `Partial` when fewer
/// than `min(total, HEAD_CAP)` bytes are buffered; `body` may then be a prefix.
enum Head<'a> {
    Partial,
    Msg {
        ty: u8,
        body: &'a [u8],
        total: usize,
    },
}

fn typed<'a>(buf: &'a [u8], types: &[u8], header_only: &[u8]) -> Result<Head<'a>, ParseError> {
    let Some(&ty) = buf.first() else {
        return Ok(Head::Partial);
    };
    if !types.contains(&ty) {
        return Err(ParseError::Invalid("unknown message type"));
    }
    let Some(len) = be32(buf, 1) else {
        return Ok(Head::Partial);
    };
    let len = len as usize;
    if len < 4 {
        return Err(ParseError::Invalid("message length under 4"));
    }
    if len > MAX_MSG {
        return Err(ParseError::TooLarge {
            size: len,
            max: MAX_MSG,
        });
    }
    let total = len + 1;
    let need = if header_only.contains(&ty) {
        5
    } else {
        total.min(HEAD_CAP)
    };
    if buf.len() < need {
        return Ok(Head::Partial);
    }
    let end = total.min(buf.len());
    Ok(Head::Msg {
        ty,
        body: buf.get(5..end).unwrap_or(&[]),
        total,
    })
}

fn frame(msg: Msg, total: usize, skipped: &mut u64) -> Parsed<Frame> {
    let size = total as u64 + std::mem::take(skipped);
    Parsed::Frame {
        frame: Frame::new(msg, size),
        consumed: total,
    }
}

fn skip(total: usize, skipped: &mut u64) -> Parsed<Frame> {
    *skipped += total as u64;
    Parsed::Skip { consumed: total }
}

fn parse_request(buf: &[u8], st: &mut State) -> Result<Parsed<Frame>, ParseError> {
    match buf.first() {
        None => return Ok(Parsed::Partial),
        // Untyped: startup, SSLRequest, GSSENCRequest, CancelRequest.
        Some(0) => return parse_untyped(buf, st),
        _ => {}
    }
    let (ty, body, total) = match typed(buf, REQUEST_TYPES, b"d")? {
        Head::Partial => return Ok(Parsed::Partial),
        Head::Msg { ty, body, total } => (ty, body, total),
    };
    let complete = body.len() + 5 == total;
    let sk = &mut st.skipped_req;
    Ok(match ty {
        b'Q' => {
            let sql = body.strip_suffix(b"\0").unwrap_or(body);
            if complete && body.last() != Some(&0) {
                return Err(ParseError::Invalid("query not NUL-terminated"));
            }
            let sql = Arc::new(Analyzed::with_cache(sql, Dialect::Postgres, &mut st.shapes));
            frame(Msg::Req(Request::Query { sql }), total, sk)
        }
        b'P' => {
            let mut at = 0;
            let name = cstr(body, &mut at).ok_or(ParseError::Invalid("Parse without name"))?;
            let name = lossy(name);
            let rest = body.get(at..).unwrap_or(&[]);
            let text = match rest.iter().position(|&c| c == 0) {
                Some(n) => rest.get(..n).unwrap_or(rest),
                None if complete => return Err(ParseError::Invalid("Parse text unterminated")),
                None => rest,
            };
            let sql = Arc::new(Analyzed::with_cache(
                text,
                Dialect::Postgres,
                &mut st.shapes,
            ));
            bounded_insert(
                &mut st.statements,
                name.clone(),
                sql.clone(),
                &mut st.evictions,
            );
            frame(
                Msg::Req(Request::Parse { name, sql }),
                total,
                &mut st.skipped_req,
            )
        }
        b'B' => {
            let mut at = 0;
            let portal = cstr(body, &mut at).ok_or(ParseError::Invalid("Bind without portal"))?;
            let stmt = cstr(body, &mut at).ok_or(ParseError::Invalid("Bind without statement"))?;
            let (portal, statement) = (lossy(portal), lossy(stmt));
            let sql = st.statements.get(&statement).cloned();
            if let Some(sql) = &sql {
                let p = Prepared {
                    statement: statement.clone(),
                    sql: sql.clone(),
                };
                bounded_insert(&mut st.portals, portal, p, &mut st.evictions);
            } else {
                st.portals.remove(&portal);
            }
            frame(
                Msg::Req(Request::Bind { statement, sql }),
                total,
                &mut st.skipped_req,
            )
        }
        b'D' => frame(Msg::Req(Request::Describe), total, sk),
        b'E' => {
            let mut at = 0;
            let portal =
                cstr(body, &mut at).ok_or(ParseError::Invalid("Execute without portal"))?;
            let p = st.portals.get(&*String::from_utf8_lossy(portal));
            let statement = p.map(|p| p.statement.clone()).filter(|s| !s.is_empty());
            let sql = p.map(|p| p.sql.clone());
            frame(
                Msg::Req(Request::Execute { statement, sql }),
                total,
                &mut st.skipped_req,
            )
        }
        b'S' => frame(Msg::Req(Request::Sync), total, sk),
        b'F' => frame(Msg::Req(Request::FunctionCall), total, sk),
        b'C' => {
            // Close statement/portal: forget it (CloseComplete is skipped too).
            let name = body.get(1..).and_then(|b| cstr(b, &mut 0)).map(lossy);
            match (body.first(), name) {
                (Some(b'S'), Some(n)) => {
                    st.statements.remove(&n);
                }
                (Some(b'P'), Some(n)) => {
                    st.portals.remove(&n);
                }
                _ => {}
            }
            skip(total, &mut st.skipped_req)
        }
        b'p' => {
            st.phase = Phase::Auth;
            skip(total, sk)
        }
        // Flush, Terminate, FunctionCall, COPY data/done/fail.
        _ => skip(total, sk),
    })
}

fn parse_untyped(buf: &[u8], st: &mut State) -> Result<Parsed<Frame>, ParseError> {
    let Some(len) = be32(buf, 0) else {
        return Ok(Parsed::Partial);
    };
    let len = len as usize;
    if !(8..=MAX_STARTUP).contains(&len) {
        return Err(ParseError::Invalid("startup length"));
    }
    let Some(code) = be32(buf, 4) else {
        return Ok(Parsed::Partial);
    };
    let known = code >> 16 == 3 || matches!(code, SSL_REQUEST | GSSENC_REQUEST | CANCEL_REQUEST);
    if !known {
        return Err(ParseError::Invalid("unknown startup code"));
    }
    let Some(msg) = buf.get(..len) else {
        return Ok(Parsed::Partial);
    };
    match code {
        SSL_REQUEST => st.phase = Phase::SslRequested,
        GSSENC_REQUEST => st.phase = Phase::GssRequested,
        CANCEL_REQUEST => {}
        _ => {
            let mut at = 8;
            let mut database = None;
            while let Some(k) = cstr(msg, &mut at) {
                if k.is_empty() {
                    break;
                }
                let Some(v) = cstr(msg, &mut at) else { break };
                match k {
                    b"user" => st.user = Some(lossy(v).into()),
                    b"database" => database = Some(lossy(v).into()),
                    b"application_name" => st.application_name = Some(lossy(v).into()),
                    _ => {}
                }
            }
            // The database defaults to the user name.
            st.database = database.or_else(|| st.user.clone());
            st.phase = Phase::Auth;
        }
    }
    Ok(skip(len, &mut st.skipped_req))
}

/// Row count in a CommandComplete tag: the last number of "SELECT 3", "INSERT 0 1", "UPDATE 2".
fn tag_rows(tag: &str) -> Option<u64> {
    let mut words = tag.split(' ');
    let cmd = words.next()?;
    if !matches!(
        cmd,
        "SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "FETCH" | "MOVE" | "COPY"
    ) {
        return None;
    }
    tag.rsplit(' ').next()?.parse().ok()
}

fn error_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    let (mut code, mut message) = (None, None);
    let mut at = 0;
    while let Some(&f) = body.get(at) {
        if f == 0 {
            break;
        }
        at += 1;
        let Some(v) = cstr(body, &mut at) else { break };
        match f {
            b'C' => code = Some(lossy(v)),
            b'M' => message = Some(lossy(v)),
            _ => {}
        }
    }
    (code, message)
}

fn parse_response(buf: &[u8], st: &mut State) -> Result<Parsed<Frame>, ParseError> {
    // One-byte answers to SSLRequest / GSSENCRequest.
    match (st.phase, buf.first()) {
        (_, None) => return Ok(Parsed::Partial),
        (Phase::SslRequested | Phase::GssRequested, Some(b'N')) => {
            st.phase = Phase::Normal;
            return Ok(skip(1, &mut st.skipped_resp));
        }
        (Phase::SslRequested, Some(b'S')) | (Phase::GssRequested, Some(b'G')) => {
            st.phase = Phase::Encrypted;
            return Ok(Parsed::Skip {
                consumed: buf.len(),
            });
        }
        _ => {}
    }
    let (ty, body, total) = match typed(buf, RESPONSE_TYPES, b"Dd")? {
        Head::Partial => return Ok(Parsed::Partial),
        Head::Msg { ty, body, total } => (ty, body, total),
    };
    // Messages only a running session sends: the end of authentication was lost.
    if st.phase == Phase::Auth && b"TDC12Isn".contains(&ty) {
        st.phase = Phase::Normal;
    }
    let sk = &mut st.skipped_resp;
    if st.phase == Phase::Auth || st.phase == Phase::SslRequested {
        // Authentication requests, parameter status, key data, auth errors: not queries.
        if ty == b'Z' {
            st.phase = Phase::Normal;
            // Startup and authentication bytes belong to no query.
            st.skipped_req = 0;
            st.skipped_resp = 0;
            return Ok(Parsed::Skip { consumed: total });
        }
        return Ok(skip(total, sk));
    }
    Ok(match ty {
        b'R' => {
            // A new authentication exchange (e.g. SASL) without us having seen the startup.
            st.phase = Phase::Auth;
            skip(total, sk)
        }
        b'D' => {
            let (n, consumed) = data_row_run(buf, total);
            st.rows += n;
            skip(consumed, sk)
        }
        b'T' | b'n' => frame(Msg::Resp(Response::Described), total, sk),
        b'1' => frame(Msg::Resp(Response::ParseComplete), total, sk),
        b'2' => frame(Msg::Resp(Response::BindComplete), total, sk),
        b'C' => {
            let tag = lossy(body.split(|&c| c == 0).next().unwrap_or(&[]));
            let seen = std::mem::take(&mut st.rows);
            let rows = tag_rows(&tag).or((seen > 0).then_some(seen));
            frame(Msg::Resp(Response::Command { tag, rows }), total, sk)
        }
        b'I' => frame(Msg::Resp(Response::EmptyQuery), total, sk),
        b's' => {
            let rows = std::mem::take(&mut st.rows);
            frame(Msg::Resp(Response::Suspended { rows }), total, sk)
        }
        b'E' => {
            st.rows = 0;
            let (code, message) = error_fields(body);
            frame(Msg::Resp(Response::Error { code, message }), total, sk)
        }
        b'Z' => {
            if total != 6 {
                return Err(ParseError::Invalid("ReadyForQuery length"));
            }
            let status = body.first().copied().unwrap_or(b'I');
            frame(Msg::Resp(Response::Ready { status }), total, sk)
        }
        // ParameterStatus, BackendKeyData, notices, notifications, CloseComplete,
        // ParameterDescription, COPY, function results, protocol negotiation.
        _ => skip(total, sk),
    })
}

/// Rows skipped in one step at most.
const MAX_RUN: u64 = 4096;

/// A DataRow of `first_total` bytes at the buffer start and the complete DataRows right after
/// it: (rows, bytes). One skip per run of rows instead of one per row keeps large result sets
/// cheap for the driver.
fn data_row_run(buf: &[u8], first_total: usize) -> (u64, usize) {
    let (mut n, mut at) = (1u64, first_total);
    while n < MAX_RUN && buf.get(at) == Some(&b'D') {
        let Some(len) = be32(buf, at + 1) else { break };
        let len = len as usize;
        // Only rows wholly inside the buffer join the run.
        if len < 4 || at + 1 + len > buf.len() {
            break;
        }
        n += 1;
        at += 1 + len;
    }
    (n, at)
}

/// Is there a plausible message header at `i`?
pub fn plausible_at(dir: Dir, buf: &[u8], i: usize) -> bool {
    let types = match dir {
        Dir::Request => REQUEST_TYPES,
        Dir::Response => RESPONSE_TYPES,
    };
    let Some(&ty) = buf.get(i) else { return false };
    if !types.contains(&ty) {
        return false;
    }
    let Some(len) = be32(buf, i + 1) else {
        return false;
    };
    let len = len as usize;
    if !(4..=SANE_MSG).contains(&len) {
        return false;
    }
    if ty == b'Z' && (len != 5 || !matches!(buf.get(i + 5), None | Some(b'I' | b'T' | b'E'))) {
        return false;
    }
    // When the message ends inside the buffer, the next one must start with a valid type.
    match buf.get(i + 1 + len) {
        Some(next) => types.contains(next),
        None => true,
    }
}
