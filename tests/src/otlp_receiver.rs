//! A local OTLP receiver for end-to-end tests: gRPC (TraceService) and HTTP/protobuf
//! (`POST /v1/traces`, `POST /v1/metrics`) on 127.0.0.1, collecting every span with its resource
//! (and metrics). It can be told to refuse (UNAVAILABLE / 503) or to stop listening, and restarted
//! on the same ports.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;

/// One received span with the resource and scope it came under.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    pub resource: Vec<KeyValue>,
    pub scope_name: String,
    pub span: Span,
    /// "grpc" or "http".
    pub via: &'static str,
}

/// Attribute value as a plain string (ints and bools formatted), for easy assertions.
pub fn value_str(v: &AnyValue) -> Option<String> {
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    }
}

pub fn attr(kvs: &[KeyValue], key: &str) -> Option<String> {
    kvs.iter()
        .find(|k| k.key == key)
        .and_then(|k| k.value.as_ref())
        .and_then(value_str)
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
    pub fn resource_attr(&self, key: &str) -> Option<String> {
        attr(&self.resource, key)
    }
}

#[derive(Default)]
struct State {
    spans: Mutex<Vec<ReceivedSpan>>,
    notify: Notify,
    requests: AtomicU64,
    refused: AtomicU64,
    refuse: AtomicBool,
    headers: Mutex<Vec<(String, String)>>,
    metrics: Mutex<Vec<ResourceMetrics>>,
}

impl State {
    fn store(&self, req: ExportTraceServiceRequest, via: &'static str) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut out = Vec::new();
        for rs in req.resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                let scope_name = ss.scope.map(|s| s.name).unwrap_or_default();
                for span in ss.spans {
                    out.push(ReceivedSpan {
                        resource: resource.clone(),
                        scope_name: scope_name.clone(),
                        span,
                        via,
                    });
                }
            }
        }
        if let Ok(mut v) = self.spans.lock() {
            v.extend(out);
        }
        self.notify.notify_waiters();
    }
}

impl State {
    fn store_metrics(&self, req: ExportMetricsServiceRequest) {
        if let Ok(mut v) = self.metrics.lock() {
            v.extend(req.resource_metrics);
        }
        self.notify.notify_waiters();
    }
}

struct GrpcMetrics(Arc<State>);

#[tonic::async_trait]
impl MetricsService for GrpcMetrics {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        if self.0.refuse.load(Ordering::SeqCst) {
            return Err(tonic::Status::unavailable("refusing (test)"));
        }
        self.0.store_metrics(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

async fn http_metrics(
    axum::extract::State(st): axum::extract::State<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    if st.refuse.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "refusing (test)").into_response();
    }
    let Some(raw) = decode_body(&headers, &body) else {
        return (StatusCode::BAD_REQUEST, "bad gzip").into_response();
    };
    match ExportMetricsServiceRequest::decode(&raw[..]) {
        Ok(req) => {
            st.store_metrics(req);
            let resp = ExportMetricsServiceResponse {
                partial_success: None,
            }
            .encode_to_vec();
            (
                StatusCode::OK,
                [("content-type", "application/x-protobuf")],
                resp,
            )
                .into_response()
        }
        Err(_) => (StatusCode::BAD_REQUEST, "bad protobuf").into_response(),
    }
}

fn decode_body(headers: &HeaderMap, body: &Bytes) -> Option<Vec<u8>> {
    let gz = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        == Some("gzip");
    if gz {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    } else {
        Some(body.to_vec())
    }
}

struct Grpc(Arc<State>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.0.refuse.load(Ordering::SeqCst) {
            self.0.refused.fetch_add(1, Ordering::SeqCst);
            return Err(tonic::Status::unavailable("refusing (test)"));
        }
        if let Ok(mut h) = self.0.headers.lock() {
            for (k, v) in request.metadata().clone().into_headers().iter() {
                h.push((k.to_string(), v.to_str().unwrap_or("").to_string()));
            }
        }
        self.0.store(request.into_inner(), "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

async fn http_export(
    axum::extract::State(st): axum::extract::State<Arc<State>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    if st.refuse.load(Ordering::SeqCst) {
        st.refused.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::SERVICE_UNAVAILABLE, "refusing (test)").into_response();
    }
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-protobuf") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "want application/x-protobuf",
        )
            .into_response();
    }
    if let Ok(mut h) = st.headers.lock() {
        for (k, v) in headers.iter() {
            h.push((k.to_string(), v.to_str().unwrap_or("").to_string()));
        }
    }
    let Some(raw) = decode_body(&headers, &body) else {
        return (StatusCode::BAD_REQUEST, "bad gzip").into_response();
    };
    match ExportTraceServiceRequest::decode(&raw[..]) {
        Ok(req) => {
            st.store(req, "http");
            let resp = ExportTraceServiceResponse {
                partial_success: None,
            }
            .encode_to_vec();
            (
                StatusCode::OK,
                [("content-type", "application/x-protobuf")],
                resp,
            )
                .into_response()
        }
        Err(_) => (StatusCode::BAD_REQUEST, "bad protobuf").into_response(),
    }
}

struct Running {
    stop: oneshot::Sender<()>,
    join: JoinHandle<()>,
}

/// The receiver. Servers run on the current tokio runtime.
pub struct OtlpReceiver {
    state: Arc<State>,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    running: Mutex<Vec<Running>>,
}

impl OtlpReceiver {
    /// Bind both servers on free loopback ports.
    pub async fn start() -> Self {
        let g = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let h = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await;
        let rx = OtlpReceiver {
            state: Arc::new(State::default()),
            grpc_addr: local(&g),
            http_addr: local(&h),
            running: Mutex::new(Vec::new()),
        };
        rx.launch(g, h);
        rx
    }

    fn launch(&self, g: TcpListener, h: TcpListener) {
        let (gs, gr) = oneshot::channel::<()>();
        let svc = TraceServiceServer::new(Grpc(Arc::clone(&self.state)))
            .accept_compressed(CompressionEncoding::Gzip);
        let msvc = MetricsServiceServer::new(GrpcMetrics(Arc::clone(&self.state)))
            .accept_compressed(CompressionEncoding::Gzip);
        let gjoin = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .add_service(msvc)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(g),
                    async {
                        let _ = gr.await;
                    },
                )
                .await;
        });
        let (hs, hr) = oneshot::channel::<()>();
        let app = axum::Router::new()
            .route("/v1/traces", axum::routing::post(http_export))
            .route("/v1/metrics", axum::routing::post(http_metrics))
            .with_state(Arc::clone(&self.state));
        let hjoin = tokio::spawn(async move {
            let _ = axum::serve(h, app)
                .with_graceful_shutdown(async {
                    let _ = hr.await;
                })
                .await;
        });
        if let Ok(mut r) = self.running.lock() {
            r.push(Running {
                stop: gs,
                join: gjoin,
            });
            r.push(Running {
                stop: hs,
                join: hjoin,
            });
        }
    }

    /// `http://127.0.0.1:port` for OTLP/gRPC.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// `http://127.0.0.1:port/v1/traces` for OTLP/HTTP.
    pub fn http_endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.http_addr)
    }

    /// Answer exports with UNAVAILABLE / 503 (true) or accept them (false).
    pub fn set_refuse(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::SeqCst);
    }

    /// Stop listening (clients get connection refused). Open connections are closed.
    pub async fn stop(&self) {
        let running: Vec<Running> = self
            .running
            .lock()
            .map(|mut r| r.drain(..).collect())
            .unwrap_or_default();
        for r in running {
            let _ = r.stop.send(());
            let mut join = r.join;
            if tokio::time::timeout(Duration::from_secs(2), &mut join)
                .await
                .is_err()
            {
                join.abort();
            }
        }
    }

    /// Listen again on the same ports.
    pub async fn restart(&self) {
        self.stop().await;
        let g = bind(self.grpc_addr).await;
        let h = bind(self.http_addr).await;
        self.launch(g, h);
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.state
            .spans
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    pub fn span_count(&self) -> usize {
        self.state.spans.lock().map(|v| v.len()).unwrap_or(0)
    }

    /// Export requests accepted.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Export requests refused while `set_refuse(true)`.
    pub fn refused(&self) -> u64 {
        self.state.refused.load(Ordering::SeqCst)
    }

    /// Request headers / gRPC metadata seen (lower-case names).
    pub fn headers(&self) -> Vec<(String, String)> {
        self.state
            .headers
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Every ResourceMetrics received, in arrival order.
    pub fn metrics(&self) -> Vec<ResourceMetrics> {
        self.state
            .metrics
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Wait until the ResourceMetrics received so far satisfy `pred`.
    pub async fn wait_for_metrics(
        &self,
        timeout: Duration,
        pred: impl Fn(&[ResourceMetrics]) -> bool,
    ) -> Option<Vec<ResourceMetrics>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.notify.notified();
            let m = self.metrics();
            if pred(&m) {
                return Some(m);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let m = self.metrics();
                return pred(&m).then_some(m);
            }
        }
    }

    pub fn clear(&self) {
        if let Ok(mut v) = self.state.spans.lock() {
            v.clear();
        }
    }

    /// Wait until at least `n` spans arrived; returns them, or None on timeout.
    pub async fn wait_for_spans(&self, n: usize, timeout: Duration) -> Option<Vec<ReceivedSpan>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.state.notify.notified();
            if self.span_count() >= n {
                return Some(self.spans());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return (self.span_count() >= n).then(|| self.spans());
            }
        }
    }
}

async fn bind(addr: SocketAddr) -> TcpListener {
    // The port may still be held briefly by the previous listener: retry for a moment.
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot bind OTLP receiver on {addr}: {last:?}");
}

fn local(l: &TcpListener) -> SocketAddr {
    match l.local_addr() {
        Ok(a) => a,
        Err(e) => panic!("listener address: {e}"),
    }
}
