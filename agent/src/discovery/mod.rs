//! Process metadata -> one OpenTelemetry resource per traced process.

mod prefetch;
mod procfs;
mod resource;

pub use prefetch::{Prefetched, Prefetcher};
pub use procfs::{ProcessInfo, container_id_from_cgroup, parse_environ_service_name, read_process};
pub use resource::Resource;

use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use rustc_hash::FxBuildHasher;

#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Root of procfs (`/proc`; tests point it elsewhere).
    pub proc_root: PathBuf,
    /// Export `process.command_line` (off by default: command lines often carry secrets).
    pub capture_cmdline: bool,
    /// Most processes cached.
    pub max_processes: usize,
    /// Re-read a process after this long (pid reuse, late OTEL_SERVICE_NAME changes on exec).
    pub ttl: Duration,
    /// Overrides `host.name` (e.g. the node name in Kubernetes).
    pub host_name: Option<String>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        DiscoveryConfig {
            proc_root: PathBuf::from("/proc"),
            capture_cmdline: false,
            max_processes: 4096,
            ttl: Duration::from_secs(120),
            host_name: None,
        }
    }
}

/// Facts about this host, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub name: String,
    pub id: Option<String>,
}

impl HostInfo {
    pub fn read(override_name: Option<&str>) -> Self {
        let name = override_name
            .map(str::to_string)
            .or_else(|| read_trimmed("/proc/sys/kernel/hostname"))
            .unwrap_or_else(|| "localhost".to_string());
        let id = read_trimmed("/etc/machine-id");
        HostInfo { name, id }
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// A bounded, age-evicted cache pid -> resource.
pub struct ProcessCache {
    cfg: DiscoveryConfig,
    host: HostInfo,
    /// Keyed by pid (kernel-assigned, not attacker-chosen): a fast hasher is safe.
    map: LruCache<u32, (Arc<Resource>, Instant), FxBuildHasher>,
    /// Facts the ingest thread read when the process opened a connection (it may be gone now).
    prefetched: Option<Arc<Prefetched>>,
}

impl ProcessCache {
    pub fn new(cfg: DiscoveryConfig) -> Self {
        let host = HostInfo::read(cfg.host_name.as_deref());
        Self::with_host(cfg, host)
    }

    pub fn with_host(cfg: DiscoveryConfig, host: HostInfo) -> Self {
        let cap = NonZeroUsize::new(cfg.max_processes).unwrap_or(NonZeroUsize::MIN);
        ProcessCache {
            cfg,
            host,
            map: LruCache::with_hasher(cap, FxBuildHasher),
            prefetched: None,
        }
    }

    /// Takes facts read ahead from `prefetched` before reading procfs itself.
    pub fn with_prefetched(mut self, prefetched: Arc<Prefetched>) -> Self {
        self.prefetched = Some(prefetched);
        self
    }

    pub fn host(&self) -> &HostInfo {
        &self.host
    }

    /// The resource for `pid`, read from procfs on first use or after the TTL. A process that
    /// is gone still gets a resource (named `pid-<n>`), so its spans are not lost.
    /// `comm` is the kernel's task name, used when the process has already exited.
    pub fn resource(&mut self, pid: u32, comm: &str) -> Arc<Resource> {
        if let Some((res, at)) = self.map.get(&pid)
            && at.elapsed() < self.cfg.ttl
        {
            return Arc::clone(res);
        }
        let mut info = self
            .prefetched
            .as_ref()
            .and_then(|p| p.take(pid))
            .unwrap_or_else(|| read_process(&self.cfg.proc_root, pid, self.cfg.capture_cmdline));
        if info.exe_name.is_none() && !comm.is_empty() {
            info.exe_name = Some(comm.to_string());
        }
        let res = Arc::new(Resource::for_process(&info, &self.host));
        self.map.put(pid, (Arc::clone(&res), Instant::now()));
        res
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests;
