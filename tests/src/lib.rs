//! End-to-end test support.

pub mod otlp_receiver;
