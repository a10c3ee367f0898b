#![no_std]
//! Library target so the daemon can depend on this crate and be rebuilt when the programs change;
//! the programs themselves are the `agent-ebpf` binary.
