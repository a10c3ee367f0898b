//! Data syscalls in flight, one slot per thread: an array indexed by thread id (modulo the slot
//! count) and tagged with the owning thread, instead of a hash map keyed by it. Entry and exit
//! then cost an inlined array access and one atomic each, where the hash map cost an insert,
//! a lookup and a delete (locks, a free list, hashing) on every captured call; and the exits
//! of calls the entry did not record (most syscalls) read one tag.
//!
//! Two threads whose ids share a slot and are both inside a data syscall at once (ids 32768
//! apart) lose the earlier one's event, counted as `CALL_COLLISIONS`. The tag protocol below
//! makes sure a thread never takes a record another thread half wrote.

use agent_common::{ActiveCall, counter};
use aya_ebpf::{macros::map, maps::Array};
use core::intrinsics::{AtomicOrdering::SeqCst, atomic_cxchg, atomic_xchg};
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};

use crate::maps::count;

/// A power of two: thread ids are masked, not divided.
pub const CALL_SLOTS: u32 = 32768;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct CallSlot {
    /// pid_tgid of the thread whose call the slot holds; 0 when empty or being written.
    owner: u64,
    call: ActiveCall,
}

#[map]
static CALLS: Array<CallSlot> = Array::with_max_entries(CALL_SLOTS, 0);

#[inline(always)]
fn slot(pid_tgid: u64) -> Option<*mut CallSlot> {
    CALLS.get_ptr_mut((pid_tgid as u32) & (CALL_SLOTS - 1))
}

/// Records the current thread's call (syscall entry). The owner is cleared before the call is
/// written and set after it, both atomically (full barriers), so a reader that still sees its
/// own tag afterwards read a record nobody was writing.
#[inline(always)]
pub fn record(pid_tgid: u64, call: &ActiveCall) {
    let Some(s) = slot(pid_tgid) else {
        return;
    };
    // SAFETY: a map value of this array; every access to `owner` is atomic or volatile.
    unsafe {
        let owner = addr_of_mut!((*s).owner);
        let prev = read_volatile(owner);
        if prev != 0 {
            if prev != pid_tgid {
                count(counter::CALL_COLLISIONS);
            }
            atomic_xchg::<u64, { SeqCst }>(owner, 0);
        }
        write_volatile(addr_of_mut!((*s).call), *call);
        atomic_xchg::<u64, { SeqCst }>(owner, pid_tgid);
    }
}

/// Takes the current thread's recorded call (syscall exit), leaving the slot empty. None when
/// the entry recorded nothing, or when a thread sharing the slot overwrote it meanwhile.
#[inline(always)]
pub fn take(pid_tgid: u64) -> Option<ActiveCall> {
    let s = slot(pid_tgid)?;
    // SAFETY: as in `record`.
    unsafe {
        let owner = addr_of_mut!((*s).owner);
        if read_volatile(owner) != pid_tgid {
            return None;
        }
        let call = read_volatile(addr_of!((*s).call));
        // Still ours after the copy: no other thread began writing the slot before we read it.
        let (_, ours) = atomic_cxchg::<u64, { SeqCst }, { SeqCst }>(owner, pid_tgid, 0);
        ours.then_some(call)
    }
}
