//! The socket tracepoints (`sock:sock_send_length` and `sock:sock_recv_length`, kernel 6.3+,
//! as BTF-typed programs): the kernel fires them in `sock_sendmsg`/`sock_recvmsg` after each
//! send or receive on any socket, with the socket and the result. Attached instead of the
//! syscall tracepoints, they cost nothing on syscalls that do not touch a socket, and no
//! syscall pays the kernel's traced-syscall path (that path is taken by every syscall of every
//! process once any syscall tracepoint is attached). The socket comes with the call, so no fd
//! is resolved.
//!
//! A connection's state lives on its socket (socket local storage, `SOCK_STATE`): found from
//! the socket without hashing, and freed by the kernel with it (a connection that ends only
//! marks it ended). Events and SAMPLE_ALLOW name a socket by its cookie (never reused), so no
//! close() is needed to tell a new socket at a reused address from the old one. TCP
//! connections learn their role when they are established (`inet_sock_set_state`: from
//! SYN_SENT a client, from SYN_RECV a server) and end at TCP_CLOSE (Unix stream connections
//! when a receive finds the peer's end closed); userspace hears of a connection at its
//! process's first data call. The payload, fd and syscall come from the syscall the tracepoint
//! fires in, read from the user registers the kernel saved at its entry; a call inside a
//! syscall with no buffer to read (io_uring, sendmmsg, splice) carries its byte count only.
//! Both directions are timed when the call has moved its bytes: a client span starts when its
//! request was sent.

use agent_common::{
    AF_INET, AF_INET6, AF_UNIX, ActiveCall, CONN_OP_CLOSE, ConnState, FILTER_BY_PROCESS,
    FLAG_PEEK_PROTOCOL, PT_REGS_ARGS, PT_REGS_CS, PT_REGS_ORIG_AX, ROLE_CLIENT, ROLE_SERVER,
    ROLE_UNKNOWN, USER_CS_64, action, counter,
};
use aya_ebpf::helpers::generated::{
    bpf_get_current_task_btf, bpf_get_socket_cookie, bpf_sk_storage_get, bpf_task_pt_regs,
};
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns};

use crate::capture::{finish, first_request_opens, sample, user_buffer};
use crate::conn::{announce, emit_conn, process_selected, unannounced_state};
use crate::dispatch::action_of;
use crate::maps::{SAMPLE_ALLOW, SOCK_STATE, config, count, offsets};
use crate::sock::{SockRef, rd};

const SOCK_STREAM: u16 = 1;
const TCP_ESTABLISHED: i32 = 1;
const TCP_SYN_SENT: i32 = 2;
const TCP_SYN_RECV: i32 = 3;
const TCP_CLOSE: i32 = 7;

const BPF_SK_STORAGE_GET_F_CREATE: u64 = 1;

/// The socket storage map, as the helpers take it.
#[inline(always)]
fn sock_state_map() -> *mut core::ffi::c_void {
    core::ptr::from_ref(&SOCK_STATE).cast_mut().cast()
}

/// The state kept on socket `sk`, if any.
#[inline(always)]
fn state_of(sk: *const core::ffi::c_void) -> Option<*mut ConnState> {
    // SAFETY: `sk` is a BTF-typed socket argument of the tracepoint, as the helper requires.
    let p = unsafe { bpf_sk_storage_get(sock_state_map(), sk as *mut _, core::ptr::null_mut(), 0) };
    (!p.is_null()).then_some(p.cast())
}

/// The state kept on socket `sk`, made from `st` when it has none (an existing one is kept:
/// another CPU may have made it first, or data preceded establishment).
#[inline(always)]
fn state_or_insert(sk: *const core::ffi::c_void, st: &mut ConnState) -> Option<*mut ConnState> {
    // SAFETY: as in `state_of`; `st` is a valid value to copy in.
    let p = unsafe {
        bpf_sk_storage_get(
            sock_state_map(),
            sk as *mut _,
            (st as *mut ConnState).cast(),
            BPF_SK_STORAGE_GET_F_CREATE,
        )
    };
    (!p.is_null()).then_some(p.cast())
}

/// The socket's cookie: a number the kernel gives each socket once and never reuses.
#[inline(always)]
fn cookie(sk: *const core::ffi::c_void) -> u64 {
    // SAFETY: `sk` is the tracepoint's BTF-typed socket argument, as the helper requires.
    unsafe { bpf_get_socket_cookie(sk as *mut core::ffi::c_void) }
}

/// What the syscall the tracepoint fired in names: fd, user buffer, iovec count and kind.
struct CallArgs {
    fd: i32,
    buf: u64,
    iovcnt: u32,
    syscall: u8,
}

const NO_ARGS: CallArgs = CallArgs {
    fd: -1,
    buf: 0,
    iovcnt: 0,
    syscall: agent_common::syscall::OTHER,
};

/// The current syscall's fd and buffer, from the user registers saved at its entry, when it
/// is a data syscall of a 64-bit process; [`NO_ARGS`] otherwise (kernel threads have no user
/// code segment, 32-bit processes number their syscalls differently).
#[inline(always)]
fn call_args() -> CallArgs {
    // SAFETY: BTF-typed pointers from the helpers; the verifier checks each constant offset
    // against `struct pt_regs` (layout checked against BTF by userspace) and makes the loads
    // fault-safe.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const u8;
        if regs.is_null() {
            return NO_ARGS;
        }
        let at = |off: u32| core::ptr::read_volatile(regs.add(off as usize) as *const u64);
        if at(PT_REGS_CS) != USER_CS_64 {
            return NO_ARGS;
        }
        let a = action_of(at(PT_REGS_ORIG_AX));
        if !matches!(
            a,
            action::READ
                | action::WRITE
                | action::RECVFROM
                | action::SENDTO
                | action::RECVMSG
                | action::SENDMSG
                | action::READV
                | action::WRITEV
                | action::SENDFILE
        ) {
            return NO_ARGS;
        }
        let fd = at(PT_REGS_ARGS[0]) as i32;
        match user_buffer(a, at(PT_REGS_ARGS[1]), at(PT_REGS_ARGS[2])) {
            Some((buf, iovcnt)) => CallArgs {
                fd,
                buf,
                iovcnt,
                syscall: a,
            },
            None => CallArgs {
                fd,
                syscall: a,
                ..NO_ARGS
            },
        }
    }
}

/// A socket seen for the first time: a stream socket of a family we trace gets a fresh
/// identity (role unknown: it predates the agent, or its establishment was missed); any other
/// is remembered as not traced (family 0) so the next call returns at once.
#[inline(always)]
fn discover(skp: *const core::ffi::c_void) -> Option<*mut ConnState> {
    let sk = skp as u64;
    let key = cookie(skp);
    let o = offsets();
    let family: u16 = unsafe { rd(sk, o.sk_family) }.unwrap_or(0);
    let ty: u16 = unsafe { rd(sk, o.sk_type) }.unwrap_or(0);
    let traced =
        ty == SOCK_STREAM && (family == AF_INET || family == AF_INET6 || family == AF_UNIX);
    let mut st = if traced {
        let s = SockRef {
            sk,
            key,
            family,
            inode: 0,
        };
        let role = if family == AF_UNIX {
            unix_role(sk)
        } else {
            ROLE_UNKNOWN
        };
        unannounced_state(o, &s, role)
    } else {
        ConnState::default()
    };
    state_or_insert(skp, &mut st)
}

/// The end of a Unix stream connection `sk` is: the server's end took its listener's address
/// when accepted, and the client's peer is that end. Unknown when neither end is bound
/// (socketpair) or BTF lacked the fields.
#[inline(always)]
fn unix_role(sk: u64) -> u8 {
    let o = offsets();
    if o.unix_addr == 0 || o.unix_peer == 0 {
        return ROLE_UNKNOWN;
    }
    let ptr = |p: u64, off: u32| -> u64 { unsafe { rd::<u64>(p, off) }.unwrap_or(0) };
    if ptr(sk, o.unix_addr) != 0 {
        return ROLE_SERVER;
    }
    let peer = ptr(sk, o.unix_peer);
    if peer != 0 && ptr(peer, o.unix_addr) != 0 {
        return ROLE_CLIENT;
    }
    ROLE_UNKNOWN
}

/// A send (`direction` egress) or receive (ingress) of `ret` > 0 bytes on socket `sk`.
#[inline(always)]
pub fn data(sk: *const core::ffi::c_void, ret: i64, direction: u8) {
    let cfg = config();
    // A pid/executable filter alone is decided before anything else.
    if cfg.filter_enabled == FILTER_BY_PROCESS
        && !process_selected((bpf_get_current_pid_tgid() >> 32) as u32)
    {
        return;
    }
    let o = offsets();
    if o.valid == 0 {
        return;
    }
    let st = match state_of(sk) {
        Some(p) => p,
        None => match discover(sk) {
            Some(p) => p,
            None => return,
        },
    };
    // SAFETY: the socket's storage; concurrent calls on one socket race benignly on these
    // bytes.
    let st = unsafe { &mut *st };
    if st.family == 0 {
        return;
    }
    let key = st.sock;
    let s = SockRef {
        sk: sk as u64,
        key,
        family: st.family,
        inode: 0,
    };
    if st.announced == 0 {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if tgid == cfg.agent_pid {
            // The agent's own connection (its exporter): never traced.
            st.family = 0;
            return;
        }
        let a = call_args();
        announce(o, &s, st, tgid, a.fd);
    }
    if st.selected == 0 {
        count(counter::FILTERED);
        return;
    }
    let Some(mut flags) = sample(st, key, direction) else {
        return;
    };
    // Only calls that are captured pay for the thread and the syscall's arguments.
    let id = bpf_get_current_pid_tgid();
    let a = call_args();
    if flags & FLAG_PEEK_PROTOCOL != 0 {
        flags &= !FLAG_PEEK_PROTOCOL;
        if ret >= 8 && first_request_opens(a.buf, a.iovcnt, st.role) {
            st.sample_ok = 1;
            count(counter::OPENED_IN_KERNEL);
        }
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let call = ActiveCall {
        sock: key,
        buf: a.buf,
        conn_id: st.conn_id,
        ts_enter_ns: now,
        iovcnt: a.iovcnt,
        fd: a.fd,
        syscall: a.syscall,
        direction,
        flags,
        _pad: 0,
        exchange: st.exchanges,
    };
    finish(id, &call, ret, now);
}

/// A receive returned nothing: the peer closed its end. A Unix stream connection ends here,
/// as far as the agent can see (no tracepoint marks a Unix socket's close); TCP connections
/// end at TCP_CLOSE instead ([`state_change`]), which also covers the end that closed first.
#[inline(always)]
pub fn end_of_stream(sk: *const core::ffi::c_void) {
    if let Some(p) = state_of(sk)
        // SAFETY: the socket's storage.
        && unsafe { (*p).family } == AF_UNIX
    {
        end(sk, p);
    }
}

/// The connection of socket `sk` (state at `p`) ended: userspace is told (when it heard of it
/// and it was selected), and the state is marked untraced (family 0) so any later call on the
/// socket returns at once. The state itself stays until the kernel frees it with the socket:
/// deleting it here (`bpf_sk_storage_delete`) frees it after an RCU Tasks Trace grace period,
/// and at nginx + wrk's few hundred connection ends a second that kept the kernel's
/// `rcu_tasks_trace` thread preempting the traced applications 40 to 50 times a second.
#[inline(always)]
fn end(sk: *const core::ffi::c_void, p: *mut ConnState) {
    // SAFETY: the socket's storage, copied out and then marked.
    let st = unsafe { *p };
    if st.family != 0 && st.announced != 0 && st.selected != 0 {
        let s = SockRef {
            sk: sk as u64,
            key: st.sock,
            family: st.family,
            inode: 0,
        };
        emit_conn(offsets(), &s, &st, CONN_OP_CLOSE, -1);
    }
    unsafe { (*p).family = 0 };
    let _ = SAMPLE_ALLOW.remove(st.sock);
}

/// `inet_sock_set_state`: an established TCP connection gets its identity and role (told to
/// userspace at its first data call); a closed one is forgotten, and userspace told.
#[inline(always)]
pub fn state_change(sk: *const core::ffi::c_void, oldstate: i32, newstate: i32) {
    let o = offsets();
    if o.valid == 0 {
        return;
    }
    if newstate == TCP_ESTABLISHED {
        let role = match oldstate {
            TCP_SYN_SENT => ROLE_CLIENT,
            TCP_SYN_RECV => ROLE_SERVER,
            _ => return,
        };
        let skaddr = sk as u64;
        let family: u16 = unsafe { rd(skaddr, o.sk_family) }.unwrap_or(0);
        if family != AF_INET && family != AF_INET6 {
            return;
        }
        let s = SockRef {
            sk: skaddr,
            key: cookie(sk),
            family,
            inode: 0,
        };
        let mut fresh = unannounced_state(o, &s, role);
        // Data sent before establishment (TCP Fast Open) made an entry already: keep it. An
        // entry of an earlier connection on this socket (connected again after it closed)
        // is replaced.
        if let Some(p) = state_or_insert(sk, &mut fresh)
            // SAFETY: the socket's storage.
            && unsafe { (*p).family } == 0
        {
            unsafe { *p = fresh };
        }
    } else if newstate == TCP_CLOSE
        && let Some(p) = state_of(sk)
    {
        end(sk, p);
    }
}
