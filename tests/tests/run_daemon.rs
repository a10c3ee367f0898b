//! `tracewire run` behaviour beyond spans: connections in a protocol the agent does not parse
//! stop being captured in the kernel once userspace gives up on them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tracewire_e2e::agent::{Agent, StatsFile, agent_command};
use tracewire_e2e::env::{PYTHON, fixture_dir, free_port, require_ebpf};
use tracewire_e2e::servers::Proc;

/// Runs the chatter fixture (`mode`: "client" for round trips, "push" for a one-way stream)
/// traced, `rounds` messages 5 ms apart, and returns the agent's final stats.
fn chatter_traced(mode: &str, rounds: u32) -> serde_json::Value {
    let port = free_port();
    let mut server = Proc::spawn(
        "chatter server",
        Command::new(PYTHON)
            .arg(fixture_dir().join("chatter.py"))
            .args(["server", &port.to_string()])
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(server.child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    let stats = StatsFile::new();
    let agent = Agent::start(
        &[
            "run",
            "--exporter",
            "none",
            "--port",
            &port.to_string(),
            "--stats-file",
            stats.arg(),
        ],
        &[],
        "tracing via",
    );
    let st = Command::new(PYTHON)
        .arg(fixture_dir().join("chatter.py"))
        .args([mode, &port.to_string(), &rounds.to_string(), "5"])
        .status()
        .expect("client");
    assert!(st.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    agent.stop();
    stats.read()
}

/// The connections were recognised as unknown (at least `unknown` of them), at most `max_data`
/// data events were captured, more than `min_filtered` calls were skipped in the kernel, and
/// no span was built.
fn assert_capture_stopped(v: &serde_json::Value, unknown: u64, max_data: u64, min_filtered: u64) {
    let data = v["kernel"]["data_events"].as_u64().expect("data_events");
    let filtered = v["kernel"]["filtered"].as_u64().expect("filtered");
    assert!(
        v["conntrack"]["unknown_protocol"].as_u64() >= Some(unknown),
        "{v}"
    );
    assert!(
        data < max_data,
        "capture stopped early: {data} data events: {v}"
    );
    assert!(
        filtered > min_filtered,
        "the rest was skipped in the kernel: {v}"
    );
    assert_eq!(v["spans_built"], 0);
}

#[test]
fn unknown_protocol_connections_stop_being_captured() {
    if !require_ebpf("unknown_protocol_connections_stop_being_captured") {
        return;
    }
    let v = chatter_traced("client", 200);
    // 200 round trips, 5 ms apart, are 800 socket reads/writes over both ends; once userspace
    // gives up (a few events, then a poll interval or a few on a loaded machine) the kernel
    // stops copying them.
    assert_capture_stopped(&v, 2, 200, 600);
}

/// A one-way stream never turns, so the kernel must take userspace's verdict over without a
/// turn (within 16 calls): 300 messages are 600 calls over both ends.
#[test]
fn one_way_unknown_streams_stop_being_captured() {
    if !require_ebpf("one_way_unknown_streams_stop_being_captured") {
        return;
    }
    let v = chatter_traced("push", 300);
    assert_capture_stopped(&v, 1, 250, 350);
}

/// nginx sends static files with sendfile(): the body never passes through user memory, yet
/// each response must still pair with its request (the body is skipped by its byte count).
#[test]
fn static_files_sent_with_sendfile_keep_pairing() {
    use tracewire_e2e::servers::Nginx;
    if !require_ebpf("static_files_sent_with_sendfile_keep_pairing") {
        return;
    }
    let root = tempfile::tempdir().expect("tmp");
    std::fs::write(root.path().join("big.bin"), vec![b'x'; 200_000]).expect("file");
    let nginx = Nginx::start(&format!(
        "location /static/ {{ alias {}/; sendfile on; }}",
        root.path().display()
    ));
    let dir = tempfile::tempdir().expect("tmp");
    let spans_file = dir.path().join("spans.jsonl");
    let agent = Agent::start(
        &[
            "run",
            "--exporter",
            "jsonl",
            "--jsonl-path",
            spans_file.to_str().expect("utf-8"),
            "--pid",
            &nginx.pid().to_string(),
            "--exe",
            "nginx",
        ],
        &[],
        "tracing via",
    );
    let u = |p: &str| format!("http://127.0.0.1:{}{p}", nginx.port);
    let mut curl = Command::new("curl");
    curl.args(["-s", "-w", "%{http_code} "]);
    for p in ["/static/big.bin", "/after", "/static/big.bin", "/last"] {
        // One connection (keep-alive); each body discarded.
        curl.args(["-o", "/dev/null", &u(p)]);
    }
    let out = curl.output().expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200 200 200 200"
    );
    std::thread::sleep(std::time::Duration::from_secs(3));
    agent.stop();
    let text = std::fs::read_to_string(&spans_file).expect("spans file");
    let mut got: Vec<(String, String, i64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let attr = |k: &str| {
                v["attributes"]
                    .as_array()
                    .and_then(|a| a.iter().find(|kv| kv["key"] == k))
                    .map(|kv| kv["value"].clone())
                    .unwrap_or_default()
            };
            // OTLP JSON writes 64-bit integers as strings.
            let int = |k: &str| {
                let v = attr(k)["intValue"].clone();
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            };
            // `--exe nginx` selects every nginx, also another test's running alongside.
            if int("server.port") != Some(i64::from(nginx.port)) {
                return None;
            }
            let path = attr("url.path")["stringValue"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let status = int("http.response.status_code").unwrap_or(0);
            let start = v["startTimeUnixNano"].to_string();
            Some((start, path, status))
        })
        .collect();
    got.sort();
    let paths: Vec<(String, i64)> = got.into_iter().map(|(_, p, s)| (p, s)).collect();
    assert_eq!(
        paths,
        vec![
            ("/static/big.bin".to_string(), 200),
            ("/after".to_string(), 200),
            ("/static/big.bin".to_string(), 200),
            ("/last".to_string(), 200),
        ],
        "{text}"
    );
}

/// A database's server end is ignored by userspace (its client's spans tell the call), and
/// the kernel stops capturing it, also when it had opened the connection to sampling itself
/// from the first request's bytes: 200 Redis round trips, 5 ms apart, are 800 socket calls
/// over both ends, of which the client's 400 stay captured. Both ways of hooking.
#[test]
fn database_server_ends_stop_being_captured() {
    if !require_ebpf("database_server_ends_stop_being_captured") {
        return;
    }
    for extra in [None, Some("--syscall-tracepoints")] {
        let redis = tracewire_e2e::servers::Redis::start();
        let stats = StatsFile::new();
        let port = redis.port.to_string();
        let mut args = vec![
            "run",
            "--exporter",
            "none",
            "--port",
            &port,
            "--stats-file",
            stats.arg(),
        ];
        args.extend(extra);
        let agent = Agent::start(&args, &[], "tracing via");
        let st = Command::new("redis-cli")
            .args(["-p", &port, "-r", "200", "-i", "0.005", "PING"])
            .stdout(Stdio::null())
            .status()
            .expect("redis-cli");
        assert!(st.success());
        std::thread::sleep(std::time::Duration::from_millis(300));
        agent.stop();
        let v = stats.read();
        let data = v["kernel"]["data_events"].as_u64().expect("data_events");
        assert!(
            v["conntrack"]["db_server_ends_ignored"].as_u64() >= Some(1),
            "{extra:?}: {v}"
        );
        assert!(
            (400..500).contains(&data),
            "{extra:?}: the client's 400 calls and a few of the server's: {data} data events: {v}"
        );
        assert!(v["spans_built"].as_u64() >= Some(200), "{extra:?}: {v}");
    }
}

/// What `tracewire check` printed, run through `via` (as in [`Agent::start_via`]; empty:
/// directly); it must succeed.
fn check_output(via: &[&str]) -> String {
    let out = agent_command(via)
        .arg("check")
        .output()
        .expect("tracewire check");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// `tracewire check` loads every way of hooking on this kernel and says what the agent can
/// do here: as root, enter the idle scheduling class on a saturated node and leave it again.
#[test]
fn check_reports_the_hooks_and_the_scheduling_class() {
    if !require_ebpf("check_reports_the_hooks_and_the_scheduling_class") {
        return;
    }
    let text = check_output(&[]);
    assert!(text.contains("programs: loaded and attached"), "{text}");
    assert!(
        text.contains("hook kprobe/fentry: not used (tracepoints suffice)"),
        "{text}"
    );
    // SAFETY: no arguments.
    let root = unsafe { libc::geteuid() } == 0;
    let line = if root {
        "scheduling: the idle class can be entered and left"
    } else {
        "scheduling: leaving the idle class refused"
    };
    assert!(text.contains(line), "{text}");
}

/// The tracefs events directory of the `syscalls:*` tracepoints.
fn syscall_events_dir() -> std::path::PathBuf {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(|r| std::path::Path::new(r).join("events"))
        .find(|e| e.is_dir())
        .expect("tracefs mounted")
        .join("syscalls")
}

/// A kernel built without CONFIG_FTRACE_SYSCALLS has no `syscalls:*` tracepoints; with the
/// socket tracepoints the default needs none. Shown in a mount namespace whose tracefs has
/// an empty `events/syscalls`: `check` passes and says which modes are out, and `run` traces
/// HTTP requests to nginx.
#[test]
fn the_default_runs_without_syscall_tracepoints() {
    use tracewire_e2e::servers::Nginx;
    if !require_ebpf("the_default_runs_without_syscall_tracepoints") {
        return;
    }
    let empty = tempfile::tempdir().expect("tmp");
    let hide = format!(
        "mount --bind {} {} && exec \"$0\" \"$@\"",
        empty.path().display(),
        syscall_events_dir().display()
    );
    let via = ["unshare", "--mount", "sh", "-c", hide.as_str()];
    let text = check_output(&via);
    for line in [
        "hook tracepoint/syscalls/sys_enter_write: MISSING (not needed by the default",
        "socket i/o: the socket tracepoints",
        "also: --syscall-tracepoints: not on this kernel",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }

    let nginx = Nginx::start("");
    let stats = StatsFile::new();
    let agent = Agent::start_via(
        &via,
        &[
            "run",
            "--exporter",
            "none",
            "--port",
            &nginx.port.to_string(),
            "--stats-file",
            stats.arg(),
        ],
        &[],
        "tracing via",
    );
    let url = format!("http://127.0.0.1:{}/", nginx.port);
    let mut curl = Command::new("curl");
    curl.args(["-s", "-w", "%{http_code} "]);
    for _ in 0..5 {
        curl.args(["-o", "/dev/null", &url]);
    }
    let out = curl.output().expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "200 200 200 200 200"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let said = agent.stderr();
    agent.stop();
    assert!(
        said.iter()
            .any(|l| l.contains("tracing via") && l.contains("no syscall tracepoint")),
        "{said:?}"
    );
    let v = stats.read();
    // Five requests, each a client (curl) and a server (nginx) span.
    assert_eq!(v["spans_built"].as_u64(), Some(10), "{v}");
}
