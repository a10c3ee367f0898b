use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::common::v1::any_value::Value as PV;
use opentelemetry_proto::tonic::trace::v1::{span, status};

use super::console::{ConsoleTraces, render};
use super::jsonl::{JsonlWriter, span_to_json};
use super::otlp::to_request;
use crate::model::Role;
use crate::spans::testutil::*;
use crate::spans::{AttrValue, ClockOffset, SpanConfig, SpanData, SpanStatus, build_span};
use agent_protocols::ProtocolKind;

#[allow(clippy::too_many_arguments)]
fn sp(
    pid: u32,
    tid: u32,
    role: Role,
    name_path: &str,
    trace: u8,
    id: u8,
    parent: Option<u8>,
    t: (u64, u64),
) -> SpanData {
    let ex = exchange(
        1,
        pid,
        tid,
        role,
        "127.0.0.1:8080",
        "127.0.0.1:40000",
        record(
            ProtocolKind::Http1,
            (t.0, t.0 + 1, t.1 - 1, t.1),
            http_detail("GET", name_path, Some(200)),
        ),
    );
    let mut s = match build_span(
        &ex,
        resource(pid),
        &ClockOffset::fixed(0),
        &SpanConfig::default(),
    ) {
        Ok(s) => s,
        Err(e) => panic!("{e:?}"),
    };
    s.trace_id = [trace; 16];
    s.span_id = [id; 8];
    s.parent_span_id = parent.map(|p| [p; 8]);
    s
}

#[test]
fn otlp_request_groups_by_resource() {
    let r1 = resource(1);
    let mut a = sp(1, 1, Role::Server, "/a", 1, 1, None, (1_000_000, 3_000_000));
    a.resource = Arc::clone(&r1);
    let mut b = sp(
        1,
        1,
        Role::Client,
        "/b",
        1,
        2,
        Some(1),
        (1_500_000, 2_000_000),
    );
    b.resource = Arc::clone(&r1);
    b.status = SpanStatus::error("boom");
    b.trace_state = Some("k=v".into());
    let c = sp(
        2,
        1,
        Role::Server,
        "/c",
        1,
        3,
        Some(2),
        (1_600_000, 1_900_000),
    );
    let req = to_request(&[a, b, c]);
    assert_eq!(req.resource_spans.len(), 2);
    let rs0 = &req.resource_spans[0];
    let res_attrs = &rs0
        .resource
        .as_ref()
        .map(|r| r.attributes.clone())
        .unwrap_or_default();
    assert_eq!(res_attrs.len(), 1);
    assert_eq!(res_attrs[0].key, "service.name");
    assert_eq!(
        res_attrs[0].value.as_ref().and_then(|v| v.value.clone()),
        Some(PV::StringValue("svc1".into()))
    );
    assert_eq!(rs0.scope_spans.len(), 1);
    let ss = &rs0.scope_spans[0];
    assert_eq!(
        ss.scope.as_ref().map(|s| s.name.as_str()),
        Some("tracewire")
    );
    assert_eq!(ss.spans.len(), 2);
    let s0 = &ss.spans[0];
    assert_eq!(s0.trace_id, vec![1u8; 16]);
    assert_eq!(s0.span_id, vec![1u8; 8]);
    assert!(s0.parent_span_id.is_empty());
    assert_eq!(s0.kind, span::SpanKind::Server as i32);
    assert_eq!(s0.name, "GET");
    assert_eq!(s0.start_time_unix_nano, 1_000_000);
    assert_eq!(s0.end_time_unix_nano, 3_000_000);
    assert_eq!(
        s0.status.as_ref().map(|s| s.code),
        Some(status::StatusCode::Unset as i32)
    );
    let path = s0
        .attributes
        .iter()
        .find(|k| k.key == "url.path")
        .and_then(|k| k.value.as_ref())
        .and_then(|v| v.value.clone());
    assert_eq!(path, Some(PV::StringValue("/a".into())));
    let port = s0
        .attributes
        .iter()
        .find(|k| k.key == "network.peer.port")
        .and_then(|k| k.value.as_ref())
        .and_then(|v| v.value.clone());
    assert_eq!(port, Some(PV::IntValue(40000)));
    let s1 = &ss.spans[1];
    assert_eq!(s1.parent_span_id, vec![1u8; 8]);
    assert_eq!(s1.kind, span::SpanKind::Client as i32);
    assert_eq!(s1.trace_state, "k=v");
    assert_eq!(
        s1.status.as_ref().map(|s| (s.code, s.message.as_str())),
        Some((status::StatusCode::Error as i32, "boom"))
    );
    let rs1 = &req.resource_spans[1];
    assert_eq!(rs1.scope_spans[0].spans.len(), 1);
    assert_eq!(rs1.scope_spans[0].spans[0].span_id, vec![3u8; 8]);
}

#[test]
fn jsonl_line_shape() {
    let mut s = sp(7, 1, Role::Server, "/x", 0xab, 0xcd, Some(0xef), (5, 10));
    s.attributes
        .set("tracewire.link.confidence", AttrValue::F64(0.5));
    let v = span_to_json(&s);
    assert_eq!(v["traceId"], "abababababababababababababababab");
    assert_eq!(v["spanId"], "cdcdcdcdcdcdcdcd");
    assert_eq!(v["parentSpanId"], "efefefefefefefef");
    assert_eq!(v["name"], "GET");
    assert_eq!(v["kind"], 2);
    assert_eq!(v["startTimeUnixNano"], "5");
    assert_eq!(v["endTimeUnixNano"], "10");
    assert_eq!(v["status"]["code"], 0);
    let attrs = v["attributes"].as_array().cloned().unwrap_or_default();
    let find = |k: &str| {
        attrs
            .iter()
            .find(|a| a["key"] == k)
            .map(|a| a["value"].clone())
    };
    assert_eq!(
        find("url.path"),
        Some(serde_json::json!({"stringValue": "/x"}))
    );
    assert_eq!(
        find("http.response.status_code"),
        Some(serde_json::json!({"intValue": "200"}))
    );
    assert_eq!(
        find("tracewire.link.confidence"),
        Some(serde_json::json!({"doubleValue": 0.5}))
    );
    assert_eq!(v["resource"]["attributes"][0]["key"], "service.name");
    assert_eq!(
        v["resource"]["attributes"][0]["value"]["stringValue"],
        "svc7"
    );

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let mut w = JsonlWriter::new(Box::new(buf.clone()));
    w.write_all(&[s.clone(), s]);
    assert_eq!(w.written, 2);
    let text = buf
        .0
        .lock()
        .map(|b| String::from_utf8_lossy(&b).to_string())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    let parsed: serde_json::Value = serde_json::from_str(lines[0]).unwrap_or_default();
    assert_eq!(parsed["spanId"], "cdcdcdcdcdcdcdcd");
}

#[test]
fn console_renders_trees_after_quiet_period() {
    let root = sp(1, 1, Role::Server, "/", 9, 1, None, (0, 10_000_000));
    let child = sp(
        1,
        1,
        Role::Client,
        "/api",
        9,
        2,
        Some(1),
        (1_000_000, 6_000_000),
    );
    let grandchild = sp(
        2,
        5,
        Role::Server,
        "/api",
        9,
        3,
        Some(2),
        (2_000_000, 5_000_000),
    );
    let text = render(&[grandchild.clone(), root.clone(), child.clone()]);
    let want = "trace 09090909090909090909090909090909 (3 spans)\n\
        \x20 svc1 SERVER [GET] 10.000ms UNSET http.response.status_code=200 url.path=/\n\
        \x20   svc1 CLIENT [GET] 5.000ms UNSET http.response.status_code=200 url.full=http://127.0.0.1:40000/api server.address=127.0.0.1 server.port=40000\n\
        \x20     svc2 SERVER [GET] 3.000ms UNSET http.response.status_code=200 url.path=/api\n";
    assert_eq!(text, want);

    let mut c = ConsoleTraces::new(100, 2);
    assert!(c.push(child, 0).is_none());
    assert!(c.push(root, 50).is_none());
    assert!(c.take_ready(120, false).is_empty());
    let ready = c.take_ready(150, false);
    assert_eq!(ready.len(), 1);
    assert!(ready[0].starts_with("trace 0909"));
    assert_eq!(c.open_traces(), 0);
    // Bounded: a third trace pushes the oldest out early.
    c.push(sp(1, 1, Role::Server, "/", 1, 1, None, (0, 1)), 0);
    c.push(sp(1, 1, Role::Server, "/", 2, 1, None, (0, 1)), 1);
    let early = c.push(sp(1, 1, Role::Server, "/", 3, 1, None, (0, 1)), 2);
    assert!(early.is_some_and(|t| t.starts_with("trace 0101")));
    assert_eq!(c.open_traces(), 2);
    assert_eq!(c.take_ready(3, true).len(), 2);
}

#[test]
fn retry_classification() {
    use super::transport::{grpc_retryable, http_retryable};
    for c in [429, 502, 503, 504] {
        assert!(http_retryable(c), "{c}");
    }
    for c in [400, 401, 404, 413, 500] {
        assert!(!http_retryable(c), "{c}");
    }
    assert!(grpc_retryable(tonic::Code::Unavailable));
    assert!(grpc_retryable(tonic::Code::DeadlineExceeded));
    assert!(grpc_retryable(tonic::Code::ResourceExhausted));
    assert!(!grpc_retryable(tonic::Code::InvalidArgument));
    assert!(!grpc_retryable(tonic::Code::Unauthenticated));
    assert!(!grpc_retryable(tonic::Code::Internal));
}

/// An export configuration writing spans as JSON lines to a fresh file (returned) under a
/// per-test temporary directory named after `name`, with `exporters` enabled.
fn jsonl_export(
    name: &str,
    exporters: &[crate::exportcfg::ExporterKind],
) -> (std::path::PathBuf, crate::exportcfg::ExportConfig) {
    use crate::exportcfg::{ExportArgs, ExportConfig};
    let dir = std::env::temp_dir().join(format!("tracewire-{name}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("spans.jsonl");
    let _ = std::fs::remove_file(&path);
    match ExportConfig::from_lookup(&ExportArgs::default(), |_| None) {
        Ok(mut e) => {
            e.exporters = exporters.to_vec();
            e.jsonl_path = Some(path.clone());
            (path, e)
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn pipeline_writes_jsonl_trees_and_counts_skips() {
    use super::pipeline::{PipelineConfig, spawn_span_pipeline};
    use crate::correlate::CorrelatorConfig;
    use crate::exportcfg::ExporterKind;
    use std::time::Duration;

    let (path, export) = jsonl_export("jsonl", &[ExporterKind::Jsonl, ExporterKind::Console]);
    let mut cfg = PipelineConfig::new(export);
    cfg.correlate = CorrelatorConfig {
        hold: Duration::from_millis(50),
        ..Default::default()
    };
    cfg.tick = Duration::from_millis(10);
    let (tx, rx) = crate::handoff::handoff(100_000);
    let h = match spawn_span_pipeline(cfg, rx) {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    };
    let me = std::process::id();
    let base = ClockOffset::now_mono_ns();
    let t = |a: u64, b: u64, c: u64, d: u64| (base + a, base + b, base + c, base + d);
    let client = exchange(
        2,
        me,
        1,
        Role::Client,
        "127.0.0.1:40000",
        "127.0.0.1:6379",
        record(ProtocolKind::Redis, t(200, 210, 300, 310), redis("GET")),
    );
    let server = exchange(
        1,
        me,
        1,
        Role::Server,
        "127.0.0.1:8080",
        "127.0.0.1:50000",
        record(
            ProtocolKind::Http1,
            t(100, 110, 900, 1000),
            http_detail("GET", "/j", Some(200)),
        ),
    );
    let unknown = exchange(
        3,
        me,
        1,
        Role::Unknown,
        "127.0.0.1:8080",
        "127.0.0.1:50001",
        record(
            ProtocolKind::Http1,
            t(100, 110, 900, 1000),
            http_detail("GET", "/u", Some(200)),
        ),
    );
    let db_server = exchange(
        4,
        me,
        1,
        Role::Server,
        "127.0.0.1:5432",
        "127.0.0.1:50002",
        record(
            ProtocolKind::Postgres,
            t(100, 110, 900, 1000),
            pg("SELECT", "t"),
        ),
    );
    for ex in [client, server, unknown, db_server] {
        assert!(tx.try_send(vec![ex]).is_ok());
    }
    // Spans leave after the hold window, before shutdown.
    for _ in 0..100 {
        if h.stats().jsonl_written == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(tx);
    let st = h.shutdown(Duration::from_secs(2)).await;
    assert_eq!(st.exchanges_received, 4);
    assert_eq!(st.spans_built, 2);
    assert_eq!(st.skipped_unknown_role, 1);
    assert_eq!(st.skipped_db_server, 1);
    assert_eq!(st.spans_emitted, 2);
    assert_eq!(st.jsonl_written, 2);
    assert_eq!(st.jsonl_errors, 0);
    assert_eq!(st.console_traces_printed, 1);
    assert_eq!(st.correlate.linked_thread, 1);
    assert_eq!(st.otlp_exported, 0);
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert_eq!(lines.len(), 2);
    let srv = lines
        .iter()
        .find(|v| v["kind"] == 2)
        .cloned()
        .unwrap_or_default();
    let cli = lines
        .iter()
        .find(|v| v["kind"] == 3)
        .cloned()
        .unwrap_or_default();
    assert_eq!(srv["name"], "GET");
    assert_eq!(cli["name"], "GET");
    assert_eq!(cli["traceId"], srv["traceId"]);
    assert_eq!(cli["parentSpanId"], srv["spanId"]);
    assert!(srv.get("parentSpanId").is_none());
    let end: u64 = srv["endTimeUnixNano"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let start: u64 = srv["startTimeUnixNano"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert_eq!(end - start, 900);
    let res = srv["resource"]["attributes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let pid = res
        .iter()
        .find(|a| a["key"] == "process.pid")
        .map(|a| a["value"]["intValue"].clone());
    assert_eq!(pid, Some(serde_json::Value::String(me.to_string())));
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn red_metrics_histograms_per_process_and_route() {
    use super::metrics::{BOUNDS_S, RedMetrics, metric_name};
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    let mut m = RedMetrics::new(1, 3);
    // 3 ms, 30 ms server spans of pid 1; one 2 s client span of pid 1; one pid 2 span.
    let a = sp(1, 1, Role::Server, "/a", 1, 1, None, (0, 3_000_000));
    let b = sp(1, 1, Role::Server, "/b", 1, 2, None, (0, 30_000_000));
    let c = sp(1, 1, Role::Client, "/c", 1, 3, None, (0, 2_000_000_000));
    let d = sp(2, 1, Role::Server, "/d", 1, 4, None, (0, 1_000_000));
    assert_eq!(metric_name(&a), "http.server.request.duration");
    assert_eq!(metric_name(&c), "http.client.request.duration");
    for s in [&a, &b, &c, &d] {
        m.record(s);
    }
    // a and b share a series (url.path is not a metric attribute); cap 3 reached by d.
    assert_eq!(m.series_count(), 3);
    assert_eq!(m.dropped_series, 0);
    let e = sp(3, 1, Role::Server, "/e", 1, 5, None, (0, 1));
    m.record(&e);
    assert_eq!(m.dropped_series, 1);
    let req = m.to_request(99);
    assert_eq!(req.resource_metrics.len(), 2);
    let rm = &req.resource_metrics[0];
    let svc = rm.resource.as_ref().map(|r| r.attributes[0].clone());
    assert_eq!(
        svc.and_then(|k| k.value).and_then(|v| v.value),
        Some(PV::StringValue("svc1".into()))
    );
    let metrics = &rm.scope_metrics[0].metrics;
    assert_eq!(metrics.len(), 2);
    let server = metrics
        .iter()
        .find(|m| m.name == "http.server.request.duration");
    let Some(Data::Histogram(h)) = server.and_then(|m| m.data.clone()) else {
        panic!("no server histogram")
    };
    assert_eq!(server.map(|m| m.unit.as_str()), Some("s"));
    assert_eq!(h.aggregation_temporality, 2);
    assert_eq!(h.data_points.len(), 1);
    let p = &h.data_points[0];
    assert_eq!(p.count, 2);
    assert_eq!(p.start_time_unix_nano, 1);
    assert_eq!(p.time_unix_nano, 99);
    assert!((p.sum.unwrap_or(0.0) - 0.033).abs() < 1e-9);
    assert_eq!(p.min, Some(0.003));
    assert_eq!(p.max, Some(0.03));
    assert_eq!(p.explicit_bounds, BOUNDS_S.to_vec());
    let mut want = vec![0u64; BOUNDS_S.len() + 1];
    want[0] = 1; // 3 ms <= 5 ms
    want[3] = 1; // 30 ms <= 50 ms
    assert_eq!(p.bucket_counts, want);
    let attr = |k: &str| {
        p.attributes
            .iter()
            .find(|a| a.key == k)
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value)
    };
    assert_eq!(
        attr("http.request.method"),
        Some(PV::StringValue("GET".into()))
    );
    assert_eq!(attr("http.response.status_code"), Some(PV::IntValue(200)));
    assert_eq!(attr("url.scheme"), Some(PV::StringValue("http".into())));
    assert_eq!(attr("url.path"), None);
    let client = metrics
        .iter()
        .find(|m| m.name == "http.client.request.duration");
    let Some(Data::Histogram(h)) = client.and_then(|m| m.data.clone()) else {
        panic!("no client histogram")
    };
    assert_eq!(h.data_points[0].bucket_counts[10], 1); // 2 s <= 2.5 s
}

#[tokio::test]
async fn export_queue_reports_backlog_past_a_quarter() {
    use super::batch::OtlpExporter;
    use crate::exportcfg::{BatchConfig, Compression, OtlpConfig, OtlpProtocol};
    // Nothing listens on port 1, and the long delay keeps the spans queued meanwhile.
    let otlp = OtlpConfig {
        protocol: OtlpProtocol::Grpc,
        endpoint: "http://127.0.0.1:1".into(),
        headers: Vec::new(),
        timeout: std::time::Duration::from_millis(100),
        compression: Compression::None,
    };
    let batch = BatchConfig {
        max_batch: 1000,
        max_delay: std::time::Duration::from_secs(60),
        max_queue: 16,
        ..BatchConfig::default()
    };
    let exporter = match OtlpExporter::spawn(&otlp, &batch) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    let span = || sp(1, 1, Role::Server, "/", 1, 1, None, (1_000, 2_000));
    for _ in 0..4 {
        assert!(exporter.offer(span()));
    }
    // 4 of 16: keeping up (the pipeline and the encoder may yield their CPU).
    assert!(!exporter.backlogged());
    assert!(exporter.offer(span()));
    assert!(exporter.backlogged());
}

#[tokio::test]
async fn a_stop_right_after_the_last_batch_still_turns_every_batch_into_spans() {
    use super::pipeline::{PipelineConfig, spawn_span_pipeline};
    use crate::exportcfg::ExporterKind;
    use std::time::Duration;

    let (path, export) = jsonl_export("stop", &[ExporterKind::Jsonl]);
    let (tx, rx) = crate::handoff::handoff(100_000);
    let h = match spawn_span_pipeline(PipelineConfig::new(export), rx) {
        Ok(h) => h,
        Err(e) => panic!("{e}"),
    };
    let me = std::process::id();
    let base = ClockOffset::now_mono_ns();
    const BATCHES: u64 = 50;
    for i in 0..BATCHES {
        let t = (
            base + i * 10,
            base + i * 10 + 1,
            base + i * 10 + 2,
            base + i * 10 + 3,
        );
        let ex = exchange(
            10 + i,
            me,
            1,
            Role::Client,
            "127.0.0.1:40000",
            "127.0.0.1:6379",
            record(ProtocolKind::Redis, t, redis("GET")),
        );
        assert!(tx.try_send(vec![ex]).is_ok());
    }
    // The pipeline task has not run yet: its first wakeup sees the batches and the stop at
    // once, as at the agent's shutdown.
    drop(tx);
    let st = h.shutdown(Duration::from_secs(2)).await;
    assert_eq!(st.exchanges_received, BATCHES);
    assert_eq!(st.spans_built, BATCHES);
    assert_eq!(st.jsonl_written, BATCHES);
    if let Some(dir) = path.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
