//! The span pipeline exporting to a local OTLP receiver over gRPC and HTTP/protobuf, and
//! surviving a collector that is down.

use std::net::SocketAddr;
use std::time::Duration;

use agent_protocols::{Detail, HttpInfo, ProtocolKind, Record, RedisInfo};
use tracewire::correlate::CorrelatorConfig;
use tracewire::export::{PipelineConfig, PipelineHandle, spawn_span_pipeline};
use tracewire::exportcfg::{
    BatchConfig, Compression, ExportConfig, ExporterKind, OtlpConfig, OtlpProtocol,
};
use tracewire::model::{ConnMeta, Exchange, Role};
use tracewire::spans::ClockOffset;
use tracewire_e2e::otlp_receiver::{OtlpReceiver, ReceivedSpan};

fn addr(s: &str) -> SocketAddr {
    match s.parse() {
        Ok(a) => a,
        Err(e) => panic!("{s}: {e}"),
    }
}

#[allow(clippy::too_many_arguments)]
fn http_ex(
    pid: u32,
    tid: u32,
    conn_id: u64,
    role: Role,
    local: &str,
    remote: &str,
    path: &str,
    t: [u64; 4],
) -> Exchange {
    Exchange {
        conn: std::sync::Arc::new(ConnMeta {
            conn_id,
            pid,
            fd: 5,
            role,
            local: Some(addr(local)),
            remote: Some(addr(remote)),
            unix_path: None,
            comm: String::new(),
        }),
        tid,
        record: Record {
            protocol: ProtocolKind::Http1,
            start_ns: t[0],
            request_end_ns: t[1],
            response_start_ns: t[2],
            end_ns: t[3],
            request_bytes: 80,
            response_bytes: 120,
            detail: Detail::Http(Box::new(HttpInfo {
                method: "GET".into(),
                path: path.into(),
                version: "1.1".into(),
                status: Some(200),
                ..Default::default()
            })),
        },
        seq: 0,
        pure_client: false,
    }
}

fn redis_ex(pid: u32, tid: u32, t: [u64; 4]) -> Exchange {
    Exchange {
        conn: std::sync::Arc::new(ConnMeta {
            conn_id: 99,
            pid,
            fd: 7,
            role: Role::Client,
            local: Some(addr("127.0.0.1:45000")),
            remote: Some(addr("127.0.0.1:6379")),
            unix_path: None,
            comm: String::new(),
        }),
        tid,
        record: Record {
            protocol: ProtocolKind::Redis,
            start_ns: t[0],
            request_end_ns: t[1],
            response_start_ns: t[2],
            end_ns: t[3],
            request_bytes: 20,
            response_bytes: 5,
            detail: Detail::Redis(Box::new(RedisInfo {
                command: "GET".into(),
                key: Some("k".into()),
                ..Default::default()
            })),
        },
        seq: 0,
        pure_client: false,
    }
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real second process with its own OTEL_SERVICE_NAME, so resources come from /proc.
fn backend_process() -> Child {
    let child = std::process::Command::new("sleep")
        .arg("30")
        .env("OTEL_SERVICE_NAME", "backend-svc")
        .spawn();
    let c = match child {
        Ok(c) => Child(c),
        Err(e) => panic!("spawn sleep: {e}"),
    };
    let pid = c.0.id();
    for _ in 0..200 {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if env.windows(11).any(|w| w == b"backend-svc") {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    c
}

fn config(protocol: OtlpProtocol, endpoint: String, batch: BatchConfig) -> PipelineConfig {
    let mut cfg = PipelineConfig::new(ExportConfig {
        exporters: vec![ExporterKind::Otlp],
        otlp: OtlpConfig {
            protocol,
            endpoint,
            headers: vec![("x-tenant".into(), "t1".into())],
            timeout: Duration::from_secs(2),
            compression: Compression::Gzip,
        },
        batch,
        jsonl_path: None,
        metrics: None,
    });
    cfg.correlate = CorrelatorConfig {
        hold: Duration::from_millis(150),
        ..CorrelatorConfig::default()
    };
    cfg.tick = Duration::from_millis(20);
    cfg
}

fn fast_batch() -> BatchConfig {
    BatchConfig {
        max_batch: 64,
        max_delay: Duration::from_millis(50),
        ..BatchConfig::default()
    }
}

/// frontend (this test process) SERVER -> frontend CLIENT -> backend (child) SERVER -> redis.
fn chain(front: u32, back: u32, base: u64) -> Vec<Exchange> {
    let t = |a: u64, b: u64, c: u64, d: u64| [base + a, base + b, base + c, base + d];
    vec![
        redis_ex(back, 21, t(4_000, 4_100, 4_500, 4_600)),
        http_ex(
            back,
            21,
            3,
            Role::Server,
            "127.0.0.1:9090",
            "127.0.0.1:40001",
            "/api",
            t(2_200, 2_300, 7_800, 7_900),
        ),
        http_ex(
            front,
            11,
            2,
            Role::Client,
            "127.0.0.1:40001",
            "127.0.0.1:9090",
            "/api",
            t(2_000, 2_100, 8_000, 8_100),
        ),
        http_ex(
            front,
            11,
            1,
            Role::Server,
            "127.0.0.1:8080",
            "127.0.0.1:50000",
            "/",
            t(1_000, 1_100, 9_000, 9_100),
        ),
    ]
}

fn by<'a>(spans: &'a [ReceivedSpan], service: &str, kind: i32, name: &str) -> &'a ReceivedSpan {
    match spans.iter().find(|s| {
        s.resource_attr("service.name").as_deref() == Some(service)
            && s.span.kind == kind
            && s.span.name == name
    }) {
        Some(s) => s,
        None => panic!("no {service} {kind} {name} in {spans:#?}"),
    }
}

async fn roundtrip(protocol: OtlpProtocol) {
    let rx = OtlpReceiver::start().await;
    let endpoint = match protocol {
        OtlpProtocol::Grpc => rx.grpc_endpoint(),
        OtlpProtocol::HttpProtobuf => rx.http_endpoint(),
    };
    let backend = backend_process();
    let front = std::process::id();
    let back = backend.0.id();
    let front_exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().to_string()))
        .unwrap_or_default();
    let (tx, erx) = tracewire::handoff::handoff(100_000);
    let handle = match spawn_span_pipeline(config(protocol, endpoint, fast_batch()), erx) {
        Ok(h) => h,
        Err(e) => panic!("pipeline: {e}"),
    };
    let base = ClockOffset::now_mono_ns();
    let wall_before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    for ex in chain(front, back, base) {
        assert!(tx.try_send(vec![ex]).is_ok());
    }
    let got = rx.wait_for_spans(4, Duration::from_secs(10)).await;
    let Some(spans) = got else {
        panic!("only {} spans arrived", rx.span_count())
    };
    assert_eq!(spans.len(), 4);
    let via = match protocol {
        OtlpProtocol::Grpc => "grpc",
        OtlpProtocol::HttpProtobuf => "http",
    };
    assert!(
        spans
            .iter()
            .all(|s| s.via == via && s.scope_name == "tracewire")
    );
    // Resources come from /proc: this process and the child with OTEL_SERVICE_NAME.
    let fe_srv = by(&spans, &front_exe, 2, "GET");
    let fe_cli = by(&spans, &front_exe, 3, "GET");
    let be_srv = by(&spans, "backend-svc", 2, "GET");
    let be_redis = by(&spans, "backend-svc", 3, "GET");
    assert_eq!(fe_srv.resource_attr("process.pid"), Some(front.to_string()));
    assert_eq!(be_srv.resource_attr("process.pid"), Some(back.to_string()));
    assert_eq!(
        be_srv.resource_attr("process.executable.name").as_deref(),
        Some("sleep")
    );
    for s in [fe_srv, fe_cli, be_srv, be_redis] {
        assert_eq!(
            s.resource_attr("telemetry.distro.name").as_deref(),
            Some("tracewire")
        );
        assert_eq!(s.resource_attr("os.type").as_deref(), Some("linux"));
        assert!(s.resource_attr("host.name").is_some());
        assert_eq!(s.span.trace_id, fe_srv.span.trace_id);
        assert_eq!(s.span.trace_id.len(), 16);
        assert_eq!(s.span.span_id.len(), 8);
        // Monotonic -> epoch conversion lands on the wall clock.
        assert!(
            s.span.start_time_unix_nano + 1_000_000_000 > wall_before,
            "start {} vs {wall_before}",
            s.span.start_time_unix_nano
        );
        assert!(s.span.start_time_unix_nano < wall_before + 10_000_000_000);
    }
    assert_eq!(
        fe_srv.span.end_time_unix_nano - fe_srv.span.start_time_unix_nano,
        8_100
    );
    assert!(fe_srv.span.parent_span_id.is_empty());
    assert_eq!(fe_cli.span.parent_span_id, fe_srv.span.span_id);
    assert_eq!(be_srv.span.parent_span_id, fe_cli.span.span_id);
    assert_eq!(be_redis.span.parent_span_id, be_srv.span.span_id);
    assert_eq!(
        fe_cli.attr("tracewire.link.rule").as_deref(),
        Some("thread")
    );
    assert_eq!(
        be_srv.attr("tracewire.link.rule").as_deref(),
        Some("connection")
    );
    assert_eq!(be_redis.attr("db.system.name").as_deref(), Some("redis"));
    assert_eq!(fe_srv.attr("url.path").as_deref(), Some("/"));
    // One ResourceSpans per process: the receiver saw 2 distinct resources.
    let mut pids: Vec<String> = spans
        .iter()
        .filter_map(|s| s.resource_attr("process.pid"))
        .collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 2);
    assert!(
        rx.headers()
            .iter()
            .any(|(k, v)| k == "x-tenant" && v == "t1")
    );
    drop(tx);
    let st = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(st.exchanges_received, 4);
    assert_eq!(st.spans_built, 4);
    assert_eq!(st.spans_emitted, 4);
    assert_eq!(st.otlp_exported, 4);
    assert_eq!(st.dropped(), 0);
    assert_eq!(st.otlp_export_errors, 0);
    assert_eq!(st.correlate.roots, 1);
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_roundtrip() {
    roundtrip(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_roundtrip() {
    roundtrip(OtlpProtocol::HttpProtobuf).await;
}

async fn wait_stats(
    h: &PipelineHandle,
    what: &str,
    f: impl Fn(&tracewire::export::PipelineStats) -> bool,
) {
    for _ in 0..200 {
        if f(&h.stats()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}: {:?}", h.stats());
}

async fn collector_down(protocol: OtlpProtocol) {
    let rx = OtlpReceiver::start().await;
    let endpoint = match protocol {
        OtlpProtocol::Grpc => rx.grpc_endpoint(),
        OtlpProtocol::HttpProtobuf => rx.http_endpoint(),
    };
    let batch = BatchConfig {
        max_batch: 5,
        max_delay: Duration::from_millis(20),
        max_queue: 20,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        max_retry_time: Duration::from_millis(600),
    };
    let (tx, erx) = tracewire::handoff::handoff(100_000);
    let handle = match spawn_span_pipeline(config(protocol, endpoint, batch), erx) {
        Ok(h) => h,
        Err(e) => panic!("pipeline: {e}"),
    };
    let me = std::process::id();
    // Connected and exporting first, so the collector dies under an open connection.
    let base = ClockOffset::now_mono_ns();
    for i in 0..5u64 {
        let t = base + i * 10_000;
        let ex = http_ex(
            me,
            1,
            900 + i,
            Role::Server,
            "127.0.0.1:8080",
            "127.0.0.1:50000",
            "/before",
            [t, t + 1, t + 2, t + 3],
        );
        assert!(tx.try_send(vec![ex]).is_ok());
    }
    assert!(
        rx.wait_for_spans(5, Duration::from_secs(10))
            .await
            .is_some(),
        "{:?}",
        handle.stats()
    );
    rx.stop().await;
    let base = ClockOffset::now_mono_ns();
    for i in 0..200u64 {
        let t = base + i * 10_000;
        let ex = http_ex(
            me,
            1,
            1000 + i,
            Role::Server,
            "127.0.0.1:8080",
            "127.0.0.1:50000",
            "/down",
            [t, t + 1, t + 2, t + 3],
        );
        assert!(tx.try_send(vec![ex]).is_ok());
    }
    // The queue (20) overflows while the collector is down; attempts fail and are counted.
    wait_stats(&handle, "drops and errors", |s| {
        s.spans_emitted == 205 && s.otlp_dropped_queue_full > 0 && s.otlp_export_errors > 0
    })
    .await;
    let st = handle.stats();
    assert_eq!(st.exchanges_received, 205);
    assert!(st.otlp_dropped_queue_full >= 200 - 20 - 5 * 2, "{st:?}");
    assert_eq!(st.otlp_exported, 5);
    // Batches whose retry budget ran out are dropped and counted.
    wait_stats(&handle, "failed batches", |s| s.otlp_dropped_failed > 0).await;
    // Collector back: new spans flow again.
    rx.restart().await;
    let base = ClockOffset::now_mono_ns();
    for i in 0..10u64 {
        let t = base + i * 10_000;
        let ex = http_ex(
            me,
            1,
            5000 + i,
            Role::Server,
            "127.0.0.1:8080",
            "127.0.0.1:50000",
            "/after",
            [t, t + 1, t + 2, t + 3],
        );
        assert!(tx.try_send(vec![ex]).is_ok());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let after = rx
            .spans()
            .iter()
            .filter(|s| s.attr("url.path").as_deref() == Some("/after"))
            .count();
        if after == 10 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {after} /after spans arrived; stats {:?}",
            handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(st.spans_emitted, 215);
    // Every span is accounted for: exported or counted as dropped.
    assert_eq!(st.otlp_exported + st.dropped(), 215, "{st:?}");
    assert!(st.otlp_exported >= 15);
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_grpc() {
    collector_down(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_http() {
    collector_down(OtlpProtocol::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_collector_is_retried_then_accepts() {
    let rx = OtlpReceiver::start().await;
    rx.set_refuse(true);
    let batch = BatchConfig {
        max_batch: 10,
        max_delay: Duration::from_millis(20),
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(100),
        max_retry_time: Duration::from_secs(20),
        ..BatchConfig::default()
    };
    let (tx, erx) = tracewire::handoff::handoff(100_000);
    let handle = match spawn_span_pipeline(
        config(OtlpProtocol::HttpProtobuf, rx.http_endpoint(), batch),
        erx,
    ) {
        Ok(h) => h,
        Err(e) => panic!("pipeline: {e}"),
    };
    let base = ClockOffset::now_mono_ns();
    let ex = http_ex(
        std::process::id(),
        1,
        1,
        Role::Server,
        "127.0.0.1:8080",
        "127.0.0.1:50000",
        "/retry",
        [base, base + 1, base + 2, base + 3],
    );
    assert!(tx.try_send(vec![ex]).is_ok());
    wait_stats(&handle, "refusals", |s| s.otlp_export_errors >= 2).await;
    assert!(rx.refused() >= 2);
    assert_eq!(rx.span_count(), 0);
    rx.set_refuse(false);
    let got = rx.wait_for_spans(1, Duration::from_secs(10)).await;
    assert_eq!(got.map(|v| v.len()), Some(1));
    let st = handle.shutdown(Duration::from_secs(5)).await;
    assert_eq!(st.otlp_exported, 1);
    assert_eq!(st.dropped(), 0);
    rx.stop().await;
}

/// Throughput figure: `cargo test -p tracewire-e2e --release --test export_roundtrip -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn pipeline_throughput_grpc() {
    let rx = OtlpReceiver::start().await;
    let batch = BatchConfig {
        max_batch: 512,
        max_delay: Duration::from_millis(50),
        max_queue: 100_000,
        ..BatchConfig::default()
    };
    let mut cfg = config(OtlpProtocol::Grpc, rx.grpc_endpoint(), batch);
    cfg.correlate.hold = Duration::from_millis(100);
    let (tx, erx) = tracewire::handoff::handoff(100_000);
    let handle = match spawn_span_pipeline(cfg, erx) {
        Ok(h) => h,
        Err(e) => panic!("pipeline: {e}"),
    };
    let me = std::process::id();
    let n = 50_000u64;
    let start = std::time::Instant::now();
    let base = ClockOffset::now_mono_ns();
    for i in 0..n {
        let t = base + i * 1_000;
        let ex = http_ex(
            me,
            u32::try_from(i % 64).unwrap_or(0),
            i,
            Role::Server,
            "127.0.0.1:8080",
            "127.0.0.1:50000",
            "/load",
            [t, t + 1, t + 2, t + 3],
        );
        assert!(tx.try_send(vec![ex]).is_ok());
    }
    let got = rx
        .wait_for_spans(usize::try_from(n).unwrap_or(0), Duration::from_secs(60))
        .await;
    let el = start.elapsed();
    assert!(got.is_some(), "stats {:?}", handle.stats());
    let st = handle.shutdown(Duration::from_secs(5)).await;
    println!(
        "pipeline -> OTLP/gRPC: {n} spans in {el:?} = {:.0} spans/s (incl. {} ms hold); {st:?}",
        n as f64 / el.as_secs_f64(),
        100
    );
    rx.stop().await;
}

fn histogram_count(
    rms: &[opentelemetry_proto::tonic::metrics::v1::ResourceMetrics],
    name: &str,
) -> u64 {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    // Cumulative: the latest snapshot carries the total.
    rms.iter()
        .rev()
        .flat_map(|rm| rm.scope_metrics.iter())
        .flat_map(|sm| sm.metrics.iter())
        .filter(|m| m.name == name)
        .find_map(|m| match &m.data {
            Some(Data::Histogram(h)) => Some(h.data_points.iter().map(|p| p.count).sum()),
            _ => None,
        })
        .unwrap_or(0)
}

async fn red_metrics(protocol: OtlpProtocol) {
    use tracewire::exportcfg::MetricsConfig;
    let rx = OtlpReceiver::start().await;
    let (traces, metrics) = match protocol {
        OtlpProtocol::Grpc => (rx.grpc_endpoint(), rx.grpc_endpoint()),
        OtlpProtocol::HttpProtobuf => (
            rx.http_endpoint(),
            rx.http_endpoint().replace("/v1/traces", "/v1/metrics"),
        ),
    };
    let mut cfg = config(protocol, traces, fast_batch());
    cfg.export.metrics = Some(MetricsConfig {
        endpoint: metrics,
        interval: Duration::from_millis(200),
        max_series: 100,
    });
    let (tx, erx) = tracewire::handoff::handoff(100_000);
    let handle = match spawn_span_pipeline(cfg, erx) {
        Ok(h) => h,
        Err(e) => panic!("pipeline: {e}"),
    };
    let me = std::process::id();
    let base = ClockOffset::now_mono_ns();
    for i in 0..3u64 {
        let t = base + i * 10_000_000;
        let ex = http_ex(
            me,
            1,
            i,
            Role::Server,
            "127.0.0.1:8080",
            "127.0.0.1:50000",
            "/m",
            [t, t + 1_000, t + 2_000_000, t + 3_000_000],
        );
        assert!(tx.try_send(vec![ex]).is_ok());
    }
    let got = rx
        .wait_for_metrics(Duration::from_secs(10), |m| {
            histogram_count(m, "http.server.request.duration") == 3
        })
        .await;
    let Some(rms) = got else {
        panic!("metrics: {:#?} stats {:?}", rx.metrics(), handle.stats())
    };
    let last = rms.iter().rev().find(|rm| !rm.scope_metrics.is_empty());
    let pid = last
        .and_then(|rm| rm.resource.as_ref())
        .and_then(|r| tracewire_e2e::otlp_receiver::attr(&r.attributes, "process.pid"));
    assert_eq!(pid, Some(me.to_string()));
    assert_eq!(
        last.map(|rm| rm.scope_metrics[0].scope.as_ref().map(|s| s.name.clone())),
        Some(Some("tracewire".to_string()))
    );
    drop(tx);
    let st = handle.shutdown(Duration::from_secs(5)).await;
    assert!(st.metrics_exports >= 1, "{st:?}");
    assert_eq!(st.metrics_dropped_series, 0);
    assert_eq!(st.otlp_exported, 3);
    rx.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_metrics_grpc() {
    red_metrics(OtlpProtocol::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_metrics_http() {
    red_metrics(OtlpProtocol::HttpProtobuf).await;
}
