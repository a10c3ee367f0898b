//! MySQL/MariaDB packets -> frames, one packet per call. Handshake and authentication update
//! the state; commands become request frames; a response becomes one frame (OK, ERR,
//! PREPARE_OK) or two (result-set start and end, with rows skipped and counted between).

use std::sync::Arc;

use super::types::*;
use crate::sql::{Analyzed, Dialect};
use crate::{DbSystem, Dir, ParseError, Parsed};

/// Largest payload of one packet.
pub const MAX_PAYLOAD: usize = 0xff_ffff;
/// Bytes of a packet needed to parse it; longer packets are parsed from this prefix and their
/// tail skipped (`consumed` > buffer length).
pub const HEAD_CAP: usize = 16 * 1024;
/// Largest packet resync and detection consider plausible.
pub const SANE_PACKET: usize = 1024 * 1024;

pub const COM_QUIT: u8 = 0x01;
pub const COM_INIT_DB: u8 = 0x02;
pub const COM_QUERY: u8 = 0x03;
pub const COM_FIELD_LIST: u8 = 0x04;
pub const COM_STATISTICS: u8 = 0x09;
pub const COM_PING: u8 = 0x0e;
pub const COM_CHANGE_USER: u8 = 0x11;
pub const COM_STMT_PREPARE: u8 = 0x16;
pub const COM_STMT_EXECUTE: u8 = 0x17;
pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
pub const COM_STMT_CLOSE: u8 = 0x19;
pub const COM_STMT_RESET: u8 = 0x1a;
pub const COM_SET_OPTION: u8 = 0x1b;
pub const COM_STMT_FETCH: u8 = 0x1c;
pub const COM_RESET_CONNECTION: u8 = 0x1f;

/// Commands resync accepts as a packet start.
pub const COMMANDS: &[u8] = &[
    COM_QUIT,
    COM_INIT_DB,
    COM_QUERY,
    COM_FIELD_LIST,
    COM_STATISTICS,
    COM_PING,
    COM_CHANGE_USER,
    COM_STMT_PREPARE,
    COM_STMT_EXECUTE,
    COM_STMT_SEND_LONG_DATA,
    COM_STMT_CLOSE,
    COM_STMT_RESET,
    COM_SET_OPTION,
    COM_STMT_FETCH,
    COM_RESET_CONNECTION,
];

/// One packet at the buffer start.
pub struct Packet<'a> {
    pub len: usize,
    pub seq: u8,
    /// The payload, or its first `HEAD_CAP - 4` bytes.
    pub payload: &'a [u8],
    /// Header plus payload.
    pub total: usize,
}

/// The packet at the start of `buf`; None when not enough is buffered yet. With `skipping`
/// (rows, definitions, continuations) only the header and first payload byte are needed unless
/// that byte announces EOF/OK/ERR.
pub fn packet(buf: &[u8], skipping: bool) -> Option<Packet<'_>> {
    let h = buf.get(..4)?;
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    let total = len + 4;
    let need = match buf.get(4) {
        Some(b) if skipping && len > 0 && *b != 0xfe && *b != 0xff => 5,
        _ => total.min(HEAD_CAP),
    };
    if buf.len() < need {
        return None;
    }
    Some(Packet {
        len,
        seq: h[3],
        payload: buf.get(4..total.min(buf.len())).unwrap_or(&[]),
        total,
    })
}

/// Length-encoded integer at `*at`.
fn lenenc(b: &[u8], at: &mut usize) -> Option<u64> {
    let first = *b.get(*at)?;
    let (n, v) = match first {
        0..=0xfa => (1, u64::from(first)),
        0xfc => (
            3,
            u64::from(u16::from_le_bytes([*b.get(*at + 1)?, *b.get(*at + 2)?])),
        ),
        0xfd => {
            let s = b.get(*at + 1..*at + 4)?;
            (
                4,
                u64::from(s[0]) | u64::from(s[1]) << 8 | u64::from(s[2]) << 16,
            )
        }
        0xfe => {
            let s = b.get(*at + 1..*at + 9)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(s);
            (9, u64::from_le_bytes(a))
        }
        _ => return None,
    };
    *at += n;
    Some(v)
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn cstr<'a>(b: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let rest = b.get(*at..)?;
    let n = rest.iter().position(|&c| c == 0)?;
    *at += n + 1;
    rest.get(..n)
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b.get(..256).unwrap_or(b)).into_owned()
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

pub fn parse(dir: Dir, buf: &[u8], st: &mut State) -> Result<Parsed<Frame>, ParseError> {
    if st.phase == Phase::Tls {
        return Ok(Parsed::Skip {
            consumed: buf.len(),
        });
    }
    // Reject a command header early, before waiting for a (possibly bogus, huge) length.
    if dir == Dir::Request && st.phase == Phase::Command && !st.req_continues {
        if buf.get(3).is_some_and(|&seq| seq != 0) {
            return Err(ParseError::Invalid("command packet with sequence id not 0"));
        }
        if buf.get(4).is_some_and(|c| !COMMANDS.contains(c)) {
            return Err(ParseError::Invalid("unknown command"));
        }
    }
    let skipping = match dir {
        Dir::Request => st.req_continues,
        Dir::Response => {
            st.resp_continues
                || matches!(
                    st.resp,
                    RespPhase::Rows { .. } | RespPhase::Defs { .. } | RespPhase::UntilEof
                )
        }
    };
    let Some(p) = packet(buf, skipping) else {
        return Ok(Parsed::Partial);
    };
    match dir {
        Dir::Request => parse_request(&p, st),
        Dir::Response => parse_response(buf, &p, st),
    }
}

fn parse_request(p: &Packet<'_>, st: &mut State) -> Result<Parsed<Frame>, ParseError> {
    if st.req_continues {
        st.req_continues = p.len == MAX_PAYLOAD;
        return Ok(skip(p.total, &mut st.skipped_req));
    }
    match st.phase {
        Phase::Handshake => return handshake_response(p, st),
        Phase::Auth if p.seq != 0 => return Ok(skip(p.total, &mut st.skipped_req)),
        _ => {}
    }
    if p.seq != 0 {
        return Err(ParseError::Invalid("command packet with sequence id not 0"));
    }
    let Some((&cmd, body)) = p.payload.split_first() else {
        return Err(ParseError::Invalid("empty command packet"));
    };
    st.phase = Phase::Command;
    st.req_continues = p.len == MAX_PAYLOAD;
    let sk = &mut st.skipped_req;
    let (msg, expect) = match cmd {
        COM_QUERY => {
            let sql = Arc::new(Analyzed::with_cache(body, Dialect::Mysql, &mut st.shapes));
            (Request::Query { sql }, Expect::Query)
        }
        COM_STMT_PREPARE => {
            let sql = Arc::new(Analyzed::with_cache(body, Dialect::Mysql, &mut st.shapes));
            if st.pending_prepare.len() >= MAX_EXPECT {
                st.pending_prepare.pop_front();
            }
            st.pending_prepare.push_back(sql.clone());
            (Request::Prepare { sql }, Expect::Prepare)
        }
        COM_STMT_EXECUTE => {
            let stmt_id = le32(body, 0).ok_or(ParseError::Invalid("short COM_STMT_EXECUTE"))?;
            let sql = st.statements.get(&stmt_id).cloned();
            (Request::Execute { stmt_id, sql }, Expect::Execute)
        }
        COM_STMT_CLOSE => {
            if let Some(id) = le32(body, 0) {
                st.statements.remove(&id);
            }
            return Ok(skip(p.total, sk));
        }
        COM_QUIT | COM_STMT_SEND_LONG_DATA => return Ok(skip(p.total, sk)),
        COM_INIT_DB => {
            st.database = Some(lossy(body).into());
            (Request::Simple { operation: "USE" }, Expect::Simple)
        }
        COM_PING => (Request::Simple { operation: "PING" }, Expect::Simple),
        COM_STMT_RESET => (Request::Simple { operation: "RESET" }, Expect::Simple),
        COM_RESET_CONNECTION => (
            Request::Simple {
                operation: "RESET CONNECTION",
            },
            Expect::Simple,
        ),
        COM_SET_OPTION => (
            Request::Simple {
                operation: "SET OPTION",
            },
            Expect::Simple,
        ),
        COM_STMT_FETCH => (Request::Simple { operation: "FETCH" }, Expect::UntilEof),
        COM_FIELD_LIST => {
            st.push_expect(Expect::UntilEof);
            return Ok(skip(p.total, &mut st.skipped_req));
        }
        COM_STATISTICS => {
            st.push_expect(Expect::One);
            return Ok(skip(p.total, &mut st.skipped_req));
        }
        COM_CHANGE_USER => {
            let mut at = 0;
            if let Some(u) = cstr(body, &mut at) {
                st.user = Some(lossy(u).into());
            }
            st.phase = Phase::Auth;
            return Ok(skip(p.total, &mut st.skipped_req));
        }
        _ => return Err(ParseError::Invalid("unknown command")),
    };
    st.push_expect(expect);
    Ok(frame(Msg::Req(msg), p.total, &mut st.skipped_req))
}

/// HandshakeResponse41 (or the SSLRequest that precedes it).
fn handshake_response(p: &Packet<'_>, st: &mut State) -> Result<Parsed<Frame>, ParseError> {
    let b = p.payload;
    let caps = le32(b, 0).ok_or(ParseError::Invalid("short handshake response"))?;
    st.client_caps = Some(caps);
    if caps & CLIENT_SSL != 0 && p.len == 32 {
        st.phase = Phase::Tls;
        return Ok(Parsed::Skip { consumed: p.total });
    }
    st.phase = Phase::Auth;
    let mut at = 32;
    if caps & CLIENT_PROTOCOL_41 != 0 {
        if let Some(u) = cstr(b, &mut at) {
            st.user = Some(lossy(u).into());
        }
        let auth_len = if caps & CLIENT_PLUGIN_AUTH_LENENC != 0 {
            lenenc(b, &mut at)
        } else if caps & CLIENT_SECURE_CONNECTION != 0 {
            let n = b.get(at).copied().map(u64::from);
            at += 1;
            n
        } else {
            cstr(b, &mut at).map(|_| 0)
        };
        at = at.saturating_add(usize::try_from(auth_len.unwrap_or(0)).unwrap_or(usize::MAX));
        if caps & CLIENT_CONNECT_WITH_DB != 0
            && let Some(db) = cstr(b, &mut at)
            && !db.is_empty()
        {
            st.database = Some(lossy(db).into());
        }
        if caps & CLIENT_PLUGIN_AUTH != 0 {
            let _plugin = cstr(b, &mut at);
        }
        if caps & CLIENT_CONNECT_ATTRS != 0 {
            connect_attrs(b, at, st);
        }
    }
    Ok(Parsed::Skip { consumed: p.total })
}

fn connect_attrs(b: &[u8], mut at: usize, st: &mut State) {
    let Some(total) = lenenc(b, &mut at) else {
        return;
    };
    let end = at
        .saturating_add(usize::try_from(total).unwrap_or(usize::MAX))
        .min(b.len());
    let read = |at: &mut usize| -> Option<&[u8]> {
        let n = usize::try_from(lenenc(b, at)?).ok()?;
        let s = b.get(*at..at.checked_add(n)?)?;
        *at += n;
        Some(s)
    };
    while at < end {
        let (Some(k), Some(v)) = (read(&mut at), read(&mut at)) else {
            return;
        };
        if k == b"program_name" {
            st.application_name = Some(lossy(v).into());
        }
    }
}

/// Server greeting (protocol 10).
fn handshake(p: &Packet<'_>, st: &mut State) -> Parsed<Frame> {
    let mut at = 1;
    if let Some(v) = cstr(p.payload, &mut at) {
        let v = lossy(v);
        st.system = Some(if v.contains("MariaDB") {
            DbSystem::Mariadb
        } else {
            DbSystem::Mysql
        });
        st.server_version = Some(v);
    }
    st.phase = Phase::Handshake;
    st.resp = RespPhase::Idle;
    Parsed::Skip { consumed: p.total }
}

fn is_eof(p: &Packet<'_>) -> bool {
    p.payload.first() == Some(&0xfe) && p.len <= 5
}

/// Status flags of an OK packet (after the 0x00/0xfe header byte).
fn ok_fields(b: &[u8]) -> (u64, bool) {
    let mut at = 1;
    let affected = lenenc(b, &mut at).unwrap_or(0);
    let _insert_id = lenenc(b, &mut at);
    let status = le16(b, at).unwrap_or(0);
    (affected, status & SERVER_MORE_RESULTS_EXISTS != 0)
}

fn err_fields(b: &[u8]) -> Response {
    let code = le16(b, 1).unwrap_or(0);
    let rest = b.get(3..).unwrap_or(&[]);
    let (sqlstate, message) = match rest.split_first() {
        Some((b'#', r)) => (r.get(..5).map(lossy), r.get(5..).unwrap_or(&[])),
        _ => (None, rest),
    };
    Response::Err {
        code,
        sqlstate,
        message: lossy(message),
    }
}

fn parse_response(buf: &[u8], p: &Packet<'_>, st: &mut State) -> Result<Parsed<Frame>, ParseError> {
    if st.resp_continues {
        st.resp_continues = p.len == MAX_PAYLOAD;
        return Ok(skip(p.total, &mut st.skipped_resp));
    }
    let first = p.payload.first().copied();
    // Greeting: sequence 0 from the server, protocol 10.
    if p.seq == 0 && first == Some(10) && st.phase != Phase::Auth {
        st.skipped_resp = 0;
        st.skipped_req = 0;
        return Ok(handshake(p, st));
    }
    match st.phase {
        Phase::Handshake => return Ok(Parsed::Skip { consumed: p.total }),
        Phase::Auth => {
            // OK ends authentication; ERR too (the connection then closes). 0xfe switches
            // plugin, 0x01 carries more auth data.
            if matches!(first, Some(0x00 | 0xff)) {
                st.phase = Phase::Command;
                st.skipped_req = 0;
                st.skipped_resp = 0;
            }
            return Ok(Parsed::Skip { consumed: p.total });
        }
        _ => {}
    }
    st.resp_continues = p.len == MAX_PAYLOAD;
    // A sequence break means a new response started (after lost bytes or a resync).
    if st.resp != RespPhase::Idle && p.seq != st.resp_seq {
        st.resp = RespPhase::Idle;
    }
    st.resp_seq = p.seq.wrapping_add(1);
    let mut phase = st.resp;
    loop {
        match phase {
            RespPhase::Idle => return Ok(response_start(p, st)),
            RespPhase::Defs {
                left,
                next_block,
                rows_after,
                expect,
            } => {
                st.resp = if left > 1 {
                    RespPhase::Defs {
                        left: left - 1,
                        next_block,
                        rows_after,
                        expect,
                    }
                } else {
                    RespPhase::MaybeEof {
                        next_block,
                        rows_after,
                        expect,
                    }
                };
                return Ok(skip(p.total, &mut st.skipped_resp));
            }
            RespPhase::MaybeEof {
                next_block,
                rows_after,
                expect,
            } => {
                let after = after_block(next_block, rows_after, expect);
                if is_eof(p) {
                    st.resp = after;
                    skip(p.total, &mut st.skipped_resp);
                    if after == RespPhase::Idle {
                        // Definitions after PREPARE_OK belong to the record already made.
                        st.skipped_resp = 0;
                    }
                    return Ok(Parsed::Skip { consumed: p.total });
                }
                if after == RespPhase::Idle {
                    st.skipped_resp = 0;
                }
                phase = after;
            }
            RespPhase::Rows { rows, expect } => {
                return Ok(match first {
                    Some(0xff) => {
                        st.resp = RespPhase::Idle;
                        frame(
                            Msg::Resp(err_fields(p.payload)),
                            p.total,
                            &mut st.skipped_resp,
                        )
                    }
                    Some(0xfe) if p.len < MAX_PAYLOAD => {
                        let more = if p.len <= 5 {
                            le16(p.payload, 3).unwrap_or(0) & SERVER_MORE_RESULTS_EXISTS != 0
                        } else {
                            ok_fields(p.payload).1
                        };
                        st.resp = RespPhase::Idle;
                        if more {
                            st.expect.push_front(expect);
                        }
                        let msg = Msg::Resp(Response::ResultEnd { rows, more });
                        frame(msg, p.total, &mut st.skipped_resp)
                    }
                    _ => {
                        let (n, consumed) = if st.resp_continues {
                            (1, p.total)
                        } else {
                            row_run(buf, p.total, &mut st.resp_seq)
                        };
                        st.resp = RespPhase::Rows {
                            rows: rows + n,
                            expect,
                        };
                        skip(consumed, &mut st.skipped_resp)
                    }
                });
            }
            RespPhase::UntilEof => {
                if is_eof(p) || first == Some(0xff) {
                    st.resp = RespPhase::Idle;
                }
                return Ok(skip(p.total, &mut st.skipped_resp));
            }
        }
    }
}

/// Rows skipped in one step at most.
const MAX_RUN: u64 = 4096;

/// A row packet of `first_total` bytes at the buffer start and the complete row packets right
/// after it (in sequence, not EOF/OK/ERR, not split): (rows, bytes). `seq` is the next
/// expected sequence id, advanced past the run.
fn row_run(buf: &[u8], first_total: usize, seq: &mut u8) -> (u64, usize) {
    let (mut n, mut at) = (1u64, first_total);
    while n < MAX_RUN {
        let Some(h) = buf.get(at..at + 5) else { break };
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        let end = at + 4 + len;
        if h[3] != *seq
            || len == 0
            || len >= MAX_PAYLOAD
            || matches!(h[4], 0xfe | 0xff)
            || end > buf.len()
        {
            break;
        }
        n += 1;
        at = end;
        *seq = seq.wrapping_add(1);
    }
    (n, at)
}

fn after_block(next_block: u32, rows_after: bool, expect: Expect) -> RespPhase {
    if next_block > 0 {
        RespPhase::Defs {
            left: next_block,
            next_block: 0,
            rows_after,
            expect,
        }
    } else if rows_after {
        RespPhase::Rows { rows: 0, expect }
    } else {
        RespPhase::Idle
    }
}

/// The first packet of a response, interpreted by what the command expects.
fn response_start(p: &Packet<'_>, st: &mut State) -> Parsed<Frame> {
    let expect = st.expect.pop_front().unwrap_or(Expect::Query);
    let b = p.payload;
    let first = b.first().copied();
    let sk = &mut st.skipped_resp;
    match (expect, first) {
        (Expect::One, _) => skip(p.total, sk),
        (Expect::UntilEof, Some(0xff)) => skip(p.total, sk),
        (Expect::UntilEof, _) => {
            if !is_eof(p) {
                st.resp = RespPhase::UntilEof;
            }
            skip(p.total, sk)
        }
        (_, Some(0xff)) => frame(Msg::Resp(err_fields(b)), p.total, sk),
        (Expect::Prepare, Some(0x00)) if p.len >= 9 => {
            let stmt_id = le32(b, 1).unwrap_or(0);
            let cols = u32::from(le16(b, 5).unwrap_or(0));
            let params = u32::from(le16(b, 7).unwrap_or(0));
            if let Some(sql) = st.pending_prepare.pop_front() {
                st.remember(stmt_id, sql);
            }
            let (first_block, next_block) = if params > 0 {
                (params, cols)
            } else {
                (cols, 0)
            };
            if first_block > 0 {
                st.resp = RespPhase::Defs {
                    left: first_block,
                    next_block,
                    rows_after: false,
                    expect,
                };
            }
            let msg = Msg::Resp(Response::PrepareOk { stmt_id });
            frame(msg, p.total, &mut st.skipped_resp)
        }
        (_, Some(0x00)) => {
            let (affected_rows, more) = ok_fields(b);
            if more {
                st.expect.push_front(expect);
            }
            let msg = Msg::Resp(Response::Ok {
                affected_rows,
                more,
            });
            frame(msg, p.total, sk)
        }
        // LOCAL INFILE request and stray EOFs: the client's reply and the final OK follow.
        (_, Some(0xfb | 0xfe)) | (_, None) => skip(p.total, sk),
        _ => {
            let mut at = 0;
            let cols = lenenc(b, &mut at).unwrap_or(0);
            let cols = u32::try_from(cols).unwrap_or(u32::MAX);
            st.resp = if cols > 0 {
                RespPhase::Defs {
                    left: cols,
                    next_block: 0,
                    rows_after: true,
                    expect,
                }
            } else {
                RespPhase::Rows { rows: 0, expect }
            };
            frame(Msg::Resp(Response::ResultStart), p.total, sk)
        }
    }
}

/// A plausible packet header at `i` for resync: commands (seq 0) from clients; the first
/// packet of a response (seq 1) from servers.
pub fn plausible_at(dir: crate::Dir, buf: &[u8], i: usize) -> bool {
    let Some(h) = buf.get(i..i + 5) else {
        return false;
    };
    let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
    if len == 0 || len > SANE_PACKET {
        return false;
    }
    let ok = match dir {
        crate::Dir::Request => h[3] == 0 && COMMANDS.contains(&h[4]),
        crate::Dir::Response => h[3] == 1 && matches!(h[4], 0x00 | 0xff | 0x01..=0xfa),
    };
    if !ok {
        return false;
    }
    // When the packet ends inside the buffer, the next header's sequence id must follow on
    // (responses) or be 0 (a next command).
    match buf.get(i + 4 + len + 3) {
        Some(&seq) => match dir {
            crate::Dir::Request => seq == 0,
            crate::Dir::Response => seq == 2 || seq == 1,
        },
        None => true,
    }
}
