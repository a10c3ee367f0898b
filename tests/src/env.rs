//! Whether this machine can run the eBPF tests, ports, waiting.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// True when eBPF tests can run. Under `CI=true` a machine that cannot load programs fails the
/// run instead of skipping; elsewhere the test says why it skips.
pub fn require_ebpf(test: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not running as root (eBPF programs need CAP_BPF/CAP_SYS_ADMIN)")
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("kernel BTF missing")
    } else {
        None
    };
    match why {
        None => true,
        Some(w) if ci => panic!("{test}: CI=true but eBPF cannot be loaded: {w}"),
        Some(w) => {
            eprintln!("SKIPPED {test}: {w}");
            false
        }
    }
}

/// The agent binary: TRACEWIRE_BIN (set by `cargo xtask test`) or the release build.
pub fn agent_bin() -> PathBuf {
    if let Ok(p) = std::env::var("TRACEWIRE_BIN") {
        return PathBuf::from(p);
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    for profile in ["release", "debug"] {
        let p = root.join("target").join(profile).join("tracewire");
        if p.exists() {
            return p;
        }
    }
    panic!("tracewire binary not found: run `cargo xtask test` or build it first")
}

/// A loopback port free right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

pub fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

pub fn wait_port(port: u16) {
    wait_for(&format!("port {port}"), Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// Debian's python (sees python3-grpcio, -psycopg2, -redis).
pub const PYTHON: &str = "/usr/bin/python3";

pub fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("apps")
}
