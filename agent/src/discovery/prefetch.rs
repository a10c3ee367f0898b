//! Reading a process's facts when its first connection is seen, not when its first span is
//! built. A short-lived client (a CLI, a cron job) may have exited by the time its exchange
//! reaches the span pipeline, and an exited process has no `/proc/PID/environ` to read its
//! `OTEL_SERVICE_NAME` from: its spans fell back to the executable name. The ingest thread
//! reads the facts as it decodes the connection event (the kernel wakes it promptly for new
//! connections) and leaves them here; the span pipeline's [`super::ProcessCache`] takes them on
//! a miss. The pipeline's hot path (a cache hit) takes no lock.

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use rustc_hash::{FxBuildHasher, FxHashMap};

use super::{DiscoveryConfig, ProcessInfo, read_process};

/// Most facts waiting to be taken; beyond it, new processes are read by the pipeline as before.
const MAX_WAITING: usize = 4096;

/// Facts older than this are not taken (the pid may have been reused meanwhile).
const MAX_AGE: Duration = Duration::from_secs(30);

/// Process facts read ahead, shared by the ingest thread (which fills it) and the span pipeline
/// (which takes from it).
#[derive(Debug, Default)]
pub struct Prefetched {
    waiting: Mutex<FxHashMap<u32, (ProcessInfo, Instant)>>,
}

impl Prefetched {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn put(&self, info: ProcessInfo) {
        let Ok(mut w) = self.waiting.lock() else {
            return;
        };
        if w.len() >= MAX_WAITING {
            let now = Instant::now();
            w.retain(|_, (_, at)| now.duration_since(*at) < MAX_AGE);
            if w.len() >= MAX_WAITING {
                return;
            }
        }
        w.insert(info.pid, (info, Instant::now()));
    }

    /// The facts read ahead for `pid`, if any and still fresh (removed: taken once).
    pub fn take(&self, pid: u32) -> Option<ProcessInfo> {
        let (info, at) = self.waiting.lock().ok()?.remove(&pid)?;
        (at.elapsed() < MAX_AGE).then_some(info)
    }
}

/// The ingest thread's side: reads each process once per `ttl` (the pipeline re-reads after
/// that itself).
pub struct Prefetcher {
    shared: Arc<Prefetched>,
    proc_root: PathBuf,
    capture_cmdline: bool,
    ttl: Duration,
    recent: LruCache<u32, Instant, FxBuildHasher>,
}

impl Prefetcher {
    pub fn new(cfg: &DiscoveryConfig, shared: Arc<Prefetched>) -> Self {
        let cap = NonZeroUsize::new(cfg.max_processes).unwrap_or(NonZeroUsize::MIN);
        Prefetcher {
            shared,
            proc_root: cfg.proc_root.clone(),
            capture_cmdline: cfg.capture_cmdline,
            ttl: cfg.ttl,
            recent: LruCache::with_hasher(cap, FxBuildHasher),
        }
    }

    /// `pid` opened a connection: read its facts now unless they were read within the TTL.
    pub fn connection_opened(&mut self, pid: u32) {
        if self
            .recent
            .get(&pid)
            .is_some_and(|at| at.elapsed() < self.ttl)
        {
            return;
        }
        self.recent.put(pid, Instant::now());
        let info = read_process(&self.proc_root, pid, self.capture_cmdline);
        // Gone already: nothing better than what the pipeline would read.
        if info.exe_path.is_some() || info.env_service_name.is_some() {
            self.shared.put(info);
        }
    }
}
