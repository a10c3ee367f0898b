//! The agent's scheduler slice (opt-in: `--cpu-slice-ms`). Linux 6.6+ schedules ordinary
//! threads by EEVDF: the runnable thread with the earliest virtual deadline (its virtual
//! runtime plus its slice) runs, and a thread that wakes preempts the running one when its
//! deadline comes first, or, since 6.12, when its slice is shorter. A thread may ask for a
//! longer slice (`sched_setattr`'s `sched_runtime`, 0.1-100 ms; 6.12+). With the longest, the
//! agent's deadlines come after those of any application thread with the default slice (a
//! few ms), so an application thread that wakes takes the CPU from the agent at once instead
//! of waiting for the end of the agent's slice. Each of the agent's yields (`yielding`) moves
//! its deadline a slice later, so a yield gives way to every runnable application thread.
//!
//! The trade-off, measured on 2 saturated cores:
//! - nginx + wrk, 8 interleaved rounds per set, p99 latency (medians), loads warmed up for 1 s:
//!   201 and 198 us with the 100 ms slice against 244 and 254 us with the default (untraced
//!   165-173 us). Cold (the agent started just before the load): 271 against 252 us. A 10 ms
//!   slice: 237 against 241 us. The long slice without the yields: 352 us.
//! - redis-benchmark -P 16 (1M requests, 6 rounds): 0.5k-82k spans lost per run with the
//!   long slice against 0-16k with the default: an agent that lets the applications go first
//!   falls behind a burst and its queues overflow. Giving the long slice up while a thread was
//!   behind (for a second after) lost more, 16k-87k.
//!
//! So it stays off by default: a node that needs its applications' tail latency more than
//! every span of a burst can ask for it.

use std::io;
use std::time::Duration;

/// `struct sched_attr` (include/uapi/linux/sched/types.h), first version (48 bytes).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
}

const SCHED_ATTR_SIZE: u32 = std::mem::size_of::<SchedAttr>() as u32;

impl SchedAttr {
    /// `policy` at nice 0 with slice `runtime_ns` (0 = the default; fair policies only).
    pub(crate) fn new(policy: u32, runtime_ns: u64) -> Self {
        SchedAttr {
            size: SCHED_ATTR_SIZE,
            sched_policy: policy,
            sched_runtime: runtime_ns,
            ..SchedAttr::default()
        }
    }
}

/// What setting the slice did.
#[derive(Debug)]
pub enum SliceOutcome {
    /// The kernel runs the calling thread (and the threads it starts later) with this slice.
    InForce(Duration),
    /// The thread does not run under the fair class (SCHED_FIFO, SCHED_RR, SCHED_IDLE...):
    /// left as it is.
    NotFair,
    /// The kernel took the call but does not keep a custom slice (before 6.12).
    Ignored,
    /// The call failed.
    Failed(io::Error),
}

impl std::fmt::Display for SliceOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SliceOutcome::InForce(d) => write!(
                f,
                "agent threads run with a {} ms slice: application threads that wake preempt them",
                d.as_millis()
            ),
            SliceOutcome::NotFair => {
                write!(
                    f,
                    "the agent does not run under the fair scheduler: its slice is left as it is"
                )
            }
            SliceOutcome::Ignored => {
                write!(
                    f,
                    "this kernel keeps no per-thread slice (Linux 6.12+): the default slice is used"
                )
            }
            SliceOutcome::Failed(e) => write!(
                f,
                "setting the agent's slice failed ({e}): the default slice is used"
            ),
        }
    }
}

fn get_attr() -> io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: `attr` is a valid, writable sched_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            SCHED_ATTR_SIZE,
            0,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(attr)
}

fn set_attr(attr: &SchedAttr) -> io::Result<()> {
    set_thread_attr(0, attr)
}

/// Sets thread `tid`'s policy, nice value and slice (0 = the calling thread).
pub(crate) fn set_thread_attr(tid: i32, attr: &SchedAttr) -> io::Result<()> {
    // SAFETY: `attr` is a valid sched_attr whose `size` field gives its size.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, tid, attr as *const SchedAttr, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Asks for `slice` for the calling thread, keeping its policy and nice value. Threads it
/// starts afterwards inherit the slice, so call it before starting any.
pub fn set_current_thread_slice(slice: Duration) -> SliceOutcome {
    let cur = match get_attr() {
        Ok(a) => a,
        Err(e) => return SliceOutcome::Failed(e),
    };
    let fair = cur.sched_policy == libc::SCHED_OTHER as u32
        || cur.sched_policy == libc::SCHED_BATCH as u32;
    if !fair {
        return SliceOutcome::NotFair;
    }
    let want = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    let attr = SchedAttr {
        size: SCHED_ATTR_SIZE,
        sched_policy: cur.sched_policy,
        sched_nice: cur.sched_nice,
        sched_runtime: want,
        ..SchedAttr::default()
    };
    if let Err(e) = set_attr(&attr) {
        return SliceOutcome::Failed(e);
    }
    // Kernels before 6.12 accept the call and drop the runtime; those after report the
    // slice back (clamped to 0.1-100 ms).
    match get_attr() {
        Ok(a) if a.sched_runtime > 0 => {
            SliceOutcome::InForce(Duration::from_nanos(a.sched_runtime))
        }
        Ok(_) => SliceOutcome::Ignored,
        Err(e) => SliceOutcome::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sched_attr_has_the_kernel_layout() {
        assert_eq!(SCHED_ATTR_SIZE, 48);
    }

    #[test]
    fn a_thread_gets_the_slice_it_asks_for_where_the_kernel_keeps_one() {
        // On a thread of its own: the slice is inherited by threads started later.
        let outcome = std::thread::spawn(|| set_current_thread_slice(Duration::from_millis(20)))
            .join()
            .expect("thread ran");
        match outcome {
            SliceOutcome::InForce(d) => assert_eq!(d, Duration::from_millis(20)),
            SliceOutcome::Ignored | SliceOutcome::NotFair => {}
            SliceOutcome::Failed(e) => panic!("sched_setattr failed: {e}"),
        }
    }
}
