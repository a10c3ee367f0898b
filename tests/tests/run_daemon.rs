//! `tracewire run` behaviour beyond spans: connections in a protocol the agent does not parse
//! stop being captured in the kernel once userspace gives up on them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tracewire_e2e::agent::Agent;
use tracewire_e2e::env::{PYTHON, fixture_dir, free_port, require_ebpf};
use tracewire_e2e::servers::Proc;

#[test]
fn unknown_protocol_connections_stop_being_captured() {
    if !require_ebpf("unknown_protocol_connections_stop_being_captured") {
        return;
    }
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
    let dir = tempfile::tempdir().expect("tmp");
    let stats = dir.path().join("stats.json");
    let agent = Agent::start(
        &[
            "run",
            "--exporter",
            "none",
            "--port",
            &port.to_string(),
            "--stats-file",
            stats.to_str().expect("utf-8 path"),
        ],
        &[],
        "tracing via",
    );
    let rounds = 200;
    let st = Command::new(PYTHON)
        .arg(fixture_dir().join("chatter.py"))
        .args(["client", &port.to_string(), &rounds.to_string(), "2"])
        .status()
        .expect("client");
    assert!(st.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    agent.stop();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).expect("stats file")).expect("json");
    let data = v["kernel"]["data_events"].as_u64().expect("data_events");
    let filtered = v["kernel"]["filtered"].as_u64().expect("filtered");
    // 200 round trips, 2 ms apart, are 800 socket reads/writes over both ends; once userspace
    // gives up (a few events, then at most one poll interval) the kernel stops copying them.
    assert!(
        v["conntrack"]["unknown_protocol"].as_u64() >= Some(2),
        "{v}"
    );
    assert!(data < 100, "capture stopped early: {data} data events: {v}");
    assert!(filtered > 600, "the rest was skipped in the kernel: {v}");
    assert_eq!(v["spans_built"], 0);
}
