use super::*;
use crate::spans::AttrValue;

fn host() -> HostInfo {
    HostInfo {
        name: "node1".into(),
        id: Some("mid".into()),
    }
}

#[test]
fn resource_for_process_has_every_attribute() {
    let id = "b".repeat(64);
    let info = ProcessInfo {
        pid: 42,
        exe_name: Some("nginx".into()),
        exe_path: Some("/usr/sbin/nginx".into()),
        command_line: Some("nginx -g daemon off;".into()),
        env_service_name: None,
        container_id: Some(id.clone()),
        k8s_pod_uid: None,
    };
    let r = Resource::for_process(&info, &host());
    let want: Vec<(&str, AttrValue)> = vec![
        ("service.name", "nginx".into()),
        ("service.instance.id", "node1:42".into()),
        ("process.pid", 42i64.into()),
        ("process.executable.name", "nginx".into()),
        ("process.executable.path", "/usr/sbin/nginx".into()),
        ("process.command_line", "nginx -g daemon off;".into()),
        ("host.name", "node1".into()),
        ("host.id", "mid".into()),
        ("os.type", "linux".into()),
        ("container.id", id.clone().into()),
        ("telemetry.sdk.name", "tracewire".into()),
        ("telemetry.sdk.language", "rust".into()),
        ("telemetry.sdk.version", resource::DISTRO_VERSION.into()),
        ("telemetry.distro.name", "tracewire".into()),
        ("telemetry.distro.version", resource::DISTRO_VERSION.into()),
    ];
    assert_eq!(r.attributes.len(), want.len());
    for (k, v) in want {
        assert_eq!(r.attributes.get(k), Some(v), "{k}");
    }
    assert_eq!(r.pid, 42);
    assert_eq!(r.service_name(), "nginx");
}

#[test]
fn env_service_name_wins_and_missing_process_is_named_by_pid() {
    let info = ProcessInfo {
        pid: 7,
        exe_name: Some("python3".into()),
        env_service_name: Some("checkout".into()),
        ..Default::default()
    };
    assert_eq!(
        Resource::for_process(&info, &host()).service_name(),
        "checkout"
    );
    let gone = ProcessInfo {
        pid: 9,
        ..Default::default()
    };
    let r = Resource::for_process(&gone, &host());
    assert_eq!(r.service_name(), "pid-9");
    assert_eq!(r.attributes.get("process.executable.name"), None);
}

/// `sleep 5` with `OTEL_SERVICE_NAME=service`, once its exec is complete: until then /proc
/// shows the test binary, and the exe link changes before the new command line and
/// environment are in place.
fn spawn_sleep_as(service: &str) -> (std::process::Child, u32) {
    let child = std::process::Command::new("sleep")
        .arg("5")
        .env("OTEL_SERVICE_NAME", service)
        .spawn();
    let Ok(child) = child else {
        panic!("cannot spawn sleep");
    };
    let pid = child.id();
    for _ in 0..200 {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if exe.to_string_lossy().ends_with("/sleep")
            && cmd.starts_with(b"sleep")
            && parse_environ_service_name(&env).as_deref() == Some(service)
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    (child, pid)
}

#[test]
fn live_child_process_is_read_from_proc() {
    let (mut child, pid) = spawn_sleep_as("sleepy");
    let mut cache = ProcessCache::with_host(
        DiscoveryConfig {
            capture_cmdline: true,
            ..Default::default()
        },
        host(),
    );
    let r = cache.resource(pid, "");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.service_name(), "sleepy");
    assert_eq!(
        r.attributes.get_str("process.executable.name"),
        Some("sleep")
    );
    assert!(
        r.attributes
            .get_str("process.executable.path")
            .is_some_and(|p| p.ends_with("/sleep"))
    );
    assert_eq!(
        r.attributes.get_str("process.command_line"),
        Some("sleep 5")
    );
    assert_eq!(r.attributes.get_int("process.pid"), Some(i64::from(pid)));
    // Cached: same Arc on the next call.
    let again = cache.resource(pid, "");
    assert!(Arc::ptr_eq(&r, &again));
    assert_eq!(cache.len(), 1);
}

#[test]
fn cache_is_bounded_and_cmdline_off_by_default() {
    let mut cache = ProcessCache::with_host(
        DiscoveryConfig {
            max_processes: 2,
            ..Default::default()
        },
        host(),
    );
    let me = std::process::id();
    let r = cache.resource(me, "");
    assert_eq!(r.attributes.get("process.command_line"), None);
    cache.resource(999_999_001, "");
    cache.resource(999_999_002, "");
    assert_eq!(cache.len(), 2);
}

#[test]
fn exited_process_is_named_by_its_kernel_comm() {
    let mut cache = ProcessCache::new(DiscoveryConfig::default());
    let r = cache.resource(999_999_003, "curl");
    assert_eq!(r.service_name(), "curl");
    assert_eq!(
        r.attributes.get_str("process.executable.name"),
        Some("curl")
    );
}

#[test]
fn a_process_read_when_it_connected_keeps_its_service_name_after_it_exits() {
    let (mut child, pid) = spawn_sleep_as("short-lived");
    let cfg = DiscoveryConfig::default();
    let shared = Prefetched::new();
    let mut ingest = Prefetcher::new(&cfg, Arc::clone(&shared));
    ingest.connection_opened(pid);
    // Read once per TTL: a second connection of the same process reads nothing.
    ingest.connection_opened(pid);
    let _ = child.kill();
    let _ = child.wait();
    assert!(std::fs::read_link(format!("/proc/{pid}/exe")).is_err());

    let mut cache = ProcessCache::with_host(cfg.clone(), host()).with_prefetched(shared);
    let r = cache.resource(pid, "sleep");
    assert_eq!(r.service_name(), "short-lived");
    assert!(
        r.attributes
            .get_str("process.executable.path")
            .is_some_and(|p| p.ends_with("/sleep"))
    );
    // Taken once; a pipeline without read-ahead facts falls back to the kernel's name.
    let mut plain = ProcessCache::with_host(cfg, host());
    assert_eq!(plain.resource(pid, "sleep").service_name(), "sleep");
}
