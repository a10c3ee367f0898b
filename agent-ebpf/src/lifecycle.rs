//! Connection lifecycle and fd-table changes, shared by the per-syscall tracepoint programs and
//! the `raw_syscalls` dispatch.

use agent_common::{
    CONN_OP_ACCEPT, CONN_OP_CLOSE, CONN_OP_CONNECT, PendingConn, ROLE_CLIENT, ROLE_SERVER,
};
use aya_ebpf::helpers::bpf_get_current_pid_tgid;

use crate::maps::{self, CONNS, PENDING_CONN, SAMPLE_ALLOW, offsets};
use crate::{conn, fdcache};

/// Entry of connect(fd, ...): remembered until its exit tells whether it succeeded.
#[inline(always)]
pub fn connect_enter(fd: i32) {
    let id = bpf_get_current_pid_tgid();
    if (id >> 32) as u32 == maps::config().agent_pid {
        return;
    }
    let p = PendingConn {
        fd,
        op: CONN_OP_CONNECT,
        _pad: [0; 3],
    };
    let _ = PENDING_CONN.insert(id, p, 0);
}

/// Exit of connect: success (or a non-blocking connect in progress) opens a client connection
/// with a fresh identity.
#[inline(always)]
pub fn connect_exit(ret: i64) {
    let id = bpf_get_current_pid_tgid();
    let p = match unsafe { PENDING_CONN.get(id) } {
        Some(p) => *p,
        None => return,
    };
    let _ = PENDING_CONN.remove(id);
    const EINPROGRESS: i64 = 115;
    if ret != 0 && ret != -EINPROGRESS {
        return;
    }
    fdcache::open_fresh(offsets(), p.fd as u64, ROLE_CLIENT, CONN_OP_CONNECT);
}

/// Exit of accept/accept4: the returned fd is a new server connection. No entry state is needed,
/// so a server already blocked in accept() when the agent started is still seen.
#[inline(always)]
pub fn accept_exit(ret: i64) {
    let id = bpf_get_current_pid_tgid();
    if (id >> 32) as u32 == maps::config().agent_pid || ret < 0 {
        return;
    }
    fdcache::open_fresh(offsets(), ret as u64, ROLE_SERVER, CONN_OP_ACCEPT);
}

/// Entry of close(fd): the fd's connection closes as far as this process is concerned.
#[inline(always)]
pub fn close_enter(fd: u64) {
    let o = offsets();
    let Some((s, kept)) = fdcache::take(o, fd) else {
        return;
    };
    // The state this process kept for the fd, else the socket's (an fd it never used).
    let st = kept.or_else(|| unsafe { CONNS.get(s.sk) }.copied());
    if let Some(st) = st {
        if st.selected != 0 {
            conn::emit_conn(o, &s, &st, CONN_OP_CLOSE, fd as i32);
        }
        let _ = CONNS.remove(s.sk);
        let _ = SAMPLE_ALLOW.remove(s.sk);
    }
}

/// exec, dup2/dup3, close_range, unshare, io_uring_enter: fds of this process may have been
/// replaced without a close() we saw.
#[inline(always)]
pub fn fd_table_changed() {
    fdcache::new_generation((bpf_get_current_pid_tgid() >> 32) as u32);
}
