//! `jsonl` exporter: one OTLP-JSON-shaped span per line.

use std::borrow::Borrow;
use std::io::Write;

use serde_json::{Map, Value, json};

use super::hex::hex;
use crate::spans::{AttrRef, Attributes, SpanData, SpanKind, StatusCode};

fn any_value(v: AttrRef<'_>) -> Value {
    match v {
        AttrRef::Str(s) => json!({ "stringValue": s }),
        // OTLP JSON encodes 64-bit integers as strings.
        AttrRef::Int(i) => json!({ "intValue": i.to_string() }),
        AttrRef::F64(f) => json!({ "doubleValue": f }),
        AttrRef::Bool(b) => json!({ "boolValue": b }),
    }
}

fn attrs(a: &Attributes) -> Value {
    Value::Array(
        a.iter()
            .map(|(k, v)| json!({ "key": k, "value": any_value(v) }))
            .collect(),
    )
}

pub fn span_to_json(s: &SpanData) -> Value {
    let mut m = Map::new();
    m.insert("traceId".into(), hex(&s.trace_id).into());
    m.insert("spanId".into(), hex(&s.span_id).into());
    if let Some(p) = s.parent_span_id {
        m.insert("parentSpanId".into(), hex(&p).into());
    }
    if let Some(ts) = &s.trace_state {
        m.insert("traceState".into(), ts.clone().into());
    }
    m.insert("name".into(), s.name.clone().into());
    let kind = match s.kind {
        SpanKind::Server => 2,
        SpanKind::Client => 3,
    };
    m.insert("kind".into(), kind.into());
    m.insert(
        "startTimeUnixNano".into(),
        s.start_unix_ns.to_string().into(),
    );
    m.insert("endTimeUnixNano".into(), s.end_unix_ns.to_string().into());
    m.insert("attributes".into(), attrs(&s.attributes));
    let code = match s.status.code {
        StatusCode::Unset => 0,
        StatusCode::Ok => 1,
        StatusCode::Error => 2,
    };
    let mut st = Map::new();
    st.insert("code".into(), code.into());
    if !s.status.message.is_empty() {
        st.insert("message".into(), s.status.message.clone().into());
    }
    m.insert("status".into(), Value::Object(st));
    m.insert(
        "resource".into(),
        json!({ "attributes": attrs(&s.resource.attributes) }),
    );
    Value::Object(m)
}

pub struct JsonlWriter {
    out: Box<dyn Write + Send>,
    pub written: u64,
    pub errors: u64,
}

impl JsonlWriter {
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        JsonlWriter {
            out,
            written: 0,
            errors: 0,
        }
    }

    pub fn open(path: Option<&std::path::Path>) -> std::io::Result<Self> {
        let out: Box<dyn Write + Send> = match path {
            Some(p) => Box::new(std::io::BufWriter::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)?,
            )),
            None => Box::new(std::io::BufWriter::new(std::io::stdout())),
        };
        Ok(Self::new(out))
    }

    pub fn write_all<S: Borrow<SpanData>>(&mut self, spans: &[S]) {
        for s in spans {
            let line = span_to_json(s.borrow()).to_string();
            if writeln!(self.out, "{line}").is_ok() {
                self.written += 1;
            } else {
                self.errors += 1;
            }
        }
        if self.out.flush().is_err() {
            self.errors += 1;
        }
    }
}
