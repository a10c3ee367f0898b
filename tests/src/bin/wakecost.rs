//! What it costs a thread to sleep and be woken, in CPU time charged to the thread: the same
//! work is done in one stretch and in bursts separated by short sleeps, and the difference
//! per sleep is the price of a wakeup (the sleep itself, the scheduler, and refilling caches
//! and TLB that other work, or the host, used meanwhile). The agent's threads sleep between
//! drains, so this price, multiplied by their wakeups, is part of what they cost.
//!
//! usage: wakecost [WORKING_SET_KIB] [UNITS_PER_BURST] [SLEEP_US]
//! Defaults 1024 KiB, 100 units, 1000 us. Run it pinned (`taskset -c 0`), alone on the CPU
//! and next to a busy process, to see both cases.

use std::time::Duration;

/// Units of work in each run.
const UNITS: usize = 200_000;

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or(default)
    };
    let ws = arg(1, 1024).max(1) * 1024;
    let burst = arg(2, 100).max(1);
    let sleep = Duration::from_micros(arg(3, 1000) as u64);
    let mem = vec![1u8; ws];
    let steady = cpu_ns_per_unit(&mem, burst, None);
    let bursty = cpu_ns_per_unit(&mem, burst, Some(sleep));
    println!(
        "working set {} KiB, {burst} units per burst, {} us sleeps: {steady:.0} ns/unit steady, {bursty:.0} ns/unit in bursts, {:.1} us of CPU per wakeup",
        ws / 1024,
        sleep.as_micros(),
        (bursty - steady) * burst as f64 / 1000.0
    );
}

/// CPU ns per unit of work (64 scattered one-byte reads of `mem`), sleeping after every
/// `burst` units when `sleep` is given.
fn cpu_ns_per_unit(mem: &[u8], burst: usize, sleep: Option<Duration>) -> f64 {
    let lines = (mem.len() / 64).max(1);
    let mut idx: u32 = 12345;
    let mut acc = 0u64;
    let start = thread_cpu_ns();
    for unit in 0..UNITS {
        for _ in 0..64 {
            idx = idx.wrapping_mul(1_103_515_245).wrapping_add(12345);
            acc = acc.wrapping_add(u64::from(mem[(idx as usize % lines) * 64]));
        }
        if let Some(d) = sleep
            && (unit + 1) % burst == 0
        {
            std::thread::sleep(d);
        }
    }
    std::hint::black_box(acc);
    (thread_cpu_ns() - start) as f64 / UNITS as f64
}

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
