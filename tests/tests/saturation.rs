//! The capture budget on a saturated node. A test binary of its own: it saturates every CPU
//! for a few seconds, which must not slow the tests of another binary (binaries run one after
//! another).

use std::process::Command;
use std::time::Duration;

use tracewire_e2e::agent::Agent;
use tracewire_e2e::clients::TracedPathServer;
use tracewire_e2e::env::{PYTHON, require_ebpf, wait_for};
use tracewire_e2e::servers::Proc;

/// Whether any thread of process `pid` runs in the idle scheduling class now.
fn has_idle_class_thread(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().any(|t| {
        std::fs::read_to_string(t.path().join("sched")).is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("policy") && l.split(':').nth(1).map(str::trim) == Some("5"))
        })
    })
}

/// Stderr lines of `agent` that log the sampler's state, newest last.
fn sampler_lines(agent: &Agent) -> Vec<String> {
    agent
        .stderr()
        .into_iter()
        .filter(|l| l.contains("sampled: budget="))
        .collect()
}

/// A node with no idle CPU caps the budget at `--saturated-budget-per-cpu` times its CPUs: the agent's work would be
/// taken from the applications. Busy loops on every CPU (this test's own processes) saturate
/// the node; the traced load is then sampled down to the cap and counted, and once the loops
/// end the full budget is back. Meanwhile, with `--idle-when-saturated true`, the agent's
/// threads run in the idle scheduling class, and the busy loops (which never leave a CPU
/// idle) do not starve it into losses.
#[test]
fn a_saturated_node_samples_down_to_the_saturated_budget() {
    if !require_ebpf("a_saturated_node_samples_down_to_the_saturated_budget") {
        return;
    }
    let mut t = TracedPathServer::start(&[
        "--saturated-budget-per-cpu",
        "50",
        "--stats-interval",
        "1",
        "--idle-when-saturated",
        "true",
    ]);
    // SAFETY: no pointers.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1) as u64;
    let cap = 50 * cpus;
    let hogs: Vec<Proc> = (0..cpus)
        .map(|i| {
            Proc::spawn(
                &format!("busy loop {i}"),
                Command::new(PYTHON).args(["-c", "while True: pass"]),
            )
        })
        .collect();
    wait_for(
        "the node seen as saturated",
        Duration::from_secs(15),
        || {
            sampler_lines(&t.agent)
                .last()
                .is_some_and(|l| l.contains(&format!("budget={cap}/s (node saturated)")))
        },
    );
    wait_for(
        "the agent's threads in the idle class",
        Duration::from_secs(10),
        || has_idle_class_thread(t.agent.pid()),
    );
    let (conns, per_conn) = (2, 3000);
    t.run_client(conns, per_conn);
    drop(hogs);
    wait_for("the full budget back", Duration::from_secs(15), || {
        sampler_lines(&t.agent)
            .last()
            .is_some_and(|l| l.contains("budget=30000/s kept"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let v = t.stop_agent();
    assert_eq!(v["saturated_budget"], cap, "{v}");
    assert_eq!(v["capture_budget_lowest"], cap, "{v}");
    assert!(v["node_saturated_ms"].as_u64().unwrap_or(0) >= 100, "{v}");
    // Idle while saturated, normal again once the loops ended.
    assert!(v["idle_class_ms"].as_u64().unwrap_or(0) >= 100, "{v}");
    let switches = v["class_switches"].as_u64().unwrap_or(0);
    assert!(switches >= 2 && switches.is_multiple_of(2), "{v}");
    let sampled_out = v["kernel"]["sampled_out"].as_u64().expect("sampled_out");
    let total = 2 * conns * per_conn;
    // Without the cap none would be (30,000 calls/s). Not nearly all: the sampler measures
    // a new load over its first 100 ms interval, which keeps it whole (the client takes
    // about a second).
    assert!(
        sampled_out >= total as u64 / 2,
        "{total} calls in a few seconds at {cap} calls/s are sampled out: {v}"
    );
    assert_eq!(v["total_drops"], 0, "{v}");
    let kept = t.rx.spans().len() as u64;
    assert_eq!(kept, v["spans_exported"].as_u64().expect("exported"), "{v}");
    assert!(
        kept + sampled_out <= total as u64 && kept + sampled_out + 16 >= total as u64,
        "every exchange is either a span or counted as sampled out: kept {kept}, out \
         {sampled_out}, total {total}"
    );
}
