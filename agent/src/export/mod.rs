//! Exporters: OTLP (gRPC, HTTP/protobuf) with batching, retry and a bounded queue; a console
//! tree printer; a JSON-lines writer; and the pipeline task that feeds them.

pub mod batch;
pub mod console;
mod hex;
pub mod jsonl;
pub mod metrics;
pub mod otlp;
pub mod pipeline;
pub mod rawcodec;
pub mod transport;

pub use batch::{OtlpExporter, OtlpStats};
pub use hex::hex;
pub use pipeline::{
    ExportPressure, PipelineConfig, PipelineError, PipelineHandle, PipelineStats,
    spawn_span_pipeline,
};

#[cfg(test)]
mod tests;
