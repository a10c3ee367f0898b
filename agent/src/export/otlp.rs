//! SpanData -> OTLP protobuf messages, one ResourceSpans per traced process.

use std::borrow::Borrow;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};

use crate::discovery::Resource;
use crate::spans::{AttrRef, Attributes, SpanData, SpanKind, StatusCode};

pub const SCOPE_NAME: &str = "tracewire";

pub fn attr_value(v: AttrRef<'_>) -> AnyValue {
    let value = match v {
        AttrRef::Str(s) => any_value::Value::StringValue(s.to_string()),
        AttrRef::Int(i) => any_value::Value::IntValue(i),
        AttrRef::F64(f) => any_value::Value::DoubleValue(f),
        AttrRef::Bool(b) => any_value::Value::BoolValue(b),
    };
    AnyValue { value: Some(value) }
}

pub fn key_values(a: &Attributes) -> Vec<KeyValue> {
    a.iter()
        .map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: Some(attr_value(v)),
            ..Default::default()
        })
        .collect()
}

pub fn span_to_proto(s: &SpanData) -> Span {
    let kind = match s.kind {
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
    };
    let code = match s.status.code {
        StatusCode::Unset => status::StatusCode::Unset,
        StatusCode::Ok => status::StatusCode::Ok,
        StatusCode::Error => status::StatusCode::Error,
    };
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state.clone().unwrap_or_default(),
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: 0x100 | if s.parent_span_id.is_some() { 0x200 } else { 0 },
        name: s.name.to_string(),
        kind: kind as i32,
        start_time_unix_nano: s.start_unix_ns,
        end_time_unix_nano: s.end_unix_ns,
        attributes: key_values(&s.attributes),
        status: Some(Status {
            message: s.status.message.clone(),
            code: code as i32,
        }),
        ..Default::default()
    }
}

pub fn resource_to_proto(r: &Resource) -> ProtoResource {
    ProtoResource {
        attributes: key_values(&r.attributes),
        ..Default::default()
    }
}

/// Group spans by their resource (one ResourceSpans per process resource).
pub fn to_request<S: Borrow<SpanData>>(spans: &[S]) -> ExportTraceServiceRequest {
    let mut groups: Vec<(Arc<Resource>, Vec<Span>)> = Vec::new();
    for s in spans {
        let s = s.borrow();
        let p = span_to_proto(s);
        match groups
            .iter_mut()
            .find(|(r, _)| Arc::ptr_eq(r, &s.resource) || **r == *s.resource)
        {
            Some((_, v)) => v.push(p),
            None => groups.push((Arc::clone(&s.resource), vec![p])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(r, spans)| ResourceSpans {
                resource: Some(resource_to_proto(&r)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: SCOPE_NAME.to_string(),
                        version: env!("CARGO_PKG_VERSION").to_string(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            })
            .collect(),
    }
}

/// Direct protobuf encoding of the request [`to_request`] builds, without the intermediate
/// messages (no string copies, no per-span allocations). The bytes are identical to
/// `to_request(spans).encode_to_vec()`.
pub mod direct {
    use std::borrow::Borrow;

    use prost::encoding::{WireType, encode_key, encoded_len_varint, key_len};

    use crate::varint::put_varint;

    use crate::discovery::Resource;
    use crate::spans::{Attributes, SpanData, SpanKind, StatusCode};

    use super::SCOPE_NAME;

    const VERSION: &str = env!("CARGO_PKG_VERSION");

    fn delim_len(tag: u32, len: usize) -> usize {
        key_len(tag) + encoded_len_varint(len as u64) + len
    }

    fn put_delim_header(tag: u32, len: usize, buf: &mut Vec<u8>) {
        encode_key(tag, WireType::LengthDelimited, buf);
        put_varint(len as u64, buf);
    }

    /// A proto3 string/bytes field: omitted when empty.
    fn bytes_len(tag: u32, b: &[u8]) -> usize {
        if b.is_empty() {
            0
        } else {
            delim_len(tag, b.len())
        }
    }

    fn put_bytes(tag: u32, b: &[u8], buf: &mut Vec<u8>) {
        if !b.is_empty() {
            put_delim_header(tag, b.len(), buf);
            buf.extend_from_slice(b);
        }
    }

    /// Attributes are stored already encoded as one-byte-keyed fields (see `spans::attrs`):
    /// their length is the same under any such key, and writing them is a copy.
    fn attrs_len(a: &Attributes) -> usize {
        a.span_wire().len()
    }

    /// `Resource.attributes`: field 1, length-delimited.
    const RESOURCE_ATTRIBUTES_KEY: u8 = (1 << 3) | 2;

    fn kind_code(s: &SpanData) -> u64 {
        match s.kind {
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        }
    }

    fn status_len(s: &SpanData) -> usize {
        let code: u64 = match s.status.code {
            StatusCode::Unset => 0,
            StatusCode::Ok => 1,
            StatusCode::Error => 2,
        };
        bytes_len(2, s.status.message.as_bytes())
            + if code == 0 {
                0
            } else {
                key_len(3) + encoded_len_varint(code)
            }
    }

    fn put_status(s: &SpanData, buf: &mut Vec<u8>) {
        let code: u64 = match s.status.code {
            StatusCode::Unset => 0,
            StatusCode::Ok => 1,
            StatusCode::Error => 2,
        };
        put_bytes(2, s.status.message.as_bytes(), buf);
        if code != 0 {
            encode_key(3, WireType::Varint, buf);
            put_varint(code, buf);
        }
    }

    fn span_len(s: &SpanData) -> usize {
        let parent = s.parent_span_id.as_ref().map_or(&[][..], |p| &p[..]);
        bytes_len(1, &s.trace_id)
            + bytes_len(2, &s.span_id)
            + bytes_len(3, s.trace_state.as_deref().unwrap_or("").as_bytes())
            + bytes_len(4, parent)
            + key_len(16)
            + 4
            + bytes_len(5, s.name.as_bytes())
            + key_len(6)
            + encoded_len_varint(kind_code(s))
            + if s.start_unix_ns == 0 {
                0
            } else {
                key_len(7) + 8
            }
            + if s.end_unix_ns == 0 {
                0
            } else {
                key_len(8) + 8
            }
            + attrs_len(&s.attributes)
            + delim_len(15, status_len(s))
    }

    fn put_span(s: &SpanData, len: usize, buf: &mut Vec<u8>) {
        put_delim_header(2, len, buf);
        let parent = s.parent_span_id.as_ref().map_or(&[][..], |p| &p[..]);
        put_bytes(1, &s.trace_id, buf);
        put_bytes(2, &s.span_id, buf);
        put_bytes(3, s.trace_state.as_deref().unwrap_or("").as_bytes(), buf);
        put_bytes(4, parent, buf);
        put_bytes(5, s.name.as_bytes(), buf);
        encode_key(6, WireType::Varint, buf);
        put_varint(kind_code(s), buf);
        if s.start_unix_ns != 0 {
            encode_key(7, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&s.start_unix_ns.to_le_bytes());
        }
        if s.end_unix_ns != 0 {
            encode_key(8, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&s.end_unix_ns.to_le_bytes());
        }
        buf.extend_from_slice(s.attributes.span_wire());
        put_delim_header(15, status_len(s), buf);
        put_status(s, buf);
        // flags (tag 16, encoded after 15 like prost does): sampled-context bits, never zero.
        let flags: u32 = 0x100 | if s.parent_span_id.is_some() { 0x200 } else { 0 };
        encode_key(16, WireType::ThirtyTwoBit, buf);
        buf.extend_from_slice(&flags.to_le_bytes());
    }

    fn scope_len() -> usize {
        bytes_len(1, SCOPE_NAME.as_bytes()) + bytes_len(2, VERSION.as_bytes())
    }

    /// Spans of one resource, as indexes into the batch (first-appearance order).
    struct Group<'a> {
        resource: &'a Resource,
        spans: Vec<(usize, usize)>,
    }

    /// Encode the export request for `spans` into `buf` (appended).
    pub fn encode_request<S: Borrow<SpanData>>(spans: &[S], buf: &mut Vec<u8>) {
        encode_request_with(spans, buf, || {});
    }

    /// [`encode_request`], calling `after_span` after each span is written (the exporter
    /// yields the CPU there now and then: a whole batch is a long run of work).
    pub fn encode_request_with<S: Borrow<SpanData>>(
        spans: &[S],
        buf: &mut Vec<u8>,
        mut after_span: impl FnMut(),
    ) {
        let mut groups: Vec<Group<'_>> = Vec::new();
        for (i, s) in spans.iter().enumerate() {
            let s = s.borrow();
            let len = span_len(s);
            // Spans of one process share one Arc: match by pointer first, and compare values
            // (many equal attributes before the first difference) only when that fails.
            let at = match groups
                .iter()
                .position(|g| std::ptr::eq(g.resource, &*s.resource))
            {
                Some(i) => Some(i),
                None => groups.iter().position(|g| *g.resource == *s.resource),
            };
            match at.and_then(|i| groups.get_mut(i)) {
                Some(g) => g.spans.push((i, len)),
                None => groups.push(Group {
                    resource: &s.resource,
                    spans: vec![(i, len)],
                }),
            }
        }
        // Every length is known before writing: reserve the request once.
        let lens: Vec<(usize, usize, usize)> = groups
            .iter()
            .map(|g| {
                let res_len = attrs_len(&g.resource.attributes);
                let spans_len: usize = g.spans.iter().map(|&(_, l)| delim_len(2, l)).sum();
                let scope_spans_len = delim_len(1, scope_len()) + spans_len;
                let rs_len = delim_len(1, res_len) + delim_len(2, scope_spans_len);
                (res_len, scope_spans_len, rs_len)
            })
            .collect();
        buf.reserve(lens.iter().map(|&(_, _, rs)| delim_len(1, rs)).sum());
        for (g, &(res_len, scope_spans_len, rs_len)) in groups.iter().zip(&lens) {
            put_delim_header(1, rs_len, buf);
            put_delim_header(1, res_len, buf);
            g.resource.attributes.write_as(RESOURCE_ATTRIBUTES_KEY, buf);
            put_delim_header(2, scope_spans_len, buf);
            put_delim_header(1, scope_len(), buf);
            put_bytes(1, SCOPE_NAME.as_bytes(), buf);
            put_bytes(2, VERSION.as_bytes(), buf);
            for &(i, len) in &g.spans {
                if let Some(s) = spans.get(i) {
                    put_span(s.borrow(), len, buf);
                    after_span();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use agent_protocols::ProtocolKind;
    use prost::Message;

    use super::direct::encode_request;
    use super::to_request;
    use crate::discovery::Resource;
    use crate::model::Role;
    use crate::spans::testutil::*;
    use crate::spans::{AttrValue, ClockOffset, SpanConfig, SpanData, SpanStatus, build_span};

    fn span(pid: u32, role: Role, detail: agent_protocols::Detail) -> SpanData {
        let ex = exchange(
            1,
            pid,
            7,
            role,
            "127.0.0.1:8080",
            "127.0.0.1:40000",
            record(
                ProtocolKind::Http1,
                (1_000_000, 1_000_100, 1_900_000, 2_000_000),
                detail,
            ),
        );
        match build_span(
            &ex,
            resource(pid),
            &ClockOffset::fixed(5),
            &SpanConfig::default(),
        ) {
            Ok(s) => s,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn direct(spans: &[SpanData]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode_request(spans, &mut buf);
        buf
    }

    #[test]
    fn direct_encoding_matches_prost_byte_for_byte() {
        let mut a = span(1, Role::Server, http_detail("GET", "/a", Some(200)));
        a.trace_id = [1; 16];
        a.span_id = [2; 8];
        let mut b = span(1, Role::Client, redis("GET"));
        b.resource = Arc::clone(&a.resource);
        b.parent_span_id = Some([2; 8]);
        b.trace_state = Some("k=v".into());
        b.status = SpanStatus::error("boom");
        b.attributes.set("flag", true);
        b.attributes.set("neg", AttrValue::Int(-3));
        b.attributes.set("zero", AttrValue::Int(0));
        b.attributes.set("ratio", AttrValue::F64(0.25));
        b.attributes.set("empty", "");
        b.attributes.set("", "keyless");
        // Same resource content, another Arc: grouped with the first.
        let mut c = span(1, Role::Server, http_detail("POST", "/c", Some(500)));
        c.resource = resource(1);
        // Another process, a zero start time and a long name (multi-byte length prefixes).
        let mut d = span(2, Role::Client, pg("SELECT", "orders"));
        d.start_unix_ns = 0;
        d.name = "x".repeat(300).into();
        let e = span(3, Role::Server, http_detail("GET", "/e", None));
        let empty_res = Arc::new(Resource {
            pid: 9,
            attributes: Default::default(),
        });
        let mut f = span(9, Role::Client, redis("SET"));
        f.resource = empty_res;
        let all = [a, b, c, d, e, f];
        for n in 0..=all.len() {
            let batch = all.get(..n).unwrap_or_default();
            let want = to_request(batch).encode_to_vec();
            assert_eq!(direct(batch), want, "first {n} spans");
        }
        let many: Vec<SpanData> = (0..200).map(|i| all[i % all.len()].clone()).collect();
        assert_eq!(direct(&many), to_request(&many).encode_to_vec());
        // The hook the exporter yields from runs once per span and changes nothing.
        let mut calls = 0;
        let mut hooked = Vec::new();
        super::direct::encode_request_with(&many, &mut hooked, || calls += 1);
        assert_eq!(calls, many.len());
        assert_eq!(hooked, direct(&many));
    }
}
