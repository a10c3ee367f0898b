//! `tracewire`: command line only; the work lives in the library.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tracewire::capture_view::{ConnInfoCache, format_event};
use tracewire::probes::{self, ProbeConfig, Probes, ProcessFilter};

#[derive(Parser)]
#[command(name = "tracewire", version, about = "eBPF zero-code tracing agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone, Default)]
struct FilterArgs {
    /// Trace only this process (repeatable).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// Trace only processes with this executable name (first 15 bytes, repeatable).
    #[arg(long = "exe")]
    exes: Vec<String>,
    /// Trace only connections with this local or remote port (repeatable).
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// Payload bytes captured per syscall (1..=16384).
    #[arg(long, default_value_t = agent_common::DEFAULT_CAPTURE_BYTES)]
    capture_bytes: u32,
}

impl FilterArgs {
    fn probe_config(&self) -> ProbeConfig {
        ProbeConfig {
            capture_bytes: self.capture_bytes,
            filter: ProcessFilter {
                pids: self.pids.clone(),
                exes: self.exes.clone(),
                ports: self.ports.clone(),
            },
            ..ProbeConfig::default()
        }
    }
}

#[derive(clap::Args, Clone, Default)]
struct ExportFlags {
    /// Exporters: otlp, console, jsonl, none (repeatable). Default: console, or otlp when an
    /// OTLP endpoint is configured.
    #[arg(long = "exporter")]
    exporters: Vec<String>,
    /// OTLP endpoint (overrides OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT).
    #[arg(long)]
    endpoint: Option<String>,
    /// grpc or http/protobuf (overrides OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL).
    #[arg(long)]
    protocol: Option<String>,
    /// k=v,k2=v2 (overrides OTEL_EXPORTER_OTLP_[TRACES_]HEADERS).
    #[arg(long)]
    headers: Option<String>,
    /// Export timeout in ms (overrides OTEL_EXPORTER_OTLP_[TRACES_]TIMEOUT).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// gzip or none (overrides OTEL_EXPORTER_OTLP_[TRACES_]COMPRESSION).
    #[arg(long)]
    compression: Option<String>,
    /// jsonl exporter output file (default stdout).
    #[arg(long)]
    jsonl_path: Option<std::path::PathBuf>,
    /// Spans per OTLP request.
    #[arg(long)]
    max_batch: Option<usize>,
    /// Longest wait before a partial batch is sent (ms).
    #[arg(long)]
    max_delay_ms: Option<u64>,
    /// Spans queued for export; beyond it they are dropped and counted.
    #[arg(long)]
    max_queue: Option<usize>,
    /// Also export RED metrics (request rate, errors, duration) over OTLP.
    #[arg(long)]
    red_metrics: bool,
    /// RED metrics export interval (ms).
    #[arg(long)]
    metrics_interval_ms: Option<u64>,
}

impl ExportFlags {
    fn args(&self) -> tracewire::exportcfg::ExportArgs {
        tracewire::exportcfg::ExportArgs {
            exporters: self.exporters.clone(),
            endpoint: self.endpoint.clone(),
            protocol: self.protocol.clone(),
            headers: self.headers.clone(),
            timeout_ms: self.timeout_ms,
            compression: self.compression.clone(),
            jsonl_path: self.jsonl_path.clone(),
            max_batch: self.max_batch,
            max_delay_ms: self.max_delay_ms,
            max_queue: self.max_queue,
            red_metrics: self.red_metrics.then_some(true),
            metrics_interval_ms: self.metrics_interval_ms,
        }
    }
}

#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    filter: FilterArgs,
    #[command(flatten)]
    export: ExportFlags,
    /// Keep SQL text as sent (with literals) in addition to the sanitized text.
    #[arg(long)]
    keep_raw_query: bool,
    /// Most connections tracked; the least recently active are evicted beyond it.
    #[arg(long, default_value_t = 16384)]
    max_conns: usize,
    /// Export process.command_line (off by default: command lines often carry secrets).
    #[arg(long)]
    command_line: bool,
    /// host.name for every resource (default: this host's name; in Kubernetes pass the node
    /// name).
    #[arg(long, env = "TRACEWIRE_HOST_NAME")]
    host_name: Option<String>,
    /// How long a finished span waits for its parent or children before export (ms).
    #[arg(long, default_value_t = 1500)]
    link_hold_ms: u64,
    /// Most finished spans held for linking; beyond it spans are released early (counted).
    #[arg(long, default_value_t = 32768)]
    max_held_spans: usize,
    /// Write final counters as JSON to this file on exit.
    #[arg(long)]
    stats_file: Option<std::path::PathBuf>,
    /// Log counters every N seconds.
    #[arg(long, default_value_t = 30)]
    stats_interval: u64,
    /// Calls per second captured in full (requests or commands, each end of a connection
    /// counting once). Beyond it whole exchanges are sampled out in the kernel, the same ones
    /// at both ends of a local connection, and counted (`sampled_out`). HTTP/2 and gRPC are
    /// never sampled. 0: no limit.
    #[arg(long, default_value_t = 30_000)]
    capture_budget: u64,
    /// The capture budget while the node's CPUs are saturated (less than 0.4 of a core idle,
    /// smoothed over a few 100 ms intervals, or less than 0.1 in one; lifted once more than
    /// 0.6 is idle again), per CPU of the node: there the agent's CPU is taken from the
    /// applications, and their tail latency follows it (see the README). 0: the capture
    /// budget throughout.
    #[arg(long, default_value_t = 1_000)]
    saturated_budget_per_cpu: u64,
    /// The scheduler slice the agent's threads ask for, in ms (EEVDF, Linux 6.12+; the kernel
    /// grants 0.1-100). The longest makes an application thread that wakes preempt the agent
    /// at once: lower application tail latency on a saturated node, but the agent falls
    /// behind bursts more often (spans dropped and counted). 0: the kernel's default slice.
    #[arg(long, default_value_t = 0)]
    cpu_slice_ms: u64,
    /// Run the agent's threads in the idle scheduling class (SCHED_IDLE) while the node is
    /// saturated and the agent keeps up: an application thread that wakes takes the CPU at
    /// once (lower application tail latency). Back to the normal class for 100 ms whenever
    /// it falls behind. Needs CAP_SYS_NICE to leave the idle class; without it the agent
    /// stays in the normal class.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    idle_when_saturated: bool,
    /// Benchmark floor: attach a program that returns at once to every hook and capture
    /// nothing, to measure what the hooks alone cost on this kernel.
    #[arg(long)]
    hooks_only: bool,
    #[command(flatten)]
    hooks: HookArgs,
}

/// How syscalls are hooked.
#[derive(clap::Args, Clone, Copy)]
struct HookArgs {
    /// Hook every syscall through `raw_syscalls:sys_enter`/`sys_exit`, one program each that
    /// dispatches by syscall number, instead of one `syscalls:*` tracepoint per traced
    /// syscall: about 110 ns less per traced write and 20 ns less per read, but every other
    /// syscall on the node pays about 65 ns. For nodes whose work is mostly socket I/O from
    /// blocking threads; x86_64 only (elsewhere, or where it does not load, the default is
    /// used and the start-up log says why).
    #[arg(long)]
    raw_syscalls: bool,
    /// See reads through an entry and an exit program, as on kernels where their exit cannot
    /// read the arguments from the saved registers (before 5.15). Overrides --raw-syscalls.
    /// By default a read costs one program run, at its exit.
    #[arg(long)]
    reads_at_entry: bool,
    /// Hook socket I/O through syscall tracepoints even where the kernel has the socket
    /// tracepoints (`sock:sock_send_length`/`sock_recv_length`, 6.3+, the default there),
    /// which cost nothing on syscalls that do not touch a socket.
    #[arg(long)]
    syscall_tracepoints: bool,
}

impl HookArgs {
    fn apply(self, cfg: ProbeConfig) -> ProbeConfig {
        ProbeConfig {
            reads_at_entry: self.reads_at_entry,
            raw_syscalls_dispatch: self.raw_syscalls && !self.reads_at_entry,
            syscall_tracepoints: self.syscall_tracepoints,
            ..cfg
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// The daemon: capture, parse, build spans, link them into traces and export them.
    Run(Box<RunArgs>),
    /// Report the kernel, BTF and every hook the agent uses; non-zero exit when one is missing.
    Check,
    /// Print every captured connection and data event (the debugging view).
    Capture {
        #[command(flatten)]
        filter: FilterArgs,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        /// Stop after this many seconds (default: until Ctrl-C).
        #[arg(long)]
        duration: Option<f64>,
        #[command(flatten)]
        hooks: HookArgs,
    },
    /// Offline benchmark of the userspace path (conntrack, parsers, spans, correlation, OTLP
    /// encoding) on synthetic captured events; one core.
    BenchPipeline {
        /// Request/response exchanges per protocol.
        #[arg(long, default_value_t = 200_000)]
        exchanges: u64,
        #[arg(long)]
        json: bool,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Run(args) => run(*args),
        Cmd::Check => check(),
        Cmd::BenchPipeline { exchanges, json } => {
            let http = tracewire::benchpipe::median_run(false, exchanges);
            let redis = tracewire::benchpipe::median_run(true, exchanges);
            if json {
                println!("{}", serde_json::json!({ "http1": http, "redis": redis }));
            } else {
                for (name, f) in [("http1", http), ("redis", redis)] {
                    println!(
                        "{name}: {:.0} events/s, {:.0} spans/s ({} spans in {:.2}s, {} OTLP bytes)",
                        f.events_per_s, f.spans_per_s, f.spans, f.seconds, f.otlp_bytes
                    );
                }
            }
            Ok(())
        }
        Cmd::Capture {
            filter,
            json,
            duration,
            hooks,
        } => capture(&filter, json, duration, hooks),
        Cmd::Version => {
            println!("tracewire {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracewire: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> Result<()> {
    let RunArgs {
        filter,
        export,
        keep_raw_query,
        max_conns,
        stats_file,
        stats_interval,
        command_line,
        host_name,
        link_hold_ms,
        max_held_spans,
        capture_budget,
        saturated_budget_per_cpu,
        cpu_slice_ms,
        idle_when_saturated,
        hooks_only,
        hooks,
    } = args;
    let export = tracewire::exportcfg::ExportConfig::from_env(&export.args())
        .context("export configuration")?;
    let mut pipeline = tracewire::export::pipeline::PipelineConfig::new(export);
    pipeline.discovery.capture_cmdline = command_line;
    pipeline.discovery.host_name = host_name;
    pipeline.spans.db_raw_query = keep_raw_query;
    pipeline.correlate.hold = Duration::from_millis(link_hold_ms.max(1));
    pipeline.correlate.max_held = max_held_spans.max(16);
    let mut conntrack = tracewire::conntrack::ConntrackConfig {
        max_conns: max_conns.max(16),
        ..Default::default()
    };
    conntrack.parser.keep_raw_query = keep_raw_query;
    let cfg = tracewire::daemon::DaemonConfig {
        probes: hooks.apply(ProbeConfig {
            hooks_only,
            ..filter.probe_config()
        }),
        conntrack,
        pipeline,
        channel_capacity: 16384,
        stats_file,
        stats_interval: Duration::from_secs(stats_interval.max(1)),
        capture_budget,
        saturated_budget_per_cpu,
        cpu_slice: (cpu_slice_ms > 0).then(|| Duration::from_millis(cpu_slice_ms)),
        idle_when_saturated,
    };
    tracewire::daemon::run(cfg, stop_flag()?)?;
    Ok(())
}

fn check() -> Result<()> {
    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel: {}", uname.trim());
    let btf = std::path::Path::new(probes::btf::VMLINUX_BTF);
    println!(
        "btf: {} ({})",
        btf.display(),
        if btf.exists() { "present" } else { "MISSING" }
    );
    let root = probes::preflight()?;
    println!("tracefs: {}", root.display());
    let sockets_present = probes::sockets_present(&root);
    let mut required = Vec::new();
    // Any missing hook rules out the modes that attach every one of them.
    let mut syscall_modes_missing = false;
    // The entry-and-exit read hooks name every tracepoint either way of seeing reads uses.
    for h in probes::HOOKS.iter().chain(probes::READ_HOOKS_ENTRY_EXIT) {
        let st = probes::hook_status(&root, h);
        match &st {
            probes::HookStatus::Available => {
                println!(
                    "hook tracepoint/{}/{}: available ({})",
                    h.category, h.name, h.purpose
                )
            }
            probes::HookStatus::Missing(why) => {
                let need = if probes::required(h, sockets_present) {
                    required.push(h.name);
                    "required"
                } else {
                    "not needed by the default, the socket tracepoints"
                };
                println!(
                    "hook tracepoint/{}/{}: MISSING ({need}): {why}",
                    h.category, h.name
                );
                syscall_modes_missing = true;
            }
        }
    }
    print_hook_statuses(
        &root,
        probes::OPTIONAL_HOOKS,
        "optional",
        "absent, not needed",
    );
    print_hook_statuses(
        &root,
        probes::SOCKET_HOOKS,
        "BTF-typed, the default where present",
        "absent, syscall tracepoints are used",
    );
    print_hook_statuses(
        &root,
        probes::RAW_SYSCALL_HOOKS,
        "BTF-typed, with --raw-syscalls",
        "absent, --raw-syscalls falls back to the default",
    );
    println!("hook kprobe/fentry: not used (tracepoints suffice)");
    match tracewire::cpuclass::can_switch(0) {
        Ok(()) => println!(
            "scheduling: the idle class can be entered and left (--idle-when-saturated works)"
        ),
        Err(e) => println!(
            "scheduling: leaving the idle class refused ({e}; needs CAP_SYS_NICE): the agent stays in the normal class"
        ),
    }
    if !required.is_empty() {
        anyhow::bail!("required hooks missing: {}", required.join(", "));
    }
    // Prove the programs pass the verifier and attach here.
    let p = Probes::load(&ProbeConfig::default())?;
    println!("programs: loaded and attached {} hooks", p.attached.len());
    println!("socket i/o: {}", p.hooks_mode());
    println!("reads: {}", p.reads_mode());
    for (name, insns) in p.verifier_costs() {
        match insns {
            Some(n) => println!("verifier: {name}: {n} instructions processed (limit 1000000)"),
            None => println!("verifier: {name}: loaded (count not reported by this kernel)"),
        }
    }
    // The other ways must load too: the syscall tracepoints (what kernels without the socket
    // tracepoints get), `--raw-syscalls`, and the fallback a kernel refusing the exit-only
    // reads gets.
    drop(p);
    for (what, cfg) in [
        (
            "--syscall-tracepoints",
            ProbeConfig {
                syscall_tracepoints: true,
                ..ProbeConfig::default()
            },
        ),
        (
            "--raw-syscalls",
            ProbeConfig {
                raw_syscalls_dispatch: true,
                ..ProbeConfig::default()
            },
        ),
        (
            "reads at entry and exit",
            ProbeConfig {
                reads_at_entry: true,
                ..ProbeConfig::default()
            },
        ),
    ] {
        // Each of these ends on the per-syscall tracepoints (`--raw-syscalls` falls back to
        // them): a kernel without them runs the default only.
        if syscall_modes_missing {
            println!("also: {what}: not on this kernel (syscall tracepoints missing)");
            continue;
        }
        let p = Probes::load(&cfg).with_context(|| format!("loading {what}"))?;
        println!(
            "also: {}, reads {}: loads ({} hooks)",
            p.hooks_mode(),
            p.reads_mode(),
            p.attached.len()
        );
        if let Some((name, Some(n))) = p.verifier_costs().into_iter().next() {
            println!("  largest: {name}: {n} instructions processed (limit 1000000)");
        }
    }
    Ok(())
}

/// One line per hook the agent can do without: `label` says when it is used, `absent` what
/// happens when the kernel lacks it.
fn print_hook_statuses(root: &std::path::Path, hooks: &[probes::Hook], label: &str, absent: &str) {
    for h in hooks {
        let st = match probes::hook_status(root, h) {
            probes::HookStatus::Available => "available".to_string(),
            probes::HookStatus::Missing(why) => format!("{absent}: {why}"),
        };
        println!(
            "hook tracepoint/{}/{} ({label}): {st} ({})",
            h.category, h.name, h.purpose
        );
    }
}

fn stop_flag() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [libc::SIGINT, libc::SIGTERM] {
        signal_hook_register(sig, stop.clone())?;
    }
    Ok(stop)
}

fn signal_hook_register(sig: i32, flag: Arc<AtomicBool>) -> Result<()> {
    signal_hook::flag::register(sig, flag).context("installing signal handler")?;
    Ok(())
}

/// Prints every event; flushes after every drained batch.
struct CaptureSink<W: Write> {
    cache: ConnInfoCache,
    out: W,
    json: bool,
}

impl<W: Write> tracewire::ingest::EventSink for CaptureSink<W> {
    fn event(&mut self, ev: tracewire::ingest::EventRef<'_>) {
        if let Some(line) = format_event(&mut self.cache, ev, self.json) {
            let _ = writeln!(self.out, "{line}");
        }
    }

    fn tick(&mut self, _: &tracewire::ingest::IngestStats) {
        let _ = self.out.flush();
    }
}

fn capture(f: &FilterArgs, json: bool, duration: Option<f64>, hooks: HookArgs) -> Result<()> {
    let mut probes = Probes::load(&hooks.apply(f.probe_config()))?;
    eprintln!(
        "tracewire: capturing via {} tracepoints (no kprobes): {}; reads seen {}; Ctrl-C to stop",
        probes.attached.len(),
        probes.hooks_mode(),
        probes.reads_mode()
    );
    let mut ring = probes.take_ring()?;
    let stop = stop_flag()?;
    if let Some(d) = duration {
        let s = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(d.max(0.0)));
            s.store(true, Ordering::Relaxed);
        });
    }
    let stdout = std::io::stdout();
    let mut sink = CaptureSink {
        cache: ConnInfoCache::default(),
        out: std::io::BufWriter::new(stdout.lock()),
        json,
    };
    tracewire::ingest::run_loop(&mut ring, &stop, Duration::from_millis(20), &mut sink);
    let _ = sink.out.flush();
    let c = probes.counters()?;
    eprintln!(
        "tracewire: kernel counters: data={} conn={} dropped={} truncated={} unknown_conns={} read_errors={} filtered={}",
        c.data_events,
        c.conn_events,
        c.dropped_events,
        c.truncated,
        c.unknown_conns,
        c.read_errors,
        c.filtered
    );
    Ok(())
}
