//! Issue 4: whole traces from uninstrumented services. curl -> frontend -> backend ->
//! PostgreSQL + Redis, and a gRPC client -> server, traced by the real agent and received over
//! OTLP by a local collector.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tracewire_e2e::agent::Agent;
use tracewire_e2e::env::{PYTHON, fixture_dir, free_port, require_ebpf};
use tracewire_e2e::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use tracewire_e2e::servers::{Postgres, Proc, Redis};

/// Clock skew allowed when checking that a child lies inside its parent.
const SKEW_NS: u64 = 50_000;

struct Chain {
    _pg: Postgres,
    _redis: Redis,
    backend: Proc,
    frontend: Proc,
    frontend_port: u16,
    backend_port: u16,
    pg_port: u16,
    redis_port: u16,
}

fn spawn_app(name: &str, args: &[String], service: &str) -> Proc {
    let mut p = Proc::spawn(
        name,
        Command::new(PYTHON)
            .arg(fixture_dir().join("chain.py"))
            .args(args)
            .env("OTEL_SERVICE_NAME", service)
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(p.child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready", "{name} did not start");
    p
}

fn start_chain() -> Chain {
    let pg = Postgres::start();
    pg.psql(
        "app",
        "CREATE TABLE orders (id int PRIMARY KEY, item text); INSERT INTO orders VALUES (1, 'book'), (2, 'pen')",
    )
    .expect("seed orders");
    let redis = Redis::start();
    let st = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "SET", "stock:1", "7"])
        .stdout(Stdio::null())
        .status()
        .expect("redis-cli");
    assert!(st.success());
    let backend_port = free_port();
    let backend = spawn_app(
        "backend",
        &[
            "backend".into(),
            backend_port.to_string(),
            pg.port.to_string(),
            redis.port.to_string(),
        ],
        "backend",
    );
    let frontend_port = free_port();
    let frontend = spawn_app(
        "frontend",
        &[
            "frontend".into(),
            frontend_port.to_string(),
            backend_port.to_string(),
        ],
        "frontend",
    );
    Chain {
        pg_port: pg.port,
        redis_port: redis.port,
        _pg: pg,
        _redis: redis,
        backend,
        frontend,
        frontend_port,
        backend_port,
    }
}

fn agent_for(chain: &Chain, endpoint: &str, protocol: &str) -> Agent {
    Agent::start(
        &[
            "run",
            "--exporter",
            "otlp",
            "--endpoint",
            endpoint,
            "--protocol",
            protocol,
            "--pid",
            &chain.frontend.pid().to_string(),
            "--pid",
            &chain.backend.pid().to_string(),
            "--max-delay-ms",
            "200",
        ],
        &[],
        "tracing via",
    )
}

fn curl(url: &str, headers: &[&str]) -> String {
    let mut c = Command::new("curl");
    c.args(["-s", "--max-time", "20"]);
    for h in headers {
        c.args(["-H", h]);
    }
    let out = c.arg(url).output().expect("curl");
    assert!(out.status.success(), "curl {url} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn kind(s: &ReceivedSpan) -> SpanKind {
    SpanKind::try_from(s.span.kind).unwrap_or(SpanKind::Unspecified)
}

fn service(s: &ReceivedSpan) -> String {
    s.resource_attr("service.name").unwrap_or_default()
}

/// The one span matching `pred`.
fn one<'a>(
    spans: &'a [ReceivedSpan],
    what: &str,
    pred: impl Fn(&ReceivedSpan) -> bool,
) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| pred(s)).collect();
    assert_eq!(found.len(), 1, "{what}: {}", describe(spans));
    found[0]
}

fn describe(spans: &[ReceivedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "\n  {} {:?} {} trace={} span={} parent={} rule={:?}",
                service(s),
                kind(s),
                s.span.name,
                hex(&s.span.trace_id),
                hex(&s.span.span_id),
                hex(&s.span.parent_span_id),
                s.attr("tracewire.link.rule")
            )
        })
        .collect()
}

fn assert_child(parent: &ReceivedSpan, child: &ReceivedSpan, rule: &str) {
    assert_eq!(child.span.trace_id, parent.span.trace_id, "same trace");
    assert_eq!(
        child.span.parent_span_id, parent.span.span_id,
        "{} is a child of {}",
        child.span.name, parent.span.name
    );
    assert_eq!(child.attr("tracewire.link.rule").as_deref(), Some(rule));
    assert!(
        child.span.start_time_unix_nano + SKEW_NS >= parent.span.start_time_unix_nano,
        "child starts inside parent"
    );
    assert!(
        child.span.end_time_unix_nano <= parent.span.end_time_unix_nano + SKEW_NS,
        "child ends inside parent"
    );
    assert!(child.span.end_time_unix_nano >= child.span.start_time_unix_nano);
}

/// The five spans of one checkout, asserted as a tree; returns the trace id.
fn assert_checkout_tree(chain: &Chain, spans: &[ReceivedSpan], order: u32) -> Vec<u8> {
    let query = format!("id={order}");
    let fe_server = one(spans, "frontend SERVER", |s| {
        service(s) == "frontend" && kind(s) == SpanKind::Server
    });
    assert_eq!(fe_server.span.name, "GET");
    assert_eq!(
        fe_server.attr("http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(fe_server.attr("url.path").as_deref(), Some("/checkout"));
    assert_eq!(fe_server.attr("url.query").as_deref(), Some(query.as_str()));
    assert_eq!(fe_server.attr("url.scheme").as_deref(), Some("http"));
    assert_eq!(
        fe_server.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        fe_server.attr("network.protocol.version").as_deref(),
        Some("1.1")
    );
    assert_eq!(
        fe_server.attr("server.port"),
        Some(chain.frontend_port.to_string())
    );
    assert_eq!(
        fe_server.resource_attr("process.pid"),
        Some(chain.frontend.pid().to_string())
    );
    assert_eq!(
        fe_server.resource_attr("telemetry.distro.name").as_deref(),
        Some("tracewire")
    );

    let fe_client = one(spans, "frontend CLIENT", |s| {
        service(s) == "frontend" && kind(s) == SpanKind::Client
    });
    assert_eq!(fe_client.span.name, "GET");
    assert_eq!(
        fe_client.attr("url.full"),
        Some(format!(
            "http://127.0.0.1:{}/order/{order}",
            chain.backend_port
        ))
    );
    assert_eq!(
        fe_client.attr("server.port"),
        Some(chain.backend_port.to_string())
    );
    assert_eq!(
        fe_client.attr("http.response.status_code").as_deref(),
        Some("200")
    );

    let be_server = one(spans, "backend SERVER", |s| {
        service(s) == "backend" && kind(s) == SpanKind::Server
    });
    assert_eq!(be_server.attr("url.path"), Some(format!("/order/{order}")));
    assert_eq!(
        be_server.resource_attr("process.pid"),
        Some(chain.backend.pid().to_string())
    );

    let pg = one(spans, "backend -> postgresql", |s| {
        s.attr("db.system.name").as_deref() == Some("postgresql")
    });
    assert_eq!(service(pg), "backend");
    assert_eq!(kind(pg), SpanKind::Client);
    assert_eq!(pg.span.name, "SELECT orders");
    assert_eq!(
        pg.attr("db.query.text").as_deref(),
        Some("SELECT id, item FROM orders WHERE id = ?"),
        "literal redacted"
    );
    assert_eq!(pg.attr("db.namespace").as_deref(), Some("app"));
    assert_eq!(pg.attr("db.operation.name").as_deref(), Some("SELECT"));
    assert_eq!(pg.attr("db.collection.name").as_deref(), Some("orders"));
    assert_eq!(pg.attr("server.port"), Some(chain.pg_port.to_string()));

    let redis = one(spans, "backend -> redis", |s| {
        s.attr("db.system.name").as_deref() == Some("redis")
    });
    assert_eq!(service(redis), "backend");
    assert_eq!(kind(redis), SpanKind::Client);
    assert_eq!(redis.span.name, "GET");
    assert_eq!(redis.attr("db.operation.name").as_deref(), Some("GET"));
    assert_eq!(redis.attr("db.namespace").as_deref(), Some("0"));
    assert_eq!(
        redis.attr("server.port"),
        Some(chain.redis_port.to_string())
    );

    assert_child(fe_server, fe_client, "thread");
    assert_child(fe_client, be_server, "connection");
    assert_child(be_server, pg, "thread");
    assert_child(be_server, redis, "thread");
    assert!(pg.span.end_time_unix_nano <= redis.span.start_time_unix_nano + SKEW_NS);
    fe_server.span.trace_id.clone()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

fn checkout_over(protocol: &str) {
    let rt = runtime();
    let rx = rt.block_on(OtlpReceiver::start());
    let chain = start_chain();
    let endpoint = if protocol == "grpc" {
        rx.grpc_endpoint()
    } else {
        rx.http_endpoint()
    };
    let agent = agent_for(&chain, &endpoint, protocol);
    let body = curl(
        &format!("http://127.0.0.1:{}/checkout?id=1", chain.frontend_port),
        &[],
    );
    assert!(body.contains("\"item\": \"book\""), "{body}");
    rt.block_on(rx.wait_for_spans(5, Duration::from_secs(20)))
        .unwrap_or_else(|| panic!("5 spans not received: {}", describe(&rx.spans())));
    // Nothing else arrives (e.g. connection-setup commands reported as calls).
    std::thread::sleep(Duration::from_secs(2));
    let spans = rx.spans();
    assert_eq!(spans.len(), 5, "exactly the tree: {}", describe(&spans));
    assert!(
        spans
            .iter()
            .all(|s| s.via == if protocol == "grpc" { "grpc" } else { "http" })
    );
    let trace = assert_checkout_tree(&chain, &spans, 1);
    assert!(
        spans.iter().all(|s| s.span.trace_id == trace),
        "one trace id"
    );
    assert!(spans.iter().all(|s| s.span.span_id.len() == 8));
    drop(agent);
}

#[test]
fn chain_trace_over_otlp_grpc() {
    if !require_ebpf("chain_trace_over_otlp_grpc") {
        return;
    }
    checkout_over("grpc");
}

#[test]
fn chain_trace_over_otlp_http() {
    if !require_ebpf("chain_trace_over_otlp_http") {
        return;
    }
    checkout_over("http/protobuf");
}

#[test]
fn traceparent_in_request_joins_that_trace() {
    if !require_ebpf("traceparent_in_request_joins_that_trace") {
        return;
    }
    let rt = runtime();
    let rx = rt.block_on(OtlpReceiver::start());
    let chain = start_chain();
    let agent = agent_for(&chain, &rx.grpc_endpoint(), "grpc");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let parent = "00f067aa0ba902b7";
    curl(
        &format!("http://127.0.0.1:{}/checkout?id=1", chain.frontend_port),
        &[&format!("traceparent: 00-{trace_id}-{parent}-01")],
    );
    let spans = rt
        .block_on(rx.wait_for_spans(5, Duration::from_secs(20)))
        .unwrap_or_else(|| panic!("spans not received: {}", describe(&rx.spans())));
    let fe = one(&spans, "frontend SERVER", |s| {
        service(s) == "frontend" && kind(s) == SpanKind::Server
    });
    assert_eq!(hex(&fe.span.trace_id), trace_id);
    assert_eq!(hex(&fe.span.parent_span_id), parent);
    assert_eq!(
        fe.attr("tracewire.link.rule").as_deref(),
        Some("traceparent")
    );
    assert!(
        spans.iter().all(|s| hex(&s.span.trace_id) == trace_id),
        "the whole tree joined the caller's trace: {}",
        describe(&spans)
    );
    drop(agent);
}

#[test]
fn twenty_concurrent_requests_make_twenty_trees() {
    if !require_ebpf("twenty_concurrent_requests_make_twenty_trees") {
        return;
    }
    let rt = runtime();
    let rx = rt.block_on(OtlpReceiver::start());
    let chain = start_chain();
    let agent = agent_for(&chain, &rx.grpc_endpoint(), "grpc");
    let url = format!("http://127.0.0.1:{}/checkout?id=1", chain.frontend_port);
    let handles: Vec<_> = (0..20)
        .map(|_| {
            let u = url.clone();
            std::thread::spawn(move || curl(&u, &[]))
        })
        .collect();
    for h in handles {
        assert!(h.join().expect("curl thread").contains("book"));
    }
    rt.block_on(rx.wait_for_spans(100, Duration::from_secs(30)))
        .unwrap_or_else(|| panic!("100 spans not received: {}", rx.span_count()));
    std::thread::sleep(Duration::from_secs(2));
    let spans_all = rx.spans();
    assert_eq!(spans_all.len(), 100, "{}", describe(&spans_all));
    let mut by_trace: HashMap<Vec<u8>, Vec<ReceivedSpan>> = HashMap::new();
    for s in spans_all {
        by_trace.entry(s.span.trace_id.clone()).or_default().push(s);
    }
    assert_eq!(by_trace.len(), 20, "twenty separate traces");
    for spans in by_trace.values() {
        assert_eq!(spans.len(), 5, "{}", describe(spans));
        assert_checkout_tree(&chain, spans, 1);
    }
    drop(agent);
}

fn spawn_greeter_server(port: u16) -> Proc {
    let mut p = Proc::spawn(
        "greeter server",
        Command::new(PYTHON)
            .arg(fixture_dir().join("greeter.py"))
            .args(["server", &port.to_string()])
            .env("OTEL_SERVICE_NAME", "greeter")
            .stdout(Stdio::piped()),
    );
    let mut line = String::new();
    BufReader::new(p.child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready");
    assert_eq!(line.trim(), "ready");
    p
}

#[test]
fn grpc_client_to_server() {
    if !require_ebpf("grpc_client_to_server") {
        return;
    }
    let rt = runtime();
    let rx = rt.block_on(OtlpReceiver::start());
    let port = free_port();
    let server = spawn_greeter_server(port);
    let agent = Agent::start(
        &[
            "run",
            "--exporter",
            "otlp",
            "--endpoint",
            &rx.grpc_endpoint(),
            "--protocol",
            "grpc",
            "--port",
            &port.to_string(),
            "--max-delay-ms",
            "200",
        ],
        &[],
        "tracing via",
    );
    for (name, expect) in [("ada", "Hello, ada"), ("missing", "error NOT_FOUND")] {
        let out = Command::new(PYTHON)
            .arg(fixture_dir().join("greeter.py"))
            .args(["client", &port.to_string(), name])
            .env("OTEL_SERVICE_NAME", "greeter-client")
            .output()
            .expect("client");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expect);
    }
    let spans = rt
        .block_on(rx.wait_for_spans(4, Duration::from_secs(20)))
        .unwrap_or_else(|| panic!("4 spans not received: {}", describe(&rx.spans())));
    for s in &spans {
        assert_eq!(
            s.span.name,
            "helloworld.Greeter/SayHello",
            "{}",
            describe(&spans)
        );
        assert_eq!(s.attr("rpc.system.name").as_deref(), Some("grpc"));
        assert_eq!(
            s.attr("rpc.method").as_deref(),
            Some("helloworld.Greeter/SayHello")
        );
        assert_eq!(s.attr("network.protocol.version").as_deref(), Some("2"));
        assert!(
            s.attr("http.request.method").is_none(),
            "an RPC span, not HTTP"
        );
    }
    let status = |s: &ReceivedSpan| s.attr("rpc.response.status_code").unwrap_or_default();
    let ok_client = one(&spans, "OK client", |s| {
        kind(s) == SpanKind::Client && status(s) == "OK"
    });
    let ok_server = one(&spans, "OK server", |s| {
        kind(s) == SpanKind::Server && status(s) == "OK"
    });
    assert_eq!(service(ok_server), "greeter");
    assert_eq!(service(ok_client), "greeter-client");
    assert_child(ok_client, ok_server, "connection");
    let nf_client = one(&spans, "NOT_FOUND client", |s| {
        kind(s) == SpanKind::Client && status(s) == "NOT_FOUND"
    });
    let nf_server = one(&spans, "NOT_FOUND server", |s| {
        kind(s) == SpanKind::Server && status(s) == "NOT_FOUND"
    });
    // Client spans fail on every non-OK code; servers only on server-fault codes.
    let code = |s: &ReceivedSpan| s.span.status.as_ref().map_or(0, |st| st.code);
    assert_eq!(code(nf_client), 2, "client NOT_FOUND is an error");
    assert_ne!(code(nf_server), 2, "server NOT_FOUND is not a server error");
    assert_ne!(code(ok_client), 2);
    assert_child(nf_client, nf_server, "connection");
    drop(agent);
    drop(server);
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn collector_down_then_back() {
    if !require_ebpf("collector_down_then_back") {
        return;
    }
    let rt = runtime();
    let rx = rt.block_on(OtlpReceiver::start());
    let chain = start_chain();
    let agent = Agent::start(
        &[
            "run",
            "--exporter",
            "otlp",
            "--endpoint",
            &rx.grpc_endpoint(),
            "--protocol",
            "grpc",
            "--pid",
            &chain.frontend.pid().to_string(),
            "--pid",
            &chain.backend.pid().to_string(),
            "--max-delay-ms",
            "200",
            "--max-queue",
            "50",
            "--stats-interval",
            "1",
        ],
        &[],
        "tracing via",
    );
    let url = format!("http://127.0.0.1:{}/checkout?id=1", chain.frontend_port);
    // The collector goes away; traffic goes on.
    rt.block_on(rx.stop());
    for _ in 0..40 {
        assert!(curl(&url, &[]).contains("book"));
    }
    std::thread::sleep(Duration::from_secs(4));
    let rss_down = rss_kib(agent.pid());
    assert!(rss_down > 0, "agent still running");
    assert!(
        rss_down < 128 * 1024,
        "agent RSS bounded while the collector is down: {rss_down} KiB"
    );
    // 200 spans were built but the queue holds 50: drops are counted, not buffered.
    let log = agent.stderr().join("\n");
    assert!(
        log.lines()
            .any(|l| l.contains("drops:") && !l.contains("export=0 ")),
        "export drops counted in the agent's log: {log}"
    );
    // The collector comes back: the retried backlog arrives (export resumed), and new traffic
    // is exported again.
    rt.block_on(rx.restart());
    rt.block_on(rx.wait_for_spans(1, Duration::from_secs(30)))
        .unwrap_or_else(|| panic!("export did not resume after the collector came back"));
    let after = format!("http://127.0.0.1:{}/checkout?id=2", chain.frontend_port);
    assert!(curl(&after, &[]).contains("pen"));
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while tokio::time::Instant::now() < deadline {
            if rx
                .spans()
                .iter()
                .any(|s| s.attr("url.query").as_deref() == Some("id=2"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("export did not resume: {}", describe(&rx.spans()));
    });
    drop(agent);
}
