//! Parent inference and trace-id assignment.
//!
//! Spans arrive in completion order, which is not tree order: a client call finishes before the
//! server request that made it, and a downstream server span finishes before the upstream client
//! span. So every span is *held* for a short window (`hold`) while links are found, then trace
//! ids are assigned top-down: a span whose window passed is released once its parent (if any)
//! has a trace id; a root gets a fresh random one. Released spans stay indexed for another
//! window so that late children still find them. A span that no later arrival can link
//! differently (see `Correlator::settled`) is released as it arrives: most spans when the
//! callers are pure clients, such as load generators.
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

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::spans::{MonoTiming, SpanBatch, SpanData, SpanKind};

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
}

impl Default for CorrelatorConfig {
    fn default() -> Self {
        CorrelatorConfig {
            hold: Duration::from_millis(1500),
            max_held: 65_536,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
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
    /// Released when they arrived, their links final: calls of processes that serve nothing,
    /// and requests whose parent's trace was already known.
    pub settled_on_arrival: u64,
}

/// Most recent spans indexed per thread / per connection: bounds the scans a busy event-loop
/// thread or a long keep-alive connection would otherwise make on every arrival. Older spans
/// stay held but can no longer be found by the thread / connection rules.
const MAX_PER_THREAD: usize = 256;
const MAX_PER_CONN: usize = 64;
/// Most ancestors walked when a trace is decided early (a parent chain is a call path).
const MAX_EARLY_CHAIN: usize = 64;

/// (client address, server address) of a connection.
type ConnKey = (SocketAddr, SocketAddr);

/// What the linking rules compare, kept inline in the indexes so a scan touches one small,
/// contiguous array instead of the held spans.
#[derive(Debug, Clone, Copy)]
struct LinkFacts {
    timing: MonoTiming,
    stream_id: Option<u32>,
}

/// How much later than the server's read of a request its client's start may be, for two
/// ends with the same exchange number. With the socket tracepoints a client's start is when
/// its send completed (there is no entry hook), and a kernel that hands the CPU to the woken
/// server before the sender returns lets the server read the request first. Measured here
/// the send was always seen first, by at least 1.2 µs; this covers a server slice on kernels
/// that preempt at once. Ends numbered differently get no such allowance: the server end of
/// the previous exchange, when the true one has not arrived yet, often read its request less
/// than this before the next request's send returned.
const SEND_SEEN_LATE_NS: u64 = 200_000;

/// Could `srv` be the far end of exchange `cli` on the same connection? The server finished
/// reading the request after the client started writing it (allowing `slack` for a send seen
/// only when it completed), and started answering before the client finished reading. On a
/// keep-alive connection the second test keeps earlier exchanges out, and the exchange
/// numbers pick the pair among the rest.
fn same_exchange(cli: &LinkFacts, srv: &LinkFacts, slack: u64) -> bool {
    if let (Some(a), Some(b)) = (cli.stream_id, srv.stream_id)
        && a != b
    {
        return false;
    }
    let c = &cli.timing;
    let s = &srv.timing;
    let s_req_end = s.request_end_ns.max(s.start_ns);
    s_req_end.saturating_add(slack) >= c.start_ns
        && (s.response_start_ns == 0 || s.response_start_ns <= c.end_ns)
}

/// Does inbound request `server` contain the start of outbound call `client`?
fn contains(server: &MonoTiming, client: &MonoTiming) -> bool {
    let c = client.start_ns;
    let open_until = if server.response_start_ns == 0 {
        server.end_ns
    } else {
        server.response_start_ns
    };
    server.start_ns <= c && server.request_end_ns <= c && c <= open_until
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
    /// The span until it is released (moved out then; the facts below stay for late children).
    /// Boxed: entries stay small, so held and released entries move and cache cheaply.
    span: Option<Box<SpanData>>,
    kind: SpanKind,
    span_id: [u8; 8],
    facts: LinkFacts,
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
    /// Linked to the other end of its exchange (rule b): one exchange has one other end.
    paired: bool,
}

/// One exchange indexed under its connection key.
#[derive(Debug, Clone, Copy)]
struct KeyRef {
    id: u64,
    seq: u64,
    facts: LinkFacts,
}

/// The last `MAX_PER_CONN` held exchanges of one connection end, oldest first.
type KeyIndex = FxHashMap<ConnKey, VecDeque<KeyRef>>;

/// The most recent `MAX_PER_THREAD` held spans of one thread (both kinds together), split by
/// kind so each rule scans only the kind it links to. `pos` numbers the thread's arrivals; a
/// span is in the window while `pos >= next_pos - MAX_PER_THREAD`.
#[derive(Debug, Default)]
struct ThreadIndex {
    next_pos: u64,
    /// (pos, id, start of the request) of server spans.
    servers: VecDeque<(u64, u64, MonoTiming)>,
    /// (pos, id) of client spans.
    clients: VecDeque<(u64, u64)>,
}

impl ThreadIndex {
    /// Drop spans that fell out of the window of the last `MAX_PER_THREAD` arrivals.
    fn prune(&mut self) {
        let lo = self.next_pos.saturating_sub(MAX_PER_THREAD as u64);
        while self.servers.front().is_some_and(|s| s.0 < lo) {
            self.servers.pop_front();
        }
        while self.clients.front().is_some_and(|c| c.0 < lo) {
            self.clients.pop_front();
        }
    }
}

/// Held spans are numbered in arrival order and only ever removed oldest first, so they live in
/// a deque indexed by `id - base`; every index below refers to them by id.
pub struct Correlator {
    cfg: CorrelatorConfig,
    hold_ns: u64,
    entries: VecDeque<Entry>,
    /// Id of `entries[0]`.
    base: u64,
    /// Ids not yet released, in arrival order (released ones are skipped lazily).
    unreleased: VecDeque<u64>,
    clients_by_key: KeyIndex,
    servers_by_key: KeyIndex,
    /// `base` when the connection indexes were last swept of their stale slots: entries
    /// dropped since then number `base - swept_at`.
    swept_at: u64,
    by_thread: FxHashMap<(u32, u32), ThreadIndex>,
    out: SpanBatch,
    due: Vec<(u64, bool)>,
    scratch: Vec<(u64, u64)>,
    stats: CorrelateStats,
    /// Span and trace ids: a fast generator seeded from the OS once (ids must be unique and
    /// unpredictable enough, not cryptographic; ChaCha per id was measurable under load).
    ids: SmallRng,
}

fn random_nonzero<const N: usize>(rng: &mut SmallRng) -> [u8; N] {
    loop {
        let mut v = [0u8; N];
        rng.fill_bytes(&mut v);
        if v.iter().any(|b| *b != 0) {
            return v;
        }
    }
}

impl Correlator {
    pub fn new(cfg: CorrelatorConfig) -> Self {
        let hold_ns = u64::try_from(cfg.hold.as_nanos()).unwrap_or(u64::MAX);
        Correlator {
            cfg,
            hold_ns,
            entries: VecDeque::new(),
            base: 0,
            unreleased: VecDeque::new(),
            clients_by_key: FxHashMap::default(),
            servers_by_key: FxHashMap::default(),
            swept_at: 0,
            by_thread: FxHashMap::default(),
            out: Vec::new(),
            due: Vec::new(),
            scratch: Vec::new(),
            stats: CorrelateStats::default(),
            ids: SmallRng::from_os_rng(),
        }
    }

    pub fn stats(&self) -> CorrelateStats {
        self.stats
    }

    /// Spans held (released ones kept for late children included).
    pub fn held(&self) -> usize {
        self.entries.len()
    }

    /// Whether spans may still be waiting for their window (conservative: released ones leave
    /// that queue lazily). Spans settled on arrival and released spans kept for late children
    /// need no timer: the next poll hands out or drops them, whenever it comes.
    pub fn has_unreleased(&self) -> bool {
        !self.unreleased.is_empty()
    }

    /// Spans not yet released.
    pub fn pending(&self) -> usize {
        self.entries.iter().filter(|e| !e.released).count()
    }

    fn next_id(&self) -> u64 {
        self.base.saturating_add(self.entries.len() as u64)
    }

    fn get(&self, id: u64) -> Option<&Entry> {
        let i = usize::try_from(id.checked_sub(self.base)?).ok()?;
        self.entries.get(i)
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut Entry> {
        let i = usize::try_from(id.checked_sub(self.base)?).ok()?;
        self.entries.get_mut(i)
    }

    /// Add a finished span. `now_ns` is the correlator's clock (monotonic ns).
    pub fn push(&mut self, mut span: SpanData, now_ns: u64) {
        self.stats.received += 1;
        span.span_id = random_nonzero(&mut self.ids);
        let id = self.next_id();
        let seq = match span.link.stream_id {
            Some(sid) => (1u64 << 63) | u64::from(sid),
            None => span.link.seq,
        };
        let key = match (span.link.local, span.link.remote) {
            (Some(l), Some(r)) => Some(match span.kind {
                SpanKind::Client => (l, r),
                SpanKind::Server => (r, l),
            }),
            _ => None,
        };
        let thread = (span.pid, span.link.tid);
        let mut entry = Entry {
            kind: span.kind,
            span_id: span.span_id,
            facts: LinkFacts {
                timing: span.link.timing,
                stream_id: span.link.stream_id,
            },
            span: Some(Box::new(span)),
            arrived_ns: now_ns,
            parent: None,
            thread_candidates: 0,
            trace_id: None,
            released: false,
            key,
            seq,
            thread,
            paired: false,
        };
        let pure_client = entry.span.as_ref().is_some_and(|s| s.link.pure_client);
        let mut paired_server = None;
        match entry.kind {
            SpanKind::Server => self.link_server(id, &mut entry),
            SpanKind::Client => paired_server = self.link_client(id, &mut entry),
        }
        let settled = self.settled(&entry, pure_client);
        let ti = self.by_thread.entry(thread).or_default();
        let pos = ti.next_pos;
        ti.next_pos += 1;
        match entry.kind {
            SpanKind::Server => ti.servers.push_back((pos, id, entry.facts.timing)),
            SpanKind::Client => ti.clients.push_back((pos, id)),
        }
        ti.prune();
        self.entries.push_back(entry);
        self.unreleased.push_back(id);
        if settled && self.release(id, false) {
            self.stats.settled_on_arrival += 1;
            // The server end this call just became the parent of is settled with it.
            if let Some(sid) = paired_server
                && self.release(sid, false)
            {
                self.stats.settled_on_arrival += 1;
            }
        }
        while self.entries.len() > self.cfg.max_held {
            if !self.evict_oldest() {
                break;
            }
        }
    }

    /// Can nothing that arrives later change this new span's parent? Then it need not wait
    /// out the hold window. A client call gets its parent only from an inbound request of its
    /// thread (which finishes later), so a call of a process that serves nothing is a root
    /// at once. A server request gets its parent from a `traceparent` (known now) or from its
    /// client end: final once found, and settled when that client's trace is decided.
    fn settled(&self, entry: &Entry, pure_client: bool) -> bool {
        match (entry.kind, entry.parent) {
            (SpanKind::Client, None) => pure_client,
            (SpanKind::Client, Some(_)) => false,
            (SpanKind::Server, Some(ParentRef::Remote { .. })) => true,
            (
                SpanKind::Server,
                Some(ParentRef::Local {
                    id,
                    rule: LinkRule::Connection,
                    ..
                }),
            ) => self.get(id).is_some_and(|p| p.trace_id.is_some()),
            (SpanKind::Server, _) => false,
        }
    }

    fn index_key(index: &mut KeyIndex, key: ConnKey, r: KeyRef) {
        let v = index.entry(key).or_default();
        if v.len() >= MAX_PER_CONN {
            let excess = v.len() + 1 - MAX_PER_CONN;
            v.drain(..excess);
        }
        v.push_back(r);
    }

    fn link_server(&mut self, id: u64, entry: &mut Entry) {
        // Rule a: traceparent.
        if let Some(span) = entry.span.as_mut()
            && let Some(tp) = span.link.traceparent.as_deref().and_then(parse_traceparent)
        {
            entry.parent = Some(ParentRef::Remote {
                trace_id: tp.trace_id,
                span_id: tp.parent_id,
            });
            entry.trace_id = Some(tp.trace_id);
            span.trace_state = span.link.tracestate.clone();
        }
        if let Some(key) = entry.key {
            // Rule b: the client end of this connection is already here.
            if entry.parent.is_none()
                && let Some(cid) = self.best_pair(&self.clients_by_key, key, entry)
                && let Some(c) = self.get_mut(cid)
            {
                c.paired = true;
                entry.paired = true;
                entry.parent = Some(ParentRef::Local {
                    id: cid,
                    rule: LinkRule::Connection,
                    parent_start: c.facts.timing.start_ns,
                });
            }
            let r = KeyRef {
                id,
                seq: entry.seq,
                facts: entry.facts,
            };
            Self::index_key(&mut self.servers_by_key, key, r);
        }
        // Rule c: undecided clients of this thread that this request contains.
        let start = entry.facts.timing.start_ns;
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        if let Some(ti) = self.by_thread.get_mut(&entry.thread) {
            ti.prune();
            ids.extend(ti.clients.iter().copied());
        }
        for &(_, cid) in &ids {
            let Some(c) = self.get_mut(cid) else {
                continue;
            };
            if !contains(&entry.facts.timing, &c.facts.timing) {
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
        self.scratch = ids;
    }

    /// The other end of `me` among the exchanges indexed under `key`: it must pass
    /// [`same_exchange`]; the same request number wins (the newest such), then the closest start. For a client
    /// looking for its server, only servers still without a parent qualify.
    fn best_pair(&self, index: &KeyIndex, key: ConnKey, me: &Entry) -> Option<u64> {
        let refs = index.get(&key)?;
        let mut best: Option<(u64, u64)> = None;
        // Newest first: the other end of an exchange is nearly always among the last few
        // indexed, and a match with the same request number ends the scan (a keep-alive
        // connection otherwise costs a scan of its whole window per span).
        for o in refs.iter().rev() {
            if o.id < self.base {
                // Swept lazily: this slot and every older one belong to dropped entries.
                break;
            }
            let slack = if o.seq == me.seq {
                SEND_SEEN_LATE_NS
            } else {
                0
            };
            let ok = match me.kind {
                SpanKind::Server => {
                    same_exchange(&o.facts, &me.facts, slack)
                        && self.get(o.id).is_some_and(|e| !e.paired)
                }
                SpanKind::Client => {
                    same_exchange(&me.facts, &o.facts, slack)
                        && self
                            .get(o.id)
                            .is_some_and(|e| !e.released && e.parent.is_none())
                }
            };
            if !ok {
                continue;
            }
            if o.seq == me.seq {
                return Some(o.id);
            }
            let score = o.facts.timing.start_ns.abs_diff(me.facts.timing.start_ns);
            if best.is_none_or(|(_, b)| score < b) {
                best = Some((o.id, score));
            }
        }
        best.map(|(id, _)| id)
    }

    /// Links a new client span; returns the held server end it became the parent of.
    fn link_client(&mut self, id: u64, entry: &mut Entry) -> Option<u64> {
        let mut paired = None;
        if let Some(key) = entry.key {
            // Rule b: the server end already arrived (it usually finishes first).
            if let Some(sid) = self.best_pair(&self.servers_by_key, key, entry) {
                let start = entry.facts.timing.start_ns;
                if let Some(s) = self.get_mut(sid)
                    && !s.released
                    && s.parent.is_none()
                {
                    s.parent = Some(ParentRef::Local {
                        id,
                        rule: LinkRule::Connection,
                        parent_start: start,
                    });
                    s.paired = true;
                    entry.paired = true;
                    paired = Some(sid);
                }
            }
            let r = KeyRef {
                id,
                seq: entry.seq,
                facts: entry.facts,
            };
            Self::index_key(&mut self.clients_by_key, key, r);
        }
        // Rule c: an inbound request of this thread that contains this call.
        let mut best: Option<(u64, u64)> = None;
        let mut candidates = 0u32;
        if let Some(ti) = self.by_thread.get_mut(&entry.thread) {
            ti.prune();
            for &(_, sid, timing) in &ti.servers {
                if !contains(&timing, &entry.facts.timing) {
                    continue;
                }
                candidates = candidates.saturating_add(1);
                let st = timing.start_ns;
                if best.is_none_or(|(_, b)| st > b) {
                    best = Some((sid, st));
                }
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
        paired
    }

    /// Release the oldest entry early (buffer full). Returns false when empty.
    fn evict_oldest(&mut self) -> bool {
        self.prefetch_ahead();
        let Some(e) = self.entries.front() else {
            return false;
        };
        let id = self.base;
        if !e.released {
            self.stats.forced_releases += 1;
            self.release(id, true);
        }
        self.remove_oldest();
        true
    }

    /// Entries leave oldest first, long after they were written (a full buffer holds seconds of
    /// spans), so each eviction waited on cache misses for the entry and its span. Fetch the
    /// ones a few evictions ahead while this one is handled.
    #[inline]
    fn prefetch_ahead(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            const AHEAD_ENTRY: usize = 8;
            const AHEAD_SPAN: usize = 4;
            /// Every cache line of `v`.
            fn prefetch<T>(v: &T) {
                let p = (v as *const T).cast::<i8>();
                for line in 0..size_of::<T>().div_ceil(64) {
                    // SAFETY: a prefetch is a hint; the address is inside the live value.
                    unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line * 64)) };
                }
            }
            if let Some(e) = self.entries.get(AHEAD_ENTRY) {
                prefetch(e);
            }
            if let Some(span) = self.entries.get(AHEAD_SPAN).and_then(|e| e.span.as_deref()) {
                prefetch(span);
            }
        }
    }

    /// Drop the oldest held entry and its thread index slot. Its connection index slot is left
    /// for [`Self::sweep_key_indexes`]: by now that slot was usually pushed out by the
    /// connection's newer exchanges, and finding out meant a cache miss on every eviction
    /// (the largest single cost of a full buffer in live profiles). Lookups skip ids below
    /// `base`.
    fn remove_oldest(&mut self) {
        let Some(e) = self.entries.pop_front() else {
            return;
        };
        let id = self.base;
        self.base += 1;
        if let Some(ti) = self.by_thread.get_mut(&e.thread) {
            match e.kind {
                SpanKind::Server => {
                    if ti.servers.front().is_some_and(|s| s.1 == id) {
                        ti.servers.pop_front();
                    }
                }
                SpanKind::Client => {
                    if ti.clients.front().is_some_and(|c| c.1 == id) {
                        ti.clients.pop_front();
                    }
                }
            }
            if ti.servers.is_empty() && ti.clients.is_empty() {
                self.by_thread.remove(&e.thread);
            }
        }
        while self.unreleased.front().is_some_and(|u| *u < self.base) {
            self.unreleased.pop_front();
        }
    }

    /// Drop connection index slots of entries no longer held. Runs from `poll` once the buffer
    /// turned over (or emptied), so the indexes hold at most about two buffers' worth of slots.
    fn sweep_key_indexes(&mut self) {
        if self.entries.is_empty() {
            self.clients_by_key.clear();
            self.servers_by_key.clear();
            self.swept_at = self.base;
            return;
        }
        if self.base - self.swept_at < self.cfg.max_held.max(1) as u64 {
            return;
        }
        let base = self.base;
        self.swept_at = base;
        for map in [&mut self.clients_by_key, &mut self.servers_by_key] {
            map.retain(|_, v| {
                while v.front().is_some_and(|r| r.id < base) {
                    v.pop_front();
                }
                !v.is_empty()
            });
        }
    }

    /// The parent's trace id when decided: Some(Some(id)); parent pending: Some(None); gone: None.
    fn parent_trace(&self, p: &ParentRef) -> Option<Option<[u8; 16]>> {
        match p {
            ParentRef::Remote { trace_id, .. } => Some(Some(*trace_id)),
            ParentRef::Local { id, .. } => self.get(*id).map(|e| e.trace_id),
        }
    }

    /// Decides the trace of held entry `id` (and of its undecided held ancestors) without
    /// emitting it: the nearest decided ancestor's trace, else a header's, else a new one.
    fn decide_early(&mut self, id: u64) {
        // On the stack: this runs for most forced releases under load.
        let mut chain = [0u64; MAX_EARLY_CHAIN];
        let mut len = 0;
        let mut cur = id;
        let top = loop {
            let Some(e) = self.get(cur) else { break None };
            if let Some(t) = e.trace_id {
                break Some(t);
            }
            chain[len] = cur;
            len += 1;
            match e.parent {
                Some(ParentRef::Remote { trace_id, .. }) => break Some(trace_id),
                Some(ParentRef::Local { id: pid, .. })
                    if len < MAX_EARLY_CHAIN && !chain[..len].contains(&pid) =>
                {
                    cur = pid;
                }
                Some(ParentRef::Local { .. }) => {
                    // A cycle (synthetic timings can make two spans each other's parent) or a
                    // chain too long: the top becomes a root, so no loop is ever exported.
                    if let Some(e) = self.get_mut(cur) {
                        e.parent = None;
                    }
                    self.stats.orphaned += 1;
                    break None;
                }
                None => break None,
            }
        };
        let t = top.unwrap_or_else(|| random_nonzero(&mut self.ids));
        for &c in &chain[..len] {
            if let Some(e) = self.get_mut(c) {
                e.trace_id = Some(t);
            }
        }
    }

    /// Decide and emit one entry. `force`: do not wait for an undecided parent.
    fn release(&mut self, id: u64, force: bool) -> bool {
        let Some(e) = self.get(id) else {
            return false;
        };
        if e.released {
            return false;
        }
        let parent = e.parent;
        // Forced out while its parent is still held undecided (the buffer is full): decide the
        // parent's trace now instead of orphaning this span. The parent keeps its place and is
        // emitted later under that trace.
        if force
            && let Some(ParentRef::Local { id: pid, .. }) = parent
            && matches!(self.get(pid), Some(pe) if pe.trace_id.is_none())
        {
            self.decide_early(pid);
        }
        let Some(e) = self.get(id) else {
            return false;
        };
        // Re-read: deciding early may have cut a cycle at this entry, and a trace decided
        // early for it (a child of this span was forced out first) stands.
        let (parent, early) = (e.parent, e.trace_id);
        let mut link: Option<(LinkRule, [u8; 8], Option<f64>)> = None;
        let trace_id = match parent {
            None => None,
            Some(p) => match self.parent_trace(&p) {
                Some(Some(t)) => {
                    link = Some(match p {
                        ParentRef::Remote { span_id, .. } => (LinkRule::Traceparent, span_id, None),
                        ParentRef::Local { id: pid, rule, .. } => {
                            let sid = self.get(pid).map(|x| x.span_id).unwrap_or([0; 8]);
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
        // The child released under an early trace is gone: a parent found since then cannot
        // be linked.
        let tid = match (early, trace_id) {
            (Some(d), Some(t)) if d != t => {
                link = None;
                d
            }
            (Some(d), _) => d,
            (None, Some(t)) => t,
            (None, None) => random_nonzero(&mut self.ids),
        };
        let Some(e) = self.get_mut(id) else {
            return false;
        };
        e.trace_id = Some(tid);
        e.released = true;
        let Some(mut span) = e.span.take() else {
            return false;
        };
        span.trace_id = tid;
        match link {
            Some((rule, parent_span, conf)) => {
                span.parent_span_id = Some(parent_span);
                // Released once, so these keys are new: appended without a search.
                span.attributes.push("tracewire.link.rule", rule.as_str());
                if let Some(c) = conf {
                    span.attributes.push("tracewire.link.confidence", c);
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
    pub fn poll(&mut self, now_ns: u64) -> SpanBatch {
        self.poll_with(now_ns, || {})
    }

    /// [`Self::poll`], calling `after_release` after each span released (the pipeline yields
    /// the CPU there now and then: below a full buffer every release happens in a poll, a
    /// tenth of a second's worth at once).
    pub fn poll_with(&mut self, now_ns: u64, mut after_release: impl FnMut()) -> SpanBatch {
        let max_wait = self.hold_ns.saturating_mul(4);
        // Unreleased spans whose window passed (arrival order: stop at the first young one).
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        while let Some(&id) = self.unreleased.front() {
            let Some(e) = self.get(id) else {
                self.unreleased.pop_front();
                continue;
            };
            if e.released {
                self.unreleased.pop_front();
                continue;
            }
            let age = now_ns.saturating_sub(e.arrived_ns);
            if age < self.hold_ns {
                break;
            }
            self.unreleased.pop_front();
            due.push((id, age >= max_wait));
        }
        // Room for this tick's releases up front: the batch is moved on whole, so growing it
        // by doubling would copy every span again.
        self.out.reserve(due.len());
        // Parents first when possible; repeat while releases unblock children.
        for _ in 0..16 {
            let before = due.len();
            due.retain(|&(id, force)| {
                let released = self.release(id, force);
                if released {
                    after_release();
                }
                !released
            });
            if due.len() == before || due.is_empty() {
                break;
            }
        }
        // Still waiting for their parent: back to the front, in arrival order.
        for &(id, _) in due.iter().rev() {
            self.unreleased.push_front(id);
        }
        self.due = due;
        // Retention: keep released entries one more window for late children.
        let retention = self.hold_ns.saturating_mul(2);
        while let Some(e) = self.entries.front() {
            if !(e.released && now_ns.saturating_sub(e.arrived_ns) >= retention) {
                break;
            }
            self.remove_oldest();
        }
        self.sweep_key_indexes();
        // The next batch starts with room for one like this: under a full buffer most spans
        // are released by `push` between polls, and growing by doubling copied every span
        // again (it showed in profiles).
        let room = self.out.len();
        std::mem::replace(&mut self.out, Vec::with_capacity(room))
    }

    /// Release everything now (shutdown).
    pub fn flush(&mut self) -> SpanBatch {
        let (lo, hi) = (self.base, self.next_id());
        for _ in 0..16 {
            let mut progress = false;
            for id in lo..hi {
                if self.release(id, false) {
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        for id in lo..hi {
            self.release(id, true);
        }
        self.unreleased.clear();
        std::mem::take(&mut self.out)
    }
}

#[cfg(test)]
mod tests;
