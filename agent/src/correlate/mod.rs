//! Parent inference and trace-id assignment.
//!
//! Spans arrive in completion order, which is not tree order: a client call finishes before the
//! server request that made it, and a downstream server span finishes before the upstream client
//! span. So every span is *held* for a short window (`hold`) while links are found, then trace
//! ids are assigned top-down: a span whose window passed is released once its parent (if any)
//! has a trace id; a root gets a fresh random one. Released spans stay indexed for another
//! window so that late children still find them.
//!
//! Rules, strongest first (the rule is recorded in `tracewire.link.rule`):
//! - `traceparent`: a server request carrying a valid W3C `traceparent` joins that trace.
//! - `connection`: both ends of one connection on this node: the server exchange whose
//!   (client addr, server addr) tuple and per-connection request number (HTTP/2: stream id)
//!   match a client exchange is its child.
//! - `thread` / `thread_guess`: within one process, an outbound client exchange is the child of
//!   the inbound server request the same thread had read but not yet answered when the call
//!   started. With several such requests the latest-started is chosen and the link is a guess
//!   with `tracewire.link.confidence` = 1 / candidates.
//!
//! Limits: a parent that arrives more than `hold` after its child (a server request running
//! longer than the window) is not linked; the child becomes a root. Memory is bounded by
//! `max_held` (the oldest span is released early when full, counted in `forced_releases`).

mod traceparent;

pub use traceparent::{TraceParent, parse_traceparent};

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::time::Duration;

use lru::LruCache;

use crate::spans::{AttrValue, SpanData, SpanKind};

/// Which rule linked a span to its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkRule {
    Traceparent,
    Connection,
    Thread,
    ThreadGuess,
}

impl LinkRule {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkRule::Traceparent => "traceparent",
            LinkRule::Connection => "connection",
            LinkRule::Thread => "thread",
            LinkRule::ThreadGuess => "thread_guess",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CorrelatorConfig {
    /// How long a finished span waits for its parent/children.
    pub hold: Duration,
    /// Most spans held (including released ones kept for late children).
    pub max_held: usize,
    /// Most connections whose request counter is remembered.
    pub max_conns: usize,
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            hold: Duration::from_millis(1500),
            max_held: 65_536,
            max_conns: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CorrelateStats {
    pub received: u64,
    pub released: u64,
    pub roots: u64,
    pub linked_traceparent: u64,
    pub linked_connection: u64,
    pub linked_thread: u64,
    pub linked_thread_guess: u64,
    /// Released before their window because the hold buffer was full.
    pub forced_releases: u64,
    /// Released as roots because their parent never got a trace id in time or was evicted.
    pub orphaned: u64,
}

/// Most recent spans indexed per thread / per connection: bounds the scans a busy event-loop
/// thread or a long keep-alive connection would otherwise make on every arrival. Older spans
/// stay held but can no longer be found by the thread / connection rules.
const MAX_PER_THREAD: usize = 256;
const MAX_PER_CONN: usize = 64;

fn push_capped(v: &mut Vec<u64>, id: u64, cap: usize) {
    if v.len() >= cap {
        let excess = v.len() + 1 - cap;
        v.drain(..excess);
    }
    v.push(id);
}

/// (client address, server address) of a connection.
type ConnKey = (SocketAddr, SocketAddr);

/// Could `srv` be the far end of exchange `cli` on the same connection? The server finished
/// reading the request after the client started writing it, and started answering before the
/// client finished reading. On a keep-alive connection only the true pair passes both.
fn same_exchange(cli: &SpanData, srv: &SpanData) -> bool {
    if let (Some(a), Some(b)) = (cli.link.stream_id, srv.link.stream_id)
        && a != b
    {
        return false;
    }
    let c = &cli.link.timing;
    let s = &srv.link.timing;
    let s_req_end = s.request_end_ns.max(s.start_ns);
    s_req_end >= c.start_ns && (s.response_start_ns == 0 || s.response_start_ns <= c.end_ns)
}

#[derive(Debug, Clone, Copy)]
enum ParentRef {
    /// From a header: trace id and parent span id are given.
    Remote {
        trace_id: [u8; 16],
        span_id: [u8; 8],
    },
    /// Another held span.
    Local {
        id: u64,
        rule: LinkRule,
        parent_start: u64,
    },
}

#[derive(Debug)]
struct Entry {
    span: SpanData,
    arrived_ns: u64,
    parent: Option<ParentRef>,
    /// Containing inbound requests seen on the same thread (rule c).
    thread_candidates: u32,
    trace_id: Option<[u8; 16]>,
    released: bool,
    key: Option<ConnKey>,
    /// Request number on its connection (HTTP/2: stream id), a tie-breaker for rule b.
    seq: u64,
    thread: (u32, u32),
}

pub struct Correlator {
    cfg: CorrelatorConfig,
    hold_ns: u64,
    entries: HashMap<u64, Entry>,
    order: VecDeque<u64>,
    next_id: u64,
    clients_by_key: HashMap<ConnKey, Vec<u64>>,
    servers_by_key: HashMap<ConnKey, Vec<u64>>,
    by_thread: HashMap<(u32, u32), Vec<u64>>,
    seq: LruCache<u64, u64>,
    out: Vec<SpanData>,
    stats: CorrelateStats,
}

fn random_nonzero<const N: usize>() -> [u8; N] {
    loop {
        let v: [u8; N] = rand::random();
        if v.iter().any(|b| *b != 0) {
            return v;
        }
    }
}

fn contains(server: &SpanData, client: &SpanData) -> bool {
    let s = &server.link.timing;
    let c = client.link.timing.start_ns;
    let open_until = if s.response_start_ns == 0 {
        s.end_ns
    } else {
        s.response_start_ns
    };
    s.start_ns <= c && s.request_end_ns <= c && c <= open_until
}

impl Correlator {
    pub fn new(cfg: CorrelatorConfig) -> Self {
        let hold_ns = u64::try_from(cfg.hold.as_nanos()).unwrap_or(u64::MAX);
        let conns = NonZeroUsize::new(cfg.max_conns).unwrap_or(NonZeroUsize::MIN);
        Correlator {
            cfg,
            hold_ns,
            entries: HashMap::new(),
            order: VecDeque::new(),
            next_id: 0,
            clients_by_key: HashMap::new(),
            servers_by_key: HashMap::new(),
            by_thread: HashMap::new(),
            seq: LruCache::new(conns),
            out: Vec::new(),
            stats: CorrelateStats::default(),
        }
    }

    pub fn stats(&self) -> CorrelateStats {
        self.stats
    }

    /// Spans held (released ones kept for late children included).
    pub fn held(&self) -> usize {
        self.entries.len()
    }

    /// Spans not yet released.
    pub fn pending(&self) -> usize {
        self.entries.values().filter(|e| !e.released).count()
    }

    /// Add a finished span. `now_ns` is the correlator's clock (monotonic ns).
    pub fn push(&mut self, mut span: SpanData, now_ns: u64) {
        self.stats.received += 1;
        span.span_id = random_nonzero();
        let id = self.next_id;
        self.next_id += 1;
        let seq = self.next_seq(&span);
        let key = match (span.link.local, span.link.remote) {
            (Some(l), Some(r)) => Some(match span.kind {
                SpanKind::Client => (l, r),
                SpanKind::Server => (r, l),
            }),
            _ => None,
        };
        let thread = (span.pid, span.link.tid);
        let mut entry = Entry {
            span,
            arrived_ns: now_ns,
            parent: None,
            thread_candidates: 0,
            trace_id: None,
            released: false,
            key,
            seq,
            thread,
        };
        match entry.span.kind {
            SpanKind::Server => self.link_server(id, &mut entry),
            SpanKind::Client => self.link_client(id, &mut entry),
        }
        push_capped(
            self.by_thread.entry(thread).or_default(),
            id,
            MAX_PER_THREAD,
        );
        self.entries.insert(id, entry);
        self.order.push_back(id);
        while self.entries.len() > self.cfg.max_held {
            if !self.evict_oldest() {
                break;
            }
        }
    }

    fn next_seq(&mut self, span: &SpanData) -> u64 {
        if let Some(sid) = span.link.stream_id {
            return (1u64 << 63) | u64::from(sid);
        }
        let counter = self.seq.get_or_insert_mut(span.link.conn_id, || 0);
        let v = *counter;
        *counter = counter.saturating_add(1);
        v
    }

    fn link_server(&mut self, id: u64, entry: &mut Entry) {
        // Rule a: traceparent.
        if let Some(tp) = entry
            .span
            .link
            .traceparent
            .as_deref()
            .and_then(parse_traceparent)
        {
            entry.parent = Some(ParentRef::Remote {
                trace_id: tp.trace_id,
                span_id: tp.parent_id,
            });
            entry.trace_id = Some(tp.trace_id);
            entry.span.trace_state = entry.span.link.tracestate.clone();
        }
        if let Some(key) = entry.key {
            // Rule b: the client end of this connection is already here.
            if entry.parent.is_none()
                && let Some(cid) = self.best_pair(&self.clients_by_key, key, entry)
                && let Some(c) = self.entries.get(&cid)
            {
                entry.parent = Some(ParentRef::Local {
                    id: cid,
                    rule: LinkRule::Connection,
                    parent_start: c.span.link.timing.start_ns,
                });
            }
            push_capped(
                self.servers_by_key.entry(key).or_default(),
                id,
                MAX_PER_CONN,
            );
        }
        // Rule c: undecided clients of this thread that this request contains.
        let start = entry.span.link.timing.start_ns;
        let ids = self
            .by_thread
            .get(&entry.thread)
            .cloned()
            .unwrap_or_default();
        for cid in ids {
            let Some(c) = self.entries.get_mut(&cid) else {
                continue;
            };
            if c.span.kind != SpanKind::Client || !contains(&entry.span, &c.span) {
                continue;
            }
            c.thread_candidates = c.thread_candidates.saturating_add(1);
            if c.released {
                continue;
            }
            let replace = match c.parent {
                None => true,
                Some(ParentRef::Local {
                    rule: LinkRule::Thread | LinkRule::ThreadGuess,
                    parent_start,
                    ..
                }) => start > parent_start,
                Some(_) => false,
            };
            if replace {
                c.parent = Some(ParentRef::Local {
                    id,
                    rule: LinkRule::Thread,
                    parent_start: start,
                });
            }
        }
    }

    /// The other end of `me` among the exchanges indexed under `key`: it must pass
    /// [`same_exchange`]; the same request number wins, then the closest start. For a client
    /// looking for its server, only servers still without a parent qualify.
    fn best_pair(
        &self,
        index: &HashMap<ConnKey, Vec<u64>>,
        key: ConnKey,
        me: &Entry,
    ) -> Option<u64> {
        let mut best: Option<(u64, (bool, u64))> = None;
        for id in index.get(&key).map(Vec::as_slice).unwrap_or(&[]) {
            let Some(o) = self.entries.get(id) else {
                continue;
            };
            let ok = match me.span.kind {
                SpanKind::Server => same_exchange(&o.span, &me.span),
                SpanKind::Client => {
                    !o.released && o.parent.is_none() && same_exchange(&me.span, &o.span)
                }
            };
            if !ok {
                continue;
            }
            let score = (
                o.seq != me.seq,
                o.span
                    .link
                    .timing
                    .start_ns
                    .abs_diff(me.span.link.timing.start_ns),
            );
            if best.is_none_or(|(_, b)| score < b) {
                best = Some((*id, score));
            }
        }
        best.map(|(id, _)| id)
    }

    fn link_client(&mut self, id: u64, entry: &mut Entry) {
        if let Some(key) = entry.key {
            // Rule b: the server end already arrived (it usually finishes first).
            if let Some(sid) = self.best_pair(&self.servers_by_key, key, entry) {
                let start = entry.span.link.timing.start_ns;
                if let Some(s) = self.entries.get_mut(&sid)
                    && !s.released
                    && s.parent.is_none()
                {
                    s.parent = Some(ParentRef::Local {
                        id,
                        rule: LinkRule::Connection,
                        parent_start: start,
                    });
                }
            }
            push_capped(
                self.clients_by_key.entry(key).or_default(),
                id,
                MAX_PER_CONN,
            );
        }
        // Rule c: an inbound request of this thread that contains this call.
        let mut best: Option<(u64, u64)> = None;
        let mut candidates = 0u32;
        for sid in self
            .by_thread
            .get(&entry.thread)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let Some(s) = self.entries.get(sid) else {
                continue;
            };
            if s.span.kind != SpanKind::Server || !contains(&s.span, &entry.span) {
                continue;
            }
            candidates = candidates.saturating_add(1);
            let st = s.span.link.timing.start_ns;
            if best.is_none_or(|(_, b)| st > b) {
                best = Some((*sid, st));
            }
        }
        entry.thread_candidates = candidates;
        if let Some((sid, st)) = best {
            entry.parent = Some(ParentRef::Local {
                id: sid,
                rule: LinkRule::Thread,
                parent_start: st,
            });
        }
    }

    /// Release the oldest entry early (buffer full). Returns false when empty.
    fn evict_oldest(&mut self) -> bool {
        let Some(id) = self.order.pop_front() else {
            return false;
        };
        if let Some(e) = self.entries.get(&id)
            && !e.released
        {
            self.stats.forced_releases += 1;
            self.release(id, true);
        }
        self.remove(id);
        true
    }

    fn remove(&mut self, id: u64) {
        let Some(e) = self.entries.remove(&id) else {
            return;
        };
        if let Some(k) = e.key {
            let map = match e.span.kind {
                SpanKind::Client => &mut self.clients_by_key,
                SpanKind::Server => &mut self.servers_by_key,
            };
            if let Some(v) = map.get_mut(&k) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    map.remove(&k);
                }
            }
        }
        if let Some(v) = self.by_thread.get_mut(&e.thread) {
            v.retain(|x| *x != id);
            if v.is_empty() {
                self.by_thread.remove(&e.thread);
            }
        }
    }

    /// The parent's trace id when decided: Some(Some(id)); parent pending: Some(None); gone: None.
    fn parent_trace(&self, p: &ParentRef) -> Option<Option<[u8; 16]>> {
        match p {
            ParentRef::Remote { trace_id, .. } => Some(Some(*trace_id)),
            ParentRef::Local { id, .. } => self.entries.get(id).map(|e| e.trace_id),
        }
    }

    /// Decide and emit one entry. `force`: do not wait for an undecided parent.
    fn release(&mut self, id: u64, force: bool) -> bool {
        let Some(e) = self.entries.get(&id) else {
            return false;
        };
        if e.released {
            return false;
        }
        let parent = e.parent;
        let mut link: Option<(LinkRule, [u8; 8], Option<f64>)> = None;
        let trace_id = match parent {
            None => None,
            Some(p) => match self.parent_trace(&p) {
                Some(Some(t)) => {
                    link = Some(match p {
                        ParentRef::Remote { span_id, .. } => (LinkRule::Traceparent, span_id, None),
                        ParentRef::Local { id: pid, rule, .. } => {
                            let sid = self
                                .entries
                                .get(&pid)
                                .map(|x| x.span.span_id)
                                .unwrap_or([0; 8]);
                            if matches!(rule, LinkRule::Thread) && e.thread_candidates > 1 {
                                (
                                    LinkRule::ThreadGuess,
                                    sid,
                                    Some(1.0 / f64::from(e.thread_candidates)),
                                )
                            } else {
                                (rule, sid, None)
                            }
                        }
                    });
                    Some(t)
                }
                Some(None) if !force => return false,
                _ => {
                    self.stats.orphaned += 1;
                    None
                }
            },
        };
        let Some(e) = self.entries.get_mut(&id) else {
            return false;
        };
        let tid = trace_id.unwrap_or_else(random_nonzero);
        e.trace_id = Some(tid);
        e.released = true;
        let mut span = e.span.clone();
        span.trace_id = tid;
        match link {
            Some((rule, parent_span, conf)) => {
                span.parent_span_id = Some(parent_span);
                span.attributes.set("tracewire.link.rule", rule.as_str());
                if let Some(c) = conf {
                    span.attributes
                        .set("tracewire.link.confidence", AttrValue::F64(c));
                }
                match rule {
                    LinkRule::Traceparent => self.stats.linked_traceparent += 1,
                    LinkRule::Connection => self.stats.linked_connection += 1,
                    LinkRule::Thread => self.stats.linked_thread += 1,
                    LinkRule::ThreadGuess => self.stats.linked_thread_guess += 1,
                }
            }
            None => {
                span.parent_span_id = None;
                self.stats.roots += 1;
            }
        }
        self.stats.released += 1;
        self.out.push(span);
        true
    }

    /// Release every span whose window passed (and whose parent is decided), drop entries kept
    /// past their retention, and return the released spans.
    pub fn poll(&mut self, now_ns: u64) -> Vec<SpanData> {
        let max_wait = self.hold_ns.saturating_mul(4);
        // Unreleased spans whose window passed (arrival order: stop at the first young one).
        let mut due: Vec<(u64, bool)> = Vec::new();
        for id in &self.order {
            let Some(e) = self.entries.get(id) else {
                continue;
            };
            let age = now_ns.saturating_sub(e.arrived_ns);
            if age < self.hold_ns {
                break;
            }
            if !e.released {
                due.push((*id, age >= max_wait));
            }
        }
        // Parents first when possible; repeat while releases unblock children.
        for _ in 0..16 {
            let before = due.len();
            due.retain(|&(id, force)| !self.release(id, force));
            if due.len() == before || due.is_empty() {
                break;
            }
        }
        // Retention: keep released entries one more window for late children.
        let retention = self.hold_ns.saturating_mul(2);
        while let Some(&id) = self.order.front() {
            let done = match self.entries.get(&id) {
                Some(e) => e.released && now_ns.saturating_sub(e.arrived_ns) >= retention,
                None => true,
            };
            if !done {
                break;
            }
            self.order.pop_front();
            self.remove(id);
        }
        std::mem::take(&mut self.out)
    }

    /// Release everything now (shutdown).
    pub fn flush(&mut self) -> Vec<SpanData> {
        for _ in 0..16 {
            let ids: Vec<u64> = self.order.iter().copied().collect();
            let mut progress = false;
            for id in ids {
                if self.release(id, false) {
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        let ids: Vec<u64> = self.order.iter().copied().collect();
        for id in ids {
            self.release(id, true);
        }
        std::mem::take(&mut self.out)
    }
}

#[cfg(test)]
mod tests;
