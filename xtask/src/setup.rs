//! Idempotent installation of what builds and tests need: nightly rust-src, bpf-linker 0.10.0,
//! and the Debian packages for the servers and clients the end-to-end tests drive.

use std::process::Command;

use anyhow::{Context, Result};

use crate::run;

const BPF_LINKER_VERSION: &str = "0.10.0";

/// Debian packages the tests use (servers, clients, load generators).
const PACKAGES: &[&str] = &[
    "nginx",
    "curl",
    "wrk",
    "postgresql",
    "postgresql-contrib",
    "redis-server",
    "redis-tools",
    "mariadb-server",
    "mariadb-client",
    "python3-grpcio",
    "python3-psycopg2",
    "python3-redis",
];

fn output(cmd: &str, args: &[&str]) -> Option<String> {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

pub fn toolchain() -> Result<()> {
    let installed = output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", "nightly"],
    )
    .unwrap_or_default();
    if !installed.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    let have = output("bpf-linker", &["--version"]).unwrap_or_default();
    if !have.contains(BPF_LINKER_VERSION) {
        run(Command::new("cargo").args([
            "install",
            &format!("bpf-linker@{BPF_LINKER_VERSION}"),
            "--locked",
            "--force",
        ]))?;
    }
    Ok(())
}

pub fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !output("dpkg-query", &["-W", "-f=${Status}", p])
                .is_some_and(|s| s.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
    .context("installing test packages (needs root and the Debian mirror)")
}

pub fn all() -> Result<()> {
    toolchain()?;
    packages()
}

/// A short run of every fuzz target, when cargo-fuzz is available (installed here if not).
pub fn fuzz_short_runs() -> Result<()> {
    let fuzz_dir = crate::root().join("fuzz");
    if !fuzz_dir.join("Cargo.toml").exists() {
        return Ok(());
    }
    if output("cargo", &["fuzz", "--version"]).is_none() {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    let list =
        output("cargo", &["+nightly", "fuzz", "list", "--fuzz-dir", "fuzz"]).unwrap_or_default();
    for target in list.lines().map(str::trim).filter(|t| !t.is_empty()) {
        // Seeds: the local corpus (grown by every run, not committed) and the committed inputs
        // of past crashes, so each of those is replayed first on every run.
        let corpus = fuzz_dir.join("corpus").join(target);
        let regressions = fuzz_dir.join("regressions").join(target);
        std::fs::create_dir_all(&corpus)?;
        let mut cmd = Command::new("cargo");
        cmd.current_dir(crate::root())
            .args(["+nightly", "fuzz", "run", "--fuzz-dir", "fuzz", target])
            .arg(&corpus);
        if regressions.is_dir() {
            cmd.arg(&regressions);
        }
        // A fixed seed and run count: the gate is deterministic (a crash it finds is found
        // again on every machine); open-ended fuzzing is the longer run in the README.
        run(cmd.args([
            "--",
            "-seed=20261124",
            "-runs=250000",
            "-max_total_time=120",
        ]))?;
    }
    Ok(())
}
