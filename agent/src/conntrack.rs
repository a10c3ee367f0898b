//! Connection table: identity, role and tuple per connection, protocol detection on the first
//! bytes, and the byte streams per direction fed to that protocol's parser. Emits finished
//! request/response exchanges. Bounded: connections are capped and evicted when idle.

use std::net::SocketAddr;
use std::sync::Arc;

use rustc_hash::{FxHashMap, FxHashSet};

use agent_common::{
    AF_UNIX, CONN_OP_CLOSE, ConnEvent, DIR_EGRESS, DataHeader, FLAG_AFTER_SKIP, ROLE_CLIENT,
    ROLE_SERVER,
};
use agent_protocols::{Dir, ParserConfig, ProtocolKind, Record, driver::DriverStats, stream};

use crate::capture_view::addr_of;
use crate::listening::{Inferred, ListeningPorts};
use crate::model::{ConnKey, ConnMeta, Exchange, Role};

/// Data events tried for detection before a connection is left alone.
const DETECT_ATTEMPTS: u8 = 4;

#[derive(Debug, Clone)]
pub struct ConntrackConfig {
    pub max_conns: usize,
    /// Connections without traffic for this long are forgotten.
    pub idle_timeout_ns: u64,
    pub parser: ParserConfig,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        Self {
            max_conns: 16384,
            idle_timeout_ns: 300 * 1_000_000_000,
            parser: ParserConfig::default(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct ConntrackStats {
    pub conns_opened: u64,
    pub conns_closed: u64,
    pub conns_evicted: u64,
    /// Connections whose first bytes matched no protocol (left alone).
    pub unknown_protocol: u64,
    pub records: u64,
    pub parse_errors: u64,
    pub bytes_lost: u64,
    pub buffer_overflows: u64,
    /// Server ends of database connections (PostgreSQL, MySQL, Redis) no longer captured: no
    /// span is made of them (the client end carries the call).
    pub db_server_ends_ignored: u64,
}

enum Proto {
    Detecting { attempts: u8 },
    Parsing(Box<stream::Stream>),
    Ignored,
}

struct Conn {
    /// Shared with every exchange of the connection (cloned per exchange: a count, not a copy).
    meta: Arc<ConnMeta>,
    /// Kernel map key (0 when unknown).
    sock: u64,
    last_seen_ns: u64,
    last_egress_tid: u32,
    /// Exchanges emitted so far, plus those the kernel sampled out (the next one's number).
    exchanges: u64,
    /// The kernel's exchange number on the last data event ([`DataHeader::exchange`]).
    turn: u32,
    proto: Proto,
}

pub struct Conntrack {
    cfg: ConntrackConfig,
    /// Keyed by the kernel's connection id (a counter, not attacker-chosen): a fast hasher
    /// is safe, and SipHash showed in profiles.
    conns: FxHashMap<u64, Conn>,
    listening: ListeningPorts,
    stats: ConntrackStats,
    /// Parser counters of connections already gone.
    closed_parser_stats: DriverStats,
    /// Kernel keys of connections given up on, for the kernel to stop capturing.
    ignored: Vec<ConnKey>,
    /// Kernel keys (and roles) of connections whose exchanges the kernel may sample.
    samplable: Vec<(ConnKey, Role)>,
    inbound: InboundPids,
}

/// Processes that ever had an inbound connection (server role, or a role not known), so may
/// be serving a request when they call out. The others are pure clients (load generators,
/// batch jobs, CLIs): their calls are roots, which the correlator can release on arrival
/// instead of holding them for a parent that cannot come.
///
/// Marks are never cleared (a reused pid only takes the slower path), and past
/// `MAX_INBOUND_PIDS` every process counts as possibly serving.
#[derive(Default)]
struct InboundPids {
    pids: FxHashSet<u32>,
    overflowed: bool,
}

const MAX_INBOUND_PIDS: usize = 65_536;

impl InboundPids {
    fn mark(&mut self, pid: u32, role: Role) {
        if role == Role::Client || self.overflowed || self.pids.contains(&pid) {
            return;
        }
        if self.pids.len() >= MAX_INBOUND_PIDS {
            self.overflowed = true;
            self.pids = FxHashSet::default();
            return;
        }
        self.pids.insert(pid);
    }

    fn pure_client(&self, pid: u32) -> bool {
        !self.overflowed && !self.pids.contains(&pid)
    }

    /// Are the calls on this connection made by a pure client?
    fn calls_of_pure_client(&self, meta: &ConnMeta) -> bool {
        meta.role == Role::Client && self.pure_client(meta.pid)
    }
}

impl Conn {
    /// Hands `records` on as this connection's next exchanges, numbered in order.
    fn emit(&mut self, records: Vec<Record>, tid: u32, pure_client: bool, out: &mut Vec<Exchange>) {
        for record in records {
            out.push(Exchange {
                conn: Arc::clone(&self.meta),
                tid,
                record,
                seq: self.exchanges,
                pure_client,
            });
            self.exchanges += 1;
        }
    }
}

/// Exchanges the kernel sampled out between the last captured one (numbered `prev`) and the
/// one starting now (`now`): userspace numbers exchanges as the other end of the connection
/// does, so that the two ends of one exchange carry the same `seq` after a skip the ends
/// decided differently. Each skipped turn counts as one exchange (pipelined requests that
/// share a turn cannot be told apart unseen). Nothing when the earlier number is unknown.
fn skipped_exchanges(prev: u32, now: u32) -> u64 {
    let gap = now.wrapping_sub(prev);
    if prev == 0 || gap == 0 || gap > u32::MAX / 2 {
        return 0;
    }
    u64::from(gap - 1)
}

/// Kernel updates (ignore, allow sampling) waiting for the next tick; more are simply not
/// forwarded (capture goes on unchanged).
const MAX_PENDING_UPDATES: usize = 4096;

fn is_database(kind: ProtocolKind) -> bool {
    matches!(
        kind,
        ProtocolKind::Postgres | ProtocolKind::Mysql | ProtocolKind::Redis
    )
}

/// A NUL-padded kernel comm as a string.
pub fn comm_str(raw: &[u8; 16]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn socket_addr(family: u16, raw: &[u8; 16], port: u16) -> Option<SocketAddr> {
    addr_of(family, raw).map(|ip| SocketAddr::new(ip, port))
}

impl Conntrack {
    pub fn new(cfg: ConntrackConfig) -> Self {
        Self {
            cfg,
            conns: FxHashMap::default(),
            listening: ListeningPorts::default(),
            stats: ConntrackStats::default(),
            closed_parser_stats: DriverStats::default(),
            ignored: Vec::new(),
            samplable: Vec::new(),
            inbound: InboundPids::default(),
        }
    }

    /// Kernel keys of connections now known to carry a protocol whose exchanges stand alone,
    /// with the role userspace settled on (the kernel may not know it).
    pub fn take_samplable(&mut self) -> Vec<(ConnKey, Role)> {
        std::mem::take(&mut self.samplable)
    }

    /// Kernel keys of connections whose protocol is unknown: capturing them further is waste.
    pub fn take_ignored(&mut self) -> Vec<ConnKey> {
        std::mem::take(&mut self.ignored)
    }

    /// Calls parsed so far (cheap, unlike [`Self::stats`]).
    pub fn records(&self) -> u64 {
        self.stats.records
    }

    pub fn stats(&self) -> ConntrackStats {
        let mut s = self.stats;
        let mut p = self.closed_parser_stats;
        for c in self.conns.values() {
            if let Proto::Parsing(st) = &c.proto {
                p.add(&st.stats());
            }
        }
        s.parse_errors = p.parse_errors;
        s.bytes_lost = p.bytes_lost;
        s.buffer_overflows = p.buffer_overflows;
        s
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn on_conn(&mut self, ev: &ConnEvent, out: &mut Vec<Exchange>) {
        if ev.op == CONN_OP_CLOSE {
            if let Some(c) = self.conns.remove(&ev.conn_id) {
                self.stats.conns_closed += 1;
                self.finish(c, out);
            }
            return;
        }
        let role = match ev.role {
            ROLE_CLIENT => Role::Client,
            ROLE_SERVER => Role::Server,
            _ if ev.family != AF_UNIX && ev.local_port != 0 => {
                // Predates the agent: the socket tables tell who accepted it, or traffic will.
                match self.listening.infer(ev.local_port, ev.remote_port) {
                    Inferred::Server => Role::Server,
                    Inferred::Client => Role::Client,
                    Inferred::Unknown => Role::Unknown,
                }
            }
            _ => Role::Unknown,
        };
        let meta = ConnMeta {
            conn_id: ev.conn_id,
            pid: ev.pid,
            fd: ev.fd,
            role,
            local: socket_addr(ev.family, &ev.local_addr, ev.local_port),
            remote: socket_addr(ev.family, &ev.remote_addr, ev.remote_port),
            unix_path: None,
            comm: comm_str(&ev.comm),
        };
        self.inbound.mark(ev.pid, role);
        self.make_room(out);
        self.stats.conns_opened += 1;
        match self.conns.get_mut(&ev.conn_id) {
            Some(c) => {
                c.meta = Arc::new(meta);
                c.sock = ev.sock;
            }
            None => {
                self.conns.insert(
                    ev.conn_id,
                    Conn {
                        meta: Arc::new(meta),
                        sock: ev.sock,
                        last_seen_ns: ev.ts_ns,
                        last_egress_tid: ev.tid,
                        exchanges: 0,
                        turn: 0,
                        proto: Proto::Detecting { attempts: 0 },
                    },
                );
            }
        }
    }

    pub fn on_data(&mut self, h: &DataHeader, payload: &[u8], out: &mut Vec<Exchange>) {
        if !self.conns.contains_key(&h.conn_id) {
            // Its conn event was lost (ring buffer full): track it with what we know.
            self.inbound.mark(h.pid, Role::Unknown);
            self.make_room(out);
            self.conns.insert(
                h.conn_id,
                Conn {
                    sock: 0,
                    meta: Arc::new(ConnMeta {
                        conn_id: h.conn_id,
                        pid: h.pid,
                        fd: h.fd,
                        role: Role::Unknown,
                        local: None,
                        remote: None,
                        unix_path: None,
                        comm: String::new(),
                    }),
                    last_seen_ns: h.ts_exit_ns,
                    last_egress_tid: h.tid,
                    exchanges: 0,
                    turn: 0,
                    proto: Proto::Detecting { attempts: 0 },
                },
            );
        }
        let Some(c) = self.conns.get_mut(&h.conn_id) else {
            return;
        };
        c.last_seen_ns = h.ts_exit_ns;
        let prev_turn = std::mem::replace(&mut c.turn, h.exchange);
        let egress = h.direction == DIR_EGRESS;
        if egress {
            c.last_egress_tid = h.tid;
        }

        if let Proto::Detecting { attempts } = &mut c.proto {
            let mut role = c.meta.role;
            let detected = detect(&mut role, egress, payload);
            if role != c.meta.role {
                Arc::make_mut(&mut c.meta).role = role;
            }
            self.inbound.mark(c.meta.pid, role);
            match detected {
                Some(kind) if c.meta.role == Role::Server && is_database(kind) => {
                    // Spans of a database call come from its client; copying and parsing the
                    // server's side too would be pure cost.
                    c.proto = Proto::Ignored;
                    self.stats.db_server_ends_ignored += 1;
                    if c.sock != 0 && self.ignored.len() < MAX_PENDING_UPDATES {
                        self.ignored.push(ConnKey {
                            sock: c.sock,
                            conn_id: h.conn_id,
                        });
                    }
                    return;
                }
                Some(kind) => {
                    let st = stream::Stream::new(kind, &self.cfg.parser);
                    if st.samplable()
                        && c.sock != 0
                        && c.meta.role != Role::Unknown
                        && self.samplable.len() < MAX_PENDING_UPDATES
                    {
                        self.samplable.push((
                            ConnKey {
                                sock: c.sock,
                                conn_id: h.conn_id,
                            },
                            c.meta.role,
                        ));
                    }
                    c.proto = Proto::Parsing(Box::new(st));
                }
                None => {
                    *attempts += 1;
                    if *attempts >= DETECT_ATTEMPTS {
                        c.proto = Proto::Ignored;
                        self.stats.unknown_protocol += 1;
                        if c.sock != 0 && self.ignored.len() < MAX_PENDING_UPDATES {
                            self.ignored.push(ConnKey {
                                sock: c.sock,
                                conn_id: h.conn_id,
                            });
                        }
                    }
                    return;
                }
            }
        }
        let Proto::Parsing(st) = &mut c.proto else {
            return;
        };
        if h.flags & FLAG_AFTER_SKIP != 0 {
            st.exchanges_skipped();
            c.exchanges += skipped_exchanges(prev_turn, h.exchange);
        }
        let dir = match (c.meta.role, egress) {
            (Role::Client, true) | (Role::Server, false) => Dir::Request,
            _ => Dir::Response,
        };
        // Requests read by a server are timed when the read returned (the data arrived); writes
        // span the whole syscall.
        let (start, end) = if egress {
            (h.ts_enter_ns, h.ts_exit_ns)
        } else {
            (h.ts_exit_ns, h.ts_exit_ns)
        };
        let records = st.feed(dir, payload, h.bytes, start, end);
        if records.is_empty() {
            return;
        }
        self.stats.records += records.len() as u64;
        let tid = if c.meta.role == Role::Client {
            c.last_egress_tid
        } else {
            h.tid
        };
        let pure_client = self.inbound.calls_of_pure_client(&c.meta);
        c.emit(records, tid, pure_client, out);
    }

    /// Forgets connections idle for longer than the timeout (their parsers are flushed).
    pub fn evict_idle(&mut self, now_ns: u64, out: &mut Vec<Exchange>) {
        let timeout = self.cfg.idle_timeout_ns;
        let idle: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| now_ns.saturating_sub(c.last_seen_ns) > timeout)
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            if let Some(c) = self.conns.remove(&id) {
                self.stats.conns_evicted += 1;
                self.finish(c, out);
            }
        }
    }

    fn make_room(&mut self, out: &mut Vec<Exchange>) {
        if self.conns.len() < self.cfg.max_conns {
            return;
        }
        // Evict the least recently active tenth in one go, so this scan is rare.
        let mut by_age: Vec<(u64, u64)> = self
            .conns
            .iter()
            .map(|(id, c)| (c.last_seen_ns, *id))
            .collect();
        by_age.sort_unstable();
        let n = (self.cfg.max_conns / 10).max(1);
        for (_, id) in by_age.into_iter().take(n) {
            if let Some(c) = self.conns.remove(&id) {
                self.stats.conns_evicted += 1;
                self.finish(c, out);
            }
        }
    }

    fn finish(&mut self, mut c: Conn, out: &mut Vec<Exchange>) {
        if let Proto::Parsing(st) = &mut c.proto {
            let records = st.close();
            self.closed_parser_stats.add(&st.stats());
            self.stats.records += records.len() as u64;
            let (tid, pure_client) = (
                c.last_egress_tid,
                self.inbound.calls_of_pure_client(&c.meta),
            );
            c.emit(records, tid, pure_client, out);
        }
    }
}

/// Picks the protocol from one chunk; when the role is unknown the chunk's direction decides it
/// (a request seen on egress means this side is the client).
fn detect(role: &mut Role, egress: bool, payload: &[u8]) -> Option<ProtocolKind> {
    match *role {
        Role::Client | Role::Server => {
            let dir = match (*role, egress) {
                (Role::Client, true) | (Role::Server, false) => Dir::Request,
                _ => Dir::Response,
            };
            stream::choose(dir, payload)
        }
        Role::Unknown => {
            if let Some(k) = stream::choose(Dir::Request, payload) {
                *role = if egress { Role::Client } else { Role::Server };
                Some(k)
            } else if let Some(k) = stream::choose(Dir::Response, payload) {
                *role = if egress { Role::Server } else { Role::Client };
                Some(k)
            } else {
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agent_common::{AF_INET, CONN_OP_ACCEPT, CONN_OP_CONNECT, DIR_INGRESS, EVENT_DATA};

    fn open(ct: &mut Conntrack, conn_id: u64, role: u8, sock: u64) {
        let ev = ConnEvent {
            op: if role == ROLE_SERVER {
                CONN_OP_ACCEPT
            } else {
                CONN_OP_CONNECT
            },
            role,
            conn_id,
            family: AF_INET,
            local_port: 6379,
            remote_port: 40000,
            sock,
            ..ConnEvent::default()
        };
        ct.on_conn(&ev, &mut Vec::new());
    }

    fn data(ct: &mut Conntrack, conn_id: u64, dir: u8, bytes: &[u8], out: &mut Vec<Exchange>) {
        let h = DataHeader {
            kind: EVENT_DATA,
            direction: dir,
            conn_id,
            ts_enter_ns: 1,
            ts_exit_ns: 2,
            bytes: bytes.len() as u64,
            captured: bytes.len() as u32,
            ..DataHeader::default()
        };
        ct.on_data(&h, bytes, out);
    }

    #[test]
    fn database_server_ends_are_left_to_their_clients() {
        let mut ct = Conntrack::new(ConntrackConfig::default());
        let mut out = Vec::new();
        open(&mut ct, 1, ROLE_SERVER, 0xa1);
        open(&mut ct, 2, ROLE_CLIENT, 0xb2);
        data(&mut ct, 1, DIR_INGRESS, b"*1\r\n$4\r\nPING\r\n", &mut out);
        data(&mut ct, 2, DIR_EGRESS, b"*1\r\n$4\r\nPING\r\n", &mut out);
        data(&mut ct, 1, DIR_EGRESS, b"+PONG\r\n", &mut out);
        data(&mut ct, 2, DIR_INGRESS, b"+PONG\r\n", &mut out);
        // The client end makes the call; the server end stops being captured.
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].conn.role, Role::Client);
        assert_eq!(
            ct.take_ignored(),
            vec![ConnKey {
                sock: 0xa1,
                conn_id: 1
            }]
        );
        assert_eq!(ct.stats().db_server_ends_ignored, 1);
        assert_eq!(
            ct.take_samplable(),
            vec![(
                ConnKey {
                    sock: 0xb2,
                    conn_id: 2
                },
                Role::Client
            )]
        );
    }

    #[test]
    fn calls_are_pure_client_until_their_process_serves() {
        let mut ct = Conntrack::new(ConntrackConfig::default());
        let mut out = Vec::new();
        open(&mut ct, 1, ROLE_CLIENT, 0xa1);
        data(&mut ct, 1, DIR_EGRESS, b"*1\r\n$4\r\nPING\r\n", &mut out);
        data(&mut ct, 1, DIR_INGRESS, b"+PONG\r\n", &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].pure_client, "a process that only connects out");
        // The same process accepts a connection: its calls may now serve a request.
        open(&mut ct, 2, ROLE_SERVER, 0xb2);
        data(&mut ct, 1, DIR_EGRESS, b"*1\r\n$4\r\nPING\r\n", &mut out);
        data(&mut ct, 1, DIR_INGRESS, b"+PONG\r\n", &mut out);
        assert_eq!(out.len(), 2);
        assert!(!out[1].pure_client);
        // Exchanges are numbered per connection end, in order.
        assert_eq!((out[0].seq, out[1].seq), (0, 1));
    }

    #[test]
    fn exchanges_the_kernel_skipped_keep_their_numbers() {
        let mut ct = Conntrack::new(ConntrackConfig::default());
        let mut out = Vec::new();
        open(&mut ct, 1, ROLE_CLIENT, 0xa1);
        let mut call =
            |dir: u8, bytes: &[u8], exchange: u32, flags: u8, out: &mut Vec<Exchange>| {
                let h = DataHeader {
                    kind: EVENT_DATA,
                    direction: dir,
                    conn_id: 1,
                    ts_enter_ns: 1,
                    ts_exit_ns: 2,
                    bytes: bytes.len() as u64,
                    captured: bytes.len() as u32,
                    exchange,
                    flags,
                    ..DataHeader::default()
                };
                ct.on_data(&h, bytes, out);
            };
        let get = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        call(DIR_EGRESS, get, 1, 0, &mut out);
        call(DIR_INGRESS, ok, 1, 0, &mut out);
        // Exchanges 2 and 3 were sampled out in the kernel; 4 is captured.
        call(DIR_EGRESS, get, 4, FLAG_AFTER_SKIP, &mut out);
        call(DIR_INGRESS, ok, 4, 0, &mut out);
        call(DIR_EGRESS, get, 5, 0, &mut out);
        call(DIR_INGRESS, ok, 5, 0, &mut out);
        let seqs: Vec<u64> = out.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![0, 3, 4]);
        // Numbers that make no sense (unknown, or going back) add nothing.
        assert_eq!(skipped_exchanges(0, 9), 0);
        assert_eq!(skipped_exchanges(9, 9), 0);
        assert_eq!(skipped_exchanges(9, 3), 0);
        assert_eq!(skipped_exchanges(u32::MAX, 1), 1);
    }

    #[test]
    fn a_connection_of_unknown_role_counts_as_inbound() {
        let mut ct = Conntrack::new(ConntrackConfig::default());
        let mut out = Vec::new();
        open(&mut ct, 1, ROLE_CLIENT, 0xa1);
        // Data on a connection whose open event was lost: its role is not known yet.
        data(&mut ct, 7, DIR_INGRESS, b"junk", &mut out);
        data(&mut ct, 1, DIR_EGRESS, b"*1\r\n$4\r\nPING\r\n", &mut out);
        data(&mut ct, 1, DIR_INGRESS, b"+PONG\r\n", &mut out);
        assert_eq!(out.len(), 1);
        assert!(!out[0].pure_client);
    }

    #[test]
    fn inbound_pids_past_their_cap_make_every_process_possibly_serving() {
        let mut p = InboundPids::default();
        p.mark(1, Role::Client);
        assert!(p.pure_client(1));
        p.mark(1, Role::Server);
        assert!(!p.pure_client(1));
        assert!(p.pure_client(2));
        for pid in 10..(10 + MAX_INBOUND_PIDS as u32) {
            p.mark(pid, Role::Unknown);
        }
        assert!(!p.pure_client(2));
        assert!(p.pids.is_empty(), "memory given back once over the cap");
    }
}
