//! Console exporter: finished traces as readable trees, printed once a trace has been quiet for
//! a short period. Bounded: at most `max_traces` open traces (the oldest is printed early).

use std::collections::HashMap;

use super::hex::hex;
use crate::spans::{SpanData, StatusCode};

/// Attributes shown after each span (when present).
const KEY_ATTRS: &[&str] = &[
    "http.response.status_code",
    "url.path",
    "url.full",
    "rpc.response.status_code",
    "db.namespace",
    "db.query.text",
    "server.address",
    "server.port",
    "error.type",
    "tracewire.link.rule",
    "tracewire.link.confidence",
];

struct TraceBuf {
    spans: Vec<SpanData>,
    last_ns: u64,
    first_ns: u64,
}

pub struct ConsoleTraces {
    quiet_ns: u64,
    max_traces: usize,
    max_spans_per_trace: usize,
    traces: HashMap<[u8; 16], TraceBuf>,
    pub dropped_spans: u64,
}

impl ConsoleTraces {
    pub fn new(quiet_ns: u64, max_traces: usize) -> Self {
        ConsoleTraces {
            quiet_ns,
            max_traces: max_traces.max(1),
            max_spans_per_trace: 1000,
            traces: HashMap::new(),
            dropped_spans: 0,
        }
    }

    /// Add a span; may return a trace rendered early when the buffer is full.
    pub fn push(&mut self, span: SpanData, now_ns: u64) -> Option<String> {
        let mut early = None;
        if !self.traces.contains_key(&span.trace_id) && self.traces.len() >= self.max_traces {
            let oldest = self
                .traces
                .iter()
                .min_by_key(|(_, t)| t.first_ns)
                .map(|(k, _)| *k);
            if let Some(t) = oldest.and_then(|k| self.traces.remove(&k)) {
                early = Some(render(&t.spans));
            }
        }
        let t = self.traces.entry(span.trace_id).or_insert(TraceBuf {
            spans: Vec::new(),
            last_ns: now_ns,
            first_ns: now_ns,
        });
        t.last_ns = now_ns;
        if t.spans.len() < self.max_spans_per_trace {
            t.spans.push(span);
        } else {
            self.dropped_spans += 1;
        }
        early
    }

    /// Render traces quiet for the quiet period (`force`: all).
    pub fn take_ready(&mut self, now_ns: u64, force: bool) -> Vec<String> {
        let ready: Vec<[u8; 16]> = self
            .traces
            .iter()
            .filter(|(_, t)| force || now_ns.saturating_sub(t.last_ns) >= self.quiet_ns)
            .map(|(k, _)| *k)
            .collect();
        let mut bufs: Vec<TraceBuf> = ready.iter().filter_map(|k| self.traces.remove(k)).collect();
        bufs.sort_by_key(|t| t.first_ns);
        bufs.iter().map(|t| render(&t.spans)).collect()
    }

    pub fn open_traces(&self) -> usize {
        self.traces.len()
    }
}

fn line(s: &SpanData, depth: usize, out: &mut String) {
    use std::fmt::Write;
    let ms = s.duration_ns() as f64 / 1e6;
    let status = match s.status.code {
        StatusCode::Error if !s.status.message.is_empty() => format!("ERROR({})", s.status.message),
        c => c.as_str().to_string(),
    };
    let _ = write!(
        out,
        "{}{} {} [{}] {:.3}ms {}",
        "  ".repeat(depth + 1),
        s.service_name(),
        s.kind.as_str(),
        s.name,
        ms,
        status
    );
    for k in KEY_ATTRS {
        if let Some(v) = s.attributes.get(k) {
            let _ = write!(out, " {k}={v}");
        }
    }
    out.push('\n');
}

/// Render one trace as an indented tree (children sorted by start time).
pub fn render(spans: &[SpanData]) -> String {
    let mut out = String::new();
    let trace = spans.first().map(|s| hex(&s.trace_id)).unwrap_or_default();
    out.push_str(&format!("trace {trace} ({} spans)\n", spans.len()));
    let ids: std::collections::HashSet<[u8; 8]> = spans.iter().map(|s| s.span_id).collect();
    let mut children: HashMap<[u8; 8], Vec<&SpanData>> = HashMap::new();
    let mut roots: Vec<&SpanData> = Vec::new();
    for s in spans {
        match s.parent_span_id.filter(|p| ids.contains(p)) {
            Some(p) => children.entry(p).or_default().push(s),
            None => roots.push(s),
        }
    }
    roots.sort_by_key(|s| s.start_unix_ns);
    for v in children.values_mut() {
        v.sort_by_key(|s| s.start_unix_ns);
    }
    // Iterative DFS, bounded by the span count (a cycle cannot loop: each span printed once).
    let mut printed = std::collections::HashSet::new();
    let mut stack: Vec<(&SpanData, usize)> = roots.into_iter().rev().map(|s| (s, 0)).collect();
    while let Some((s, d)) = stack.pop() {
        if !printed.insert(s.span_id) {
            continue;
        }
        line(s, d, &mut out);
        if let Some(ch) = children.get(&s.span_id) {
            for c in ch.iter().rev() {
                stack.push((c, d + 1));
            }
        }
    }
    out
}
