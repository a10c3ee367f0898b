//! (process, fd) -> socket cache, so the fd walk (a dozen dependent kernel reads) runs once
//! per fd rather than on every syscall. The entry of a socket also holds the connection's
//! per-call state (a copy of its CONNS state taken when the process first used the fd), so a
//! data syscall makes one hash lookup, not one here and one in CONNS. A process that inherits
//! or receives a socket starts from the socket's identity (id, role) in CONNS; two processes
//! using one connection at once each count its turns on their own.
//!
//! An entry carries the generation of its process's fd table. A new process starts with a
//! fresh generation, and the generation changes whenever fds may have been replaced behind a
//! close() we see: exec (close-on-exec), dup2/dup3, close_range, unshare, io_uring. A stale
//! entry therefore never matches; close() forgets its fd directly.

use aya_ebpf::bindings::BPF_NOEXIST;
use aya_ebpf::helpers::bpf_get_current_pid_tgid;
use aya_ebpf::macros::map;
use aya_ebpf::maps::{Array, LruHashMap, PerCpuArray};

use agent_common::{CONN_OP_CLOSE, ConnState, KernelOffsets};

use crate::conn::{self, lookup_or_discover};
use crate::maps::next_conn_id;
use crate::sock::{SockRef, Walk, walk};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct FdEntry {
    generation: u64,
    /// 0: the fd is open but not a stream socket we trace.
    sk: u64,
    inode: u64,
    family: u16,
    _pad: [u8; 6],
    /// The connection's state as this process uses it (when `sk` is not 0).
    conn: ConnState,
}

impl FdEntry {
    /// The socket the entry names; None for an fd known not to be a traced socket.
    #[inline(always)]
    fn sock(&self) -> Option<SockRef> {
        (self.sk != 0).then_some(SockRef {
            sk: self.sk,
            key: self.sk,
            family: self.family,
            inode: self.inode,
        })
    }
}

/// tgid -> generation of its fd table.
#[map]
static FD_GENERATION: LruHashMap<u32, u64> = LruHashMap::with_max_entries(32768, 0);

/// (tgid << 32 | fd) -> what the fd is.
#[map]
static FD_SOCK: LruHashMap<u64, FdEntry> = LruHashMap::with_max_entries(131072, 0);

/// The last process's generation seen on this CPU, valid while `epoch` matches
/// [`GEN_EPOCH`]: consecutive syscalls on a CPU mostly come from one process, and an array
/// slot is read without a hash lookup.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenCache {
    tgid: u32,
    _pad: u32,
    epoch: u64,
    generation: u64,
}

#[map]
static GEN_CACHE: PerCpuArray<GenCache> = PerCpuArray::with_max_entries(1, 0);

/// Set to a new, never reused value (after the map change) whenever any process's generation
/// changes or is dropped: every CPU's cached generation is then void. Unique values rather
/// than an increment: BPF has no portable fetch-add here, and two CPUs incrementing at once
/// could both store the same value and let a cache made in between survive.
#[map]
static GEN_EPOCH: Array<u64> = Array::with_max_entries(1, 0);

#[inline(always)]
fn epoch() -> u64 {
    match GEN_EPOCH.get_ptr(0) {
        // SAFETY: a map value, read whole.
        Some(p) => unsafe { core::ptr::read_volatile(p) },
        None => 0,
    }
}

#[inline(always)]
fn bump_epoch() {
    let v = next_conn_id();
    if let Some(p) = GEN_EPOCH.get_ptr_mut(0) {
        // SAFETY: an 8-aligned map value; the 8-byte store is single-copy atomic.
        unsafe { core::ptr::write_volatile(p, v) };
    }
}

#[inline(always)]
fn key(tgid: u32, fd: u64) -> u64 {
    ((tgid as u64) << 32) | (fd & 0xffff_ffff)
}

/// The generation of `tgid`'s fd table, created (fresh, never reused) on first use; from
/// this CPU's cache when it is still valid.
#[inline(always)]
fn generation(tgid: u32) -> Option<u64> {
    // The epoch is read before the map, so a change made after this read voids what we cache.
    let e = epoch();
    let cache = GEN_CACHE.get_ptr_mut(0);
    if let Some(c) = cache {
        // SAFETY: this CPU's slot; tracepoint programs do not migrate.
        let c = unsafe { &*c };
        if c.tgid == tgid && c.epoch == e && c.generation != 0 {
            return Some(c.generation);
        }
    }
    let g = generation_slow(tgid)?;
    if let Some(c) = cache {
        // SAFETY: as above.
        unsafe {
            *c = GenCache {
                tgid,
                _pad: 0,
                epoch: e,
                generation: g,
            }
        };
    }
    Some(g)
}

#[inline(always)]
fn generation_slow(tgid: u32) -> Option<u64> {
    if let Some(g) = unsafe { FD_GENERATION.get(tgid) } {
        return Some(*g);
    }
    let g = next_conn_id();
    if FD_GENERATION.insert(tgid, g, BPF_NOEXIST as u64).is_ok() {
        return Some(g);
    }
    // Another CPU created it first.
    unsafe { FD_GENERATION.get(tgid) }.copied()
}

/// The traced stream socket behind `fd` of the current process (`tgid`), if it is one, with
/// the connection's state as this process keeps it.
#[inline(always)]
pub fn conn_of_fd(o: &KernelOffsets, tgid: u32, fd: u64) -> Option<(SockRef, *mut ConnState)> {
    if o.valid == 0 || fd > i32::MAX as u64 {
        return None;
    }
    let g = generation(tgid)?;
    let k = key(tgid, fd);
    if let Some(e) = FD_SOCK.get_ptr_mut(k) {
        // SAFETY: a map value; concurrent syscalls on one fd race benignly on the state bytes.
        let e = unsafe { &mut *e };
        if e.generation == g {
            return e.sock().map(|s| (s, &mut e.conn as *mut ConnState));
        }
    }
    match walk(o, fd) {
        Walk::Sock(s) => {
            let st = lookup_or_discover(o, &s, fd as i32)?;
            store(k, g, Some(&s), &st);
            let e = FD_SOCK.get_ptr_mut(k)?;
            // SAFETY: as above.
            Some((s, unsafe { &mut (*e).conn }))
        }
        Walk::NotTraced => {
            store(k, g, None, &ConnState::default());
            None
        }
        Walk::Unknown => None,
    }
}

/// The cached answer for key `k` if it belongs to fd-table generation `g`: Some(None) for an
/// fd known not to be a traced socket, None when there is no valid entry.
#[inline(always)]
fn cached(k: u64, g: u64) -> Option<Option<(SockRef, ConnState)>> {
    let e = unsafe { FD_SOCK.get(k) }?;
    if e.generation != g {
        return None;
    }
    Some(e.sock().map(|s| (s, e.conn)))
}

#[inline(always)]
fn store(k: u64, generation: u64, s: Option<&SockRef>, conn: &ConnState) {
    let e = FdEntry {
        generation,
        sk: s.map_or(0, |s| s.sk),
        inode: s.map_or(0, |s| s.inode),
        family: s.map_or(0, |s| s.family),
        _pad: [0; 6],
        conn: *conn,
    };
    let _ = FD_SOCK.insert(k, e, 0);
}

/// The state the current process keeps for socket `sk` on `fd` (None when the entry is gone
/// or now names another socket).
#[inline(always)]
pub fn state_of(tgid: u32, fd: i32, sk: u64) -> Option<*mut ConnState> {
    let e = FD_SOCK.get_ptr_mut(key(tgid, fd as u64))?;
    // SAFETY: a map value.
    let e = unsafe { &mut *e };
    (e.sk == sk).then_some(&mut e.conn as *mut ConnState)
}

/// A socket just connected or accepted on `fd`: walk it afresh (the fd may be new), open the
/// connection with a fresh identity and cache both. When the fd already held a connection on
/// this very socket (connected again after connect(AF_UNSPEC) ended the first), that one
/// ended: userspace is told, as a close() would have told it.
#[inline(always)]
pub fn open_fresh(o: &KernelOffsets, fd: u64, role: u8, op: u8) {
    let Walk::Sock(s) = walk(o, fd) else {
        return;
    };
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let g = generation(tgid);
    if let Some(g) = g
        && let Some(Some((old, st))) = cached(key(tgid, fd), g)
        && old.sk == s.sk
        && st.selected != 0
    {
        conn::emit_conn(o, &old, &st, CONN_OP_CLOSE, fd as i32);
    }
    let st = conn::open(o, &s, role, op, fd as i32);
    if let Some(g) = g {
        store(key(tgid, fd), g, Some(&s), &st);
    }
}

/// `fd` of the current process is being closed: what it was (from the cache, with the state
/// this process kept, else a walk that is not cached), and its entry forgotten.
#[inline(always)]
pub fn take(o: &KernelOffsets, fd: u64) -> Option<(SockRef, Option<ConnState>)> {
    if o.valid == 0 || fd > i32::MAX as u64 {
        return None;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    let k = key(tgid, fd);
    let hit = unsafe { FD_GENERATION.get(tgid) }.and_then(|g| cached(k, *g));
    let _ = FD_SOCK.remove(k);
    match hit {
        Some(s) => s.map(|(s, st)| (s, Some(st))),
        None => match walk(o, fd) {
            Walk::Sock(s) => Some((s, None)),
            Walk::NotTraced | Walk::Unknown => None,
        },
    }
}

/// Every cached fd of `tgid` is void (its fd table may have changed behind our back).
#[inline(always)]
pub fn new_generation(tgid: u32) {
    if unsafe { FD_GENERATION.get(tgid) }.is_some() {
        let _ = FD_GENERATION.insert(tgid, next_conn_id(), 0);
    }
    // Always: a CPU may still cache a generation the LRU map has already evicted.
    bump_epoch();
}

/// A new process (not a thread) has its own fd table: drop the generation a dead process with
/// the same pid may have left, so its first use creates a fresh one.
#[inline(always)]
pub fn new_process(pid: u32) {
    let _ = FD_GENERATION.remove(pid);
    bump_epoch();
}
