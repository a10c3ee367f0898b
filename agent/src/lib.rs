//! tracewire: the userspace daemon. See `shared/design.md` for the stages.

pub mod model;
