//! SpanData -> OTLP protobuf messages, one ResourceSpans per traced process.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};

use crate::discovery::Resource;
use crate::spans::{AttrValue, Attributes, SpanData, SpanKind, StatusCode};

pub const SCOPE_NAME: &str = "tracewire";

pub fn attr_value(v: &AttrValue) -> AnyValue {
    let value = match v {
        AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::F64(f) => any_value::Value::DoubleValue(*f),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
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
        name: s.name.clone(),
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
pub fn to_request(spans: &[SpanData]) -> ExportTraceServiceRequest {
    let mut groups: Vec<(Arc<Resource>, Vec<Span>)> = Vec::new();
    for s in spans {
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
