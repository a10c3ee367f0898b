//! Cooperative yielding. The agent shares the CPUs with the applications it traces, and the
//! scheduler lets a woken agent thread run its whole burst of work (a drain of the ring
//! buffer, a batch of spans) before the application thread it preempted gets the CPU back.
//! That thread's peers then wait on it: on a saturated 2-core machine, 0.1 cores of agent
//! work in bursts of about a millisecond cost nginx 16 % of its throughput and tripled its
//! p99 latency. Giving the CPU back every few tens of microseconds of work lets the
//! application run in between; when nothing else is runnable, a yield is one cheap syscall.
//!
//! A yield hands the CPU over until the thread that takes it blocks or its slice ends at the
//! next scheduler tick. Most yields came back within 200 us (an event loop's turn), but
//! under load a sixth took 1-16 ms (timed with nginx + wrk and with pgbench): the thread
//! that took over never blocked. Yielding every few tens of microseconds after each of those
//! left the agent's threads a few percent of a CPU: the export thread waited 5 s of 6 in the
//! run queue under pgbench and its queue overflowed. So a thread that gave the CPU away for
//! `d` keeps it for at least `d / 19` of work before yielding again ([`MIN_SHARE`]: 5 % of a
//! CPU is always within reach; 10 % and 20 % removed pgbench's losses too but raised nginx's
//! p99 latency more), and short yields leave the fine-grained rhythm unchanged.
//!
//! On a saturated node (see `sampler`) every stretch of agent work delays an application
//! thread that is waiting for the CPU, so the agent gives way [`SATURATED_DIVISOR`] times as
//! often there. nginx + wrk with the saturated budget (7 interleaved rounds, two sets): p99
//! 435 and 425 us against 467 and 494 us (untraced 325-343 us), throughput unchanged; dividing
//! by 16 was worse again (468-489 us). Off saturation the coarser rhythm stays: a yield with
//! nothing else runnable is a syscall for nothing.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The CPU share a busy thread keeps however long the threads it yields to hold the CPU:
/// after a yield of `d` it works `d * MIN_SHARE / (1 - MIN_SHARE)` before the next.
pub const MIN_SHARE: f64 = 0.05;

/// How much more often the agent yields while the node is saturated.
pub const SATURATED_DIVISOR: u32 = 4;

/// Whether the node is saturated, as the sampler last saw it (set by the ingest thread,
/// read by every yielding thread).
static NODE_SATURATED: AtomicBool = AtomicBool::new(false);

/// Records whether the node is saturated: yields become [`SATURATED_DIVISOR`] times as frequent.
pub fn set_node_saturated(saturated: bool) {
    NODE_SATURATED.store(saturated, Ordering::Relaxed);
}

/// The steps between two yields for a configured `every` (0 = never) on a node that is
/// `saturated` or not.
fn steps_between(every: u32, saturated: bool) -> u32 {
    if saturated && every > 0 {
        (every / SATURATED_DIVISOR).max(1)
    } else {
        every
    }
}

thread_local! {
    /// When this thread may yield again (shared by every `YieldEvery` on it).
    static NEXT_YIELD: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// How long to keep the CPU after a yield that took `waited`.
fn keep_after(waited: Duration) -> Duration {
    waited.mul_f64(MIN_SHARE / (1.0 - MIN_SHARE))
}

/// Give the CPU away unless the last yield's share of work is not done yet.
fn give_way() {
    let now = Instant::now();
    if NEXT_YIELD.with(Cell::get).is_some_and(|at| now < at) {
        return;
    }
    std::thread::yield_now();
    let back = Instant::now();
    NEXT_YIELD.with(|c| c.set(Some(back + keep_after(back - now))));
}

/// Whether a stage's input queue holds more than a quarter of its capacity: the stage is
/// falling behind and must not give its CPU away (that dropped data under redis -P 16).
pub fn backlogged(queued: u64, capacity: u64) -> bool {
    queued.saturating_mul(4) > capacity
}

/// Yields the CPU every `every` steps.
#[derive(Debug)]
pub struct YieldEvery {
    every: u32,
    steps: u32,
}

impl YieldEvery {
    /// `every` = 0 never yields.
    pub const fn new(every: u32) -> Self {
        YieldEvery { every, steps: 0 }
    }

    /// One unit of work done; yields when `every` of them ran since the last yield.
    #[inline]
    pub fn step(&mut self) {
        if self.every == 0 {
            return;
        }
        self.steps += 1;
        if self.steps >= steps_between(self.every, NODE_SATURATED.load(Ordering::Relaxed)) {
            self.steps = 0;
            give_way();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_yield_is_followed_by_a_share_of_work() {
        // A 4 ms yield (a tick of a rival that never blocks) buys 0.21 ms of work.
        let kept = keep_after(Duration::from_millis(4)).as_nanos();
        assert!((210_000..=211_000).contains(&kept), "{kept}");
        assert_eq!(keep_after(Duration::ZERO), Duration::ZERO);
        // Inside that window the thread does not yield.
        NEXT_YIELD.with(|c| c.set(Some(Instant::now() + Duration::from_secs(60))));
        give_way();
        assert!(
            NEXT_YIELD
                .with(Cell::get)
                .is_some_and(|at| at > Instant::now() + Duration::from_secs(30))
        );
        // Past it, it yields and sets the next window from how long the yield took.
        NEXT_YIELD.with(|c| c.set(None));
        give_way();
        assert!(
            NEXT_YIELD
                .with(Cell::get)
                .is_some_and(|at| at < Instant::now() + Duration::from_secs(1))
        );
    }

    #[test]
    fn a_saturated_node_yields_more_often() {
        assert_eq!(steps_between(128, false), 128);
        assert_eq!(steps_between(128, true), 32);
        assert_eq!(steps_between(2, true), 1);
        // "Never" stays never.
        assert_eq!(steps_between(0, true), 0);
    }

    #[test]
    fn counts_steps_between_yields() {
        let mut y = YieldEvery::new(3);
        y.step();
        y.step();
        assert_eq!(y.steps, 2);
        y.step();
        assert_eq!(y.steps, 0);
        let mut never = YieldEvery::new(0);
        for _ in 0..10 {
            never.step();
        }
        assert_eq!(never.steps, 0);
    }
}
