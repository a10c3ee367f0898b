//! tracewire: the userspace daemon. See `shared/design.md` for the stages.

pub mod correlate;
pub mod discovery;
pub mod export;
pub mod exportcfg;
pub mod model;
pub mod spans;
