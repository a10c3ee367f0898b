use std::time::Duration;

use agent_protocols::{Detail, ProtocolKind};

use super::*;
use crate::model::{Exchange, Role};
use crate::spans::testutil::*;
use crate::spans::{ClockOffset, SpanConfig, build_span};

const HOLD: u64 = 1_000_000_000;

fn cfg() -> CorrelatorConfig {
    CorrelatorConfig {
        hold: Duration::from_nanos(HOLD),
        max_held: 10_000,
    }
}

/// `ex` as the `seq`-th exchange of its connection end (conntrack numbers them).
fn numbered(mut ex: Exchange, seq: u64) -> Exchange {
    ex.seq = seq;
    ex
}

fn span(ex: &Exchange) -> SpanData {
    match build_span(
        ex,
        resource(ex.conn.pid),
        &ClockOffset::fixed(0),
        &SpanConfig::default(),
    ) {
        Ok(s) => s,
        Err(e) => panic!("skipped {e:?}"),
    }
}

/// The five exchanges of one chain, in completion order, with a distinguishing offset.
/// curl -> frontend(pid 100+) SERVER -> frontend CLIENT -> backend SERVER -> pg + redis CLIENTs
fn chain(i: u32, t0: u64) -> Vec<Exchange> {
    let fpid = 100;
    let bpid = 200;
    let ftid = 1000 + i;
    let btid = 2000 + i;
    let p = |base: u16| base + u16::try_from(i).unwrap_or(0);
    let fe_local = "10.0.0.1:8080".to_string();
    let curl = format!("10.0.0.9:{}", p(5000));
    let fe_out = format!("127.0.0.1:{}", p(40000));
    let be = "127.0.0.1:9090".to_string();
    let be_out_pg = format!("127.0.0.1:{}", p(41000));
    let be_out_redis = format!("127.0.0.1:{}", p(42000));
    let c = u64::from(i) * 10;
    let t = |a: u64, b: u64, x: u64, d: u64| (t0 + a, t0 + b, t0 + x, t0 + d);
    let pg_ex = exchange(
        c + 4,
        bpid,
        btid,
        Role::Client,
        &be_out_pg,
        "127.0.0.1:5432",
        record(
            ProtocolKind::Postgres,
            t(3000, 3100, 3500, 3600),
            pg("SELECT", "orders"),
        ),
    );
    let redis_ex = exchange(
        c + 5,
        bpid,
        btid,
        Role::Client,
        &be_out_redis,
        "127.0.0.1:6379",
        record(ProtocolKind::Redis, t(4000, 4100, 4500, 4600), redis("GET")),
    );
    let be_srv = exchange(
        c + 3,
        bpid,
        btid,
        Role::Server,
        &be,
        &fe_out,
        record(
            ProtocolKind::Http1,
            t(2200, 2300, 7800, 7900),
            http_detail("GET", "/api", Some(200)),
        ),
    );
    let fe_cli = exchange(
        c + 2,
        fpid,
        ftid,
        Role::Client,
        &fe_out,
        &be,
        record(
            ProtocolKind::Http1,
            t(2000, 2100, 8000, 8100),
            http_detail("GET", "/api", Some(200)),
        ),
    );
    let fe_srv = exchange(
        c + 1,
        fpid,
        ftid,
        Role::Server,
        &fe_local,
        &curl,
        record(
            ProtocolKind::Http1,
            t(1000, 1100, 9000, 9100),
            http_detail("GET", "/", Some(200)),
        ),
    );
    vec![pg_ex, redis_ex, be_srv, fe_cli, fe_srv]
}

fn find<'a>(
    spans: &'a [Box<SpanData>],
    pid: u32,
    tid: u32,
    name: &str,
    kind: SpanKind,
) -> &'a SpanData {
    match spans
        .iter()
        .find(|s| s.pid == pid && s.link.tid == tid && s.name == name && s.kind == kind)
    {
        Some(s) => s,
        None => panic!("no span {pid}/{tid} {name} {kind:?}"),
    }
}

/// The span of process `pid` for request `path` (url.path on servers, url.full on clients).
fn by_path(out: &[Box<SpanData>], pid: u32, path: &str) -> SpanData {
    match out.iter().find(|s| {
        s.pid == pid
            && (s.attributes.get_str("url.path") == Some(path)
                || s.attributes
                    .get_str("url.full")
                    .is_some_and(|u| u.ends_with(path)))
    }) {
        Some(s) => (**s).clone(),
        None => panic!("missing {pid} {path}"),
    }
}

fn rule(s: &SpanData) -> Option<&str> {
    s.attributes.get_str("tracewire.link.rule")
}

fn assert_chain(spans: &[Box<SpanData>], i: u32) {
    let fe_srv = find(spans, 100, 1000 + i, "GET", SpanKind::Server);
    let fe_cli = find(spans, 100, 1000 + i, "GET", SpanKind::Client);
    let be_srv = find(spans, 200, 2000 + i, "GET", SpanKind::Server);
    let pg = find(spans, 200, 2000 + i, "SELECT orders", SpanKind::Client);
    let rd = find(spans, 200, 2000 + i, "GET", SpanKind::Client);
    assert_eq!(fe_srv.parent_span_id, None);
    assert_eq!(rule(fe_srv), None);
    assert_ne!(fe_srv.trace_id, [0; 16]);
    for s in [fe_cli, be_srv, pg, rd] {
        assert_eq!(s.trace_id, fe_srv.trace_id, "trace id of {}", s.name);
    }
    assert_eq!(fe_cli.parent_span_id, Some(fe_srv.span_id));
    assert_eq!(rule(fe_cli), Some("thread"));
    assert_eq!(be_srv.parent_span_id, Some(fe_cli.span_id));
    assert_eq!(rule(be_srv), Some("connection"));
    assert_eq!(pg.parent_span_id, Some(be_srv.span_id));
    assert_eq!(rule(pg), Some("thread"));
    assert_eq!(rd.parent_span_id, Some(be_srv.span_id));
    assert_eq!(rule(rd), Some("thread"));
    for s in [fe_srv, fe_cli, be_srv, pg, rd] {
        assert_eq!(s.attributes.get("tracewire.link.confidence"), None);
        assert_ne!(s.span_id, [0; 8]);
    }
}

#[test]
fn one_chain_in_completion_order() {
    let mut c = Correlator::new(cfg());
    for (k, ex) in chain(0, 0).iter().enumerate() {
        c.push(span(ex), u64::try_from(k).unwrap_or(0) * 1_000);
    }
    // Nothing leaves before the window.
    assert!(c.poll(HOLD / 2).is_empty());
    assert_eq!(c.pending(), 5);
    // The pipeline yields the CPU from this hook: it runs once per released span.
    let mut released = 0;
    let out = c.poll_with(HOLD + 10_000, || released += 1);
    assert_eq!(out.len(), 5);
    assert_eq!(released, 5);
    assert_chain(&out, 0);
    // The root was released first, then the rest top-down.
    assert_eq!(out.first().map(|s| s.kind), Some(SpanKind::Server));
    let st = c.stats();
    assert_eq!(st.received, 5);
    assert_eq!(st.released, 5);
    assert_eq!(st.roots, 1);
    assert_eq!(st.linked_thread, 3);
    assert_eq!(st.linked_connection, 1);
    assert_eq!(st.linked_thread_guess, 0);
    assert_eq!(st.orphaned, 0);
    assert_eq!(st.forced_releases, 0);
    // Retention: entries dropped after two windows.
    assert!(c.poll(3 * HOLD).is_empty());
    assert_eq!(c.held(), 0);
}

#[test]
fn twenty_concurrent_chains_make_twenty_trees() {
    let mut all: Vec<Exchange> = (0..20).flat_map(|i| chain(i, u64::from(i) * 37)).collect();
    all.sort_by_key(|e| e.record.end_ns);
    let mut c = Correlator::new(cfg());
    for ex in &all {
        c.push(span(ex), ex.record.end_ns);
    }
    let out = c.poll(10_000 + HOLD);
    assert_eq!(out.len(), 100);
    for i in 0..20 {
        assert_chain(&out, i);
    }
    let mut traces: Vec<[u8; 16]> = out.iter().map(|s| s.trace_id).collect();
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), 20);
    let mut ids: Vec<[u8; 8]> = out.iter().map(|s| s.span_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 100);
    assert_eq!(c.stats().roots, 20);
}

#[test]
fn traceparent_join_keeps_tracestate_and_children_follow() {
    let mut h = http("GET", "/", Some(200));
    h.traceparent = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    h.tracestate = Some("vendor=x".into());
    let srv = exchange(
        1,
        5,
        6,
        Role::Server,
        "127.0.0.1:80",
        "127.0.0.1:3000",
        record(
            ProtocolKind::Http1,
            (100, 110, 900, 1000),
            Detail::Http(Box::new(h)),
        ),
    );
    let cli = exchange(
        2,
        5,
        6,
        Role::Client,
        "127.0.0.1:4000",
        "127.0.0.1:6379",
        record(ProtocolKind::Redis, (200, 210, 300, 310), redis("SET")),
    );
    let mut c = Correlator::new(cfg());
    c.push(span(&cli), 0);
    c.push(span(&srv), 10);
    // The header decides the request's parent: it leaves at once; its child waits its window.
    let mut out = c.poll(20);
    assert_eq!(out.len(), 1);
    assert_eq!(c.stats().settled_on_arrival, 1);
    out.extend(c.poll(HOLD + 10));
    assert_eq!(out.len(), 2);
    let s = find(&out, 5, 6, "GET", SpanKind::Server);
    let r = find(&out, 5, 6, "SET", SpanKind::Client);
    let want_trace = [
        0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47,
        0x36,
    ];
    assert_eq!(s.trace_id, want_trace);
    assert_eq!(
        s.parent_span_id,
        Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
    );
    assert_eq!(s.trace_state.as_deref(), Some("vendor=x"));
    assert_eq!(rule(s), Some("traceparent"));
    assert_eq!(r.trace_id, want_trace);
    assert_eq!(r.parent_span_id, Some(s.span_id));
    assert_eq!(c.stats().linked_traceparent, 1);
}

/// The server end (pid 10, tid 11) and the client end (pid 20, tid 21) of one HTTP exchange on
/// connection `n`, starting at `t`; the client's process serves nothing when `pure_client`.
fn http_pair(n: u16, t: u64, pure_client: bool) -> (Exchange, Exchange) {
    let port = format!("127.0.0.1:{}", 5000 + n);
    let srv = exchange(
        u64::from(n) * 2,
        10,
        11,
        Role::Server,
        "127.0.0.1:80",
        &port,
        record(
            ProtocolKind::Http1,
            (t + 100, t + 110, t + 800, t + 900),
            http_detail("GET", "/", Some(200)),
        ),
    );
    let mut cli = exchange(
        u64::from(n) * 2 + 1,
        20,
        21,
        Role::Client,
        &port,
        "127.0.0.1:80",
        record(
            ProtocolKind::Http1,
            (t + 50, t + 60, t + 950, t + 1000),
            http_detail("GET", "/", Some(200)),
        ),
    );
    cli.pure_client = pure_client;
    (srv, cli)
}

/// A load generator's calls (its process serves nothing) are roots the moment they arrive, and
/// the server end each pairs with leaves with it, linked, whichever end arrives first.
#[test]
fn calls_of_a_pure_client_settle_on_arrival() {
    let check = |out: &[Box<SpanData>]| {
        assert_eq!(out.len(), 2);
        let s = find(out, 10, 11, "GET", SpanKind::Server);
        let k = find(out, 20, 21, "GET", SpanKind::Client);
        assert_eq!(k.parent_span_id, None);
        assert_ne!(k.trace_id, [0; 16]);
        assert_eq!(s.parent_span_id, Some(k.span_id));
        assert_eq!(s.trace_id, k.trace_id);
        assert_eq!(rule(s), Some("connection"));
    };
    let mut c = Correlator::new(cfg());
    // Server end first (the usual order): it waits for its client, then both leave.
    let (srv, cli) = http_pair(1, 0, true);
    c.push(span(&srv), 0);
    assert!(c.poll(1).is_empty());
    c.push(span(&cli), 2);
    check(&c.poll(3));
    // Client end first: the server end joins its decided trace on arrival.
    let (srv, cli) = http_pair(2, 10_000, true);
    c.push(span(&cli), 4);
    c.push(span(&srv), 5);
    check(&c.poll(6));
    let st = c.stats();
    assert_eq!(st.settled_on_arrival, 4);
    assert_eq!(st.roots, 2);
    assert_eq!(st.linked_connection, 2);
    assert_eq!(st.forced_releases, 0);
    assert_eq!(st.orphaned, 0);
    // Nothing was left waiting.
    assert!(c.poll(HOLD * 2).is_empty());
}

/// A call of a process that serves requests may still get a parent: it waits its window even
/// when its server end is here.
#[test]
fn a_call_of_a_serving_process_waits_for_its_parent() {
    let (srv, cli) = http_pair(1, 0, false);
    assert!(!cli.pure_client);
    let mut c = Correlator::new(cfg());
    c.push(span(&srv), 0);
    c.push(span(&cli), 1);
    assert!(c.poll(2).is_empty());
    assert_eq!(c.poll(HOLD + 2).len(), 2);
    assert_eq!(c.stats().settled_on_arrival, 0);
}

#[test]
fn overlapping_requests_on_one_thread_are_a_guess() {
    // An event loop: two inbound requests open on thread 7, one outbound call inside both.
    let a = exchange(
        1,
        5,
        7,
        Role::Server,
        "127.0.0.1:80",
        "127.0.0.1:3000",
        record(
            ProtocolKind::Http1,
            (100, 110, 900, 1000),
            http_detail("GET", "/a", Some(200)),
        ),
    );
    let b = exchange(
        2,
        5,
        7,
        Role::Server,
        "127.0.0.1:80",
        "127.0.0.1:3001",
        record(
            ProtocolKind::Http1,
            (150, 160, 800, 850),
            http_detail("POST", "/b", Some(200)),
        ),
    );
    let call = exchange(
        3,
        5,
        7,
        Role::Client,
        "127.0.0.1:4000",
        "127.0.0.1:6379",
        record(ProtocolKind::Redis, (200, 210, 300, 310), redis("GET")),
    );
    // Another process's request on the same tid number must never be chosen.
    let other = exchange(
        4,
        6,
        7,
        Role::Server,
        "127.0.0.1:81",
        "127.0.0.1:3002",
        record(
            ProtocolKind::Http1,
            (190, 195, 900, 1000),
            http_detail("PUT", "/c", Some(200)),
        ),
    );
    let mut c = Correlator::new(cfg());
    c.push(span(&call), 0);
    c.push(span(&other), 1);
    c.push(span(&a), 2);
    c.push(span(&b), 3);
    let out = c.poll(HOLD + 10);
    assert_eq!(out.len(), 4);
    let call = find(&out, 5, 7, "GET", SpanKind::Client);
    let b = find(&out, 5, 7, "POST", SpanKind::Server);
    assert_eq!(call.parent_span_id, Some(b.span_id));
    assert_eq!(call.trace_id, b.trace_id);
    assert_eq!(rule(call), Some("thread_guess"));
    assert_eq!(
        call.attributes.get("tracewire.link.confidence"),
        Some(crate::spans::AttrValue::F64(0.5))
    );
    assert_eq!(c.stats().linked_thread_guess, 1);
    assert_eq!(c.stats().roots, 3);
}

#[test]
fn a_call_outside_the_open_window_is_not_linked() {
    // The call starts after the server wrote its response: not a child.
    let srv = exchange(
        1,
        5,
        7,
        Role::Server,
        "127.0.0.1:80",
        "127.0.0.1:3000",
        record(
            ProtocolKind::Http1,
            (100, 110, 200, 210),
            http_detail("GET", "/", Some(200)),
        ),
    );
    let call = exchange(
        2,
        5,
        7,
        Role::Client,
        "127.0.0.1:4000",
        "127.0.0.1:6379",
        record(ProtocolKind::Redis, (300, 310, 320, 330), redis("GET")),
    );
    let mut c = Correlator::new(cfg());
    c.push(span(&srv), 0);
    c.push(span(&call), 1);
    let out = c.poll(HOLD + 10);
    assert_eq!(out.len(), 2);
    assert!(out.iter().all(|s| s.parent_span_id.is_none()));
    assert_ne!(
        out.first().map(|s| s.trace_id),
        out.get(1).map(|s| s.trace_id)
    );
}

#[test]
fn second_request_on_a_connection_matches_second_request() {
    // Keep-alive: two requests on one connection, seen from both ends.
    let mk = |role, l: &str, r: &str, conn, t: T4, path: &str| {
        exchange(
            conn,
            if role == Role::Client { 1 } else { 2 },
            9,
            role,
            l,
            r,
            record(ProtocolKind::Http1, t, http_detail("GET", path, Some(200))),
        )
    };
    let (cl, sv) = ("127.0.0.1:40000", "127.0.0.1:8080");
    let c1 = mk(Role::Client, cl, sv, 1, (100, 110, 190, 200), "/1");
    let s1 = mk(Role::Server, sv, cl, 2, (120, 130, 180, 185), "/1");
    let c2 = numbered(mk(Role::Client, cl, sv, 1, (300, 310, 390, 400), "/2"), 1);
    let s2 = numbered(mk(Role::Server, sv, cl, 2, (320, 330, 380, 385), "/2"), 1);
    let mut c = Correlator::new(cfg());
    for (k, ex) in [&s1, &c1, &s2, &c2].into_iter().enumerate() {
        c.push(span(ex), u64::try_from(k).unwrap_or(0));
    }
    let out = c.poll(HOLD + 10);
    assert_eq!(out.len(), 4);
    let by = |pid: u32, path: &str| by_path(&out, pid, path);
    assert_eq!(by(2, "/1").parent_span_id, Some(by(1, "/1").span_id));
    assert_eq!(by(2, "/2").parent_span_id, Some(by(1, "/2").span_id));
    assert_ne!(by(1, "/1").trace_id, by(1, "/2").trace_id);
}

/// With the socket tracepoints a client's start is when its send completed; a server that ran
/// first may have read the request a little before that. The two ends still pair.
#[test]
fn a_send_seen_after_the_server_read_it_still_pairs() {
    let (cl, sv) = ("127.0.0.1:40002", "127.0.0.1:8080");
    let mk = |role, pid, l: &str, r: &str, conn, t: T4| {
        exchange(
            conn,
            pid,
            9,
            role,
            l,
            r,
            record(ProtocolKind::Http1, t, http_detail("GET", "/", Some(200))),
        )
    };
    // The server read the request at 10 µs and answered at 40 µs; the client's send was seen
    // completing at 12 µs, its response read at 50 µs.
    let s = mk(Role::Server, 2, sv, cl, 2, (10_000, 10_000, 40_000, 40_100));
    let cli = mk(Role::Client, 1, cl, sv, 1, (12_000, 12_000, 50_000, 50_000));
    let mut c = Correlator::new(cfg());
    c.push(span(&s), 0);
    c.push(span(&cli), 1);
    let out = c.poll(HOLD + 10);
    assert_eq!(out.len(), 2);
    let (Some(server), Some(client)) = (
        out.iter().find(|x| x.pid == 2),
        out.iter().find(|x| x.pid == 1),
    ) else {
        panic!("both ends exported: {out:?}");
    };
    assert_eq!(server.parent_span_id, Some(client.span_id));
    assert_eq!(c.stats().linked_connection, 1);
}

/// Pipelined requests overlap, so timing alone fits either server exchange to either client
/// one: the exchange numbers conntrack gave each end pair them.
#[test]
fn pipelined_exchanges_pair_by_their_number() {
    let (cl, sv) = ("127.0.0.1:40001", "127.0.0.1:6379");
    let mk = |role, pid, l: &str, r: &str, conn, t: T4, seq| {
        numbered(
            exchange(
                conn,
                pid,
                9,
                role,
                l,
                r,
                record(ProtocolKind::Http1, t, http_detail("GET", "/", Some(200))),
            ),
            seq,
        )
    };
    let s1 = mk(Role::Server, 2, sv, cl, 2, (120, 120, 200, 205), 0);
    let s2 = mk(Role::Server, 2, sv, cl, 2, (120, 121, 206, 210), 1);
    let c1 = mk(Role::Client, 1, cl, sv, 1, (100, 110, 300, 310), 0);
    let c2 = mk(Role::Client, 1, cl, sv, 1, (105, 112, 310, 320), 1);
    let mut c = Correlator::new(cfg());
    for (k, ex) in [&s1, &s2, &c1, &c2].into_iter().enumerate() {
        c.push(span(ex), u64::try_from(k).unwrap_or(0));
    }
    let out = c.poll(HOLD + 10);
    assert_eq!(out.len(), 4);
    let at = |pid: u32, start: u64| match out.iter().find(|s| {
        s.pid == pid && s.link.timing.start_ns == start && s.link.timing.request_end_ns != 121
    }) {
        Some(s) => s.clone(),
        None => panic!("missing {pid} {start}"),
    };
    let second_server = match out.iter().find(|s| s.link.timing.request_end_ns == 121) {
        Some(s) => s.clone(),
        None => panic!("missing the second server exchange"),
    };
    assert_eq!(at(2, 120).parent_span_id, Some(at(1, 100).span_id));
    assert_eq!(second_server.parent_span_id, Some(at(1, 105).span_id));
}

#[test]
fn full_buffer_releases_early_and_counts() {
    let mut c = Correlator::new(CorrelatorConfig {
        max_held: 3,
        ..cfg()
    });
    for k in 0..5u64 {
        let ex = exchange(
            k,
            1,
            1,
            Role::Client,
            "127.0.0.1:4000",
            "127.0.0.1:6379",
            record(
                ProtocolKind::Redis,
                (k * 10, k * 10 + 1, k * 10 + 2, k * 10 + 3),
                redis("GET"),
            ),
        );
        c.push(span(&ex), k);
    }
    assert_eq!(c.held(), 3);
    assert_eq!(c.stats().forced_releases, 2);
    let early = c.poll(10);
    assert_eq!(early.len(), 2);
    let rest = c.poll(HOLD + 10);
    assert_eq!(rest.len(), 3);
    assert_eq!(c.stats().released, 5);
    assert_eq!(c.stats().roots, 5);
}

#[test]
fn forced_release_keeps_the_connection_link() {
    // Under load the buffer fills before the hold window ends. The server end arrives first
    // and is forced out while its parent, the client end, is still held: the client's trace
    // is decided then, so the pair stays one trace instead of becoming two roots.
    let mut c = Correlator::new(CorrelatorConfig {
        max_held: 2,
        ..cfg()
    });
    for k in 0..4u64 {
        let port = format!("127.0.0.1:{}", 40_000 + k);
        let t = k * 1_000;
        let sv = exchange(
            100 + k,
            2,
            2,
            Role::Server,
            "127.0.0.1:8080",
            &port,
            record(
                ProtocolKind::Http1,
                (t + 10, t + 20, t + 30, t + 40),
                http_detail("GET", "/", Some(200)),
            ),
        );
        let cl = exchange(
            200 + k,
            1,
            1,
            Role::Client,
            &port,
            "127.0.0.1:8080",
            record(
                ProtocolKind::Http1,
                (t, t + 20, t + 30, t + 50),
                http_detail("GET", "/", Some(200)),
            ),
        );
        c.push(span(&sv), t);
        c.push(span(&cl), t + 1);
    }
    let mut out = c.poll(10 * HOLD);
    out.extend(c.flush());
    assert_eq!(out.len(), 8);
    assert!(c.stats().forced_releases >= 4);
    assert_eq!(c.stats().orphaned, 0);
    assert_eq!(c.stats().linked_connection, 4);
    for sv in out.iter().filter(|s| s.kind == SpanKind::Server) {
        let cl = out
            .iter()
            .find(|s| Some(s.span_id) == sv.parent_span_id)
            .expect("the server span's parent was exported");
        assert_eq!(cl.kind, SpanKind::Client);
        assert_eq!(cl.trace_id, sv.trace_id);
        assert_eq!(cl.parent_span_id, None);
    }
}

#[test]
fn waiting_for_a_parent_is_bounded() {
    // A client links (by connection) to a server... which links back to the client: a cycle
    // synthetic data can create. The wait ends at 4 windows with orphans counted.
    let cl = exchange(
        1,
        1,
        1,
        Role::Client,
        "127.0.0.1:40000",
        "127.0.0.1:8080",
        record(
            ProtocolKind::Http1,
            (100, 110, 190, 200),
            http_detail("GET", "/", Some(200)),
        ),
    );
    let sv = exchange(
        2,
        1,
        1,
        Role::Server,
        "127.0.0.1:8080",
        "127.0.0.1:40000",
        record(
            ProtocolKind::Http1,
            (90, 100, 150, 310),
            http_detail("GET", "/", Some(200)),
        ),
    );
    let mut c = Correlator::new(cfg());
    c.push(span(&sv), 0);
    c.push(span(&cl), 1);
    assert!(c.poll(2 * HOLD).is_empty());
    let out = c.poll(5 * HOLD);
    assert_eq!(out.len(), 2);
    assert!(c.stats().orphaned >= 1);
    // The cycle is broken, never exported: at least one of the two is a root.
    assert!(out.iter().any(|s| s.parent_span_id.is_none()));
    let out2 = c.flush();
    assert!(out2.is_empty());
}

#[test]
fn flush_releases_everything_top_down() {
    let mut c = Correlator::new(cfg());
    for ex in chain(0, 0) {
        c.push(span(&ex), 0);
    }
    let out = c.flush();
    assert_eq!(out.len(), 5);
    assert_chain(&out, 0);
}

#[test]
fn connection_pairs_survive_a_missed_exchange() {
    // The server side lost the first exchange (e.g. capture started late): request counters
    // disagree by one, timing still pairs the right ends.
    let (cl, sv) = ("127.0.0.1:40000", "127.0.0.1:8080");
    let mk = |role, pid, l: &str, r: &str, conn, t: T4, path: &str| {
        exchange(
            conn,
            pid,
            9,
            role,
            l,
            r,
            record(ProtocolKind::Http1, t, http_detail("GET", path, Some(200))),
        )
    };
    let c1 = mk(Role::Client, 1, cl, sv, 1, (100, 110, 190, 200), "/1");
    let c2 = numbered(
        mk(Role::Client, 1, cl, sv, 1, (300, 310, 390, 400), "/2"),
        1,
    );
    let s2 = mk(Role::Server, 2, sv, cl, 2, (320, 330, 380, 385), "/2");
    let c3 = numbered(
        mk(Role::Client, 1, cl, sv, 1, (500, 510, 590, 600), "/3"),
        2,
    );
    let s3 = numbered(
        mk(Role::Server, 2, sv, cl, 2, (520, 530, 580, 585), "/3"),
        1,
    );
    let mut c = Correlator::new(cfg());
    for (k, ex) in [&c1, &s2, &c2, &s3, &c3].into_iter().enumerate() {
        c.push(span(ex), u64::try_from(k).unwrap_or(0));
    }
    let out = c.poll(HOLD + 10);
    assert_eq!(out.len(), 5);
    let get = |pid: u32, path: &str| by_path(&out, pid, path);
    assert_eq!(get(2, "/2").parent_span_id, Some(get(1, "/2").span_id));
    assert_eq!(get(2, "/3").parent_span_id, Some(get(1, "/3").span_id));
    assert_eq!(get(2, "/3").trace_id, get(1, "/3").trace_id);
    assert_eq!(get(1, "/1").parent_span_id, None);
    assert_eq!(c.stats().linked_connection, 2);
}

/// Sampling kept exchange 31 at the server end only; the client's exchange 32 then arrived
/// before its server end (events of two CPUs). The server end of 31, whose request was read
/// 60 µs before 32's send returned, is not 32's other end: only the same exchange number
/// gets the allowance for a send seen late, and one client exchange has one server end.
#[test]
fn an_unmatched_server_exchange_is_not_taken_for_the_next_one() {
    let (cl, sv) = ("127.0.0.1:40003", "127.0.0.1:8080");
    let mk = |role, pid, l: &str, r: &str, conn, t: T4, path: &str, seq| {
        numbered(
            exchange(
                conn,
                pid,
                9,
                role,
                l,
                r,
                record(ProtocolKind::Http1, t, http_detail("GET", path, Some(200))),
            ),
            seq,
        )
    };
    // The server end (pid 2) and the client end (pid 1) of this connection.
    let srv = |t: T4, path: &str, seq| mk(Role::Server, 2, sv, cl, 2, t, path, seq);
    let cli = |t: T4, path: &str, seq| mk(Role::Client, 1, cl, sv, 1, t, path, seq);
    let s31 = srv((184_126, 184_500, 186_000, 186_540), "/31", 30);
    let c32 = cli((244_008, 244_008, 367_000, 367_389), "/32", 31);
    let s32 = srv((246_165, 246_500, 249_000, 249_637), "/32", 31);
    let mut c = Correlator::new(cfg());
    for (k, ex) in [&s31, &c32, &s32].into_iter().enumerate() {
        c.push(span(ex), u64::try_from(k).unwrap_or(0));
    }
    let out = c.poll(HOLD + 10);
    assert_eq!(out.len(), 3);
    let get = |pid: u32, path: &str| by_path(&out, pid, path);
    assert_eq!(get(2, "/31").parent_span_id, None);
    assert_eq!(get(2, "/32").parent_span_id, Some(get(1, "/32").span_id));
    assert_eq!(c.stats().linked_connection, 1);
}

#[test]
fn http2_streams_pair_by_stream_id() {
    use agent_protocols::Detail;
    let (cl, sv) = ("127.0.0.1:40000", "127.0.0.1:50051");
    let mk = |role, pid, l: &str, r: &str, t: T4, sid: u32| {
        let mut g = grpc("pkg.Svc/M", Some(0));
        g.stream_id = sid;
        exchange(
            u64::from(pid),
            pid,
            9,
            role,
            l,
            r,
            record(ProtocolKind::Http2, t, Detail::Grpc(Box::new(g))),
        )
    };
    // Two overlapping streams on one connection: timing alone cannot tell them apart.
    let c1 = mk(Role::Client, 1, cl, sv, (100, 110, 400, 410), 1);
    let c3 = mk(Role::Client, 1, cl, sv, (105, 115, 390, 395), 3);
    let s1 = mk(Role::Server, 2, sv, cl, (120, 125, 380, 385), 1);
    let s3 = mk(Role::Server, 2, sv, cl, (121, 126, 370, 375), 3);
    let mut c = Correlator::new(cfg());
    for (k, ex) in [&s3, &s1, &c3, &c1].into_iter().enumerate() {
        c.push(span(ex), u64::try_from(k).unwrap_or(0));
    }
    let out = c.poll(HOLD + 10);
    let get = |pid: u32, sid: u32| match out
        .iter()
        .find(|s| s.pid == pid && s.link.stream_id == Some(sid))
    {
        Some(s) => s.clone(),
        None => panic!("missing {pid} {sid}"),
    };
    assert_eq!(get(2, 1).parent_span_id, Some(get(1, 1).span_id));
    assert_eq!(get(2, 3).parent_span_id, Some(get(1, 3).span_id));
    assert_eq!(rule(&get(2, 3)), Some("connection"));
}

#[test]
fn thread_index_is_capped() {
    // 300 calls on one thread, then the request that contains them all: only the most recent
    // MAX_PER_THREAD (256) are still findable and linked; the other 44 become roots.
    let mut c = Correlator::new(cfg());
    for k in 0..300u64 {
        let t = 1_000 + k * 10;
        let ex = exchange(
            k + 10,
            5,
            7,
            Role::Client,
            "127.0.0.1:4000",
            "127.0.0.1:6379",
            record(ProtocolKind::Redis, (t, t + 1, t + 2, t + 3), redis("GET")),
        );
        c.push(span(&ex), k);
    }
    let srv = exchange(
        1,
        5,
        7,
        Role::Server,
        "127.0.0.1:80",
        "127.0.0.1:3000",
        record(
            ProtocolKind::Http1,
            (100, 110, 100_000, 100_010),
            http_detail("GET", "/", Some(200)),
        ),
    );
    c.push(span(&srv), 400);
    let out = c.poll(HOLD + 1_000);
    assert_eq!(out.len(), 301);
    assert_eq!(c.stats().linked_thread, 256);
    assert_eq!(c.stats().roots, 45);
}

/// Throughput figure: `cargo test -p tracewire --release --lib -- --ignored --nocapture correlator_throughput`
#[test]
#[ignore]
fn correlator_throughput() {
    let chains = 20_000u32;
    let mut exs: Vec<Exchange> = (0..chains)
        .flat_map(|i| chain(i % 500, u64::from(i) * 20_000))
        .collect();
    exs.sort_by_key(|e| e.record.end_ns);
    let spans: Vec<SpanData> = exs.iter().map(span).collect();
    let n = spans.len();
    let mut c = Correlator::new(CorrelatorConfig {
        hold: Duration::from_millis(100),
        ..cfg()
    });
    let start = std::time::Instant::now();
    let mut out = 0usize;
    for (k, s) in spans.into_iter().enumerate() {
        let now = u64::try_from(k).unwrap_or(0) * 10_000; // 100k spans/s arrival rate
        c.push(s, now);
        if k % 1000 == 0 {
            out += c.poll(now).len();
        }
    }
    out += c.flush().len();
    let el = start.elapsed();
    assert_eq!(out, n);
    println!(
        "correlator: {n} spans in {el:?} = {:.0} spans/s, held peak bounded by window",
        n as f64 / el.as_secs_f64()
    );
}

/// Rule c sees the last MAX_PER_THREAD spans of a thread, counted over both kinds: the
/// containing request is found behind 255 later spans of the thread, not behind 256.
#[test]
fn thread_window_counts_both_kinds() {
    for (others, linked) in [(255u64, true), (256, false)] {
        let mut c = Correlator::new(cfg());
        let srv = exchange(
            1,
            5,
            7,
            Role::Server,
            "127.0.0.1:80",
            "127.0.0.1:3000",
            record(
                ProtocolKind::Http1,
                (100, 110, 1_000_000, 1_000_010),
                http_detail("GET", "/", Some(200)),
            ),
        );
        c.push(span(&srv), 1);
        // Later spans of the same thread that contain nothing (half servers, half clients
        // that start before the request).
        for k in 0..others {
            let role = if k % 2 == 0 {
                Role::Server
            } else {
                Role::Client
            };
            let ex = exchange(
                k + 10,
                5,
                7,
                role,
                "127.0.0.1:4000",
                "127.0.0.1:6379",
                record(
                    ProtocolKind::Http1,
                    (1, 2, 3, 4),
                    http_detail("GET", "/x", Some(200)),
                ),
            );
            c.push(span(&ex), 2);
        }
        let call = exchange(
            5000,
            5,
            7,
            Role::Client,
            "127.0.0.1:4001",
            "127.0.0.1:6379",
            record(ProtocolKind::Redis, (500, 501, 502, 503), redis("GET")),
        );
        c.push(span(&call), 3);
        let out = c.poll(HOLD + 10);
        assert_eq!(out.len(), others as usize + 2, "others={others}");
        let call_span = out
            .iter()
            .find(|s| s.start_unix_ns == 500)
            .unwrap_or_else(|| panic!("call span missing"));
        let srv_span = out
            .iter()
            .find(|s| s.start_unix_ns == 100)
            .unwrap_or_else(|| panic!("server span missing"));
        if linked {
            assert_eq!(call_span.parent_span_id, Some(srv_span.span_id));
            assert_eq!(call_span.trace_id, srv_span.trace_id);
            assert_eq!(c.stats().linked_thread, 1);
        } else {
            assert_eq!(call_span.parent_span_id, None);
            assert_eq!(c.stats().linked_thread, 0);
        }
    }
}

/// The indexes shrink with the held spans: nothing is left once every span is past its
/// retention, and no index outgrows its cap while spans are evicted early.
#[test]
fn indexes_stay_bounded_and_drain() {
    let mut c = Correlator::new(CorrelatorConfig {
        max_held: 500,
        ..cfg()
    });
    let mut now = 0u64;
    let mut max_held = 0;
    for k in 0..2_000u64 {
        let t = 1_000_000 + k * 1_000;
        let port = 40_000 + (k % 8) as u16;
        let cli = format!("127.0.0.1:{port}");
        let cl = exchange(
            k * 2 + 1,
            10,
            (k % 3) as u32,
            Role::Client,
            &cli,
            "127.0.0.1:8080",
            record(
                ProtocolKind::Http1,
                (t, t + 10, t + 500, t + 600),
                http_detail("GET", "/a", Some(200)),
            ),
        );
        let sv = exchange(
            k * 2 + 2,
            20,
            1,
            Role::Server,
            "127.0.0.1:8080",
            &cli,
            record(
                ProtocolKind::Http1,
                (t + 20, t + 30, t + 400, t + 450),
                http_detail("GET", "/a", Some(200)),
            ),
        );
        c.push(span(&sv), now);
        c.push(span(&cl), now + 1);
        // 100 pairs per window: the due ones are released at each poll and the released ones
        // kept for retention overflow the 500 slots, so the oldest are evicted (already released).
        now += HOLD / 100;
        max_held = max_held.max(c.held());
        assert!(c.held() <= 500);
        assert!(c.unreleased.len() <= c.held());
        assert!(c.clients_by_key.values().all(|v| v.len() <= MAX_PER_CONN));
        assert!(c.servers_by_key.values().all(|v| v.len() <= MAX_PER_CONN));
        assert!(
            c.by_thread
                .values()
                .all(|t| t.servers.len() + t.clients.len() <= MAX_PER_THREAD)
        );
        if k % 100 == 99 {
            c.poll(now);
        }
    }
    assert_eq!(max_held, 500);
    // Release the rest inside their wait limit, then let the retention pass.
    c.poll(now + HOLD + 10);
    assert_eq!(c.pending(), 0);
    c.poll(now + 3 * HOLD);
    assert_eq!(c.stats().linked_connection, 2_000);
    assert_eq!(c.stats().forced_releases, 0);
    assert_eq!(c.held(), 0);
    assert!(c.unreleased.is_empty());
    assert!(c.clients_by_key.is_empty());
    assert!(c.servers_by_key.is_empty());
    assert!(c.by_thread.is_empty());
    assert_eq!(c.stats().released, 4_000);
}

/// A connection index slot outlives its evicted entry until the next sweep: a later server
/// end of that connection must not be linked to the evicted client, and the slots of closed
/// connections are swept once the buffer has turned over.
#[test]
fn evicted_slots_are_never_linked_and_are_swept() {
    let mut c = Correlator::new(CorrelatorConfig {
        max_held: 8,
        ..cfg()
    });
    let t = 1_000_000u64;
    let timing = (t, t + 10, t + 500, t + 600);
    let cl = exchange(
        1,
        10,
        1,
        Role::Client,
        "127.0.0.1:40000",
        "127.0.0.1:8080",
        record(
            ProtocolKind::Http1,
            timing,
            http_detail("GET", "/a", Some(200)),
        ),
    );
    c.push(span(&cl), 0);
    // Unrelated spans, each on a connection of its own, push the client out of the buffer.
    for k in 0..20u64 {
        let other = exchange(
            100 + k,
            30,
            2,
            Role::Client,
            &format!("127.0.0.1:{}", 41_000 + k),
            "127.0.0.1:9090",
            record(
                ProtocolKind::Http1,
                timing,
                http_detail("GET", "/b", Some(200)),
            ),
        );
        c.push(span(&other), 1);
    }
    assert_eq!(c.held(), 8);
    let sv = exchange(
        2,
        20,
        1,
        Role::Server,
        "127.0.0.1:8080",
        "127.0.0.1:40000",
        record(
            ProtocolKind::Http1,
            (t + 20, t + 30, t + 400, t + 450),
            http_detail("GET", "/a", Some(200)),
        ),
    );
    c.push(span(&sv), 2);
    // The buffer turned over: the sweep leaves only the slots of held entries.
    let mut out = c.poll(3);
    assert!(c.clients_by_key.len() + c.servers_by_key.len() <= c.held());
    out.extend(c.flush());
    let s = find(&out, 20, 1, "GET", SpanKind::Server);
    assert_eq!(s.parent_span_id, None);
    assert_eq!(c.stats().linked_connection, 0);
    // Nothing held once the retention passed: nothing indexed.
    c.poll(10 * HOLD);
    assert_eq!(c.held(), 0);
    assert!(c.clients_by_key.is_empty() && c.servers_by_key.is_empty());
}
