//! The agent's scheduling class on a saturated node (`--idle-when-saturated`, on by default).
//!
//! Once the node's CPUs are saturated (see `sampler`), every stretch of agent work delays an
//! application thread waiting for a CPU, and on a 2-core node each such delay holds up every
//! request in flight. Yielding (`yielding`) shortens those stretches but still makes the
//! application wait out each one. In the idle class (`SCHED_IDLE`) the scheduler does that
//! for us: an application thread that wakes preempts the agent at once, and a CPU that runs
//! only the agent counts as free when the scheduler places a waking thread. The agent then
//! works in the gaps the applications leave (nginx + wrk leave 0.02-0.2 of a core idle;
//! the saturated capture budget needs less than a tenth of that).
//!
//! The agent goes idle once the node has been saturated for a second ([`SETTLE_NS`]). The
//! danger is starvation: an idle-class thread gets almost nothing while the CPUs are
//! busy, and a burst would overflow the ring buffer or the queues. So the agent's threads go
//! back to the normal class for a moment ([`CATCH_UP_NS`]) whenever it falls behind (a ring-buffer drain of
//! [`BEHIND_DRAIN_EVENTS`] events or more, no tick of the ingest thread for [`STALLED_NS`],
//! the queue to the span pipeline or the export queue more than a quarter full, a span
//! lost), and whenever the node has CPU to spare. A thread of its own decides, in the normal
//! class, from what the ingest thread reports at each tick: a starved thread cannot notice
//! its own starvation (when the ingest thread decided, redis-benchmark -P 16 lost 2k-13k
//! spans in 3 of 6 runs: it stayed idle to the end of the load, and its backlog overflowed
//! the export queue; none in 6 with the controller).
//!
//! Leaving the idle class takes `CAP_SYS_NICE` (or an `RLIMIT_NICE` of 20): without it a
//! thread that went idle could not come back, so the agent checks first and otherwise stays
//! in the normal class (and says so at start-up).
//!
//! Measured on nginx + wrk (2 saturated cores, interleaved rounds, p99 medians; the first
//! version, without the second of settling): cold starts 234-277 against 266-298 us with the
//! normal class throughout (untraced 168-177 us), loads warmed up for a second 217-226
//! against 240-244 us; throughput unchanged.
//!
//! It was opt-in for a while: redis-benchmark -P 16 lost 2,498-6,802 spans (export queue,
//! counted) in 5 of 15 runs with it. The normal class lost as often in more runs (5 of 12):
//! the losses came at the load's start (see `sampler::Sampler::recent_surge` and the
//! exporter's warm-up), and none in 10 runs of each class once those were mended.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use crate::cpuslice::{SchedAttr, set_thread_attr};

/// A ring-buffer drain of this many events means the agent fell behind the kernel (the ring
/// holds about 28,000 typical events; under the saturated budget a drain holds a few hundred).
pub const BEHIND_DRAIN_EVENTS: u64 = 8192;

/// How long the agent stays in the normal class after falling behind: long enough to drain
/// what it left in the ring (a few ms of work under the saturated budget), short enough that
/// the application rarely waits for it. On nginx + wrk the agent, starved now and then,
/// spent a third to two thirds of a saturated run in the normal class with a catch-up of a
/// second; with 100 ms (and [`STALLED_NS`] 500 ms) p99 medians of 8 interleaved rounds were
/// 199.5 against 259 us (untraced 168.5 us), throughput unchanged, and redis-benchmark -P 16
/// lost nothing in 8 runs.
const CATCH_UP_NS: u64 = 100_000_000;

/// How long the node must have been saturated before the agent goes idle: a load that has
/// just started is the burst most likely to outrun it (every connection's first exchange is
/// captured whole, and the sampler is still measuring the load), and redis-benchmark's
/// half-second tests with pauses between them lost spans when each start met an idle agent.
const SETTLE_NS: u64 = 1_000_000_000;

/// An ingest thread that has not reached a tick for this long while idle is starved (under
/// load it ticks every 10-40 ms). Under the saturated budget the ring fills in seconds, not
/// in this half second; with 200 ms an idle agent on nginx + wrk counted as stalled every
/// second or two (p99 207.5 against 199.5 us at 500 ms).
const STALLED_NS: u64 = 500_000_000;

/// How often the controller looks when nothing wakes it earlier: the ingest thread wakes it
/// as soon as an idle agent falls behind ([`Signals::tick`]), and it sleeps exactly to the
/// end of a catch-up or of the settling second. Looking every 50 ms while the node was
/// saturated, its own wakeups preempted nginx or wrk 19 times a second, more than the
/// agent's other threads together (76 of 132 preemptions in 4 s, `sched_switch`).
const LOOK: Duration = Duration::from_millis(250);

/// The signs that the agent is falling behind.
#[derive(Debug, Default, Clone, Copy)]
pub struct Backlog {
    /// The largest ring-buffer drain (events) since the last look.
    pub drain_events: u64,
    /// Time since the ingest thread's last tick.
    pub tick_age_ns: u64,
    /// The queue to the span pipeline is more than a quarter full.
    pub handoff_behind: bool,
    /// The OTLP export queue is more than a quarter full.
    pub export_backlogged: bool,
    /// Spans lost so far (after capture: queues, exports).
    pub lost: u64,
}

/// Decides the class of the agent's threads.
#[derive(Debug)]
pub struct ClassControl {
    enabled: bool,
    idle: bool,
    normal_until_ns: u64,
    saturated_since_ns: Option<u64>,
    last_lost: u64,
    idle_since_ns: Option<u64>,
    idle_ns: u64,
    switches: u64,
}

impl ClassControl {
    /// `enabled` = false: the normal class throughout.
    pub fn new(enabled: bool) -> Self {
        ClassControl {
            enabled,
            idle: false,
            normal_until_ns: 0,
            saturated_since_ns: None,
            last_lost: 0,
            idle_since_ns: None,
            idle_ns: 0,
            switches: 0,
        }
    }

    /// The class wanted at `now_ns` for a node that is `saturated` or not: Some(idle) when it
    /// changes (the caller applies it and reports back with [`Self::applied`]).
    pub fn update(&mut self, now_ns: u64, saturated: bool, b: &Backlog) -> Option<bool> {
        if !self.enabled {
            return None;
        }
        let behind = falling_behind(b, self.last_lost);
        self.last_lost = b.lost;
        if behind || (self.idle && b.tick_age_ns >= STALLED_NS) {
            self.normal_until_ns = now_ns.saturating_add(CATCH_UP_NS);
        }
        let since = if saturated {
            *self.saturated_since_ns.get_or_insert(now_ns)
        } else {
            self.saturated_since_ns = None;
            now_ns
        };
        let want = saturated
            && now_ns.saturating_sub(since) >= SETTLE_NS
            && now_ns >= self.normal_until_ns;
        (want != self.idle).then_some(want)
    }

    /// How long the controller may sleep after a look at `now_ns`: [`LOOK`], or less when a
    /// catch-up or the settling second ends sooner (signs of falling behind wake it earlier).
    pub fn next_look(&self, now_ns: u64) -> Duration {
        let look = LOOK.as_nanos() as u64;
        let mut until = now_ns.saturating_add(look);
        if self.normal_until_ns > now_ns {
            until = until.min(self.normal_until_ns);
        }
        if !self.idle
            && let Some(since) = self.saturated_since_ns
        {
            let settled = since.saturating_add(SETTLE_NS);
            if settled > now_ns {
                until = until.min(settled);
            }
        }
        Duration::from_nanos(until - now_ns)
    }

    /// The class `idle` is now in force (at `now_ns`); `Err` turns the control off for good
    /// (the threads stay where the failed change left them: it is refused before any moves).
    pub fn applied(&mut self, now_ns: u64, result: io::Result<()>) -> io::Result<()> {
        if let Err(e) = result {
            self.enabled = false;
            return Err(e);
        }
        self.idle = !self.idle;
        self.switches += 1;
        if self.idle {
            self.idle_since_ns = Some(now_ns);
        } else if let Some(at) = self.idle_since_ns.take() {
            self.idle_ns += now_ns.saturating_sub(at);
        }
        Ok(())
    }

    /// Time spent in the idle class so far, and the class changes.
    pub fn totals(&self, now_ns: u64) -> (u64, u64) {
        let open = self.idle_since_ns.map_or(0, |at| now_ns.saturating_sub(at));
        ((self.idle_ns + open) / 1_000_000, self.switches)
    }
}

/// Signs in `b` that the agent is falling behind, `last_lost` spans having been lost before
/// (a starved ingest thread, which cannot report itself, aside).
fn falling_behind(b: &Backlog, last_lost: u64) -> bool {
    b.drain_events >= BEHIND_DRAIN_EVENTS
        || b.handoff_behind
        || b.export_backlogged
        || b.lost > last_lost
}

/// What the ingest thread tells the controller at each of its ticks.
#[derive(Debug, Default)]
pub struct Signals {
    /// The controller's thread, woken when an idle agent falls behind.
    controller: OnceLock<Thread>,
    /// Whether the agent's threads are in the idle class now.
    idle: AtomicBool,
    saturated: AtomicBool,
    last_tick_ns: AtomicU64,
    drain_events: AtomicU64,
    lost: AtomicU64,
    handoff_behind: AtomicBool,
    export_backlogged: AtomicBool,
}

impl Signals {
    /// The ingest thread's state at a tick at `now_ns`; true when it woke the controller.
    pub fn tick(&self, now_ns: u64, saturated: bool, b: &Backlog) -> bool {
        self.saturated.store(saturated, Ordering::Relaxed);
        self.drain_events
            .fetch_max(b.drain_events, Ordering::Relaxed);
        let lost_before = self.lost.swap(b.lost, Ordering::Relaxed);
        self.handoff_behind
            .store(b.handoff_behind, Ordering::Relaxed);
        self.export_backlogged
            .store(b.export_backlogged, Ordering::Relaxed);
        self.last_tick_ns.store(now_ns, Ordering::Relaxed);
        // Only an idle agent needs the controller at once; in the normal class the agent
        // gets its CPU anyway, and the next look is soon enough.
        let wake = self.idle.load(Ordering::Relaxed) && falling_behind(b, lost_before);
        if wake {
            self.wake_controller();
        }
        wake
    }

    /// Wakes the controller for a look now (at stop: it leaves at once).
    pub fn wake_controller(&self) {
        if let Some(t) = self.controller.get() {
            t.unpark();
        }
    }

    fn look(&self, now_ns: u64) -> (bool, Backlog) {
        let last = self.last_tick_ns.load(Ordering::Relaxed);
        (
            self.saturated.load(Ordering::Relaxed),
            Backlog {
                drain_events: self.drain_events.swap(0, Ordering::Relaxed),
                tick_age_ns: if last == 0 {
                    0
                } else {
                    now_ns.saturating_sub(last)
                },
                handoff_behind: self.handoff_behind.load(Ordering::Relaxed),
                export_backlogged: self.export_backlogged.load(Ordering::Relaxed),
                lost: self.lost.load(Ordering::Relaxed),
            },
        )
    }
}

/// The controller: a thread of its own in the normal class (never registered), so a starved
/// agent is still noticed. Returns (ms in the idle class, class changes) once `stop` is set.
pub fn spawn_controller(
    enabled: bool,
    slice_ns: u64,
    signals: Arc<Signals>,
    stop: Arc<AtomicBool>,
    clock: fn() -> u64,
) -> io::Result<std::thread::JoinHandle<(u64, u64)>> {
    std::thread::Builder::new()
        .name("tracewire-class".into())
        .spawn(move || {
            let _ = signals.controller.set(std::thread::current());
            let mut c = ClassControl::new(enabled);
            while enabled && !stop.load(Ordering::Relaxed) {
                let now = clock();
                let (saturated, b) = signals.look(now);
                if let Some(idle) = c.update(now, saturated, &b)
                    && let Err(e) = c.applied(clock(), apply(idle, slice_ns))
                {
                    eprintln!(
                        "tracewire: warning: changing the agent's scheduling class failed ({e}): it stays as it is"
                    );
                }
                signals.idle.store(c.idle, Ordering::Relaxed);
                std::thread::park_timeout(c.next_look(clock()));
            }
            // Leave no thread idle for the final drain and flush.
            if c.idle {
                let _ = c.applied(clock(), apply(false, slice_ns));
            }
            c.totals(clock())
        })
}

/// The agent's threads (kernel thread ids) whose class follows the control.
static THREADS: Mutex<Vec<i32>> = Mutex::new(Vec::new());

fn current_tid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::gettid() }
}

/// Puts the calling thread under the control (the ingest thread, the export runtime's).
pub fn register_current_thread() {
    if let Ok(mut t) = THREADS.lock() {
        t.push(current_tid());
    }
}

/// Takes the calling thread out of the control (a thread that is about to end).
pub fn unregister_current_thread() {
    let tid = current_tid();
    if let Ok(mut t) = THREADS.lock() {
        t.retain(|&x| x != tid);
    }
}

fn attr(idle: bool, slice_ns: u64) -> SchedAttr {
    SchedAttr::new(
        if idle {
            libc::SCHED_IDLE
        } else {
            libc::SCHED_OTHER
        } as u32,
        // The normal class keeps the slice asked for (`--cpu-slice-ms`; 0 = the default).
        if idle { 0 } else { slice_ns },
    )
}

/// Moves every registered thread to the idle class or back (keeping `slice_ns` in the
/// normal one). A thread that ended meanwhile is skipped.
pub fn apply(idle: bool, slice_ns: u64) -> io::Result<()> {
    let tids = THREADS.lock().map(|t| t.clone()).unwrap_or_default();
    let a = attr(idle, slice_ns);
    for tid in tids {
        match set_thread_attr(tid, &a) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Whether a thread of this process may enter the idle class and leave it again: tried on a
/// thread of its own, so no agent thread is ever stranded there.
pub fn can_switch(slice_ns: u64) -> io::Result<()> {
    std::thread::spawn(move || {
        let tid = current_tid();
        set_thread_attr(tid, &attr(true, 0))?;
        set_thread_attr(tid, &attr(false, slice_ns))
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("the probe thread panicked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn the_agent_goes_idle_while_saturated_and_keeping_up() {
        let mut c = ClassControl::new(true);
        let calm = Backlog::default();
        assert_eq!(c.update(S, false, &calm), None);
        // Saturated, but only just: not yet.
        assert_eq!(c.update(S + S / 10, true, &calm), None);
        assert_eq!(c.update(2 * S, true, &calm), None);
        assert_eq!(c.update(2 * S + S / 10, true, &calm), Some(true));
        assert!(c.applied(2 * S, Ok(())).is_ok());
        assert_eq!(c.update(3 * S, true, &calm), None);
        // Room on the node again: back to the normal class.
        assert_eq!(c.update(4 * S, false, &calm), Some(false));
        assert!(c.applied(4 * S, Ok(())).is_ok());
        assert_eq!(c.totals(5 * S), (2000, 2));
    }

    #[test]
    fn falling_behind_brings_the_normal_class_back_for_a_moment() {
        let mut c = ClassControl::new(true);
        let calm = Backlog::default();
        assert_eq!(c.update(0, true, &calm), None);
        assert_eq!(c.update(S, true, &calm), Some(true));
        assert!(c.applied(S, Ok(())).is_ok());
        for behind in [
            Backlog {
                drain_events: BEHIND_DRAIN_EVENTS,
                ..calm
            },
            Backlog {
                handoff_behind: true,
                ..calm
            },
            Backlog {
                export_backlogged: true,
                ..calm
            },
            Backlog { lost: 1, ..calm },
        ] {
            let mut c2 = ClassControl::new(true);
            assert_eq!(c2.update(0, true, &calm), None);
            assert_eq!(c2.update(S, true, &calm), Some(true));
            assert!(c2.applied(S, Ok(())).is_ok());
            assert_eq!(c2.update(2 * S, true, &behind), Some(false), "{behind:?}");
            assert!(c2.applied(2 * S, Ok(())).is_ok());
            // Still catching up just before the catch-up ends, idle again after it.
            let later = Backlog {
                lost: behind.lost,
                ..calm
            };
            assert_eq!(c2.update(2 * S + CATCH_UP_NS - 1, true, &later), None);
            assert_eq!(c2.update(2 * S + CATCH_UP_NS, true, &later), Some(true));
        }
        // A starved ingest thread (no tick for STALLED_NS) counts while idle.
        let mut c3 = ClassControl::new(true);
        assert_eq!(c3.update(0, true, &calm), None);
        assert_eq!(c3.update(S, true, &calm), Some(true));
        assert!(c3.applied(S, Ok(())).is_ok());
        let stalled = Backlog {
            tick_age_ns: STALLED_NS,
            ..calm
        };
        assert_eq!(c3.update(2 * S, true, &stalled), Some(false));
        // A drain below the mark is no sign of falling behind.
        let busy = Backlog {
            drain_events: BEHIND_DRAIN_EVENTS - 1,
            ..calm
        };
        assert_eq!(c.update(2 * S, true, &busy), None);
    }

    #[test]
    fn the_controller_sleeps_to_the_next_deadline() {
        let look = LOOK.as_nanos() as u64;
        let calm = Backlog::default();
        let mut c = ClassControl::new(true);
        assert_eq!(c.next_look(0), LOOK);
        // Saturated: wakes when the settling second ends, not a look later.
        assert_eq!(c.update(S, true, &calm), None);
        assert_eq!(c.next_look(S + SETTLE_NS - 10), Duration::from_nanos(10));
        assert_eq!(c.update(S + SETTLE_NS, true, &calm), Some(true));
        assert!(c.applied(S + SETTLE_NS, Ok(())).is_ok());
        let t = S + SETTLE_NS;
        assert_eq!(c.next_look(t), LOOK);
        // Falling behind: back to idle right when the catch-up ends.
        let behind = Backlog {
            handoff_behind: true,
            ..calm
        };
        assert_eq!(c.update(t + look, true, &behind), Some(false));
        assert!(c.applied(t + look, Ok(())).is_ok());
        assert_eq!(
            c.next_look(t + look),
            Duration::from_nanos(CATCH_UP_NS.min(look))
        );
    }

    #[test]
    fn an_idle_agent_falling_behind_wakes_the_controller() {
        let s = Signals::default();
        let _ = s.controller.set(std::thread::current());
        let calm = Backlog::default();
        let behind = Backlog {
            drain_events: BEHIND_DRAIN_EVENTS,
            ..calm
        };
        // In the normal class the next look is soon enough.
        assert!(!s.tick(1, true, &behind));
        s.idle.store(true, Ordering::Relaxed);
        assert!(!s.tick(2, true, &calm));
        assert!(s.tick(3, true, &behind));
        // The wakeup is waiting: parking returns at once.
        let t0 = std::time::Instant::now();
        std::thread::park_timeout(Duration::from_secs(10));
        assert!(t0.elapsed() < Duration::from_secs(5));
        // A new loss wakes it; the same count again does not.
        assert!(s.tick(4, true, &Backlog { lost: 2, ..calm }));
        assert!(!s.tick(5, true, &Backlog { lost: 2, ..calm }));
    }

    #[test]
    fn a_refused_change_turns_the_control_off() {
        let mut c = ClassControl::new(true);
        assert_eq!(c.update(0, true, &Backlog::default()), None);
        assert_eq!(c.update(S, true, &Backlog::default()), Some(true));
        assert!(
            c.applied(S, Err(io::Error::from_raw_os_error(libc::EPERM)))
                .is_err()
        );
        assert_eq!(c.update(2 * S, true, &Backlog::default()), None);
        assert_eq!(c.totals(3 * S), (0, 0));
        // Disabled from the start: never a change.
        let mut off = ClassControl::new(false);
        assert_eq!(off.update(S, true, &Backlog::default()), None);
    }

    #[test]
    fn registered_threads_enter_the_idle_class_and_leave_it() {
        // As root (CI), both moves are allowed; elsewhere the probe says why not.
        if let Err(e) = can_switch(0) {
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
            return;
        }
        let policy = std::thread::spawn(|| {
            register_current_thread();
            let tid = current_tid();
            // SAFETY: plain syscalls on this thread.
            let get = || unsafe { libc::sched_getscheduler(tid) };
            let r1 = apply(true, 0).map(|()| get());
            let r2 = apply(false, 0).map(|()| get());
            unregister_current_thread();
            (r1.ok(), r2.ok())
        })
        .join()
        .expect("thread ran");
        assert_eq!(policy, (Some(libc::SCHED_IDLE), Some(libc::SCHED_OTHER)));
    }
}
