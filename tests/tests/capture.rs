//! Issue 2: the kernel programs capture socket I/O of real programs, with the right tuples,
//! roles, byte counts and payloads.

use std::io::{BufRead, BufReader};
use std::process::{ChildStdout, Command, Stdio};

use base64::Engine as _;
use serde_json::Value;
use tracewire_e2e::agent::{Agent, json_lines};
use tracewire_e2e::env::{PYTHON, fixture_dir, free_port, require_ebpf};
use tracewire_e2e::servers::{Nginx, Proc, Redis};

fn payload(ev: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(ev["payload_b64"].as_str().unwrap_or(""))
        .expect("base64")
}

fn data_of<'a>(evs: &'a [Value], conn_id: u64, dir: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["kind"] == "data" && e["conn_id"] == conn_id && e["direction"] == dir)
        .collect()
}

fn concat(evs: &[&Value]) -> Vec<u8> {
    evs.iter().flat_map(|e| payload(e)).collect()
}

fn capture(args: &[&str]) -> Agent {
    let mut a = vec!["capture", "--json"];
    a.extend_from_slice(args);
    Agent::start(&a, &[], "capturing via")
}

/// Runs the Python fixture `script` with `args` to completion while `agent` captures, then
/// stops the agent and returns its events.
fn events_of_fixture<'a>(
    agent: Agent,
    script: &str,
    args: impl IntoIterator<Item = &'a std::ffi::OsStr>,
) -> Vec<Value> {
    let out = Command::new(PYTHON)
        .arg(fixture_dir().join(script))
        .args(args)
        .output()
        .expect(script);
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    json_lines(&agent.stop())
}

fn conn_events<'a>(evs: &'a [Value], op: &str) -> Vec<&'a Value> {
    evs.iter()
        .filter(|e| e["kind"] == "conn" && e["op"] == op)
        .collect()
}

#[test]
fn curl_to_nginx_keepalive_both_sides() {
    if !require_ebpf("curl_to_nginx_keepalive_both_sides") {
        return;
    }
    curl_to_nginx_both_sides(&[]);
}

/// The same through one `syscalls:*` tracepoint per syscall (kernels without the socket
/// tracepoints).
#[test]
fn curl_to_nginx_keepalive_both_sides_with_syscall_tracepoints() {
    if !require_ebpf("curl_to_nginx_keepalive_both_sides_with_syscall_tracepoints") {
        return;
    }
    curl_to_nginx_both_sides(&["--syscall-tracepoints"]);
}

/// The same through the `raw_syscalls` dispatch: connect, accept, writes and reads.
#[test]
fn curl_to_nginx_keepalive_both_sides_with_raw_syscalls() {
    if !require_ebpf("curl_to_nginx_keepalive_both_sides_with_raw_syscalls") {
        return;
    }
    curl_to_nginx_both_sides(&["--raw-syscalls"]);
}

fn curl_to_nginx_both_sides(extra: &[&str]) {
    let nginx = Nginx::start("");
    let port = nginx.port.to_string();
    let mut args = vec!["--port", port.as_str()];
    args.extend_from_slice(extra);
    let agent = capture(&args);
    // The way of hooking asked for is the one in use (no silent fallback).
    let stderr = agent.stderr().join("\n");
    assert_eq!(
        stderr.contains("dispatching by syscall number"),
        extra.contains(&"--raw-syscalls"),
        "{stderr}"
    );
    assert_eq!(
        stderr.contains("sock:sock_send_length/sock_recv_length"),
        extra.is_empty(),
        "{stderr}"
    );
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", nginx.port);
    let out = Command::new("curl")
        .args(["-s", &url("/a"), &url("/b?x=1"), &url("/c")])
        .output()
        .expect("curl");
    assert!(out.status.success());
    assert_eq!(out.stdout, b"hello\nhello\nhello\n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let evs = json_lines(&agent.stop());

    let connects = conn_events(&evs, "connect");
    let accepts = conn_events(&evs, "accept");
    assert_eq!(
        connects.len(),
        1,
        "keep-alive: one connection: {connects:?}"
    );
    assert_eq!(accepts.len(), 1);
    let (c, s) = (connects[0], accepts[0]);
    assert_eq!(c["role"], "client");
    assert_eq!(s["role"], "server");
    assert_eq!(c["remote_port"], nginx.port);
    assert_eq!(s["local_port"], nginx.port);
    // The two ends see the same tuple, mirrored.
    assert_eq!(c["local_port"], s["remote_port"]);
    assert_eq!(c["local_addr"], s["remote_addr"]);
    assert_eq!(c["remote_addr"], s["local_addr"]);
    assert_ne!(c["conn_id"], s["conn_id"]);

    let cid = c["conn_id"].as_u64().expect("conn id");
    let sid = s["conn_id"].as_u64().expect("conn id");
    let sent = concat(&data_of(&evs, cid, "egress"));
    let recv_by_server = concat(&data_of(&evs, sid, "ingress"));
    assert_eq!(
        sent, recv_by_server,
        "request bytes identical on both sides"
    );
    let text = String::from_utf8_lossy(&sent);
    assert_eq!(text.matches("GET /").count(), 3);
    assert!(text.starts_with("GET /a HTTP/1.1\r\n"), "{text}");
    assert!(text.contains("GET /b?x=1 HTTP/1.1\r\n"));
    let replies = concat(&data_of(&evs, sid, "egress"));
    let got = concat(&data_of(&evs, cid, "ingress"));
    assert_eq!(replies, got, "response bytes identical on both sides");
    assert!(String::from_utf8_lossy(&replies).starts_with("HTTP/1.1 200 OK\r\n"));
    assert_eq!(
        String::from_utf8_lossy(&replies)
            .matches("HTTP/1.1 200 OK")
            .count(),
        3
    );
    // Byte counts are exact and equal the captured payloads here (small messages).
    for e in data_of(&evs, cid, "egress") {
        assert_eq!(e["bytes"], e["captured"]);
        assert_eq!(e["truncated"], false);
        assert_eq!(e["role"], "client");
        assert!(e["ts_exit_ns"].as_u64() >= e["ts_enter_ns"].as_u64());
    }
    // curl exited: both ends were closed (close() with the syscall hooks, TCP_CLOSE with the
    // socket tracepoints).
    let closes = conn_events(&evs, "close");
    for id in [&c["conn_id"], &s["conn_id"]] {
        assert!(
            closes.iter().any(|e| &e["conn_id"] == id),
            "no close for {id}: {closes:?}"
        );
    }
}

fn spawn_pair_server(port: u16, chunk: usize, expect: usize) -> (Proc, BufReader<ChildStdout>) {
    spawn_pair_server_reading(port, chunk, expect, "recv")
}

/// The pair server reading with `how`: recv, read, readv or recvmsg.
fn spawn_pair_server_reading(
    port: u16,
    chunk: usize,
    expect: usize,
    how: &str,
) -> (Proc, BufReader<ChildStdout>) {
    let mut p = Proc::spawn(
        "sock_pair server",
        Command::new(PYTHON)
            .arg(fixture_dir().join("sock_pair.py"))
            .args([
                "server",
                &port.to_string(),
                &chunk.to_string(),
                &expect.to_string(),
                how,
            ])
            .stdout(Stdio::piped()),
    );
    let mut out = BufReader::new(p.child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("server ready");
    assert_eq!(line.trim(), "listening");
    (p, out)
}

fn run_client(port: u16, mode: &str, size: usize) {
    let st = Command::new(PYTHON)
        .arg(fixture_dir().join("sock_pair.py"))
        .args(["client", &port.to_string(), mode, &size.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("client");
    assert!(st.success());
}

#[test]
fn writev_client_and_many_small_reads() {
    if !require_ebpf("writev_client_and_many_small_reads") {
        return;
    }
    let port = free_port();
    let size = 3000;
    let (server, _out) = spawn_pair_server(port, 7, size);
    let agent = capture(&["--port", &port.to_string()]);
    run_client(port, "writev", size);
    drop(server);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let evs = json_lines(&agent.stop());
    let c = conn_events(&evs, "connect")[0];
    let s = conn_events(&evs, "accept")[0];
    let cw = data_of(&evs, c["conn_id"].as_u64().expect("id"), "egress");
    assert_eq!(cw.len(), 1, "one writev");
    assert_eq!(cw[0]["syscall"], 8, "writev");
    assert_eq!(cw[0]["bytes"], size);
    let expected: Vec<u8> = (0..size).map(|i| (i % 26) as u8 + 65).collect();
    assert_eq!(payload(cw[0]), expected, "iovecs walked in order");
    let sr = data_of(&evs, s["conn_id"].as_u64().expect("id"), "ingress");
    assert!(sr.len() >= size / 7, "many small reads: {}", sr.len());
    assert!(sr.iter().all(|e| e["bytes"].as_u64() <= Some(7)));
    assert_eq!(concat(&sr), expected);
}

/// Every read syscall, seen every way the agent can hook socket I/O: the socket tracepoints
/// (the default on this kernel), one tracepoint per syscall with reads at their exit alone
/// (arguments from the saved registers; `--syscall-tracepoints`, the default on kernels
/// without the socket tracepoints), the `raw_syscalls` dispatch (`--raw-syscalls`), and entry
/// and exit programs (the fallback).
#[test]
fn every_read_syscall_in_every_hook_mode() {
    if !require_ebpf("every_read_syscall_in_every_hook_mode") {
        return;
    }
    let size = 600;
    let expected: Vec<u8> = (0..size).map(|i| (i % 26) as u8 + 65).collect();
    let modes: [(&str, Option<&str>, &str); 4] = [
        (
            "socket tracepoints",
            None,
            "sock:sock_send_length/sock_recv_length",
        ),
        (
            "per-syscall",
            Some("--syscall-tracepoints"),
            "reads seen at their exit only",
        ),
        (
            "raw syscalls",
            Some("--raw-syscalls"),
            "dispatching by syscall number",
        ),
        (
            "reads at entry",
            Some("--reads-at-entry"),
            "at entry and exit",
        ),
    ];
    for (mode, flag, announced) in modes {
        for (how, syscall) in [("recv", 3), ("read", 1), ("readv", 7), ("recvmsg", 5)] {
            let port = free_port();
            let (server, _out) = spawn_pair_server_reading(port, 50, size, how);
            let mut args = vec!["--port".to_string(), port.to_string()];
            args.extend(flag.map(String::from));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let agent = capture(&args);
            let stderr = agent.stderr().join("\n");
            assert!(stderr.contains(announced), "{mode} announced: {stderr}");
            assert_eq!(
                stderr.contains("one syscalls:* tracepoint per syscall"),
                flag.is_some() && flag != Some("--raw-syscalls"),
                "{mode}: {stderr}"
            );
            run_client(port, "sendall", size);
            drop(server);
            std::thread::sleep(std::time::Duration::from_millis(300));
            let evs = json_lines(&agent.stop());
            let what = format!("{how} ({mode})");
            let s = conn_events(&evs, "accept")[0];
            let sr = data_of(&evs, s["conn_id"].as_u64().expect("id"), "ingress");
            assert!(sr.len() >= size / 50, "{what}: {} reads", sr.len());
            assert!(
                sr.iter().all(|e| e["syscall"] == syscall),
                "{what}: syscalls {:?}",
                sr.iter().map(|e| &e["syscall"]).collect::<Vec<_>>()
            );
            assert_eq!(concat(&sr), expected, "{what}: payload in order");
            assert!(
                sr.iter()
                    .all(|e| e["ts_exit_ns"].as_u64() >= e["ts_enter_ns"].as_u64())
            );
        }
    }
}

#[test]
fn one_mib_body_truncated_and_counted() {
    if !require_ebpf("one_mib_body_truncated_and_counted") {
        return;
    }
    let port = free_port();
    let size = 1 << 20;
    let (server, _out) = spawn_pair_server(port, 65536, size);
    let agent = capture(&["--port", &port.to_string()]);
    run_client(port, "sendall", size);
    drop(server);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = agent.stop();
    let evs = json_lines(&out);
    let c = *conn_events(&evs, "connect")
        .first()
        .unwrap_or_else(|| panic!("no connect: {out}"));
    let cw = data_of(&evs, c["conn_id"].as_u64().expect("id"), "egress");
    let total: u64 = cw.iter().filter_map(|e| e["bytes"].as_u64()).sum();
    assert_eq!(total, size as u64, "byte count exact despite truncation");
    assert!(cw.iter().any(|e| e["truncated"] == true));
    for e in &cw {
        let cap = e["captured"].as_u64().expect("captured");
        assert!(cap <= 4096);
        assert_eq!(payload(e).len() as u64, cap);
    }
    let s = conn_events(&evs, "accept")[0];
    let sr = data_of(&evs, s["conn_id"].as_u64().expect("id"), "ingress");
    let total: u64 = sr.iter().filter_map(|e| e["bytes"].as_u64()).sum();
    assert_eq!(total, size as u64);
}

#[test]
fn ipv6_loopback() {
    if !require_ebpf("ipv6_loopback") {
        return;
    }
    let nginx = Nginx::start("");
    let agent = capture(&["--port", &nginx.port.to_string()]);
    let url = format!("http://[::1]:{}/six", nginx.port);
    let out = Command::new("curl")
        .args(["-s", "-g", &url])
        .output()
        .expect("curl");
    assert_eq!(out.stdout, b"hello\n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let evs = json_lines(&agent.stop());
    let c = conn_events(&evs, "connect")[0];
    assert_eq!(c["family"], "inet6");
    assert_eq!(c["remote_addr"], "::1");
    assert_eq!(c["remote_port"], nginx.port);
    let s = conn_events(&evs, "accept")[0];
    assert_eq!(s["family"], "inet6");
    assert_eq!(s["remote_port"], c["local_port"]);
    let req = concat(&data_of(&evs, c["conn_id"].as_u64().expect("id"), "egress"));
    assert!(String::from_utf8_lossy(&req).starts_with("GET /six HTTP/1.1\r\n"));
}

/// The events captured from processes named `exe` while redis-cli runs `command` against a
/// fresh Redis over its Unix socket and gets `reply`.
fn redis_cli_over_unix_socket(exe: &str, command: &[&str], reply: &str) -> Vec<Value> {
    let redis = Redis::start();
    let agent = capture(&["--exe", exe]);
    let out = Command::new("redis-cli")
        .arg("-s")
        .arg(&redis.socket)
        .args(command)
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), reply);
    std::thread::sleep(std::time::Duration::from_millis(300));
    json_lines(&agent.stop())
}

#[test]
fn unix_socket_client_to_redis() {
    if !require_ebpf("unix_socket_client_to_redis") {
        return;
    }
    let evs = redis_cli_over_unix_socket("redis-cli", &["SET", "k", "v"], "OK");
    let c = conn_events(&evs, "connect");
    let unix: Vec<_> = c.iter().filter(|e| e["family"] == "unix").collect();
    assert_eq!(unix.len(), 1, "{c:?}");
    assert_eq!(unix[0]["role"], "client");
    let id = unix[0]["conn_id"].as_u64().expect("id");
    let req = concat(&data_of(&evs, id, "egress"));
    let req = String::from_utf8_lossy(&req);
    assert!(
        req.contains("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"),
        "{req}"
    );
    let resp = concat(&data_of(&evs, id, "ingress"));
    assert!(String::from_utf8_lossy(&resp).contains("+OK\r\n"));
}

/// No tracepoint marks a Unix socket's close: with the socket tracepoints, the server's end of a
/// Unix stream connection ends when its receive finds the client gone.
#[test]
fn unix_socket_server_end_closes_when_the_client_leaves() {
    if !require_ebpf("unix_socket_server_end_closes_when_the_client_leaves") {
        return;
    }
    let evs = redis_cli_over_unix_socket("redis-server", &["PING"], "PONG");
    let accepts = conn_events(&evs, "accept");
    let unix: Vec<_> = accepts.iter().filter(|e| e["family"] == "unix").collect();
    assert_eq!(unix.len(), 1, "{accepts:?}");
    assert_eq!(unix[0]["role"], "server");
    let id = &unix[0]["conn_id"];
    let closes = conn_events(&evs, "close");
    assert!(
        closes.iter().any(|e| &e["conn_id"] == id),
        "no close for {id}: {closes:?}"
    );
}

#[test]
fn connection_opened_before_agent_is_attributed() {
    if !require_ebpf("connection_opened_before_agent_is_attributed") {
        return;
    }
    let port = free_port();
    let size = 100;
    let (server, mut server_out) = spawn_pair_server(port, 4096, size);
    let dir = tempfile::tempdir().expect("tmp");
    let go = dir.path().join("go");
    let mut client = Proc::spawn(
        "sock_pair client",
        Command::new(PYTHON)
            .arg(fixture_dir().join("sock_pair.py"))
            .args(["client", &port.to_string(), "sendall", &size.to_string()])
            .arg(&go)
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(client.child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("connected");
    let client_port: u16 = line
        .trim()
        .strip_prefix("connected ")
        .and_then(|p| p.parse().ok())
        .expect("client port");
    line.clear();
    server_out.read_line(&mut line).expect("accepted");
    assert_eq!(line.trim(), "accepted");
    // The connection exists on both ends; only now does the agent start.
    let agent = capture(&["--port", &port.to_string()]);
    std::fs::write(&go, b"go").expect("go");
    let _ = client.child.wait();
    let server_pid = server.pid();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let evs = json_lines(&agent.stop());
    // The server keeps listening until the agent has read everything: its role is inferred
    // from the listening socket, which a server has for as long as it serves (stopping it
    // first made the test depend on how soon the agent decoded the client's first event).
    drop(server);
    let disc = conn_events(&evs, "discovered");
    let c = disc
        .iter()
        .find(|e| e["pid"] == client.pid())
        .expect("client side discovered");
    assert_eq!(
        c["role"], "client",
        "role recovered: local port is not listening"
    );
    assert_eq!(c["local_port"], client_port);
    assert_eq!(c["remote_port"], port);
    assert_eq!(c["remote_addr"], "127.0.0.1");
    let s = disc
        .iter()
        .find(|e| e["pid"] == server_pid)
        .expect("server side discovered");
    assert_eq!(
        s["role"], "server",
        "role recovered: local port is listening"
    );
    assert_eq!(s["local_port"], port);
    assert_eq!(s["remote_port"], client_port);
    let sent = data_of(&evs, c["conn_id"].as_u64().expect("id"), "egress");
    assert_eq!(
        sent.iter().filter_map(|e| e["bytes"].as_u64()).sum::<u64>(),
        size as u64
    );
    assert_eq!(sent[0]["role"], "client");
}

#[test]
fn process_filter_excludes_unselected_processes() {
    if !require_ebpf("process_filter_excludes_unselected_processes") {
        return;
    }
    let nginx = Nginx::start("");
    // Select curl by executable name: nginx's side must produce no data events.
    let agent = capture(&["--exe", "curl"]);
    let url = format!("http://127.0.0.1:{}/f", nginx.port);
    let out = Command::new("curl")
        .args(["-s", &url])
        .output()
        .expect("curl");
    assert_eq!(out.stdout, b"hello\n");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let evs = json_lines(&agent.stop());
    let data: Vec<_> = evs.iter().filter(|e| e["kind"] == "data").collect();
    assert!(!data.is_empty(), "curl's traffic captured");
    let curl_pids: std::collections::HashSet<_> = conn_events(&evs, "connect")
        .iter()
        .map(|e| e["pid"].clone())
        .collect();
    for e in &data {
        assert!(curl_pids.contains(&e["pid"]), "only curl's events: {e}");
        assert_ne!(e["local_port"], nginx.port, "nginx side not captured");
    }
    assert!(
        conn_events(&evs, "accept").is_empty(),
        "nginx accept filtered"
    );
}

/// Captured events are the parsers' input: the client's view of a curl -> nginx keep-alive
/// connection, fed to protocol detection and the HTTP/1 parser, gives one record per request.
#[test]
fn captured_events_replay_through_the_parser() {
    use agent_protocols::{Detail, Dir, ParserConfig, stream};
    if !require_ebpf("captured_events_replay_through_the_parser") {
        return;
    }
    let nginx = Nginx::start("location /missing { return 404; }");
    let agent = capture(&["--port", &nginx.port.to_string(), "--exe", "curl"]);
    let url = |p: &str| format!("http://127.0.0.1:{}{p}", nginx.port);
    let out = Command::new("curl")
        .args(["-s", &url("/a?x=1"), &url("/missing"), &url("/c")])
        .output()
        .expect("curl");
    assert!(out.status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let evs = json_lines(&agent.stop());
    let client: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "data" && e["role"] == "client")
        .collect();
    assert!(!client.is_empty());
    let first = payload(client[0]);
    let kind = stream::choose(Dir::Request, &first).expect("detected");
    let mut s = stream::Stream::new(kind, &ParserConfig::default());
    let mut records = Vec::new();
    for e in &client {
        let dir = if e["direction"] == "egress" {
            Dir::Request
        } else {
            Dir::Response
        };
        records.extend(s.feed(
            dir,
            &payload(e),
            e["bytes"].as_u64().expect("bytes"),
            e["ts_enter_ns"].as_u64().expect("ts"),
            e["ts_exit_ns"].as_u64().expect("ts"),
        ));
    }
    let got: Vec<(String, Option<String>, Option<u16>)> = records
        .iter()
        .map(|r| match &r.detail {
            Detail::Http(h) => (
                h.path.to_string(),
                h.query.as_ref().map(|q| q.to_string()),
                h.status,
            ),
            other => panic!("not HTTP: {other:?}"),
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("/a".to_string(), Some("x=1".to_string()), Some(200)),
            ("/missing".to_string(), None, Some(404)),
            ("/c".to_string(), None, Some(200)),
        ]
    );
    for r in &records {
        assert!(r.end_ns >= r.start_ns && r.response_start_ns >= r.request_end_ns);
        assert!(r.request_bytes > 0 && r.response_bytes > 0);
    }
}

/// A socket fd replaced without close() (dup2, close_range, exec with close-on-exec) and reused
/// for a file: reads of the file through that fd number are not socket data.
#[test]
fn fd_replaced_without_close_is_not_mistaken_for_the_socket() {
    if !require_ebpf("fd_replaced_without_close_is_not_mistaken_for_the_socket") {
        return;
    }
    // The socket tracepoints name the socket itself; the syscall tracepoints cache fd numbers.
    fd_replaced_without_close(&[]);
    fd_replaced_without_close(&["--syscall-tracepoints"]);
}

fn fd_replaced_without_close(extra: &[&str]) {
    let nginx = Nginx::start("");
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("file.txt");
    std::fs::write(&file, "FILE-CONTENT must never appear as socket data\n").expect("file");
    let mut args = vec!["--exe", "python3", "--exe", "python3.11"];
    args.extend_from_slice(extra);
    let agent = capture(&args);
    let port = nginx.port.to_string();
    let evs = events_of_fixture(agent, "fd_reuse.py", [port.as_ref(), file.as_os_str()]);
    let data: Vec<&Value> = evs.iter().filter(|e| e["kind"] == "data").collect();
    // The three requests were captured (the sockets were seen, so the fd numbers were cached)...
    let requests = data
        .iter()
        .filter(|e| payload(e).starts_with(b"GET /before"))
        .count();
    assert_eq!(requests, 3, "{evs:?}");
    // ...and the file read through the same numbers afterwards never was.
    for e in &data {
        assert!(
            !String::from_utf8_lossy(&payload(e)).contains("FILE-CONTENT"),
            "file contents captured as socket data: {e}"
        );
    }
}

/// One socket connected, closed (connect to AF_UNSPEC) and connected again: each connection
/// gets its own identity, announced once and closed once, with only its own bytes, in every
/// hook mode (the socket tracepoints keep state on the socket, which outlives the first
/// connection).
#[test]
fn socket_connected_again_is_a_new_connection() {
    if !require_ebpf("socket_connected_again_is_a_new_connection") {
        return;
    }
    for extra in [
        &[][..],
        &["--syscall-tracepoints"][..],
        &["--raw-syscalls"][..],
    ] {
        socket_connected_again(extra);
    }
}

fn socket_connected_again(extra: &[&str]) {
    let nginx = Nginx::start("");
    let port = nginx.port.to_string();
    let mut args = vec!["--port", port.as_str()];
    args.extend_from_slice(extra);
    let agent = capture(&args);
    let evs = events_of_fixture(agent, "reconnect.py", [port.as_ref()]);
    let connects: Vec<&Value> = conn_events(&evs, "connect")
        .into_iter()
        .filter(|e| e["remote_port"] == nginx.port)
        .collect();
    assert_eq!(connects.len(), 2, "{extra:?}: {connects:?}");
    let ids: Vec<u64> = connects
        .iter()
        .map(|c| c["conn_id"].as_u64().expect("conn id"))
        .collect();
    assert_ne!(
        ids[0], ids[1],
        "{extra:?}: one identity for two connections"
    );
    assert_ne!(connects[0]["local_port"], connects[1]["local_port"]);
    for (round, id) in ids.iter().enumerate() {
        let sent = concat(&data_of(&evs, *id, "egress"));
        let want = format!("GET /round{round} ");
        assert!(
            sent.starts_with(want.as_bytes()) && sent.len() < 64,
            "{extra:?}: connection {round} sent {:?}",
            String::from_utf8_lossy(&sent)
        );
        let closes = conn_events(&evs, "close")
            .into_iter()
            .filter(|e| e["conn_id"] == *id)
            .count();
        assert_eq!(
            closes, 1,
            "{extra:?}: connection {round} closed {closes} times"
        );
    }
}

/// More TCP connections than any map of the agent's holds (70,000: 140,000 sockets, each
/// given a state when it is established, and each used) come and stay between two exchanges
/// on one connection: with the socket tracepoints its state lives on its socket and survives,
/// so the second exchange belongs to the same connection, announced once, never
/// rediscovered. (Kept in an LRU map of 65,536 connections, as before the socket storage, the
/// flood evicted it: the second exchange came as a new, discovered connection.)
#[test]
fn a_connection_outlives_a_flood_of_others() {
    if !require_ebpf("a_connection_outlives_a_flood_of_others") {
        return;
    }
    use std::io::Write;
    const FLOOD: u32 = 70_000;
    let probe = free_port();
    // Only the probe's port is selected: the flood's sockets get a state, not events.
    let agent = capture(&["--port", &probe.to_string()]);
    let mut app = Command::new(PYTHON)
        .arg(fixture_dir().join("many_sockets.py"))
        .arg(probe.to_string())
        .arg(FLOOD.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("many_sockets.py");
    let mut stdin = app.stdin.take().expect("stdin");
    let mut lines = BufReader::new(app.stdout.take().expect("stdout")).lines();
    let mut next = || lines.next().expect("a line").expect("utf-8");
    assert_eq!(next(), format!("probe {probe}"));
    assert_eq!(next(), format!("opened {FLOOD}"));
    writeln!(stdin).expect("go on");
    assert_eq!(next(), "done");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let evs = json_lines(&agent.stop());
    writeln!(stdin).expect("finish");
    assert!(app.wait().expect("wait").success());

    let at_probe = |e: &&Value| e["local_port"] == probe || e["remote_port"] == probe;
    let conns: Vec<&Value> = evs
        .iter()
        .filter(|e| e["kind"] == "conn" && e["op"] != "close")
        .filter(at_probe)
        .collect();
    let ops: Vec<&str> = conns.iter().filter_map(|e| e["op"].as_str()).collect();
    assert_eq!(ops.len(), 2, "each end announced once: {conns:?}");
    assert!(
        ops.contains(&"connect") && ops.contains(&"accept"),
        "{ops:?}"
    );
    let id_of = |op: &str| {
        conns
            .iter()
            .find(|e| e["op"] == op)
            .and_then(|e| e["conn_id"].as_u64())
            .expect("conn id")
    };
    let (client, server) = (id_of("connect"), id_of("accept"));
    for (id, dir) in [(client, "egress"), (server, "ingress")] {
        let bytes = concat(&data_of(&evs, id, dir));
        assert_eq!(
            bytes,
            b"ping-beforeping-after",
            "{dir} of connection {id}: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
}
