//! Exchange sampling under load: beyond `--capture-budget` the kernel skips whole exchanges,
//! the same ones at both ends of a local connection, and counts them. What is kept must stay
//! exact: every span pairs with its own request, and client/server pairs still link.

use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tracewire_e2e::agent::{Agent, StatsFile};
use tracewire_e2e::clients::TracedPathServer;
use tracewire_e2e::env::require_ebpf;
use tracewire_e2e::otlp_receiver::ReceivedSpan;
use tracewire_e2e::servers::Redis;

#[test]
fn over_budget_whole_exchanges_are_sampled_consistently_at_both_ends() {
    if !require_ebpf("over_budget_whole_exchanges_are_sampled_consistently_at_both_ends") {
        return;
    }
    let mut t = TracedPathServer::start(&["--capture-budget", "300"]);
    let (conns, per_conn) = (4, 4000);
    t.run_client(conns, per_conn);
    std::thread::sleep(Duration::from_secs(3));
    let v = t.stop_agent();
    let exchanges = v["kernel"]["exchanges"].as_u64().expect("exchanges");
    let sampled_out = v["kernel"]["sampled_out"].as_u64().expect("sampled_out");
    // Both ends count. The first exchange of each end is always captured and not counted:
    // its request line opens the connection to sampling in the kernel, so from the second
    // one on every exchange is offered (no round trip through userspace first).
    let total = 2 * conns * per_conn;
    assert!(exchanges <= total as u64, "{v}");
    // nginx closes a connection after 1000 requests and the client reconnects: count ends.
    let ends = v["conntrack"]["conns_opened"]
        .as_u64()
        .expect("conns_opened");
    assert!(ends >= 2 * conns as u64, "{v}");
    assert_eq!(
        exchanges + ends,
        total as u64,
        "every exchange after the first of each end is offered to sampling: {v}"
    );
    assert_eq!(
        v["kernel"]["opened_in_kernel"].as_u64(),
        Some(ends),
        "every connection end opened from its first request: {v}"
    );
    assert!(
        sampled_out > total as u64 / 2,
        "load far above 300/s is sampled: {v}"
    );
    assert_eq!(v["conntrack"]["parse_errors"], 0, "{v}");
    assert_eq!(v["total_drops"], 0, "{v}");

    let spans = t.rx.spans();
    let kept = spans.len() as u64;
    assert_eq!(kept, v["spans_exported"].as_u64().expect("exported"), "{v}");
    assert!(
        kept + sampled_out <= total as u64 && kept + sampled_out + 16 >= total as u64,
        "every exchange is either a span or counted as sampled out: kept {kept}, out \
         {sampled_out}, total {total}"
    );
    // Server spans carry url.path; client spans url.full.
    let path = |s: &ReceivedSpan| {
        s.attr("url.path")
            .or_else(|| {
                s.attr("url.full")
                    .and_then(|u| u.find("/r/").map(|i| u[i..].to_string()))
            })
            .unwrap_or_default()
    };
    let mut seen: HashSet<(i32, String)> = HashSet::new();
    for s in &spans {
        let p = path(s);
        assert!(p.starts_with("/r/"), "span of an unknown request: {s:?}");
        assert_eq!(s.attr("http.response.status_code").as_deref(), Some("200"));
        assert!(
            seen.insert((s.span.kind, p.clone())),
            "one request reported twice on one side: {p}"
        );
    }
    // Both ends made the same decisions: nearly every kept server span has its client span,
    // and a linked pair is always the same request.
    let by_id: HashMap<&[u8], &ReceivedSpan> = spans
        .iter()
        .map(|s| (s.span.span_id.as_slice(), s))
        .collect();
    let servers: Vec<_> = spans
        .iter()
        .filter(|s| s.span.kind == SpanKind::Server as i32)
        .collect();
    let clients = spans.len() - servers.len();
    let mut linked = 0;
    for s in &servers {
        if let Some(parent) = by_id.get(s.span.parent_span_id.as_slice()) {
            assert_eq!(parent.span.kind, SpanKind::Client as i32);
            if path(parent) != path(s) {
                let show = |x: &ReceivedSpan| {
                    format!(
                        "{} {:?} start {} end {} rule {:?}",
                        path(x),
                        x.span.kind,
                        x.span.start_time_unix_nano,
                        x.span.end_time_unix_nano,
                        x.attr("tracewire.link.rule")
                    )
                };
                let mut near: Vec<String> = spans
                    .iter()
                    .filter(|o| {
                        o.span.start_time_unix_nano + 5_000_000 > s.span.start_time_unix_nano
                            && o.span.start_time_unix_nano < s.span.start_time_unix_nano + 5_000_000
                    })
                    .map(show)
                    .collect();
                near.sort();
                panic!(
                    "a server span linked to another request:\n server {}\n client {}\n near:\n{}",
                    show(s),
                    show(parent),
                    near.join("\n")
                );
            }
            assert_eq!(parent.span.trace_id, s.span.trace_id);
            linked += 1;
        }
    }
    eprintln!(
        "sampling: {total} exchanges offered, {sampled_out} sampled out, {kept} spans ({} \
         server, {clients} client), {linked} server spans linked to their client span",
        servers.len()
    );
    assert!(!servers.is_empty() && clients > 0);
    assert!(
        linked * 10 >= servers.len().min(clients) * 9,
        "both ends keep the same exchanges: {linked} linked of {} servers / {clients} clients",
        servers.len()
    );
}

/// A load that starts against an idle agent is held to the kernel's per-CPU window cap until
/// the agent's first update sets the threshold. Before the cap the kernel captured it in
/// full for those 10-20 ms: redis-benchmark -P 16 sends about 20,000 commands per 10 ms here,
/// more spans in its first second than the export queue holds.
#[test]
fn a_load_that_starts_is_capped_in_the_kernel_before_the_agent_catches_up() {
    if !require_ebpf("a_load_that_starts_is_capped_in_the_kernel_before_the_agent_catches_up") {
        return;
    }
    let redis = Redis::start();
    let stats = StatsFile::new();
    let port = redis.port.to_string();
    // 3,000 calls/s: a cap of 26 exchanges per CPU per 8.4 ms window (at the prior 4 calls
    // per exchange), which any pipelined load passes at once.
    let agent = Agent::start(
        &[
            "run",
            "--exporter",
            "none",
            "--port",
            &port,
            "--capture-budget",
            "3000",
            "--stats-file",
            stats.arg(),
        ],
        &[],
        "tracing via",
    );
    // Idle first: the agent polls its ring less and less often.
    std::thread::sleep(Duration::from_millis(500));
    let st = Command::new("redis-benchmark")
        .args([
            "-p", &port, "-t", "set", "-n", "200000", "-P", "16", "-c", "8", "-q",
        ])
        .stdout(Stdio::null())
        .status()
        .expect("redis-benchmark");
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(300));
    agent.stop();
    let v = stats.read();
    let capped = v["kernel"]["capped"].as_u64().expect("capped");
    let sampled_out = v["kernel"]["sampled_out"].as_u64().expect("sampled_out");
    assert!(capped > 0, "the window cap held the load's start: {v}");
    assert!(
        sampled_out >= capped,
        "capped exchanges count as sampled out: {v}"
    );
    assert_eq!(v["total_drops"], 0, "{v}");
    eprintln!("window cap: {capped} exchanges capped of {sampled_out} sampled out");
}
