//! tracewire: the userspace daemon. See `shared/design.md` for the stages.

pub mod benchpipe;
pub mod capture_view;
pub mod conntrack;
pub mod correlate;
pub mod cpuclass;
pub mod cpuslice;
pub mod daemon;
pub mod discovery;
pub mod export;
pub mod exportcfg;
pub mod handoff;
pub mod hostcpu;
pub mod ingest;
pub mod listening;
pub mod memory;
pub mod model;
pub mod probes;
pub mod sampler;
pub mod spans;
mod varint;
pub mod yielding;
