//! Reading one process's facts from procfs. Every read is bounded and every failure tolerated.

use std::io::Read;
use std::path::Path;

/// What the agent knows of a traced process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    pub pid: u32,
    /// Executable file name (or `comm` when /proc/pid/exe is unreadable).
    pub exe_name: Option<String>,
    pub exe_path: Option<String>,
    /// Only when configured.
    pub command_line: Option<String>,
    /// `OTEL_SERVICE_NAME` (or `service.name` in `OTEL_RESOURCE_ATTRIBUTES`) from its environment.
    pub env_service_name: Option<String>,
    pub container_id: Option<String>,
    pub k8s_pod_uid: Option<String>,
}

const MAX_READ: u64 = 256 * 1024;

fn read_bounded(path: &Path) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::new();
    f.take(MAX_READ).read_to_end(&mut buf).ok()?;
    Some(buf)
}

pub fn read_process(proc_root: &Path, pid: u32, capture_cmdline: bool) -> ProcessInfo {
    let dir = proc_root.join(pid.to_string());
    let exe_path = std::fs::read_link(dir.join("exe")).ok().map(|p| {
        p.to_string_lossy()
            .trim_end_matches(" (deleted)")
            .to_string()
    });
    let exe_name = exe_path
        .as_deref()
        .and_then(|p| Path::new(p).file_name())
        .map(|n| n.to_string_lossy().to_string())
        .or_else(|| {
            read_bounded(&dir.join("comm"))
                .map(|c| String::from_utf8_lossy(&c).trim().to_string())
                .filter(|c| !c.is_empty())
        });
    let command_line = if capture_cmdline {
        read_bounded(&dir.join("cmdline")).map(|c| {
            c.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).to_string())
                .collect::<Vec<_>>()
                .join(" ")
        })
    } else {
        None
    };
    let env_service_name =
        read_bounded(&dir.join("environ")).and_then(|e| parse_environ_service_name(&e));
    let cgroup = read_bounded(&dir.join("cgroup")).map(|c| String::from_utf8_lossy(&c).to_string());
    let container_id = cgroup.as_deref().and_then(container_id_from_cgroup);
    let k8s_pod_uid = cgroup.as_deref().and_then(pod_uid_from_cgroup);
    ProcessInfo {
        pid,
        exe_name,
        exe_path,
        command_line,
        env_service_name,
        container_id,
        k8s_pod_uid,
    }
}

/// `OTEL_SERVICE_NAME`, else `service.name` inside `OTEL_RESOURCE_ATTRIBUTES`, from a
/// NUL-separated environment block.
pub fn parse_environ_service_name(environ: &[u8]) -> Option<String> {
    let mut from_attrs = None;
    for var in environ.split(|b| *b == 0) {
        if let Some(v) = var.strip_prefix(b"OTEL_SERVICE_NAME=") {
            let v = String::from_utf8_lossy(v).trim().to_string();
            if !v.is_empty() {
                return Some(v);
            }
        } else if let Some(v) = var.strip_prefix(b"OTEL_RESOURCE_ATTRIBUTES=") {
            let v = String::from_utf8_lossy(v);
            from_attrs = v.split(',').find_map(|kv| {
                let (k, val) = kv.split_once('=')?;
                (k.trim() == "service.name" && !val.trim().is_empty())
                    .then(|| val.trim().to_string())
            });
        }
    }
    from_attrs
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The container id (64 hex chars) named in a cgroup file: `/docker/<id>`,
/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`, kubepods paths.
pub fn container_id_from_cgroup(cgroup: &str) -> Option<String> {
    for line in cgroup.lines() {
        let path = line.splitn(3, ':').nth(2).unwrap_or(line);
        for seg in path.rsplit('/') {
            let seg = seg.strip_suffix(".scope").unwrap_or(seg);
            let id = seg.rsplit(['-', ':']).next().unwrap_or(seg);
            if is_hex64(id) {
                return Some(id.to_ascii_lowercase());
            }
        }
    }
    None
}

/// Kubernetes pod uid from `kubepods-...-pod<uid>.slice` or `/kubepods/.../pod<uid>/`.
fn pod_uid_from_cgroup(cgroup: &str) -> Option<String> {
    for line in cgroup.lines() {
        for seg in line.split('/') {
            let seg = seg.strip_suffix(".slice").unwrap_or(seg);
            if let Some(pos) = seg.rfind("pod") {
                let uid = seg.get(pos + 3..).unwrap_or("").replace('_', "-");
                if uid.len() == 36 && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
                    return Some(uid);
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_name_from_environ() {
        assert_eq!(
            parse_environ_service_name(b"PATH=/bin\0OTEL_SERVICE_NAME=checkout\0HOME=/"),
            Some("checkout".to_string())
        );
        assert_eq!(
            parse_environ_service_name(b"OTEL_RESOURCE_ATTRIBUTES=a=b,service.name=cart\0"),
            Some("cart".to_string())
        );
        assert_eq!(
            parse_environ_service_name(
                b"OTEL_RESOURCE_ATTRIBUTES=service.name=cart\0OTEL_SERVICE_NAME=web\0"
            ),
            Some("web".to_string())
        );
        assert_eq!(parse_environ_service_name(b"OTEL_SERVICE_NAME=\0X=1"), None);
        assert_eq!(parse_environ_service_name(b""), None);
    }

    #[test]
    fn container_ids() {
        let id = "a".repeat(64);
        assert_eq!(
            container_id_from_cgroup(&format!("0::/docker/{id}\n")),
            Some(id.clone())
        );
        assert_eq!(
            container_id_from_cgroup(&format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{id}.scope\n"
            )),
            Some(id.clone())
        );
        assert_eq!(
            container_id_from_cgroup(&format!("0::/system.slice/docker-{id}.scope")),
            Some(id.clone())
        );
        assert_eq!(
            container_id_from_cgroup("0::/user.slice/user-1000.slice/session-2.scope"),
            None
        );
        assert_eq!(container_id_from_cgroup(""), None);
    }

    #[test]
    fn pod_uid() {
        let line = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0b5a7c4e_1111_2222_3333_444455556666.slice/cri-containerd-x.scope";
        assert_eq!(
            pod_uid_from_cgroup(line),
            Some("0b5a7c4e-1111-2222-3333-444455556666".to_string())
        );
        assert_eq!(pod_uid_from_cgroup("0::/"), None);
    }
}
