//! `cargo xtask bench` (see README): not yet implemented.

use anyhow::{Result, bail};

pub fn run(_runs: u32, _seconds: u32) -> Result<()> {
    bail!("cargo xtask bench is not implemented yet")
}
