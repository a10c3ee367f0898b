//! Cooperative yielding. The agent shares the CPUs with the applications it traces, and the
//! scheduler lets a woken agent thread run its whole burst of work (a drain of the ring
//! buffer, a batch of spans) before the application thread it preempted gets the CPU back.
//! That thread's peers then wait on it: on a saturated 2-core machine, 0.1 cores of agent
//! work in bursts of about a millisecond cost nginx 16 % of its throughput and tripled its
//! p99 latency. Giving the CPU back every few tens of microseconds of work lets the
//! application run in between; when nothing else is runnable, a yield is one cheap syscall.

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
        if self.steps >= self.every {
            self.steps = 0;
            std::thread::yield_now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
