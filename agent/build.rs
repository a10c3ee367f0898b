//! Builds the kernel programs (agent-ebpf) for the bpf target with the nightly toolchain and
//! bpf-linker, and embeds them in the daemon. `cargo xtask` installs what this needs.
use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or_else(|| anyhow!("agent crate has no parent dir"))?
        .join("agent-ebpf");
    let root = root.to_str().context("non-UTF-8 path")?;
    let pkg = Package {
        name: "agent-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([pkg], Toolchain::default())
}
