//! `cargo xtask bench`: overhead of the agent on real servers under load, traced vs untraced,
//! interleaved in one run (these machines are noisy), plus the agent's own CPU and memory and the
//! offline pipeline throughput. Writes target/bench/results.{md,json}.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::{build_agent, root, run as sh};

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

pub fn wait_port(port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("port {port} never opened")
}

/// A child stopped by pid on drop.
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        unsafe { libc_kill(self.0.id() as i32, 15) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One measured figure of one run.
#[derive(Debug, Clone, Default)]
struct Sample {
    throughput: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// The p99 latency of the load's first second (before the measured run: the agent meets
    /// a load that starts).
    start_p99_ms: Option<f64>,
    agent_cpu_s: Option<f64>,
    agent_rss_kib: Option<u64>,
    spans: Option<u64>,
    drops: Option<u64>,
    /// Of `drops`, those lost in the OTLP export queue or to failed exports (the rest were
    /// lost in the kernel's ring buffer, its call slots, or the ingest channel).
    export_drops: Option<u64>,
    /// Exchanges offered to sampling and those sampled out (beyond the capture budget).
    exchanges: Option<u64>,
    sampled_out: Option<u64>,
    /// Correlator: spans released, of them released before their hold window (buffer full),
    /// and spans whose parent was lost (exported as roots).
    released: Option<u64>,
    forced: Option<u64>,
    orphaned: Option<u64>,
    /// Of the released spans, those released as they arrived (their links final).
    settled: Option<u64>,
    /// The lowest capture budget in force (calls/s) after the export side fell behind or the
    /// node was saturated.
    budget_lowest: Option<u64>,
    /// How long the agent saw the node saturated (its budget capped), in ms.
    saturated_ms: Option<u64>,
    seconds: f64,
}

/// The agent's kernel programs during one extra traced run with `kernel.bpf_stats_enabled`
/// (not used for the ratios: the statistics cost a little themselves).
#[derive(Debug, Clone, Copy, Default)]
struct HookCost {
    calls: u64,
    run_ns: u64,
    seconds: f64,
}

impl HookCost {
    /// Sums run_cnt/run_time_ns over the bpf program fds the process holds.
    fn read(pid: u32) -> HookCost {
        let mut c = HookCost::default();
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            return c;
        };
        for e in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            if !text.contains("prog_tag") {
                continue;
            }
            let field = |k: &str| -> u64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0)
            };
            c.calls += field("run_cnt:");
            c.run_ns += field("run_time_ns:");
        }
        c
    }
}

fn set_bpf_stats(on: bool) {
    let _ = std::fs::write(
        "/proc/sys/kernel/bpf_stats_enabled",
        if on { "1" } else { "0" },
    );
}

struct Agent {
    guard: Guard,
    stats_path: PathBuf,
}

fn proc_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn proc_hwm_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn start_agent(
    bin: &Path,
    sink_port: u16,
    ports: &[u16],
    dir: &Path,
    extra: &[&str],
) -> Result<Agent> {
    let stats_path = dir.join("agent-stats.json");
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--exporter", "otlp", "--protocol", "grpc"])
        .args(extra)
        .arg("--endpoint")
        .arg(format!("http://127.0.0.1:{sink_port}"))
        .arg("--stats-file")
        .arg(&stats_path);
    for p in ports {
        cmd.args(["--port", &p.to_string()]);
    }
    let log = std::fs::File::create(dir.join("agent.log"))?;
    cmd.stdout(Stdio::null()).stderr(Stdio::from(log));
    let guard = Guard(cmd.spawn().context("starting tracewire")?);
    // Ready when the log says so.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = std::fs::read_to_string(dir.join("agent.log")).unwrap_or_default();
        if log.contains("tracing via") {
            break;
        }
        if Instant::now() > deadline {
            bail!("agent not ready: {log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Agent { guard, stats_path })
}

/// Runs of one scenario: untraced, traced, the floor (hooks attached, no-op programs), and
/// every exchange sampled out (the kernel programs' per-call work without capture or agent
/// work: `--capture-budget 1`).
struct Runs {
    untraced: Vec<Sample>,
    traced: Vec<Sample>,
    floor: Vec<Sample>,
    all_sampled_out: Vec<Sample>,
}

/// Runs `load` untraced and traced `runs` times each, alternating which goes first, and once
/// per round with only the hooks attached (`--hooks-only`: what the hooks alone cost) and
/// once with every exchange sampled out (what the programs' per-call work adds to that).
fn interleaved(
    name: &str,
    runs: u32,
    bin: &Path,
    sink_port: u16,
    ports: &[u16],
    dir: &Path,
    mut load: impl FnMut() -> Result<Sample>,
) -> Result<Runs> {
    let mut untraced = Vec::new();
    let mut traced = Vec::new();
    let mut floor = Vec::new();
    let mut all_sampled_out = Vec::new();
    for i in 0..runs {
        // The two reference runs only need the agent attached, not its figures.
        for (label, args, out) in [
            ("hooks-only", &["--hooks-only"][..], &mut floor),
            (
                "all-sampled-out",
                &["--capture-budget", "1"][..],
                &mut all_sampled_out,
            ),
        ] {
            let agent = start_agent(bin, sink_port, ports, dir, args)?;
            let s = load()?;
            drop(agent.guard);
            eprintln!("bench {name} {label} run {i}: {:.0}/s", s.throughput);
            out.push(s);
        }
        for traced_first in [i % 2 == 1, i % 2 == 0] {
            if traced_first {
                let agent = start_agent(bin, sink_port, ports, dir, &[])?;
                let pid = agent.guard.0.id();
                let cpu0 = proc_cpu_seconds(pid).unwrap_or(0.0);
                let mut s = load()?;
                s.agent_cpu_s = proc_cpu_seconds(pid).map(|c| c - cpu0);
                s.agent_rss_kib = proc_hwm_kib(pid);
                drop(agent.guard);
                if let Ok(text) = std::fs::read_to_string(&agent.stats_path) {
                    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    s.spans = v["spans_exported"].as_u64();
                    s.drops = v["total_drops"].as_u64();
                    s.export_drops = v["otlp_dropped"].as_u64();
                    s.exchanges = v["kernel"]["exchanges"].as_u64();
                    s.sampled_out = v["kernel"]["sampled_out"].as_u64();
                    s.released = v["correlate"]["released"].as_u64();
                    s.forced = v["correlate"]["forced_releases"].as_u64();
                    s.orphaned = v["correlate"]["orphaned"].as_u64();
                    s.settled = v["correlate"]["settled_on_arrival"].as_u64();
                    s.budget_lowest = v["capture_budget_lowest"].as_u64();
                    s.saturated_ms = v["node_saturated_ms"].as_u64();
                }
                eprintln!("bench {name} traced run {i}: {:.0}/s", s.throughput);
                traced.push(s);
            } else {
                let s = load()?;
                eprintln!("bench {name} untraced run {i}: {:.0}/s", s.throughput);
                untraced.push(s);
            }
        }
    }
    Ok(Runs {
        untraced,
        traced,
        floor,
        all_sampled_out,
    })
}

/// One more traced run with BPF run-time statistics on: what the kernel programs cost.
fn hook_cost(
    bin: &Path,
    sink_port: u16,
    ports: &[u16],
    dir: &Path,
    mut load: impl FnMut() -> Result<Sample>,
) -> Result<HookCost> {
    let agent = start_agent(bin, sink_port, ports, dir, &[])?;
    set_bpf_stats(true);
    let pid = agent.guard.0.id();
    let before = HookCost::read(pid);
    let s = load();
    let after = HookCost::read(pid);
    set_bpf_stats(false);
    drop(agent.guard);
    let s = s?;
    Ok(HookCost {
        calls: after.calls.saturating_sub(before.calls),
        run_ns: after.run_ns.saturating_sub(before.run_ns),
        seconds: s.seconds,
    })
}

/// Seconds of load before the measured run of `wrk`: the p99 of a load's start (the agent
/// has not yet seen the node saturate, every connection's first exchange is captured) is
/// reported apart from the steady state's.
const WRK_WARMUP_SECONDS: u32 = 1;

fn wrk(port: u16, seconds: u32) -> Result<Sample> {
    let start = wrk_once(port, WRK_WARMUP_SECONDS)?;
    let mut s = wrk_once(port, seconds)?;
    s.start_p99_ms = start.p99_ms;
    // The agent's CPU and spans are counted over both runs.
    s.seconds += start.seconds;
    Ok(s)
}

fn wrk_once(port: u16, seconds: u32) -> Result<Sample> {
    let out = output(Command::new("wrk").args([
        "-t1",
        "-c32",
        &format!("-d{seconds}s"),
        "--latency",
        &format!("http://127.0.0.1:{port}/"),
    ]))?;
    let mut s = Sample {
        seconds: seconds as f64,
        ..Sample::default()
    };
    for line in out.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("Requests/sec:") {
            s.throughput = v.trim().parse().unwrap_or(0.0);
        } else if let Some(v) = l.strip_prefix("50%") {
            s.p50_ms = parse_ms(v.trim());
        } else if let Some(v) = l.strip_prefix("99%") {
            s.p99_ms = parse_ms(v.trim());
        }
    }
    if s.throughput == 0.0 {
        bail!("wrk printed no throughput: {out}");
    }
    Ok(s)
}

/// The pinned one-thread loopback request/response load (`pingpong`): exchanges per second,
/// the best of 5 rounds of `n`.
fn pingpong(bin: &Path, port: u16, n: u32) -> Result<Sample> {
    let t = std::time::Instant::now();
    let out = output(Command::new(bin).args([port.to_string(), n.to_string()]))?;
    let throughput = out
        .lines()
        .find_map(|l| l.strip_prefix("exchanges/s:"))
        .and_then(|v| v.trim().parse().ok())
        .with_context(|| format!("pingpong printed no rate: {out}"))?;
    Ok(Sample {
        throughput,
        seconds: t.elapsed().as_secs_f64(),
        ..Sample::default()
    })
}

fn parse_ms(v: &str) -> Option<f64> {
    if let Some(x) = v.strip_suffix("us") {
        x.parse::<f64>().ok().map(|x| x / 1000.0)
    } else if let Some(x) = v.strip_suffix("ms") {
        x.parse().ok()
    } else if let Some(x) = v.strip_suffix('s') {
        x.parse::<f64>().ok().map(|x| x * 1000.0)
    } else {
        None
    }
}

fn redis_bench(port: u16, pipeline: u32, n: u32) -> Result<Sample> {
    let t0 = Instant::now();
    let out = output(Command::new("redis-benchmark").args([
        "-p",
        &port.to_string(),
        "-t",
        "get,set",
        "-n",
        &n.to_string(),
        "-P",
        &pipeline.to_string(),
        "-c",
        "32",
        "--csv",
    ]))?;
    // "test","rps",...: average the GET and SET rates.
    let rates: Vec<f64> = out
        .lines()
        .filter(|l| l.starts_with("\"SET\"") || l.starts_with("\"GET\""))
        .filter_map(|l| l.split(',').nth(1))
        .filter_map(|v| v.trim_matches('"').parse().ok())
        .collect();
    if rates.is_empty() {
        bail!("redis-benchmark printed no rates: {out}");
    }
    Ok(Sample {
        throughput: rates.iter().sum::<f64>() / rates.len() as f64,
        seconds: t0.elapsed().as_secs_f64(),
        ..Sample::default()
    })
}

/// pgbench invocations per sample. Where the scheduler puts pgbench's threads and the
/// backends is drawn when the connections open and holds for the whole invocation; several
/// shorter invocations per sample average the draws instead of measuring one.
const PGBENCH_DRAWS: u32 = 3;

fn pgbench(port: u16, select_only: bool, seconds: u32) -> Result<Sample> {
    let each = seconds.div_ceil(2).max(2);
    let mut tps = 0.0;
    for _ in 0..PGBENCH_DRAWS {
        tps += pgbench_once(port, select_only, each)?;
    }
    Ok(Sample {
        throughput: tps / PGBENCH_DRAWS as f64,
        seconds: (each * PGBENCH_DRAWS) as f64,
        ..Sample::default()
    })
}

/// pgbench against the bench database for `seconds`, with the clients every pgbench load here
/// uses and `extra` options: 4 connections, a thread each (as an application with a thread per
/// connection drives its database). With 2 threads for the 4 connections, the placement drawn
/// at start-up split invocations into two groups, 54k-62k and 80k-93k select-only
/// transactions/s untraced; with a thread each, untraced 3 s invocations stayed within
/// 84k-93k over 13 of them.
fn pgbench_cmd(port: u16, seconds: u32, extra: &[&str]) -> Command {
    let mut cmd = Command::new("pgbench");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
        .args(extra)
        .args(["-c", "4", "-j", "4", "-T", &seconds.to_string()])
        .arg("bench");
    cmd
}

/// One pgbench invocation: transactions/s without connection set-up.
fn pgbench_once(port: u16, select_only: bool, seconds: u32) -> Result<f64> {
    let mode: &[&str] = if select_only { &["-S"] } else { &[] };
    let out = output(&mut pgbench_cmd(port, seconds, mode))?;
    out.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l[6..].split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("pgbench printed no tps")
}

/// The light fixed rate (transactions/s): a node's everyday load rather than its peak.
const LIGHT_RATE: u32 = 500;

/// CPU time (ns) and times scheduled in, summed over the threads of `pid`
/// (`/proc/PID/task/*/schedstat`: exact, where `/proc/PID/stat` counts 10 ms ticks).
fn proc_sched(pid: u32) -> Option<(u64, u64)> {
    let mut cpu = 0;
    let mut runs = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let s = std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok()?;
        let f: Vec<u64> = s
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        cpu += f.first()?;
        runs += f.get(2)?;
    }
    Some((cpu, runs))
}

/// pgbench -S held at `rate` transactions/s while traced: every transaction must come out as a
/// span (the target: no span lost at 10k requests/s), and every loss is counted. Also what the
/// agent costs at that rate: most nodes run far below saturation, where the cost of waking up
/// weighs more than the work per span.
fn fixed_rate_no_loss(
    bin: &Path,
    sink_port: u16,
    port: u16,
    seconds: u32,
    dir: &Path,
    rate: u32,
) -> Result<serde_json::Value> {
    let agent = start_agent(bin, sink_port, &[port], dir, &[])?;
    let pid = agent.guard.0.id();
    let before = proc_sched(pid);
    let started = Instant::now();
    let out = output(&mut pgbench_cmd(
        port,
        seconds,
        &["-S", "-R", &rate.to_string()],
    ))?;
    let after = proc_sched(pid);
    let elapsed = started.elapsed().as_secs_f64();
    let transactions: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|v| v.split(['/', ' ']).next())
        .and_then(|v| v.trim().parse().ok())
        .context("pgbench printed no transaction count")?;
    std::thread::sleep(Duration::from_secs(3));
    drop(agent.guard);
    let stats: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&agent.stats_path)?)?;
    // Every transaction is one client span; pgbench's set-up queries add a few more.
    let spans = stats["spans_exported"].as_u64().unwrap_or(0);
    let (cpu_pct, us_per_span, wakeups_per_s) = match (before, after) {
        (Some((c0, r0)), Some((c1, r1))) if elapsed > 0.0 => (
            Some(c1.saturating_sub(c0) as f64 / 1e9 / elapsed * 100.0),
            Some(c1.saturating_sub(c0) as f64 / 1e3 / transactions.max(1) as f64),
            Some(r1.saturating_sub(r0) as f64 / elapsed),
        ),
        _ => (None, None, None),
    };
    let r = serde_json::json!({
        "scenario": format!("pgbench -S -R {rate} traced"),
        "rate": rate,
        "transactions": transactions,
        "spans_exported": spans,
        "missing": transactions.saturating_sub(spans),
        "total_drops": stats["total_drops"],
        "sampled_out": stats["kernel"]["sampled_out"],
        "stale_verdicts": stats["kernel"]["stale_verdicts"],
        "agent_cpu_pct_of_core": cpu_pct,
        "agent_cpu_us_per_span": us_per_span,
        "agent_threads_scheduled_per_s": wakeups_per_s,
    });
    eprintln!("bench fixed rate {rate}: {r}");
    Ok(r)
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> f64 {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let m = median(v.to_vec());
    if m > 0.0 { (hi - lo) / m } else { f64::NAN }
}

struct Row {
    scenario: String,
    untraced: Vec<Sample>,
    traced: Vec<Sample>,
    floor: Vec<Sample>,
    all_sampled_out: Vec<Sample>,
    hooks: HookCost,
}

impl Row {
    fn json(&self) -> serde_json::Value {
        let u: Vec<f64> = self.untraced.iter().map(|s| s.throughput).collect();
        let t: Vec<f64> = self.traced.iter().map(|s| s.throughput).collect();
        let fl: Vec<f64> = self.floor.iter().map(|s| s.throughput).collect();
        let so: Vec<f64> = self.all_sampled_out.iter().map(|s| s.throughput).collect();
        let p99u: Vec<f64> = self.untraced.iter().filter_map(|s| s.p99_ms).collect();
        let p99t: Vec<f64> = self.traced.iter().filter_map(|s| s.p99_ms).collect();
        let p99su: Vec<f64> = self
            .untraced
            .iter()
            .filter_map(|s| s.start_p99_ms)
            .collect();
        let p99st: Vec<f64> = self.traced.iter().filter_map(|s| s.start_p99_ms).collect();
        let cpu: Vec<f64> = self
            .traced
            .iter()
            .filter_map(|s| s.agent_cpu_s.map(|c| c / s.seconds.max(0.001)))
            .collect();
        let spans_per_s: Vec<f64> = self
            .traced
            .iter()
            .filter_map(|s| s.spans.map(|n| n as f64 / s.seconds.max(0.001)))
            .collect();
        let rss = self
            .traced
            .iter()
            .filter_map(|s| s.agent_rss_kib)
            .max()
            .unwrap_or(0);
        let sampled: Vec<f64> = self
            .traced
            .iter()
            .filter_map(|s| match (s.exchanges, s.sampled_out) {
                (Some(e), Some(o)) if e > 0 => Some(o as f64 / e as f64),
                _ => None,
            })
            .collect();
        let saturated: Vec<f64> = self
            .traced
            .iter()
            .filter_map(|s| {
                s.saturated_ms
                    .map(|ms| (ms as f64 / 1000.0 / s.seconds.max(0.001)).min(1.0))
            })
            .collect();
        // Per traced run: settled, forced or orphaned spans as a fraction of released spans.
        let share_of_released = |pick: fn(&Sample) -> Option<u64>| -> Vec<f64> {
            self.traced
                .iter()
                .filter_map(|s| match (pick(s), s.released) {
                    (Some(n), Some(r)) if r > 0 => Some(n as f64 / r as f64),
                    _ => None,
                })
                .collect()
        };
        let forced = share_of_released(|s| s.forced);
        let orphaned = share_of_released(|s| s.orphaned);
        let settled = share_of_released(|s| s.settled);
        // Each round's run against the untraced run of the same round: slow drifts of the
        // machine (minutes of a noisy neighbour) cancel out, which the ratio of medians
        // does not do.
        let paired = |runs: &[f64]| -> f64 {
            median(
                runs.iter()
                    .zip(&u)
                    .filter(|(_, b)| **b > 0.0)
                    .map(|(a, b)| a / b)
                    .collect(),
            )
        };
        let h = self.hooks;
        let cpu_m = median(cpu.clone());
        let sps = median(spans_per_s.clone());
        serde_json::json!({
            "scenario": self.scenario,
            "untraced_median": median(u.clone()),
            "traced_median": median(t.clone()),
            "ratio": median(t.clone()) / median(u.clone()),
            "hooks_only_median": median(fl.clone()),
            "hooks_only_ratio": median(fl.clone()) / median(u.clone()),
            "all_sampled_out_median": median(so.clone()),
            "all_sampled_out_ratio": median(so.clone()) / median(u.clone()),
            "paired_ratio": paired(&t),
            "paired_hooks_only_ratio": paired(&fl),
            "paired_all_sampled_out_ratio": paired(&so),
            "untraced_spread": spread(&u),
            "traced_spread": spread(&t),
            "p99_untraced_ms": median(p99u.clone()),
            "p99_traced_ms": median(p99t.clone()),
            "p99_ratio": median(p99t) / median(p99u),
            "p99_start_untraced_ms": median(p99su.clone()),
            "p99_start_traced_ms": median(p99st.clone()),
            "p99_start_ratio": median(p99st) / median(p99su),
            "agent_cpu_cores": cpu_m,
            "spans_per_s": sps,
            "agent_cpu_pct_per_10k_spans": if sps > 0.0 { cpu_m * 100.0 / (sps / 10_000.0) } else { f64::NAN },
            "agent_peak_rss_mib": rss as f64 / 1024.0,
            "drops": self.traced.iter().filter_map(|s| s.drops).sum::<u64>(),
            "export_drops": self.traced.iter().filter_map(|s| s.export_drops).sum::<u64>(),
            "sampled_out_fraction": median(sampled),
            "budget_lowest": self.traced.iter().filter_map(|s| s.budget_lowest).min(),
            "node_saturated_fraction": median(saturated),
            "forced_release_fraction": median(forced),
            "orphaned_fraction": median(orphaned),
            "settled_on_arrival_fraction": median(settled),
            "hook_calls_per_s": h.calls as f64 / h.seconds.max(0.001),
            "hook_ns_per_call": if h.calls > 0 { h.run_ns as f64 / h.calls as f64 } else { f64::NAN },
            "hook_cpu_cores": h.run_ns as f64 / 1e9 / h.seconds.max(0.001),
            "untraced": u,
            "traced": t,
            "hooks_only": fl,
            "all_sampled_out": so,
        })
    }
}

pub fn run(runs: u32, seconds: u32, only: Option<&str>) -> Result<()> {
    let bin = build_agent(true)?;
    let sink = sink_bin()?;
    let pingpong_bin = sink.with_file_name("pingpong");
    let out_dir = root().join("target").join("bench");
    std::fs::create_dir_all(&out_dir)?;
    // Declared before every server's guard, so it is removed after they have stopped.
    let work = tempfile_dir(&out_dir)?;
    let dir = work.0.clone();
    let sink_port = free_port()?;
    let _sink = Guard(
        Command::new(&sink)
            .arg(sink_port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .context("starting the OTLP sink")?,
    );
    wait_port(sink_port)?;

    let ctx = Ctx {
        runs,
        bin: &bin,
        sink_port,
        dir: &dir,
    };
    let wanted = |name: &str| only.is_none_or(|o| name.contains(o));
    let mut rows = Vec::new();
    const REDIS: [&str; 2] = ["redis GET/SET no pipelining", "redis GET/SET -P 16"];
    const PGBENCH: [&str; 2] = ["pgbench select-only", "pgbench tpc-b"];
    let any_wanted = |names: &[&str]| names.iter().any(|n| wanted(n));
    const LOOPBACK: &str = "loopback req/resp, 1 pinned thread";
    if wanted(LOOPBACK) {
        let port = free_port()?;
        rows.push(ctx.scenario(LOOPBACK, port, || pingpong(&pingpong_bin, port, 100_000))?);
    }
    if wanted("http nginx+wrk -t1 -c32") {
        let (port, _nginx) = start_nginx(&dir)?;
        rows.push(ctx.scenario("http nginx+wrk -t1 -c32", port, || wrk(port, seconds))?);
    }
    if any_wanted(&REDIS) {
        let (port, _redis) = start_redis(&dir)?;
        for (p, name) in [(1, REDIS[0]), (16, REDIS[1])] {
            if !wanted(name) {
                continue;
            }
            let n = if p == 1 { 100_000 } else { 1_000_000 };
            rows.push(ctx.scenario(name, port, || redis_bench(port, p, n))?);
        }
    }
    let mut rate_check = serde_json::Value::Null;
    let mut light_check = serde_json::Value::Null;
    if any_wanted(&PGBENCH) {
        let (port, _pg) = start_postgres(&dir)?;
        for (sel, name) in [(true, PGBENCH[0]), (false, PGBENCH[1])] {
            if !wanted(name) {
                continue;
            }
            rows.push(ctx.scenario(name, port, || pgbench(port, sel, seconds))?);
        }
        // Several runs: a loss that strikes one run in three (a connection-setup race) must
        // not hide behind one lucky run. A light load too, interleaved, for the agent's cost
        // there.
        let mut checks = Vec::new();
        let mut light = Vec::new();
        for _ in 0..runs.max(3) {
            checks.push(fixed_rate_no_loss(
                &bin,
                sink_port,
                port,
                seconds.max(10),
                &dir,
                10_000,
            )?);
            light.push(fixed_rate_no_loss(
                &bin,
                sink_port,
                port,
                seconds.max(10),
                &dir,
                LIGHT_RATE,
            )?);
        }
        rate_check = serde_json::Value::Array(checks);
        light_check = serde_json::Value::Array(light);
    }
    let mut pipeline = pipeline_bench(&bin)?;
    pipeline["fixed_rate_10k"] = rate_check;
    pipeline["fixed_rate_light"] = light_check;
    write_results(&out_dir, &rows, &pipeline)
}

/// What every scenario shares.
struct Ctx<'a> {
    runs: u32,
    bin: &'a Path,
    sink_port: u16,
    dir: &'a Path,
}

impl Ctx<'_> {
    /// Interleaved untraced/traced runs of `load` against a server on `port`, then one run
    /// measuring the kernel programs' own cost.
    fn scenario(
        &self,
        name: &str,
        port: u16,
        mut load: impl FnMut() -> Result<Sample>,
    ) -> Result<Row> {
        let runs = interleaved(
            name,
            self.runs,
            self.bin,
            self.sink_port,
            &[port],
            self.dir,
            &mut load,
        )?;
        let hooks = hook_cost(self.bin, self.sink_port, &[port], self.dir, &mut load)?;
        eprintln!("bench {name} kernel programs: {hooks:?}");
        Ok(Row {
            scenario: name.into(),
            untraced: runs.untraced,
            traced: runs.traced,
            floor: runs.floor,
            all_sampled_out: runs.all_sampled_out,
            hooks,
        })
    }
}

/// The bench's scratch directory (server data, agent stats), removed when the bench ends:
/// each run initialises its own PostgreSQL cluster, about 150 MiB.
struct WorkDir(PathBuf);

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir(base: &Path) -> Result<WorkDir> {
    let d = base.join(format!("work-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(WorkDir(d))
}

fn sink_bin() -> Result<PathBuf> {
    sh(Command::new("cargo").current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "tracewire-e2e",
        "--bin",
        "otlp-sink",
        "--bin",
        "pingpong",
    ]))?;
    Ok(root().join("target/release/otlp-sink"))
}

fn start_nginx(dir: &Path) -> Result<(u16, Guard)> {
    let port = free_port()?;
    let d = dir.join("nginx");
    std::fs::create_dir_all(&d)?;
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 1024; }}\nhttp {{ access_log off; server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"hello\\n\"; }} }} }}\n",
        d = d.display()
    );
    std::fs::write(d.join("nginx.conf"), conf)?;
    let g = Guard(
        Command::new("nginx")
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(&d)
            .spawn()?,
    );
    wait_port(port)?;
    Ok((port, g))
}

pub fn start_redis(dir: &Path) -> Result<(u16, Guard)> {
    let port = free_port()?;
    let g = Guard(
        Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no", "--dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()?,
    );
    wait_port(port)?;
    Ok((port, g))
}

fn start_postgres(dir: &Path) -> Result<(u16, Guard)> {
    let (port, g) = start_postgres_db(dir, "bench")?;
    sh(Command::new("pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-i",
            "-s",
            "2",
            "-q",
            "bench",
        ])
        .stderr(Stdio::null()))?;
    Ok((port, g))
}

/// A fresh PostgreSQL cluster (trust auth) with database `db`.
pub fn start_postgres_db(dir: &Path, db: &str) -> Result<(u16, Guard)> {
    use std::os::unix::process::CommandExt;
    let port = free_port()?;
    let pg = std::fs::read_dir("/usr/lib/postgresql")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .max()
        .context("postgresql not installed")?
        .join("bin");
    let data = dir.join("pgdata");
    let _ = std::fs::remove_dir_all(&data);
    std::fs::create_dir_all(&data)?;
    let ids = output(Command::new("id").args(["-u", "postgres"]))?;
    let uid: u32 = ids.trim().parse()?;
    let gid: u32 = output(Command::new("id").args(["-g", "postgres"]))?
        .trim()
        .parse()?;
    sh(Command::new("chown")
        .arg("-R")
        .arg("postgres:postgres")
        .arg(dir))?;
    sh(Command::new(pg.join("initdb"))
        .args(["-A", "trust", "-U", "postgres", "-D"])
        .arg(&data)
        .uid(uid)
        .gid(gid)
        .stdout(Stdio::null()))?;
    let g = Guard(
        Command::new(pg.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-k",
            ])
            .arg(dir)
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_port(port)?;
    std::thread::sleep(Duration::from_millis(500));
    let psql = |sql: &str| {
        output(Command::new("psql").args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
            "-c",
            sql,
        ]))
    };
    psql(&format!("CREATE DATABASE {db}"))?;
    Ok((port, g))
}

/// The offline pipeline benchmark: `tracewire bench-pipeline` replays recorded events through
/// conntrack, parsers, span building and OTLP encoding on one core.
fn pipeline_bench(bin: &Path) -> Result<serde_json::Value> {
    let out = output(Command::new(bin).args(["bench-pipeline", "--json"]))?;
    serde_json::from_str(out.trim()).context("bench-pipeline output")
}

fn write_results(dir: &Path, rows: &[Row], pipeline: &serde_json::Value) -> Result<()> {
    let rows_json: Vec<serde_json::Value> = rows.iter().map(Row::json).collect();
    let json = serde_json::json!({ "scenarios": rows_json, "pipeline": pipeline });
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let mut md = String::from(
        "| scenario | untraced (median) | traced (median) | ratio | hooks-only ratio | all sampled out ratio | paired ratios: traced / all sampled out / hooks-only | p99 ratio (first second) | spread u/t | agent CPU (cores) | spans/s | CPU % per 10k spans/s | peak RSS MiB | drops (of them in export) | sampled out (lowest budget/s, share of the run the node was saturated) | settled on arrival / released early / orphaned | kernel programs (cores, ns/call) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in &rows_json {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let _ = writeln!(
            md,
            "| {} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} / {:.3} / {:.3} | {:.2} ({:.2}) | {:.1}%/{:.1}% | {:.3} | {:.0} | {:.1} | {:.1} | {} ({}) | {:.0}% ({}, {:.0}%) | {:.0}% / {:.0}% / {:.2}% | {:.3}, {:.0} |",
            r["scenario"].as_str().unwrap_or(""),
            f("untraced_median"),
            f("traced_median"),
            f("ratio"),
            f("hooks_only_ratio"),
            f("all_sampled_out_ratio"),
            f("paired_ratio"),
            f("paired_all_sampled_out_ratio"),
            f("paired_hooks_only_ratio"),
            f("p99_ratio"),
            f("p99_start_ratio"),
            f("untraced_spread") * 100.0,
            f("traced_spread") * 100.0,
            f("agent_cpu_cores"),
            f("spans_per_s"),
            f("agent_cpu_pct_per_10k_spans"),
            f("agent_peak_rss_mib"),
            r["drops"],
            r["export_drops"],
            f("sampled_out_fraction") * 100.0,
            r["budget_lowest"],
            f("node_saturated_fraction") * 100.0,
            f("settled_on_arrival_fraction") * 100.0,
            f("forced_release_fraction") * 100.0,
            f("orphaned_fraction") * 100.0,
            f("hook_cpu_cores"),
            f("hook_ns_per_call"),
        );
    }
    let fixed: Vec<&serde_json::Value> = ["fixed_rate_10k", "fixed_rate_light"]
        .iter()
        .filter_map(|k| pipeline[*k].as_array())
        .flatten()
        .collect();
    if !fixed.is_empty() {
        md.push_str(
            "\n| fixed rate (traced) | transactions | spans | missing | drops | agent CPU (% of a core) | agent CPU per span (µs) | agent threads scheduled/s |\n|---|---|---|---|---|---|---|---|\n",
        );
        for r in fixed {
            let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {:.2} | {:.1} | {:.0} |",
                r["scenario"].as_str().unwrap_or("?"),
                r["transactions"],
                r["spans_exported"],
                r["missing"],
                r["total_drops"],
                f("agent_cpu_pct_of_core"),
                f("agent_cpu_us_per_span"),
                f("agent_threads_scheduled_per_s"),
            );
        }
    }
    let _ = writeln!(md, "\nPipeline (offline, one core): {pipeline}");
    std::fs::write(dir.join("results.md"), &md)?;
    println!("{md}");
    Ok(())
}
