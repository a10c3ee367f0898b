//! `cargo xtask run | test | bench | setup`: one entry point that installs what is missing
//! (idempotently), builds, and runs.

mod bench;
mod demo;
mod setup;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain parts and Debian packages the build and tests need (idempotent).
    Setup,
    /// Build and start the agent (default: live console view of traces).
    Run {
        /// Arguments passed to `tracewire run`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Build and run every test: unit, parser fixtures, short fuzz runs, end-to-end with eBPF.
    Test {
        /// Skip the short fuzz runs.
        #[arg(long)]
        no_fuzz: bool,
        /// Only run tests whose name contains this filter.
        filter: Option<String>,
    },
    /// A demo chain (curl -> frontend -> backend -> PostgreSQL + Redis) traced by the agent;
    /// prints the trace trees.
    Demo {
        #[arg(long, default_value_t = 2)]
        requests: u32,
    },
    /// Overhead benchmarks: traced vs untraced, written to target/bench/.
    Bench {
        /// Runs per scenario and mode (interleaved).
        #[arg(long, default_value_t = 3)]
        runs: u32,
        /// Seconds per load run.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Only scenarios whose name contains this (nginx, redis, pgbench, "-P 16", ...).
        #[arg(long)]
        only: Option<String>,
    },
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: {cmd:?}");
    let st = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

pub fn build_agent(release: bool) -> Result<PathBuf> {
    let mut c = cargo();
    c.args(["build", "-p", "tracewire"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    Ok(root()
        .join("target")
        .join(if release { "release" } else { "debug" })
        .join("tracewire"))
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Setup => setup::all(),
        Cmd::Run { args } => {
            setup::toolchain()?;
            let bin = build_agent(true)?;
            let mut c = Command::new(bin);
            c.arg("run").args(args);
            run(&mut c)
        }
        Cmd::Test { no_fuzz, filter } => test(no_fuzz, filter),
        Cmd::Demo { requests } => {
            setup::all()?;
            demo::run(requests)
        }
        Cmd::Bench {
            runs,
            seconds,
            only,
        } => {
            setup::all()?;
            bench::run(runs, seconds, only.as_deref())
        }
    }
}

fn test(no_fuzz: bool, filter: Option<String>) -> Result<()> {
    setup::all()?;
    let bin = build_agent(true)?;
    run(cargo().args(["fmt", "--all", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "agent-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The kernel programs are linted for the target they run on, through the rustup proxy
    // (`+nightly` is a rustup feature, not cargo's).
    run(Command::new("cargo").current_dir(root()).args([
        "+nightly",
        "clippy",
        "-p",
        "agent-ebpf",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Unit, parser fixture and property tests (release: the replay tests are heavy).
    let mut c = cargo();
    c.args([
        "test",
        "--workspace",
        "--release",
        "--exclude",
        "agent-ebpf",
        "--exclude",
        "tracewire-e2e",
    ]);
    if let Some(f) = &filter {
        c.arg(f);
    }
    run(&mut c)?;
    // End-to-end: each test loads the programs and starts real servers; two at a time keeps a
    // 2-core machine from starving them.
    let mut c = cargo();
    c.args(["test", "--release", "-p", "tracewire-e2e"]);
    c.env("TRACEWIRE_BIN", &bin);
    if let Some(f) = &filter {
        c.arg(f);
    }
    c.args(["--", "--test-threads=2"]);
    run(&mut c)?;
    if !no_fuzz && filter.is_none() {
        setup::fuzz_short_runs()?;
    }
    eprintln!("xtask: all tests passed");
    Ok(())
}
