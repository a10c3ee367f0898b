//! A minimal OTLP/gRPC collector for benchmarks: accepts trace exports, counts spans, keeps
//! nothing (so its memory stays flat under load). Prints its endpoint, then the running count
//! to stderr every second.
//!
//! It stands in for a collector that would run off the node, on the same 2 cores as the
//! benchmarked servers, so it must cost as little as possible: requests are decoded only as
//! far as the span list (each span stays an undecoded byte slice), not into full span
//! messages. A fully decoding receiver cost about 9% of a core at 30k spans/s, charged to the
//! agent's overhead in the benchmark.
//!
//! usage: otlp-sink [PORT]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::CompressionEncoding;
use tonic::codegen::{Body, StdError, http};

/// `ExportTraceServiceRequest` down to the spans, which stay undecoded.
#[derive(Clone, PartialEq, prost::Message)]
struct CountRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<CountResourceSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountResourceSpans {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<CountScopeSpans>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct CountScopeSpans {
    #[prost(bytes = "bytes", repeated, tag = "2")]
    spans: Vec<prost::bytes::Bytes>,
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

#[derive(Clone)]
struct Sink(Arc<AtomicU64>);

impl tonic::server::NamedService for Sink {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

struct Export(Arc<AtomicU64>);

impl tonic::server::UnaryService<CountRequest> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = std::future::Ready<Result<tonic::Response<Self::Response>, tonic::Status>>;

    fn call(&mut self, req: tonic::Request<CountRequest>) -> Self::Future {
        let n: usize = req
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        std::future::ready(Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        })))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send + 'static>>;

impl<B> tonic::codegen::Service<http::Request<B>> for Sink
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let count = Arc::clone(&self.0);
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async move {
                Ok(tonic::Status::unimplemented("only trace export").into_http())
            });
        }
        Box::pin(async move {
            let codec =
                tonic_prost::ProstCodec::<ExportTraceServiceResponse, CountRequest>::default();
            let mut grpc = tonic::server::Grpc::new(codec).apply_compression_config(
                tonic::codec::EnabledCompressionEncodings::default().tap(CompressionEncoding::Gzip),
                tonic::codec::EnabledCompressionEncodings::default(),
            );
            Ok(grpc.unary(Export(count), req).await)
        })
    }
}

/// `EnabledCompressionEncodings::enable` returns nothing; a builder-style helper.
trait Tap {
    fn tap(self, e: CompressionEncoding) -> Self;
}

impl Tap for tonic::codec::EnabledCompressionEncodings {
    fn tap(mut self, e: CompressionEncoding) -> Self {
        self.enable(e);
        self
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = std::env::args()
        .nth(1)
        .map(|p| p.parse())
        .transpose()?
        .unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("http://{addr}");
    let count = Arc::new(AtomicU64::new(0));
    let c2 = Arc::clone(&count);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            eprintln!("otlp-sink: spans={}", c2.load(Ordering::Relaxed));
        }
    });
    tonic::transport::Server::builder()
        .add_service(Sink(count))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
