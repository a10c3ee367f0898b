//! End-to-end test support: the real agent, real servers and clients, each behind a guard that
//! stops only the process it started when dropped.

pub mod agent;
pub mod clients;
pub mod env;
pub mod otlp_receiver;
pub mod servers;
