//! `tracewire capture`: each captured event as a readable line or a JSON object. The JSON is
//! also the fixture format the parser tests replay.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::{
    AF_INET, AF_INET6, AF_UNIX, CONN_OP_ACCEPT, CONN_OP_CLOSE, CONN_OP_CONNECT, CONN_OP_DISCOVERED,
    ConnEvent, DIR_EGRESS, DataHeader, FLAG_TRUNCATED, ROLE_CLIENT, ROLE_SERVER,
};
use base64::Engine as _;
use serde::Serialize;

use crate::ingest::EventRef;
use crate::listening::{Inferred, ListeningPorts};

pub fn family_name(f: u16) -> &'static str {
    match f {
        AF_INET => "inet",
        AF_INET6 => "inet6",
        AF_UNIX => "unix",
        _ => "other",
    }
}

pub fn role_name(r: u8) -> &'static str {
    match r {
        ROLE_CLIENT => "client",
        ROLE_SERVER => "server",
        _ => "unknown",
    }
}

pub fn op_name(op: u8) -> &'static str {
    match op {
        CONN_OP_CONNECT => "connect",
        CONN_OP_ACCEPT => "accept",
        CONN_OP_CLOSE => "close",
        CONN_OP_DISCOVERED => "discovered",
        _ => "other",
    }
}

pub fn addr_of(family: u16, raw: &[u8; 16]) -> Option<IpAddr> {
    match family {
        AF_INET => Some(IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))),
        AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(*raw))),
        _ => None,
    }
}

/// Tuple and role per connection id, as the conn events told them; bounded.
#[derive(Default)]
pub struct ConnInfoCache {
    conns: HashMap<u64, ConnEvent>,
    listening: ListeningPorts,
}

const MAX_CONNS: usize = 65536;

impl ConnInfoCache {
    pub fn on_conn(&mut self, ev: &ConnEvent) -> ConnEvent {
        let mut ev = *ev;
        if ev.role == 0 && ev.family != AF_UNIX && ev.local_port != 0 {
            // Predates the agent: the socket tables tell who accepted it.
            ev.role = match self.listening.infer(ev.local_port, ev.remote_port) {
                Inferred::Server => ROLE_SERVER,
                Inferred::Client => ROLE_CLIENT,
                Inferred::Unknown => 0,
            };
        }
        if ev.op == CONN_OP_CLOSE {
            self.conns.remove(&ev.conn_id);
        } else {
            if self.conns.len() >= MAX_CONNS {
                self.conns.clear();
            }
            self.conns.insert(ev.conn_id, ev);
        }
        ev
    }

    pub fn get(&self, conn_id: u64) -> Option<&ConnEvent> {
        self.conns.get(&conn_id)
    }
}

#[derive(Serialize)]
struct JsonConn<'a> {
    kind: &'a str,
    op: &'a str,
    pid: u32,
    tid: u32,
    fd: i32,
    conn_id: u64,
    role: &'a str,
    family: &'a str,
    local_addr: Option<IpAddr>,
    local_port: u16,
    remote_addr: Option<IpAddr>,
    remote_port: u16,
    ts_ns: u64,
}

#[derive(Serialize)]
struct JsonData<'a> {
    kind: &'a str,
    pid: u32,
    tid: u32,
    fd: i32,
    conn_id: u64,
    role: &'a str,
    family: &'a str,
    local_addr: Option<IpAddr>,
    local_port: u16,
    remote_addr: Option<IpAddr>,
    remote_port: u16,
    direction: &'a str,
    syscall: u8,
    bytes: u64,
    captured: u32,
    truncated: bool,
    ts_enter_ns: u64,
    ts_exit_ns: u64,
    payload_text: String,
    payload_b64: String,
}

/// Text with non-printable bytes escaped (\r, \n, \xNN), for humans and grep.
pub fn escape(payload: &[u8]) -> String {
    let mut s = String::with_capacity(payload.len());
    for &b in payload {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(b as char),
            _ => s.push_str(&format!("\\x{b:02x}")),
        }
    }
    s
}

pub fn format_event(cache: &mut ConnInfoCache, ev: EventRef<'_>, json: bool) -> Option<String> {
    match ev {
        EventRef::Conn(c) => {
            let c = cache.on_conn(c);
            let j = JsonConn {
                kind: "conn",
                op: op_name(c.op),
                pid: c.pid,
                tid: c.tid,
                fd: c.fd,
                conn_id: c.conn_id,
                role: role_name(c.role),
                family: family_name(c.family),
                local_addr: addr_of(c.family, &c.local_addr),
                local_port: c.local_port,
                remote_addr: addr_of(c.family, &c.remote_addr),
                remote_port: c.remote_port,
                ts_ns: c.ts_ns,
            };
            if json {
                serde_json::to_string(&j).ok()
            } else {
                Some(format!(
                    "conn {:<10} pid={} fd={} conn={} {} {} {}:{} -> {}:{}",
                    j.op,
                    j.pid,
                    j.fd,
                    j.conn_id,
                    j.role,
                    j.family,
                    fmt_addr(j.local_addr),
                    j.local_port,
                    fmt_addr(j.remote_addr),
                    j.remote_port
                ))
            }
        }
        EventRef::Data(h, payload) => Some(format_data(cache, h, payload, json)),
    }
}

fn fmt_addr(a: Option<IpAddr>) -> String {
    a.map_or_else(|| "-".into(), |a| a.to_string())
}

fn format_data(cache: &ConnInfoCache, h: &DataHeader, payload: &[u8], json: bool) -> String {
    let c = cache.get(h.conn_id).copied().unwrap_or_default();
    let dir = if h.direction == DIR_EGRESS {
        "egress"
    } else {
        "ingress"
    };
    let j = JsonData {
        kind: "data",
        pid: h.pid,
        tid: h.tid,
        fd: h.fd,
        conn_id: h.conn_id,
        role: role_name(c.role),
        family: family_name(c.family),
        local_addr: addr_of(c.family, &c.local_addr),
        local_port: c.local_port,
        remote_addr: addr_of(c.family, &c.remote_addr),
        remote_port: c.remote_port,
        direction: dir,
        syscall: h.syscall,
        bytes: h.bytes,
        captured: h.captured,
        truncated: h.flags & FLAG_TRUNCATED != 0,
        ts_enter_ns: h.ts_enter_ns,
        ts_exit_ns: h.ts_exit_ns,
        payload_text: escape(payload),
        payload_b64: base64::engine::general_purpose::STANDARD.encode(payload),
    };
    if json {
        serde_json::to_string(&j).unwrap_or_default()
    } else {
        let mut text = j.payload_text;
        if text.len() > 200 {
            let mut cut = 200;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        format!(
            "data {:<7} pid={} tid={} fd={} conn={} {} {}:{} -> {}:{} bytes={} captured={}{} {:.3}ms | {}",
            j.direction,
            j.pid,
            j.tid,
            j.fd,
            j.conn_id,
            j.role,
            fmt_addr(j.local_addr),
            j.local_port,
            fmt_addr(j.remote_addr),
            j.remote_port,
            j.bytes,
            j.captured,
            if j.truncated { " truncated" } else { "" },
            (j.ts_exit_ns.saturating_sub(j.ts_enter_ns)) as f64 / 1e6,
            text
        )
    }
}
