//! Exporter configuration: CLI values over `OTEL_EXPORTER_OTLP_TRACES_*` over
//! `OTEL_EXPORTER_OTLP_*` over defaults, parsed and validated with clear errors.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportCfgError {
    #[error("{var}: unknown OTLP protocol {value:?} (expected grpc or http/protobuf)")]
    Protocol { var: &'static str, value: String },
    #[error("{var}: unknown compression {value:?} (expected gzip or none)")]
    Compression { var: &'static str, value: String },
    #[error("{var}: {value:?} is not a number of milliseconds")]
    Number { var: &'static str, value: String },
    #[error("{var}: endpoint {value:?} must start with http:// or https://")]
    Endpoint { var: &'static str, value: String },
    #[error("{var}: header entry {entry:?} is not key=value")]
    Header { var: &'static str, entry: String },
    #[error("unknown exporter {0:?} (expected otlp, console, jsonl or none)")]
    Exporter(String),
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExporterKind {
    Otlp,
    Console,
    Jsonl,
}

/// Values from the command line (all optional; `None` falls back to the environment).
#[derive(Debug, Clone, Default)]
pub struct ExportArgs {
    /// `otlp`, `console`, `jsonl`, `none`; several allowed.
    pub exporters: Vec<String>,
    pub endpoint: Option<String>,
    pub protocol: Option<String>,
    /// `k=v,k2=v2`
    pub headers: Option<String>,
    pub timeout_ms: Option<u64>,
    pub compression: Option<String>,
    /// jsonl output file (stdout when None).
    pub jsonl_path: Option<PathBuf>,
    pub max_batch: Option<usize>,
    pub max_delay_ms: Option<u64>,
    pub max_queue: Option<usize>,
    /// Export RED metrics over OTLP (None: `OTEL_METRICS_EXPORTER=otlp` decides).
    pub red_metrics: Option<bool>,
    pub metrics_interval_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    pub protocol: OtlpProtocol,
    /// Full URL: for HTTP the `/v1/traces` URL; for gRPC the server address.
    pub endpoint: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub compression: Compression,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    pub max_batch: usize,
    pub max_delay: Duration,
    /// Spans queued for export before new ones are dropped.
    pub max_queue: usize,
    /// Backoff bounds for retries of one batch.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Give up on a batch after retrying this long.
    pub max_retry_time: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_batch: 512,
            max_delay: Duration::from_millis(1000),
            // The correlator releases spans in bursts (every tick), and most spans settle on
            // arrival, so the queue is what absorbs a burst (redis-benchmark -P 16 at the
            // agent's start: 8,082 spans lost in 1 of 3 runs with 16,384, none in 4 with this).
            max_queue: 32768,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_retry_time: Duration::from_secs(30),
        }
    }
}

/// RED metrics (request rate, errors, duration histograms) derived from spans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// gRPC server, or the full `/v1/metrics` URL for HTTP (same protocol/headers as traces).
    pub endpoint: String,
    pub interval: Duration,
    /// Most distinct series kept (new ones are dropped and counted beyond it).
    pub max_series: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    pub exporters: Vec<ExporterKind>,
    pub otlp: OtlpConfig,
    pub batch: BatchConfig,
    pub jsonl_path: Option<PathBuf>,
    pub metrics: Option<MetricsConfig>,
}

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

impl ExportConfig {
    /// From the process environment plus CLI values.
    pub fn from_env(args: &ExportArgs) -> Result<Self, ExportCfgError> {
        Self::from_lookup(args, |k| std::env::var(k).ok())
    }

    /// `env` looks a variable up (tests pass a map).
    pub fn from_lookup(
        args: &ExportArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ExportCfgError> {
        let get = |k: &'static str| {
            env(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        // Protocol.
        let (pvar, pval) = pick(
            &args.protocol,
            "--otlp-protocol",
            &get,
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        );
        let protocol = match pval.as_deref() {
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                return Err(ExportCfgError::Protocol {
                    var: pvar,
                    value: other.to_string(),
                });
            }
        };
        // Endpoint: the signal-specific one is used as-is; the generic one gets /v1/traces for HTTP.
        let endpoint = if let Some(e) = &args.endpoint {
            check_url("--otlp-endpoint", e)?;
            e.clone()
        } else if let Some(e) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            check_url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &e)?;
            e
        } else if let Some(e) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            check_url("OTEL_EXPORTER_OTLP_ENDPOINT", &e)?;
            match protocol {
                OtlpProtocol::Grpc => e,
                OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", e.trim_end_matches('/')),
            }
        } else {
            match protocol {
                OtlpProtocol::Grpc => "http://localhost:4317".to_string(),
                OtlpProtocol::HttpProtobuf => "http://localhost:4318/v1/traces".to_string(),
            }
        };
        // Headers: generic first, then the signal-specific ones, then CLI (later wins per key).
        let mut headers: Vec<(String, String)> = Vec::new();
        for (var, val) in [
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                get("OTEL_EXPORTER_OTLP_HEADERS"),
            ),
            (
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
                get("OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
            ),
            ("--otlp-headers", args.headers.clone()),
        ] {
            if let Some(v) = val {
                for (k, v) in parse_headers(var, &v)? {
                    headers.retain(|(hk, _)| *hk != k);
                    headers.push((k, v));
                }
            }
        }
        // Timeout.
        let timeout = match args.timeout_ms {
            Some(ms) => Duration::from_millis(ms),
            None => {
                let (tvar, tval) = pick(
                    &None,
                    "",
                    &get,
                    "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                    "OTEL_EXPORTER_OTLP_TIMEOUT",
                );
                match tval {
                    Some(v) => Duration::from_millis(parse_u64(tvar, &v)?),
                    None => DEFAULT_TIMEOUT,
                }
            }
        };
        if timeout.is_zero() {
            return Err(ExportCfgError::Zero("OTLP timeout"));
        }
        let (cvar, cval) = pick(
            &args.compression,
            "--otlp-compression",
            &get,
            "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
            "OTEL_EXPORTER_OTLP_COMPRESSION",
        );
        let compression = match cval.as_deref() {
            None | Some("none") => Compression::None,
            Some("gzip") => Compression::Gzip,
            Some(other) => {
                return Err(ExportCfgError::Compression {
                    var: cvar,
                    value: other.to_string(),
                });
            }
        };
        // Batching (OTEL_BSP_* as the SDKs name them).
        let mut batch = BatchConfig::default();
        batch.max_batch = match args.max_batch {
            Some(v) => v,
            None => {
                opt_u64("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", &get)?.map_or(batch.max_batch, to_usize)
            }
        };
        batch.max_delay = match args.max_delay_ms {
            Some(v) => Duration::from_millis(v),
            None => opt_u64("OTEL_BSP_SCHEDULE_DELAY", &get)?
                .map_or(batch.max_delay, Duration::from_millis),
        };
        batch.max_queue = match args.max_queue {
            Some(v) => v,
            None => opt_u64("OTEL_BSP_MAX_QUEUE_SIZE", &get)?.map_or(batch.max_queue, to_usize),
        };
        if batch.max_batch == 0 {
            return Err(ExportCfgError::Zero("max export batch size"));
        }
        if batch.max_queue == 0 {
            return Err(ExportCfgError::Zero("max queue size"));
        }
        // Exporters: CLI, else OTEL_TRACES_EXPORTER, else otlp when an endpoint is configured,
        // else the console (the embedded default: nothing leaves the node unless configured).
        let endpoint_configured = args.endpoint.is_some()
            || get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || get("OTEL_EXPORTER_OTLP_ENDPOINT").is_some();
        let names: Vec<String> = if args.exporters.is_empty() {
            get("OTEL_TRACES_EXPORTER")
                .map(|v| v.split(',').map(|s| s.trim().to_string()).collect())
                .unwrap_or_else(|| {
                    vec![
                        if endpoint_configured {
                            "otlp"
                        } else {
                            "console"
                        }
                        .to_string(),
                    ]
                })
        } else {
            args.exporters.clone()
        };
        let mut exporters = Vec::new();
        for n in names {
            let k = match n.as_str() {
                "otlp" => ExporterKind::Otlp,
                "console" => ExporterKind::Console,
                "jsonl" => ExporterKind::Jsonl,
                "none" | "" => continue,
                other => return Err(ExportCfgError::Exporter(other.to_string())),
            };
            if !exporters.contains(&k) {
                exporters.push(k);
            }
        }
        // RED metrics: CLI, else OTEL_METRICS_EXPORTER (otlp enables), default off.
        let metrics_on = match args.red_metrics {
            Some(v) => v,
            None => get("OTEL_METRICS_EXPORTER")
                .is_some_and(|v| v.split(',').any(|x| x.trim() == "otlp")),
        };
        let metrics = if metrics_on {
            let interval = match args.metrics_interval_ms {
                Some(ms) => Duration::from_millis(ms),
                None => opt_u64("OTEL_METRIC_EXPORT_INTERVAL", &get)?
                    .map_or(Duration::from_secs(60), Duration::from_millis),
            };
            if interval.is_zero() {
                return Err(ExportCfgError::Zero("metric export interval"));
            }
            let endpoint = match get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT") {
                Some(e) => {
                    check_url("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &e)?;
                    e
                }
                None => match protocol {
                    OtlpProtocol::Grpc => endpoint.clone(),
                    OtlpProtocol::HttpProtobuf => match endpoint.strip_suffix("/v1/traces") {
                        Some(base) => format!("{base}/v1/metrics"),
                        None => format!("{}/v1/metrics", endpoint.trim_end_matches('/')),
                    },
                },
            };
            Some(MetricsConfig {
                endpoint,
                interval,
                max_series: 10_000,
            })
        } else {
            None
        };
        Ok(ExportConfig {
            exporters,
            otlp: OtlpConfig {
                protocol,
                endpoint,
                headers,
                timeout,
                compression,
            },
            batch,
            jsonl_path: args.jsonl_path.clone(),
            metrics,
        })
    }
}

fn to_usize(v: u64) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// CLI value, else the signal-specific variable, else the generic one; with the name it came from.
fn pick(
    cli: &Option<String>,
    cli_name: &'static str,
    get: &impl Fn(&'static str) -> Option<String>,
    specific: &'static str,
    generic: &'static str,
) -> (&'static str, Option<String>) {
    if let Some(v) = cli {
        return (cli_name, Some(v.trim().to_string()));
    }
    if let Some(v) = get(specific) {
        return (specific, Some(v));
    }
    (generic, get(generic))
}

fn opt_u64(
    var: &'static str,
    get: &impl Fn(&'static str) -> Option<String>,
) -> Result<Option<u64>, ExportCfgError> {
    get(var).map(|v| parse_u64(var, &v)).transpose()
}

fn parse_u64(var: &'static str, v: &str) -> Result<u64, ExportCfgError> {
    v.trim().parse().map_err(|_| ExportCfgError::Number {
        var,
        value: v.to_string(),
    })
}

fn check_url(var: &'static str, v: &str) -> Result<(), ExportCfgError> {
    let ok = (v.starts_with("http://") || v.starts_with("https://")) && v.len() > "https://".len();
    if ok {
        Ok(())
    } else {
        Err(ExportCfgError::Endpoint {
            var,
            value: v.to_string(),
        })
    }
}

/// Decode `%XX` escapes (W3C baggage-style values in OTEL_EXPORTER_OTLP_HEADERS).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `k=v,k2=v2` -> pairs (keys lower-cased, values percent-decoded).
pub fn parse_headers(var: &'static str, s: &str) -> Result<Vec<(String, String)>, ExportCfgError> {
    let mut out = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((k, v)) = entry.split_once('=') else {
            return Err(ExportCfgError::Header {
                var,
                entry: entry.to_string(),
            });
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(ExportCfgError::Header {
                var,
                entry: entry.to_string(),
            });
        }
        out.push((
            percent_decode(k).to_ascii_lowercase(),
            percent_decode(v.trim()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(args: &ExportArgs, vars: &[(&str, &str)]) -> Result<ExportConfig, ExportCfgError> {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ExportConfig::from_lookup(args, |k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = cfg(&ExportArgs::default(), &[]);
        assert_eq!(
            c,
            Ok(ExportConfig {
                exporters: vec![ExporterKind::Console],
                otlp: OtlpConfig {
                    protocol: OtlpProtocol::HttpProtobuf,
                    endpoint: "http://localhost:4318/v1/traces".into(),
                    headers: vec![],
                    timeout: Duration::from_secs(10),
                    compression: Compression::None,
                },
                batch: BatchConfig::default(),
                jsonl_path: None,
                metrics: None,
            })
        );
    }

    #[test]
    fn env_precedence() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Basic%20abc,x-a=1",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-a=2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "gzip"),
            ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "64"),
            ("OTEL_TRACES_EXPORTER", "otlp,console"),
        ];
        let c = match cfg(&ExportArgs::default(), &vars) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(c.otlp.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(
            c.otlp.headers,
            vec![
                ("authorization".to_string(), "Basic abc".to_string()),
                ("x-a".to_string(), "2".to_string())
            ]
        );
        assert_eq!(c.otlp.timeout, Duration::from_millis(2500));
        assert_eq!(c.otlp.compression, Compression::Gzip);
        assert_eq!(c.batch.max_batch, 64);
        assert_eq!(c.exporters, vec![ExporterKind::Otlp, ExporterKind::Console]);
        // Signal-specific endpoint is used verbatim; gRPC keeps the base endpoint.
        let c = cfg(
            &ExportArgs::default(),
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://a:4317"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ],
        )
        .map(|c| (c.otlp.protocol, c.otlp.endpoint));
        assert_eq!(c, Ok((OtlpProtocol::Grpc, "http://a:4317".to_string())));
        let c = cfg(
            &ExportArgs::default(),
            &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "https://x/custom")],
        )
        .map(|c| c.otlp.endpoint);
        assert_eq!(c, Ok("https://x/custom".to_string()));
    }

    #[test]
    fn cli_wins() {
        let args = ExportArgs {
            exporters: vec!["jsonl".into(), "console".into()],
            endpoint: Some("http://cli:4317".into()),
            protocol: Some("grpc".into()),
            headers: Some("a=b".into()),
            timeout_ms: Some(100),
            compression: Some("none".into()),
            jsonl_path: Some("/tmp/x.jsonl".into()),
            max_batch: Some(3),
            max_delay_ms: Some(7),
            max_queue: Some(9),
            red_metrics: Some(true),
            metrics_interval_ms: Some(500),
        };
        let c = match cfg(
            &args,
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=env"),
            ],
        ) {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            c.exporters,
            vec![ExporterKind::Jsonl, ExporterKind::Console]
        );
        assert_eq!(
            c.otlp,
            OtlpConfig {
                protocol: OtlpProtocol::Grpc,
                endpoint: "http://cli:4317".into(),
                headers: vec![("a".into(), "b".into())],
                timeout: Duration::from_millis(100),
                compression: Compression::None,
            }
        );
        assert_eq!(
            (c.batch.max_batch, c.batch.max_delay, c.batch.max_queue),
            (3, Duration::from_millis(7), 9)
        );
        assert_eq!(c.jsonl_path, Some(PathBuf::from("/tmp/x.jsonl")));
        assert_eq!(
            c.metrics,
            Some(MetricsConfig {
                endpoint: "http://cli:4317".into(),
                interval: Duration::from_millis(500),
                max_series: 10_000
            })
        );
    }

    #[test]
    fn metrics_from_env() {
        let m = |vars: &[(&str, &str)]| cfg(&ExportArgs::default(), vars).map(|c| c.metrics);
        assert_eq!(m(&[]), Ok(None));
        assert_eq!(m(&[("OTEL_METRICS_EXPORTER", "none")]), Ok(None));
        assert_eq!(
            m(&[
                ("OTEL_METRICS_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "1500"),
            ]),
            Ok(Some(MetricsConfig {
                endpoint: "http://c:4318/v1/metrics".into(),
                interval: Duration::from_millis(1500),
                max_series: 10_000
            }))
        );
        assert_eq!(
            m(&[
                ("OTEL_METRICS_EXPORTER", "otlp"),
                ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "http://m:9/x"),
            ])
            .map(|c| c.map(|c| (c.endpoint, c.interval))),
            Ok(Some(("http://m:9/x".to_string(), Duration::from_secs(60))))
        );
        assert_eq!(
            m(&[
                ("OTEL_METRICS_EXPORTER", "otlp"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "x")
            ])
            .map_err(|e| e.to_string()),
            Err("OTEL_METRIC_EXPORT_INTERVAL: \"x\" is not a number of milliseconds".to_string())
        );
    }

    #[test]
    fn clear_errors() {
        let e = |vars: &[(&str, &str)]| {
            cfg(&ExportArgs::default(), vars)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(
            e(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).as_deref(),
            Some(
                "OTEL_EXPORTER_OTLP_PROTOCOL: unknown OTLP protocol \"http/json\" (expected grpc or http/protobuf)"
            )
        );
        assert_eq!(
            e(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]).as_deref(),
            Some("OTEL_EXPORTER_OTLP_TIMEOUT: \"10s\" is not a number of milliseconds")
        );
        assert_eq!(
            e(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]).as_deref(),
            Some(
                "OTEL_EXPORTER_OTLP_ENDPOINT: endpoint \"collector:4317\" must start with http:// or https://"
            )
        );
        assert_eq!(
            e(&[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")]).as_deref(),
            Some("OTEL_EXPORTER_OTLP_HEADERS: header entry \"novalue\" is not key=value")
        );
        assert_eq!(
            e(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]).as_deref(),
            Some(
                "OTEL_EXPORTER_OTLP_COMPRESSION: unknown compression \"zstd\" (expected gzip or none)"
            )
        );
        assert_eq!(
            e(&[("OTEL_TRACES_EXPORTER", "zipkin")]).as_deref(),
            Some("unknown exporter \"zipkin\" (expected otlp, console, jsonl or none)")
        );
        assert_eq!(
            e(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "0")]).as_deref(),
            Some("OTLP timeout must be greater than zero")
        );
        assert_eq!(
            cfg(&ExportArgs::default(), &[("OTEL_TRACES_EXPORTER", "none")]).map(|c| c.exporters),
            Ok(vec![])
        );
    }
}
