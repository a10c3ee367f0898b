//! The resource attribute set of one traced process.

use super::HostInfo;
use super::procfs::ProcessInfo;
use crate::spans::Attributes;

pub const DISTRO_VERSION: &str = env!("CARGO_PKG_VERSION");

/// One exported resource: a traced process.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Grouping key (the pid).
    pub pid: u32,
    pub attributes: Attributes,
}

impl Resource {
    pub fn for_process(p: &ProcessInfo, host: &HostInfo) -> Self {
        let mut a = Attributes::default();
        let service = p
            .env_service_name
            .clone()
            .or_else(|| p.exe_name.clone())
            .unwrap_or_else(|| format!("pid-{}", p.pid));
        a.set("service.name", service);
        a.set("service.instance.id", format!("{}:{}", host.name, p.pid));
        a.set("process.pid", i64::from(p.pid));
        if let Some(n) = &p.exe_name {
            a.set("process.executable.name", n.clone());
        }
        if let Some(path) = &p.exe_path {
            a.set("process.executable.path", path.clone());
        }
        if let Some(c) = &p.command_line {
            a.set("process.command_line", c.clone());
        }
        a.set("host.name", host.name.clone());
        if let Some(id) = &host.id {
            a.set("host.id", id.clone());
        }
        a.set("os.type", "linux");
        if let Some(c) = &p.container_id {
            a.set("container.id", c.clone());
        }
        if let Some(u) = &p.k8s_pod_uid {
            a.set("k8s.pod.uid", u.clone());
        }
        a.set("telemetry.sdk.name", "tracewire");
        a.set("telemetry.sdk.language", "rust");
        a.set("telemetry.sdk.version", DISTRO_VERSION);
        a.set("telemetry.distro.name", "tracewire");
        a.set("telemetry.distro.version", DISTRO_VERSION);
        Resource {
            pid: p.pid,
            attributes: a,
        }
    }

    pub fn service_name(&self) -> &str {
        self.attributes
            .get_str("service.name")
            .unwrap_or("unknown_service")
    }
}
