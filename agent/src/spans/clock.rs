//! CLOCK_MONOTONIC (what the kernel stamps events with) -> Unix epoch ns.

/// `realtime - monotonic`, measured once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockOffset {
    offset_ns: i128,
}

fn clock_ns(clock: libc::clockid_t) -> Option<i128> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes to it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return None;
    }
    Some(i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec))
}

impl ClockOffset {
    /// Measure the offset now (monotonic read between two realtime reads, midpoint taken).
    pub fn measure() -> Self {
        let r1 = clock_ns(libc::CLOCK_REALTIME).unwrap_or(0);
        let m = clock_ns(libc::CLOCK_MONOTONIC).unwrap_or(0);
        let r2 = clock_ns(libc::CLOCK_REALTIME).unwrap_or(r1);
        ClockOffset {
            offset_ns: (r1 + r2) / 2 - m,
        }
    }

    /// A fixed offset (tests).
    pub fn fixed(offset_ns: i128) -> Self {
        ClockOffset { offset_ns }
    }

    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    /// Monotonic ns -> Unix epoch ns (clamped to the u64 range).
    pub fn to_unix_ns(&self, mono_ns: u64) -> u64 {
        let v = i128::from(mono_ns) + self.offset_ns;
        u64::try_from(v.max(0)).unwrap_or(u64::MAX)
    }

    /// Current monotonic time in ns (same clock as `bpf_ktime_get_ns`).
    pub fn now_mono_ns() -> u64 {
        clock_ns(libc::CLOCK_MONOTONIC)
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measured_offset_maps_now_to_wall_clock() {
        let c = ClockOffset::measure();
        let mono = ClockOffset::now_mono_ns();
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let got = u128::from(c.to_unix_ns(mono));
        let diff = got.abs_diff(wall);
        assert!(diff < 50_000_000, "offset off by {diff} ns");
    }

    #[test]
    fn fixed_offset_and_clamping() {
        assert_eq!(ClockOffset::fixed(1_000).to_unix_ns(5), 1_005);
        assert_eq!(ClockOffset::fixed(-10).to_unix_ns(5), 0);
        assert_eq!(
            ClockOffset::fixed(i128::from(u64::MAX)).to_unix_ns(5),
            u64::MAX
        );
    }
}
