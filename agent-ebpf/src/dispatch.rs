//! `--raw-syscalls`: every syscall through the two `raw_syscalls` tracepoints, as BTF-typed
//! programs: one run per syscall entry and exit that looks the syscall number up in a table
//! userspace filled ([`SYSCALL_ACTIONS`]) and returns at once for the syscalls the agent does
//! not trace.
//!
//! The trade-off against one `syscalls:*` tracepoint per traced syscall (the default): the
//! kernel runs a program attached there through perf, which builds a record of the arguments
//! in a per-CPU perf buffer first, about 90 ns per empty program run against about 35 ns here;
//! but these programs also run on every syscall the agent does not trace (about 65 ns each).
//! Arguments come from the saved user registers, read with direct loads the verifier checks
//! against `struct pt_regs` (userspace checked the layout against the kernel's BTF).

use agent_common::{
    DIR_EGRESS, DIR_INGRESS, PT_REGS_ARGS, PT_REGS_CS, PT_REGS_ORIG_AX, SYSCALL_TABLE, USER_CS_64,
    action,
};
use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::Array,
    programs::BtfTracePointContext,
};

use crate::{capture, lifecycle};

/// Syscall number -> [`action`] code (also how the socket tracepoints find the buffer of the
/// syscall they fire in).
#[map]
static SYSCALL_ACTIONS: Array<u8> = Array::with_max_entries(SYSCALL_TABLE, 0);

#[inline(always)]
pub fn action_of(nr: u64) -> u8 {
    if nr >= SYSCALL_TABLE as u64 {
        return action::NONE;
    }
    SYSCALL_ACTIONS
        .get(nr as u32)
        .copied()
        .unwrap_or(action::NONE)
}

/// The user registers the syscall saved (a BTF-typed `struct pt_regs` pointer).
struct Regs(*const u8);

impl Regs {
    #[inline(always)]
    fn at(&self, off: u32) -> u64 {
        // SAFETY: a BTF-typed pointer from the tracepoint; the verifier checks each constant
        // offset against `struct pt_regs` and makes the load fault-safe.
        unsafe { core::ptr::read_volatile(self.0.add(off as usize) as *const u64) }
    }

    #[inline(always)]
    fn arg(&self, n: usize) -> u64 {
        self.at(PT_REGS_ARGS[n])
    }

    /// A 64-bit syscall: 32-bit processes number their syscalls differently.
    #[inline(always)]
    fn native(&self) -> bool {
        self.at(PT_REGS_CS) == USER_CS_64
    }
}

#[btf_tracepoint(function = "sys_enter")]
pub fn tw_sys_enter(ctx: BtfTracePointContext) -> i32 {
    // sys_enter(struct pt_regs *regs, long id).
    let nr: u64 = ctx.arg(1);
    let a = action_of(nr);
    // Reads are seen at their exit alone.
    if a == action::NONE || is_read(a) {
        return 0;
    }
    let regs = Regs(ctx.arg(0));
    if !regs.native() {
        return 0;
    }
    let fd = regs.arg(0);
    match a {
        action::CONNECT => lifecycle::connect_enter(fd as i32),
        action::CLOSE => lifecycle::close_enter(fd),
        action::WRITE | action::SENDTO | action::WRITEV | action::SENDMSG | action::SENDFILE => {
            capture::enter_args(fd, regs.arg(1), regs.arg(2), a, DIR_EGRESS)
        }
        _ => {}
    }
    0
}

#[btf_tracepoint(function = "sys_exit")]
pub fn tw_sys_exit(ctx: BtfTracePointContext) -> i32 {
    // sys_exit(struct pt_regs *regs, long ret).
    let regs = Regs(ctx.arg(0));
    let a = action_of(regs.at(PT_REGS_ORIG_AX));
    if a == action::NONE {
        return 0;
    }
    let ret: i64 = ctx.arg(1);
    if !regs.native() {
        return 0;
    }
    match a {
        action::READ | action::RECVFROM | action::READV | action::RECVMSG => {
            if ret <= 0 {
                return 0;
            }
            if let Some((buf, iovcnt)) = capture::user_buffer(a, regs.arg(1), regs.arg(2)) {
                capture::exit_direct(regs.arg(0), buf, iovcnt, a, DIR_INGRESS, ret);
            }
        }
        action::CONNECT => lifecycle::connect_exit(ret),
        action::ACCEPT => lifecycle::accept_exit(ret),
        action::CLOSE => {}
        action::FD_TABLE_CHANGED => lifecycle::fd_table_changed(),
        _ => capture::exit(ret),
    }
    0
}

#[inline(always)]
fn is_read(a: u8) -> bool {
    matches!(
        a,
        action::READ | action::RECVFROM | action::READV | action::RECVMSG
    )
}
