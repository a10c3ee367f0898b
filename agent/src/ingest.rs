//! Ring buffer -> typed events. The kernel wakes us only when the buffer holds a batch; we also
//! poll on a short timer, so each wakeup drains many events.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent_common::{CONN_OP_CLOSE, ConnEvent, DataHeader, EVENT_CONN, EVENT_DATA};
use aya::maps::{MapData, RingBuf};

use crate::yielding::YieldEvery;

/// One event, borrowed from the ring buffer for the duration of the callback.
#[derive(Debug)]
pub enum EventRef<'a> {
    Data(&'a DataHeader, &'a [u8]),
    Conn(&'a ConnEvent),
}

/// Userspace-side counters of ingest.
#[derive(Debug, Default, Clone, Copy)]
pub struct IngestStats {
    pub events: u64,
    pub malformed: u64,
    pub wakeups: u64,
    /// Events handled so far in the current drain (a long one: the agent fell behind).
    pub drain_events: u64,
}

/// Decodes one ring buffer record; malformed records (never expected) are reported as None.
pub fn decode(buf: &[u8]) -> Option<EventRef<'_>> {
    match *buf.first()? {
        EVENT_DATA => {
            let hsz = size_of::<DataHeader>();
            if buf.len() < hsz {
                return None;
            }
            // SAFETY: the kernel wrote a DataHeader at the start of the 8-aligned record.
            let hdr = unsafe { &*(buf.as_ptr() as *const DataHeader) };
            let end = hsz.checked_add(hdr.captured as usize)?;
            let payload = buf.get(hsz..end)?;
            Some(EventRef::Data(hdr, payload))
        }
        EVENT_CONN => {
            if buf.len() < size_of::<ConnEvent>() {
                return None;
            }
            // SAFETY: as above, a ConnEvent record.
            Some(EventRef::Conn(unsafe {
                &*(buf.as_ptr() as *const ConnEvent)
            }))
        }
        _ => None,
    }
}

/// What consumes events: one call per event, one `tick` after every drained batch (for periodic
/// work such as evictions, flushing and counter reads).
pub trait EventSink {
    fn event(&mut self, ev: EventRef<'_>);
    fn tick(&mut self, stats: &IngestStats);
}

/// Most events handled between two ticks.
const TICK_EVERY_EVENTS: u32 = 2048;

/// Events handled between two yields of the CPU (about 30 us of work; see `yielding`).
/// Measured on nginx+wrk: every 128 events kept the throughput gain of yielding; every 8-32
/// events lost it again to context switches.
const YIELD_EVERY_EVENTS: u32 = 128;

/// A quiet ring is polled less and less often, up to this many poll intervals apart. Each
/// wakeup of a thread that slept costs far more than its work on a VM: 11-87 us of CPU here
/// (`wakecost`: caches and TLB refilled), against about 1 us per event. An agent on
/// an idle node woke 100 times a second and used 0.7 % of a core doing nothing; at 200
/// requests/s it spent about 70 us of CPU per span, most of it waking up. The first event
/// after a quiet spell waits at most this long; a burst still wakes the thread at once (the
/// kernel's wakeup threshold).
const MAX_IDLE_BACKOFF: u32 = 8;

/// A drain with fewer events than this lengthens the poll interval (doubling it, up to
/// [`MAX_IDLE_BACKOFF`] times the base): light traffic is drained in batches of a few hundred
/// events instead of a few each 10 ms.
const FEW_EVENTS: u64 = 256;

/// A drain with at least this many events puts the poll interval back to the base: under
/// load, events reach userspace (and sampling verdicts the kernel) within one base interval.
/// Between the two bounds the interval stays, so a steady rate settles on one interval.
const MANY_EVENTS: u64 = 1024;

/// The next poll timeout after a drain of `drained` events, `new_conns` of them connections
/// opened. A new connection puts the interval back to the base: it often belongs to a
/// short-lived process, whose metadata (service name) must be read from procfs before it
/// exits, and its exchanges follow at once.
fn next_timeout_ms(base_ms: i32, current_ms: i32, drained: u64, new_conns: u64) -> i32 {
    if drained >= MANY_EVENTS || new_conns > 0 {
        base_ms
    } else if drained < FEW_EVENTS {
        current_ms
            .saturating_mul(2)
            .min(base_ms.saturating_mul(MAX_IDLE_BACKOFF as i32))
    } else {
        current_ms
    }
}

/// Drains the ring buffer into `sink` until `stop` is set.
pub fn run_loop(
    ring: &mut RingBuf<MapData>,
    stop: &Arc<AtomicBool>,
    poll_interval: Duration,
    sink: &mut impl EventSink,
) -> IngestStats {
    let mut stats = IngestStats::default();
    let fd = ring.as_raw_fd();
    let base_ms = poll_interval.as_millis().clamp(1, 1000) as i32;
    let mut timeout_ms = base_ms;
    let mut yielder = YieldEvery::new(YIELD_EVERY_EVENTS);
    while !stop.load(Ordering::Relaxed) {
        let mut since_tick = 0u32;
        let before = stats.events + stats.malformed;
        let mut new_conns = 0u64;
        stats.drain_events = 0;
        while let Some(item) = ring.next() {
            stats.drain_events += 1;
            match decode(&item) {
                Some(ev) => {
                    stats.events += 1;
                    if matches!(ev, EventRef::Conn(c) if c.op != CONN_OP_CLOSE) {
                        new_conns += 1;
                    }
                    sink.event(ev)
                }
                None => stats.malformed += 1,
            }
            // A long drain still ticks now and then: the kernel learns which connections it
            // may sample, and the sampler sees a surge, while the surge is on, not after it.
            yielder.step();
            since_tick += 1;
            if since_tick >= TICK_EVERY_EVENTS {
                since_tick = 0;
                sink.tick(&stats);
            }
        }
        sink.tick(&stats);
        timeout_ms = next_timeout_ms(
            base_ms,
            timeout_ms,
            stats.events + stats.malformed - before,
            new_conns,
        );
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc > 0 {
            stats.wakeups += 1;
        }
    }
    // Final drain so nothing captured before the stop is lost.
    while let Some(item) = ring.next() {
        if let Some(ev) = decode(&item) {
            stats.events += 1;
            sink.event(ev);
        }
    }
    sink.tick(&stats);
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_ring_is_polled_less_often_until_events_flow() {
        let mut t = 10;
        let mut seen = Vec::new();
        for _ in 0..5 {
            t = next_timeout_ms(10, t, 0, 0);
            seen.push(t);
        }
        assert_eq!(seen, [20, 40, 80, 80, 80]);
        assert_eq!(next_timeout_ms(10, t, MANY_EVENTS, 0), 10);
    }

    #[test]
    fn light_traffic_settles_on_a_longer_interval_and_a_surge_resets_it() {
        // A steady 2,500 events/s: drains of 25 events each 10 ms grow the interval until a
        // drain holds a few hundred, then it stays.
        let rate_per_ms = 2.5;
        let mut t = 10;
        let mut seen = Vec::new();
        for _ in 0..6 {
            t = next_timeout_ms(10, t, (t as f64 * rate_per_ms) as u64, 0);
            seen.push(t);
        }
        assert_eq!(seen, [20, 40, 80, 80, 80, 80]);
        // A middling drain keeps the interval; a busy one resets it.
        assert_eq!(next_timeout_ms(10, 40, FEW_EVENTS, 0), 40);
        assert_eq!(next_timeout_ms(10, 80, MANY_EVENTS - 1, 0), 80);
        assert_eq!(next_timeout_ms(10, 80, 5000, 0), 10);
        // A new connection, however little traffic: back to the base.
        assert_eq!(next_timeout_ms(10, 80, 3, 1), 10);
    }
}
