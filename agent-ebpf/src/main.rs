#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]
//! tracewire kernel programs: one `syscalls:*` tracepoint per traced syscall (or, with
//! `--raw-syscalls`, the `raw_syscalls` dispatch in [`dispatch`]) for socket data and
//! connection lifecycle; `sock:inet_sock_set_state` for TCP sockets that close without a
//! close() we saw.
//! Entry points are thin; the work is in the modules.

mod calls;
mod capture;
mod conn;
mod dispatch;
mod fdcache;
mod lifecycle;
mod maps;
mod regs;
mod sock;
mod sockhook;

use agent_common::{DIR_EGRESS, DIR_INGRESS, syscall};
use aya_ebpf::{
    EbpfContext,
    macros::{btf_tracepoint, tracepoint},
    programs::{BtfTracePointContext, TracePointContext},
};

use maps::{CONNS, SAMPLE_ALLOW, offsets};

/// Syscall tracepoint arguments are 8-byte slots after the 16-byte common header (the
/// `syscalls:*` record layout is fixed: `__syscall_nr` padded to 8, then the arguments). Read
/// with a direct context load at a constant offset, which the verifier checks against the
/// record, instead of a probe-read helper call on every syscall.
#[inline(always)]
fn arg(ctx: &TracePointContext, n: usize) -> u64 {
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(16 + n * 8) as *const u64) }
}

#[inline(always)]
fn ret(ctx: &TracePointContext) -> i64 {
    unsafe { core::ptr::read((ctx.as_ptr() as *const u8).add(16) as *const i64) }
}

/// Entry of a data syscall: (fd, arg1, arg2) straight from the tracepoint record.
macro_rules! data_enter {
    ($name:ident, $sc:expr, $dir:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            capture::enter_args(arg(&ctx, 0), arg(&ctx, 1), arg(&ctx, 2), $sc, $dir);
            0
        }
    };
}

data_enter!(tw_enter_read, syscall::READ, DIR_INGRESS);
data_enter!(tw_enter_write, syscall::WRITE, DIR_EGRESS);
data_enter!(tw_enter_recvfrom, syscall::RECVFROM, DIR_INGRESS);
data_enter!(tw_enter_sendto, syscall::SENDTO, DIR_EGRESS);
data_enter!(tw_enter_readv, syscall::READV, DIR_INGRESS);
data_enter!(tw_enter_writev, syscall::WRITEV, DIR_EGRESS);
data_enter!(tw_enter_recvmsg, syscall::RECVMSG, DIR_INGRESS);
data_enter!(tw_enter_sendmsg, syscall::SENDMSG, DIR_EGRESS);
// sendfile(out_fd, in_fd, offset, count): socket bytes with no user buffer to copy.
data_enter!(tw_enter_sendfile, syscall::SENDFILE, DIR_EGRESS);

/// Exit-only reads: the arguments come from the saved registers ([`regs`]), so these
/// syscalls need no entry program. Userspace attaches them when the register layout checks
/// out.
macro_rules! direct_exit {
    ($name:ident, $sc:expr) => {
        #[tracepoint]
        pub fn $name(ctx: TracePointContext) -> u32 {
            let r = ret(&ctx);
            if r <= 0 {
                return 0;
            }
            let Some((fd, a1, a2)) = regs::syscall_args3() else {
                return 0;
            };
            if let Some((buf, iovcnt)) = capture::user_buffer($sc, a1, a2) {
                capture::exit_direct(fd, buf, iovcnt, $sc, DIR_INGRESS, r);
            }
            0
        }
    };
}

direct_exit!(tw_exit_read, syscall::READ);
direct_exit!(tw_exit_recvfrom, syscall::RECVFROM);
direct_exit!(tw_exit_readv, syscall::READV);
direct_exit!(tw_exit_recvmsg, syscall::RECVMSG);

/// One exit program serves every data syscall: the entry stored what kind it was.
#[tracepoint]
pub fn tw_exit_data(ctx: TracePointContext) -> u32 {
    capture::exit(ret(&ctx));
    0
}

#[tracepoint]
pub fn tw_enter_connect(ctx: TracePointContext) -> u32 {
    lifecycle::connect_enter(arg(&ctx, 0) as i32);
    0
}

#[tracepoint]
pub fn tw_exit_connect(ctx: TracePointContext) -> u32 {
    lifecycle::connect_exit(ret(&ctx));
    0
}

#[tracepoint]
pub fn tw_exit_accept(ctx: TracePointContext) -> u32 {
    lifecycle::accept_exit(ret(&ctx));
    0
}

#[tracepoint]
pub fn tw_enter_close(ctx: TracePointContext) -> u32 {
    lifecycle::close_enter(arg(&ctx, 0));
    0
}

/// TCP sockets reaching TCP_CLOSE (also when the process died without close()) are forgotten, so
/// a later socket at the same address gets a fresh identity.
#[tracepoint]
pub fn tw_sock_state(ctx: TracePointContext) -> u32 {
    const TCP_CLOSE: i32 = 7;
    let o = offsets();
    if o.valid == 0 {
        return 0;
    }
    let newstate = unsafe { ctx.read_at::<i32>(o.tp_sock_state_newstate as usize) }.unwrap_or(0);
    if newstate == TCP_CLOSE {
        let sk = unsafe { ctx.read_at::<u64>(o.tp_sock_state_skaddr as usize) }.unwrap_or(0);
        let _ = CONNS.remove(sk);
        let _ = SAMPLE_ALLOW.remove(sk);
    }
    0
}

/// exec, dup2/dup3, close_range, unshare, io_uring_enter: fds of this process may have been
/// replaced without a close() we saw.
#[tracepoint]
pub fn tw_fd_table_changed(_ctx: TracePointContext) -> u32 {
    lifecycle::fd_table_changed();
    0
}

/// `task:task_newtask`: a new process (not a thread) starts with its own fd table.
#[tracepoint]
pub fn tw_new_task(ctx: TracePointContext) -> u32 {
    const CLONE_THREAD: u64 = 0x0001_0000;
    let o = offsets();
    if o.valid == 0 {
        return 0;
    }
    let flags = unsafe { ctx.read_at::<u64>(o.tp_newtask_clone_flags as usize) }.unwrap_or(0);
    if flags & CLONE_THREAD == 0 {
        let pid = unsafe { ctx.read_at::<i32>(o.tp_newtask_pid as usize) }.unwrap_or(0);
        fdcache::new_process(pid as u32);
    }
    0
}

/// `sock:sock_send_length(sk, ret, flags)`: a send on a socket, after it moved its bytes.
#[btf_tracepoint(function = "sock_send_length")]
pub fn tw_sock_send(ctx: BtfTracePointContext) -> i32 {
    let ret = ctx.arg::<i64>(1) as i32 as i64;
    if ret > 0 {
        sockhook::data(ctx.arg(0), ret, DIR_EGRESS);
    }
    0
}

/// `sock:sock_recv_length(sk, ret, flags)`: a receive on a socket, its bytes in user memory.
/// Peeks (read again later) and error-queue reads (not stream data) are not data; a receive of
/// nothing is the end of the peer's stream.
#[btf_tracepoint(function = "sock_recv_length")]
pub fn tw_sock_recv(ctx: BtfTracePointContext) -> i32 {
    const MSG_PEEK: i32 = 2;
    const MSG_ERRQUEUE: i32 = 0x2000;
    let ret = ctx.arg::<i64>(1) as i32 as i64;
    if ret == 0 {
        sockhook::end_of_stream(ctx.arg(0));
    }
    if ret <= 0 {
        return 0;
    }
    let flags = ctx.arg::<i64>(2) as i32;
    if flags & (MSG_PEEK | MSG_ERRQUEUE) == 0 {
        sockhook::data(ctx.arg(0), ret, DIR_INGRESS);
    }
    0
}

/// `sock:inet_sock_set_state(sk, oldstate, newstate)`, BTF-typed, with the socket tracepoints.
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tw_sock_state_btf(ctx: BtfTracePointContext) -> i32 {
    let old = ctx.arg::<i64>(1) as i32;
    let new = ctx.arg::<i64>(2) as i32;
    sockhook::state_change(ctx.arg(0), old, new);
    0
}

/// Does nothing, on `sock:sock_send_length` (hooks-only, with the socket tracepoints).
#[btf_tracepoint(function = "sock_send_length")]
pub fn tw_null_sock_send(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// Does nothing, on `sock:sock_recv_length` (hooks-only, with the socket tracepoints).
#[btf_tracepoint(function = "sock_recv_length")]
pub fn tw_null_sock_recv(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// Does nothing, on `sock:inet_sock_set_state` (hooks-only, with the socket tracepoints).
#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn tw_null_sock_state(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// Does nothing: attached in place of the real programs to measure what the hooks alone cost.
#[tracepoint]
pub fn tw_null(_ctx: TracePointContext) -> u32 {
    0
}

/// Does nothing, on `raw_syscalls:sys_enter` (hooks-only, with the dispatch).
#[btf_tracepoint(function = "sys_enter")]
pub fn tw_null_sys_enter(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// Does nothing, on `raw_syscalls:sys_exit` (hooks-only, with the dispatch).
#[btf_tracepoint(function = "sys_exit")]
pub fn tw_null_sys_exit(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
