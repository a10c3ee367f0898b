//! Exporter config.
