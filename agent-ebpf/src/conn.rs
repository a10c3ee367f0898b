//! Connection identity and lifecycle: ids assigned on connect/accept (or on first sight for
//! connections that predate the agent), the process filter, and lifecycle events.

use agent_common::{
    CONN_OP_ACCEPT, CONN_OP_CLOSE, CONN_OP_CONNECT, CONN_OP_DISCOVERED, ConnEvent, ConnState,
    DIR_NONE, EVENT_CONN, FILTER_BY_PORT, FILTER_BY_PROCESS, KernelOffsets, ROLE_CLIENT,
    ROLE_SERVER, ROLE_UNKNOWN, counter,
};
use aya_ebpf::helpers::{bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_ktime_get_ns};
use aya_ebpf::macros::map;
use aya_ebpf::maps::Array;

use crate::maps::{
    CONNS, EVENTS, FILTER_COMMS, FILTER_PIDS, FILTER_PORTS, config, count, next_conn_id,
};
use crate::sock::{SockRef, fill_tuple, ports};

/// Whether the pid or executable-name filter selects the current process.
#[inline(always)]
pub fn process_selected(tgid: u32) -> bool {
    unsafe {
        if FILTER_PIDS.get(tgid).is_some() {
            return true;
        }
        if let Ok(comm) = bpf_get_current_comm()
            && FILTER_COMMS.get(comm).is_some()
        {
            return true;
        }
    }
    false
}

/// Whether the process filter selects this process/socket.
#[inline(always)]
fn selected(o: &KernelOffsets, s: &SockRef, tgid: u32) -> bool {
    let f = config().filter_enabled;
    if f == 0 {
        return true;
    }
    if f & FILTER_BY_PROCESS != 0 && process_selected(tgid) {
        return true;
    }
    if f & FILTER_BY_PORT != 0 {
        let (l, r) = ports(o, s);
        return unsafe { FILTER_PORTS.get(l).is_some() || FILTER_PORTS.get(r).is_some() };
    }
    false
}

#[inline(always)]
pub fn emit_conn(o: &KernelOffsets, s: &SockRef, st: &ConnState, op: u8, fd: i32) {
    let id = bpf_get_current_pid_tgid();
    let mut ev = ConnEvent {
        kind: EVENT_CONN,
        op,
        role: st.role,
        pid: (id >> 32) as u32,
        tid: id as u32,
        fd,
        conn_id: st.conn_id,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        sock: s.key,
        ..ConnEvent::default()
    };
    fill_tuple(o, s, &mut ev);
    let flags = if op != CONN_OP_CLOSE && wakeup_due(ev.ts_ns) {
        BPF_RB_FORCE_WAKEUP
    } else {
        0
    };
    if EVENTS.output::<ConnEvent>(&ev, flags).is_err() {
        count(counter::DROPPED_EVENTS);
    } else {
        count(counter::CONN_EVENTS);
    }
}

const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Shortest gap between two wakeups forced by new connections (ns).
const CONN_WAKEUP_GAP_NS: u64 = 10_000_000;

/// Last time a new connection woke userspace (any CPU; a racy update only lets an extra
/// wakeup through).
#[map]
static LAST_CONN_WAKEUP: Array<u64> = Array::with_max_entries(1, 0);

/// Whether a new connection should wake userspace now. Its process may be short-lived, and
/// userspace reads the process's metadata (its service name) when it decodes the event; data
/// events otherwise wake it only in bulk. At most one such wakeup per 10 ms: after one,
/// userspace polls every 10 ms anyway (a new connection resets its interval), and under
/// connection churn (hundreds a second) more of them cost far more than they bring.
#[inline(always)]
fn wakeup_due(now_ns: u64) -> bool {
    let Some(p) = LAST_CONN_WAKEUP.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: an 8-aligned map value; whole-word loads and stores.
    unsafe {
        if now_ns.saturating_sub(core::ptr::read_volatile(p)) < CONN_WAKEUP_GAP_NS {
            return false;
        }
        core::ptr::write_volatile(p, now_ns);
    }
    true
}

/// A new connection opened by connect (client) or accept (server): always a fresh id, so a
/// reused fd or a reused `struct sock` address never inherits the old identity.
#[inline(always)]
pub fn open(o: &KernelOffsets, s: &SockRef, role: u8, op: u8, fd: i32) -> ConnState {
    let st = new_state(o, s, role);
    let _ = CONNS.insert(s.key, st, 0);
    if st.selected != 0 {
        emit_conn(o, s, &st, op, fd);
    }
    st
}

/// The state of a socket a process uses for the first time (as CONNS keeps it); connections we
/// did not see open get an id now and a DISCOVERED event so userspace can recover their role.
#[inline(always)]
pub fn lookup_or_discover(o: &KernelOffsets, s: &SockRef, fd: i32) -> Option<ConnState> {
    if let Some(st) = unsafe { CONNS.get(s.key) } {
        return Some(*st);
    }
    let st = new_state(o, s, ROLE_UNKNOWN);
    CONNS.insert(s.key, st, 0).ok()?;
    if st.selected != 0 {
        count(counter::UNKNOWN_CONNS);
        emit_conn(o, s, &st, CONN_OP_DISCOVERED, fd);
    }
    Some(st)
}

#[inline(always)]
fn new_state(o: &KernelOffsets, s: &SockRef, role: u8) -> ConnState {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    ConnState {
        selected: selected(o, s, tgid) as u8,
        announced: 1,
        ..unannounced_state(o, s, role)
    }
}

/// A fresh identity for socket `s`, not yet told to userspace and not yet selected: the
/// process filter is applied, and the event sent, at the first data call of a process
/// ([`announce`]).
#[inline(always)]
pub fn unannounced_state(o: &KernelOffsets, s: &SockRef, role: u8) -> ConnState {
    // Both ends of a connection see the same two ports, swapped: order them.
    let (l, r) = ports(o, s);
    let (lo, hi) = if l < r { (l, r) } else { (r, l) };
    ConnState {
        conn_id: next_conn_id(),
        pair_hash: ((lo as u32) << 16) | hi as u32,
        exchanges: 0,
        role,
        selected: 0,
        family: s.family,
        last_dir: DIR_NONE,
        sample_ok: 0,
        skipping: 0,
        after_skip: 0,
        since_allow_check: 0,
        announced: 0,
        _pad: [0; 6],
        sock: s.key,
    }
}

/// The first data call of a process on a connection the socket tracepoints found: the
/// process filter decides, and userspace hears of the connection from the process that uses
/// it (with its pid, fd and name), as a connect or accept when its establishment told the
/// role, else as discovered.
#[inline(always)]
pub fn announce(o: &KernelOffsets, s: &SockRef, st: &mut ConnState, tgid: u32, fd: i32) {
    st.announced = 1;
    st.selected = selected(o, s, tgid) as u8;
    if st.selected == 0 {
        return;
    }
    let op = match st.role {
        ROLE_CLIENT => CONN_OP_CONNECT,
        ROLE_SERVER => CONN_OP_ACCEPT,
        _ => {
            count(counter::UNKNOWN_CONNS);
            CONN_OP_DISCOVERED
        }
    };
    emit_conn(o, s, st, op, fd);
}
