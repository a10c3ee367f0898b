//! The node's CPU time, read from `/proc/stat`, so the sampler can tell a saturated node (no
//! idle CPU: the agent's work comes straight out of the applications) from a busy one that
//! still has room. `/proc/stat` is node-wide even inside a container's PID namespace.

use std::fs::File;
use std::os::unix::fs::FileExt;

/// Running totals of the node's CPU time, in the kernel's clock ticks (`USER_HZ`), over all
/// online CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// Idle and waiting for I/O: time no task wanted the CPU.
    pub idle: u64,
    /// Every state, idle included.
    pub total: u64,
}

/// Parse the aggregate `cpu` line that starts `/proc/stat`: user, nice, system, idle, iowait,
/// irq, softirq, steal (guest time is already counted in user and nice). None when the text
/// does not start with it.
pub fn parse_stat(text: &[u8]) -> Option<CpuTicks> {
    let line = text.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let mut t = CpuTicks::default();
    for (i, f) in fields.take(8).enumerate() {
        let v: u64 = f.parse().ok()?;
        t.total = t.total.saturating_add(v);
        if i == 3 || i == 4 {
            t.idle = t.idle.saturating_add(v);
        }
    }
    (t.total > 0).then_some(t)
}

/// `/proc/stat`, kept open and re-read from the start.
pub struct HostCpu {
    file: Option<File>,
    buf: Vec<u8>,
    last: CpuTicks,
}

impl HostCpu {
    /// Without a readable `/proc/stat` every reading is zero, which the sampler takes as
    /// "unknown" (the node is never seen as saturated).
    pub fn open() -> Self {
        HostCpu {
            file: File::open("/proc/stat").ok(),
            buf: vec![0; 512],
            last: CpuTicks::default(),
        }
    }

    /// Read the totals now (the kernel formats the whole file: call it a few times a second,
    /// not per event). Keeps the last good reading when a read fails.
    pub fn read(&mut self) -> CpuTicks {
        if let Some(f) = &self.file
            && let Ok(n) = f.read_at(&mut self.buf, 0)
            && let Some(t) = parse_stat(&self.buf[..n])
        {
            self.last = t;
        }
        self.last
    }

    /// The last reading.
    pub fn last(&self) -> CpuTicks {
        self.last
    }

    /// Whether `/proc/stat` could be opened and read.
    pub fn available(&mut self) -> bool {
        self.file.is_some() && self.read().total > 0
    }
}

/// Online CPUs of the node (1 when unknown).
pub fn online_cpus() -> f64 {
    // SAFETY: no pointers.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if n > 0 { n as f64 } else { 1.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_aggregate_line() {
        let text = b"cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 50 2 25 400 10 1 1 5 3 0\nintr 1 2 3\n";
        let t = parse_stat(text).expect("parsed");
        assert_eq!(t.idle, 820);
        assert_eq!(t.total, 100 + 5 + 50 + 800 + 20 + 3 + 2 + 10);
    }

    #[test]
    fn older_kernels_with_fewer_fields_still_parse() {
        let t = parse_stat(b"cpu 10 0 10 80 0\n").expect("parsed");
        assert_eq!((t.idle, t.total), (80, 100));
    }

    #[test]
    fn rejects_what_is_not_the_cpu_line() {
        assert_eq!(parse_stat(b"cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_stat(b"cpu  1 x 3 4\n"), None);
        assert_eq!(parse_stat(b""), None);
        assert_eq!(parse_stat(b"cpu  0 0 0 0\n"), None);
    }

    #[test]
    fn reads_this_machine() {
        let mut h = HostCpu::open();
        let a = h.read();
        assert!(a.total > 0 && a.idle <= a.total, "{a:?}");
        assert!(online_cpus() >= 1.0);
    }
}
