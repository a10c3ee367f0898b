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

#[derive(Subcommand)]
enum Cmd {
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
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Check => check(),
        Cmd::Capture {
            filter,
            json,
            duration,
        } => capture(&filter, json, duration),
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

fn check() -> Result<()> {
    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!("kernel: {}", uname.trim());
    let btf = std::path::Path::new(probes::btf::VMLINUX_BTF);
    println!(
        "btf: {} ({})",
        btf.display(),
        if btf.exists() { "present" } else { "MISSING" }
    );
    probes::preflight()?;
    let root = probes::hooks::tracefs_root().context("tracefs not found")?;
    println!("tracefs: {}", root.display());
    let mut missing = Vec::new();
    for h in probes::HOOKS {
        let st = probes::hook_status(&root, h);
        match &st {
            probes::HookStatus::Available => {
                println!(
                    "hook tracepoint/{}/{}: available ({})",
                    h.category, h.name, h.purpose
                )
            }
            probes::HookStatus::Missing(why) => {
                println!("hook tracepoint/{}/{}: MISSING: {why}", h.category, h.name);
                missing.push(h.name);
            }
        }
    }
    println!("hook kprobe/fentry: not used (tracepoints suffice)");
    if !missing.is_empty() {
        anyhow::bail!("required hooks missing: {}", missing.join(", "));
    }
    // Prove the programs pass the verifier and attach here.
    let p = Probes::load(&ProbeConfig::default())?;
    println!("programs: loaded and attached {} hooks", p.attached.len());
    Ok(())
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

fn capture(f: &FilterArgs, json: bool, duration: Option<f64>) -> Result<()> {
    let mut probes = Probes::load(&f.probe_config())?;
    eprintln!(
        "tracewire: capturing via {} tracepoints (no kprobes); Ctrl-C to stop",
        probes.attached.len()
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
    let mut cache = ConnInfoCache::default();
    let stdout = std::io::stdout();
    let out = std::cell::RefCell::new(std::io::BufWriter::new(stdout.lock()));
    tracewire::ingest::run_loop(
        &mut ring,
        &stop,
        Duration::from_millis(20),
        |ev| {
            if let Some(line) = format_event(&mut cache, ev, json) {
                let _ = writeln!(out.borrow_mut(), "{line}");
            }
        },
        |_| {
            let _ = out.borrow_mut().flush();
        },
    );
    let _ = out.borrow_mut().flush();
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
