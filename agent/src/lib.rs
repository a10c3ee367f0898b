//! tracewire: the userspace daemon. See `shared/design.md` for the stages.

pub mod capture_view;
pub mod conntrack;
pub mod ingest;
pub mod listening;
pub mod model;
pub mod probes;
