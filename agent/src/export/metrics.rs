//! RED metrics from spans: request count, errors (via `error.type`) and duration histograms,
//! named per the semantic conventions (`http.server.request.duration`,
//! `http.client.request.duration`, `rpc.server.call.duration`, `rpc.client.call.duration`,
//! `db.client.operation.duration`; unit `s`), cumulative, one ResourceMetrics per process.
//! Only low-cardinality span attributes become metric attributes. Series are bounded.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
    metric,
};

use super::otlp::{SCOPE_NAME, resource_to_proto};
use crate::discovery::Resource;
use crate::spans::{SpanData, SpanKind};

/// Recommended boundaries for duration histograms (seconds).
pub const BOUNDS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Span attributes kept on metrics (all bounded in cardinality).
const METRIC_ATTRS: &[&str] = &[
    "http.request.method",
    "http.response.status_code",
    "http.route",
    "url.scheme",
    "network.protocol.version",
    "server.address",
    "server.port",
    "error.type",
    "rpc.system.name",
    "rpc.method",
    "rpc.response.status_code",
    "db.system.name",
    "db.namespace",
    "db.operation.name",
    "db.collection.name",
    "db.response.status_code",
];

pub fn metric_name(s: &SpanData) -> &'static str {
    let a = &s.attributes;
    if a.contains("rpc.system.name") {
        match s.kind {
            SpanKind::Server => "rpc.server.call.duration",
            SpanKind::Client => "rpc.client.call.duration",
        }
    } else if a.contains("db.system.name") {
        "db.client.operation.duration"
    } else {
        match s.kind {
            SpanKind::Server => "http.server.request.duration",
            SpanKind::Client => "http.client.request.duration",
        }
    }
}

/// Points of one process: (pid, resource, (metric name, point)).
type ProcessPoints = (u32, Arc<Resource>, Vec<(&'static str, HistogramDataPoint)>);

type SeriesKey = (u32, &'static str, Vec<(&'static str, String)>);

struct Series {
    resource: Arc<Resource>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    buckets: [u64; BOUNDS_S.len() + 1],
}

pub struct RedMetrics {
    start_unix_ns: u64,
    max_series: usize,
    series: HashMap<SeriesKey, Series>,
    pub dropped_series: u64,
}

impl RedMetrics {
    pub fn new(start_unix_ns: u64, max_series: usize) -> Self {
        RedMetrics {
            start_unix_ns,
            max_series,
            series: HashMap::new(),
            dropped_series: 0,
        }
    }

    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    pub fn record(&mut self, s: &SpanData) {
        let attrs: Vec<(&'static str, String)> = METRIC_ATTRS
            .iter()
            .filter_map(|k| s.attributes.get_ref(k).map(|v| (*k, v.to_string())))
            .collect();
        let key = (s.pid, metric_name(s), attrs);
        if !self.series.contains_key(&key) && self.series.len() >= self.max_series {
            self.dropped_series += 1;
            return;
        }
        let secs = s.duration_ns() as f64 / 1e9;
        let e = self.series.entry(key).or_insert_with(|| Series {
            resource: Arc::clone(&s.resource),
            count: 0,
            sum: 0.0,
            min: f64::MAX,
            max: 0.0,
            buckets: [0; BOUNDS_S.len() + 1],
        });
        e.count += 1;
        e.sum += secs;
        e.min = e.min.min(secs);
        e.max = e.max.max(secs);
        let idx = BOUNDS_S
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BOUNDS_S.len());
        if let Some(b) = e.buckets.get_mut(idx) {
            *b += 1;
        }
    }

    /// Cumulative snapshot of every series.
    pub fn to_request(&self, now_unix_ns: u64) -> ExportMetricsServiceRequest {
        // pid -> (resource, metric name -> points)
        let mut by_pid: Vec<ProcessPoints> = Vec::new();
        let mut keys: Vec<&SeriesKey> = self.series.keys().collect();
        keys.sort();
        for key in keys {
            let Some(s) = self.series.get(key) else {
                continue;
            };
            let (pid, name, attrs) = key;
            let point = HistogramDataPoint {
                attributes: attrs
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: (*k).to_string(),
                        value: Some(metric_value(k, v)),
                        ..Default::default()
                    })
                    .collect(),
                start_time_unix_nano: self.start_unix_ns,
                time_unix_nano: now_unix_ns,
                count: s.count,
                sum: Some(s.sum),
                bucket_counts: s.buckets.to_vec(),
                explicit_bounds: BOUNDS_S.to_vec(),
                min: Some(s.min),
                max: Some(s.max),
                ..Default::default()
            };
            match by_pid.iter_mut().find(|(p, _, _)| p == pid) {
                Some((_, _, v)) => v.push((name, point)),
                None => by_pid.push((*pid, Arc::clone(&s.resource), vec![(name, point)])),
            }
        }
        let resource_metrics = by_pid
            .into_iter()
            .map(|(_, res, points)| {
                let mut metrics: Vec<Metric> = Vec::new();
                for (name, p) in points {
                    let hist = match metrics.iter_mut().find(|m| m.name == name) {
                        Some(m) => m,
                        None => {
                            metrics.push(Metric {
                                name: name.to_string(),
                                description: "Duration of requests observed by tracewire".into(),
                                unit: "s".into(),
                                data: Some(metric::Data::Histogram(Histogram {
                                    data_points: Vec::new(),
                                    aggregation_temporality: AggregationTemporality::Cumulative
                                        as i32,
                                })),
                                ..Default::default()
                            });
                            let Some(m) = metrics.last_mut() else {
                                continue;
                            };
                            m
                        }
                    };
                    if let Some(metric::Data::Histogram(h)) = &mut hist.data {
                        h.data_points.push(p);
                    }
                }
                ResourceMetrics {
                    resource: Some(resource_to_proto(&res)),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(InstrumentationScope {
                            name: SCOPE_NAME.to_string(),
                            version: env!("CARGO_PKG_VERSION").to_string(),
                            ..Default::default()
                        }),
                        metrics,
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }
            })
            .collect();
        ExportMetricsServiceRequest { resource_metrics }
    }
}

/// Integer attributes stay integers on metrics too.
fn metric_value(key: &str, v: &str) -> AnyValue {
    let int_key = matches!(key, "http.response.status_code" | "server.port");
    let value = match v.parse::<i64>() {
        Ok(i) if int_key => any_value::Value::IntValue(i),
        _ => any_value::Value::StringValue(v.to_string()),
    };
    AnyValue { value: Some(value) }
}
