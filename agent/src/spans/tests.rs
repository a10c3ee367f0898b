use agent_protocols::{DbSystem, Detail, ProtocolKind, SqlInfo};

use super::testutil::*;
use super::*;

fn build(ex: &Exchange) -> SpanData {
    match build_span(
        ex,
        resource(ex.conn.pid),
        &ClockOffset::fixed(1_000_000),
        &SpanConfig::default(),
    ) {
        Ok(s) => s,
        Err(e) => panic!("skipped: {e:?}"),
    }
}

fn assert_attrs(s: &SpanData, want: &[(&str, AttrValue)]) {
    for (k, v) in want {
        assert_eq!(
            s.attributes.get(k),
            Some(v.clone()),
            "attribute {k} of {:?}",
            s.attributes
        );
    }
    assert_eq!(
        s.attributes.len(),
        want.len(),
        "extra attributes in {:?}",
        s.attributes
    );
}

fn s(v: &str) -> AttrValue {
    AttrValue::Str(v.to_owned().into())
}
fn i(v: i64) -> AttrValue {
    AttrValue::Int(v)
}

#[test]
fn http_server_span() {
    let mut h = http("GET", "/users/42", Some(200));
    h.query = Some("q=1&token=abc".into());
    h.host = Some("shop.local:8080".into());
    h.user_agent = Some("curl/8".into());
    let ex = exchange(
        1,
        10,
        11,
        Role::Server,
        "10.0.0.1:8080",
        "10.0.0.9:5555",
        record(
            ProtocolKind::Http1,
            (100, 110, 190, 200),
            Detail::Http(Box::new(h)),
        ),
    );
    let sp = build(&ex);
    assert_eq!(sp.name, "GET");
    assert_eq!(sp.kind, SpanKind::Server);
    assert_eq!(sp.start_unix_ns, 1_000_100);
    assert_eq!(sp.end_unix_ns, 1_000_200);
    assert_eq!(sp.status, SpanStatus::unset());
    assert_eq!(sp.pid, 10);
    assert_eq!(sp.trace_id, [0; 16]);
    assert_eq!(sp.link.tid, 11);
    assert_eq!(
        sp.link.timing,
        MonoTiming {
            start_ns: 100,
            end_ns: 200,
            request_end_ns: 110,
            response_start_ns: 190
        }
    );
    assert_attrs(
        &sp,
        &[
            ("http.request.method", s("GET")),
            ("network.protocol.version", s("1.1")),
            ("url.path", s("/users/42")),
            ("url.scheme", s("http")),
            ("url.query", s("q=1&token=REDACTED")),
            ("server.address", s("shop.local")),
            ("server.port", i(8080)),
            ("client.address", s("10.0.0.9")),
            ("network.peer.address", s("10.0.0.9")),
            ("network.peer.port", i(5555)),
            ("user_agent.original", s("curl/8")),
            ("http.response.status_code", i(200)),
        ],
    );
}

#[test]
fn http_server_status_rules() {
    let mk = |status, role| {
        let (l, r) = ("127.0.0.1:80", "127.0.0.1:4000");
        build(&exchange(
            1,
            1,
            1,
            role,
            l,
            r,
            record(
                ProtocolKind::Http1,
                (1, 2, 3, 4),
                http_detail("POST", "/", status),
            ),
        ))
    };
    let srv404 = mk(Some(404), Role::Server);
    assert_eq!(srv404.status.code, StatusCode::Unset);
    assert_eq!(srv404.attributes.get("error.type"), None);
    let srv503 = mk(Some(503), Role::Server);
    assert_eq!(srv503.status.code, StatusCode::Error);
    assert_eq!(srv503.attributes.get_str("error.type"), Some("503"));
    let cli404 = mk(Some(404), Role::Client);
    assert_eq!(cli404.status.code, StatusCode::Error);
    assert_eq!(cli404.attributes.get_str("error.type"), Some("404"));
    let cli_none = mk(None, Role::Client);
    assert_eq!(cli_none.status, SpanStatus::error("no response"));
    assert_eq!(cli_none.attributes.get_str("error.type"), Some("_OTHER"));
    assert_eq!(cli_none.attributes.get("http.response.status_code"), None);
}

#[test]
fn http_client_span_and_other_method() {
    let mut h = http("PURGE", "/cache", Some(200));
    h.query = Some("password=x".into());
    let ex = exchange(
        1,
        10,
        11,
        Role::Client,
        "10.0.0.1:40000",
        "10.0.0.2:8081",
        record(ProtocolKind::Http1, (1, 2, 3, 4), Detail::Http(Box::new(h))),
    );
    let sp = build(&ex);
    assert_eq!(sp.name, "HTTP");
    assert_eq!(sp.kind, SpanKind::Client);
    assert_attrs(
        &sp,
        &[
            ("http.request.method", s("_OTHER")),
            ("http.request.method_original", s("PURGE")),
            ("network.protocol.version", s("1.1")),
            (
                "url.full",
                s("http://10.0.0.2:8081/cache?password=REDACTED"),
            ),
            ("server.address", s("10.0.0.2")),
            ("server.port", i(8081)),
            ("network.peer.address", s("10.0.0.2")),
            ("network.peer.port", i(8081)),
            ("http.response.status_code", i(200)),
        ],
    );
    // With a Host header lacking a port: default port 80, omitted from url.full.
    let mut h = http("GET", "/", Some(200));
    h.host = Some("backend".into());
    let ex = exchange(
        1,
        10,
        11,
        Role::Client,
        "10.0.0.1:40000",
        "10.0.0.2:80",
        record(ProtocolKind::Http1, (1, 2, 3, 4), Detail::Http(Box::new(h))),
    );
    let sp = build(&ex);
    assert_eq!(sp.attributes.get_str("url.full"), Some("http://backend/"));
    assert_eq!(sp.attributes.get_int("server.port"), Some(80));
}

#[test]
fn grpc_spans_and_status_rules() {
    let ex = |role, code| {
        let mut g = grpc("helloworld.Greeter/SayHello", code);
        g.grpc_message = Some("boom".into());
        g.stream_id = 5;
        exchange(
            1,
            1,
            1,
            role,
            "127.0.0.1:40000",
            "127.0.0.1:50051",
            record(ProtocolKind::Http2, (1, 2, 3, 4), Detail::Grpc(Box::new(g))),
        )
    };
    let ok = build(&ex(Role::Client, Some(0)));
    assert_eq!(ok.name, "helloworld.Greeter/SayHello");
    assert_eq!(ok.link.stream_id, Some(5));
    assert_eq!(ok.status.code, StatusCode::Unset);
    assert_attrs(
        &ok,
        &[
            ("rpc.system.name", s("grpc")),
            ("rpc.method", s("helloworld.Greeter/SayHello")),
            ("network.protocol.version", s("2")),
            ("server.address", s("greeter")),
            ("server.port", i(50051)),
            ("network.peer.address", s("127.0.0.1")),
            ("network.peer.port", i(50051)),
            ("rpc.response.status_code", s("OK")),
        ],
    );
    let nf_client = build(&ex(Role::Client, Some(5)));
    assert_eq!(nf_client.status, SpanStatus::error("boom"));
    assert_eq!(
        nf_client.attributes.get_str("rpc.response.status_code"),
        Some("NOT_FOUND")
    );
    assert_eq!(
        nf_client.attributes.get_str("error.type"),
        Some("NOT_FOUND")
    );
    let nf_server = build(&ex(Role::Server, Some(5)));
    assert_eq!(nf_server.status.code, StatusCode::Unset);
    assert_eq!(nf_server.attributes.get("error.type"), None);
    let internal_server = build(&ex(Role::Server, Some(13)));
    assert_eq!(internal_server.status.code, StatusCode::Error);
    assert_eq!(
        internal_server
            .attributes
            .get_str("rpc.response.status_code"),
        Some("INTERNAL")
    );
    let none = build(&ex(Role::Client, None));
    assert_eq!(none.status.code, StatusCode::Error);
    assert_eq!(none.attributes.get_str("error.type"), Some("_OTHER"));
}

#[test]
fn plain_http2_is_an_http_span() {
    let mut g = grpc("/index.html?x=1", None);
    g.plain_http2 = true;
    g.http_method = Some("GET".into());
    g.http_status = Some(200);
    g.authority = Some("web:8443".into());
    let ex = exchange(
        1,
        1,
        1,
        Role::Client,
        "127.0.0.1:40000",
        "127.0.0.1:8443",
        record(ProtocolKind::Http2, (1, 2, 3, 4), Detail::Grpc(Box::new(g))),
    );
    let sp = build(&ex);
    assert_eq!(sp.name, "GET");
    assert_eq!(
        sp.attributes.get_str("url.full"),
        Some("http://web:8443/index.html?x=1")
    );
    assert_eq!(sp.attributes.get_str("network.protocol.version"), Some("2"));
    assert_eq!(
        sp.attributes.get_int("http.response.status_code"),
        Some(200)
    );
}

#[test]
fn postgres_span() {
    let ex = exchange(
        1,
        1,
        1,
        Role::Client,
        "127.0.0.1:40000",
        "127.0.0.1:5432",
        record(ProtocolKind::Postgres, (1, 2, 3, 4), pg("SELECT", "orders")),
    );
    let sp = build(&ex);
    assert_eq!(sp.name, "SELECT orders");
    assert_eq!(sp.kind, SpanKind::Client);
    assert_attrs(
        &sp,
        &[
            ("db.system.name", s("postgresql")),
            ("db.namespace", s("shop")),
            ("db.operation.name", s("SELECT")),
            ("db.collection.name", s("orders")),
            ("db.query.text", s("SELECT * FROM orders WHERE id = ?")),
            ("db.query.summary", s("SELECT orders")),
            ("server.address", s("127.0.0.1")),
            ("server.port", i(5432)),
            ("network.peer.address", s("127.0.0.1")),
            ("network.peer.port", i(5432)),
        ],
    );
    // Raw text only when configured.
    let raw = build_span(
        &ex,
        resource(1),
        &ClockOffset::fixed(0),
        &SpanConfig { db_raw_query: true },
    );
    assert_eq!(
        raw.ok()
            .and_then(|s| s.attributes.get_str("db.query.text").map(str::to_string)),
        Some("SELECT * FROM orders WHERE id = 42".to_string())
    );
}

#[test]
fn sql_error_batch_and_nameless() {
    let info = SqlInfo {
        system: DbSystem::Mysql,
        database: None,
        user: None,
        application_name: None,
        query_sanitized: None,
        query_raw: None,
        operation: None,
        collection: None,
        rows: None,
        error_code: Some("1062".into()),
        error_message: Some("Duplicate entry".into()),
        batch_size: Some(3),
        statement: None,
    };
    let ex = exchange(
        1,
        1,
        1,
        Role::Client,
        "127.0.0.1:40000",
        "127.0.0.1:3306",
        record(
            ProtocolKind::Mysql,
            (1, 2, 3, 4),
            Detail::Sql(Box::new(info)),
        ),
    );
    let sp = build(&ex);
    assert_eq!(sp.name, "mysql");
    assert_eq!(sp.status, SpanStatus::error("Duplicate entry"));
    assert_attrs(
        &sp,
        &[
            ("db.system.name", s("mysql")),
            ("db.operation.batch.size", i(3)),
            ("db.response.status_code", s("1062")),
            ("error.type", s("1062")),
            ("server.address", s("127.0.0.1")),
            ("server.port", i(3306)),
            ("network.peer.address", s("127.0.0.1")),
            ("network.peer.port", i(3306)),
        ],
    );
}

#[test]
fn redis_span() {
    let ex = exchange(
        1,
        1,
        1,
        Role::Client,
        "127.0.0.1:40000",
        "127.0.0.1:6379",
        record(ProtocolKind::Redis, (1, 2, 3, 4), redis("GET")),
    );
    let sp = build(&ex);
    assert_eq!(sp.name, "GET");
    assert_attrs(
        &sp,
        &[
            ("db.system.name", s("redis")),
            ("db.operation.name", s("GET")),
            ("db.namespace", s("0")),
            ("server.address", s("127.0.0.1")),
            ("server.port", i(6379)),
            ("network.peer.address", s("127.0.0.1")),
            ("network.peer.port", i(6379)),
        ],
    );
    let d = Detail::Redis(Box::new(agent_protocols::RedisInfo {
        command: "HSET".into(),
        db_index: Some(3),
        error_prefix: Some("WRONGTYPE".into()),
        error_message: Some("WRONGTYPE Operation against a key".into()),
        ..Default::default()
    }));
    let ex = exchange(
        1,
        1,
        1,
        Role::Client,
        "127.0.0.1:40000",
        "127.0.0.1:6379",
        record(ProtocolKind::Redis, (1, 2, 3, 4), d),
    );
    let sp = build(&ex);
    assert_eq!(sp.attributes.get_str("db.namespace"), Some("3"));
    assert_eq!(
        sp.attributes.get_str("db.response.status_code"),
        Some("WRONGTYPE")
    );
    assert_eq!(sp.attributes.get_str("error.type"), Some("WRONGTYPE"));
    assert_eq!(sp.status.code, StatusCode::Error);
}

#[test]
fn skipped_exchanges() {
    let unknown = exchange(
        1,
        1,
        1,
        Role::Unknown,
        "127.0.0.1:1",
        "127.0.0.1:2",
        record(
            ProtocolKind::Http1,
            (1, 2, 3, 4),
            http_detail("GET", "/", Some(200)),
        ),
    );
    assert_eq!(
        build_span(
            &unknown,
            resource(1),
            &ClockOffset::fixed(0),
            &SpanConfig::default()
        )
        .err(),
        Some(SkipReason::UnknownRole)
    );
    let db_server = exchange(
        1,
        1,
        1,
        Role::Server,
        "127.0.0.1:5432",
        "127.0.0.1:2",
        record(ProtocolKind::Postgres, (1, 2, 3, 4), pg("SELECT", "t")),
    );
    assert_eq!(
        build_span(
            &db_server,
            resource(1),
            &ClockOffset::fixed(0),
            &SpanConfig::default()
        )
        .err(),
        Some(SkipReason::DbServerSide)
    );
}

#[test]
fn host_port_splitting() {
    assert_eq!(split_host_port("a:80"), ("a", Some(80)));
    assert_eq!(split_host_port("a"), ("a", None));
    assert_eq!(split_host_port("[::1]:443"), ("::1", Some(443)));
    assert_eq!(split_host_port("::1"), ("::1", None));
    assert_eq!(split_host_port("a:xx"), ("a:xx", None));
}

#[test]
fn ip_string_matches_std_formatting() {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    for v4 in [
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(10, 99, 100, 255),
        Ipv4Addr::new(9, 10, 199, 200),
    ] {
        assert_eq!(super::ip_string(IpAddr::V4(v4)), v4.to_string());
    }
    for b in 0..=255u8 {
        let v4 = Ipv4Addr::new(b, b.wrapping_add(7), 255 - b, b / 3);
        assert_eq!(super::ip_string(IpAddr::V4(v4)), v4.to_string());
    }
    let v6 = Ipv6Addr::LOCALHOST;
    assert_eq!(super::ip_string(IpAddr::V6(v6)), "::1");
}
