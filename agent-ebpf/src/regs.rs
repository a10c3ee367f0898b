//! A syscall's arguments at its exit, read back from the user registers the kernel saved at
//! entry (`struct pt_regs`, which the syscall does not modify on x86_64: the result goes to
//! `ax`). The layout is the architecture's ABI; userspace checks it against the kernel's BTF
//! before attaching the programs that use it, and falls back to entry programs otherwise.

use aya_ebpf::helpers::generated::{bpf_get_current_task_btf, bpf_task_pt_regs};

use agent_common::PT_REGS_ARGS;

/// (arg0, arg1, arg2) of the current syscall, or None when the registers are unavailable.
#[inline(always)]
pub fn syscall_args3() -> Option<(u64, u64, u64)> {
    // SAFETY: BTF-typed pointers from the helpers; the loads are checked by the verifier
    // against `struct pt_regs` and become fault-safe loads.
    unsafe {
        let task = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(task) as *const u8;
        if regs.is_null() {
            return None;
        }
        let at = |off: usize| core::ptr::read_volatile(regs.add(off) as *const u64);
        Some((
            at(PT_REGS_ARGS[0] as usize),
            at(PT_REGS_ARGS[1] as usize),
            at(PT_REGS_ARGS[2] as usize),
        ))
    }
}
