//! Parent inference.
