//! Ring buffer -> typed events. The kernel wakes us only when the buffer holds a batch; we also
//! poll on a short timer, so each wakeup drains many events.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use agent_common::{ConnEvent, DataHeader, EVENT_CONN, EVENT_DATA};
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

/// An idle ring is polled less and less often, up to this many poll intervals apart. Each
/// wakeup costs a CPU that may have been asleep: an agent on an idle node woke 100 times a
/// second and used 0.7 % of a core doing nothing. The first event after a quiet spell waits
/// at most this long; a burst still wakes the thread at once (the kernel's wakeup threshold).
const MAX_IDLE_BACKOFF: u32 = 8;

/// The next poll timeout: the base interval while events flow, doubled after each empty
/// drain up to [`MAX_IDLE_BACKOFF`] times the base.
fn next_timeout_ms(base_ms: i32, current_ms: i32, drained_any: bool) -> i32 {
    if drained_any {
        base_ms
    } else {
        current_ms
            .saturating_mul(2)
            .min(base_ms.saturating_mul(MAX_IDLE_BACKOFF as i32))
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
        while let Some(item) = ring.next() {
            match decode(&item) {
                Some(ev) => {
                    stats.events += 1;
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
        timeout_ms = next_timeout_ms(base_ms, timeout_ms, stats.events + stats.malformed > before);
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
            t = next_timeout_ms(10, t, false);
            seen.push(t);
        }
        assert_eq!(seen, [20, 40, 80, 80, 80]);
        assert_eq!(next_timeout_ms(10, t, true), 10);
    }
}
