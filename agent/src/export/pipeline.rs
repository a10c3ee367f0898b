//! The span pipeline task: Exchange -> span -> correlate -> exporters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::batch::{OtlpExporter, OtlpStats};
use super::console::ConsoleTraces;
use super::jsonl::JsonlWriter;
use super::metrics::RedMetrics;
use super::transport::{Transport, TransportError};
use crate::correlate::{CorrelateStats, Correlator, CorrelatorConfig};
use crate::discovery::{DiscoveryConfig, Prefetched, ProcessCache};
use crate::exportcfg::{ExportConfig, ExporterKind};
use crate::handoff::HandoffRx;
use crate::spans::{ClockOffset, SkipReason, SpanBatch, SpanConfig, SpanData, build_span};
use crate::yielding::YieldEvery;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;

const CLOCK_REMEASURE: Duration = Duration::from_secs(30);

/// Exchanges turned into spans between two yields of the CPU (see `yielding`): about 10-20 us
/// of work. On nginx+wrk, 8-32 gave the same throughput; the p99 fell with the smaller ones.
const YIELD_EVERY_EXCHANGES: u32 = 16;

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub export: ExportConfig,
    pub correlate: CorrelatorConfig,
    pub discovery: DiscoveryConfig,
    pub spans: SpanConfig,
    /// Console: print a trace after this long without new spans.
    pub console_quiet: Duration,
    /// Console: most traces buffered.
    pub console_max_traces: usize,
    /// How often held spans are checked.
    pub tick: Duration,
    /// Process facts read ahead by the ingest thread (see `discovery::prefetch`).
    pub prefetched: Option<Arc<Prefetched>>,
}

impl PipelineConfig {
    pub fn new(export: ExportConfig) -> Self {
        PipelineConfig {
            export,
            correlate: CorrelatorConfig::default(),
            discovery: DiscoveryConfig::default(),
            spans: SpanConfig::default(),
            console_quiet: Duration::from_millis(500),
            console_max_traces: 1024,
            tick: Duration::from_millis(100),
            prefetched: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("OTLP exporter: {0}")]
    Otlp(#[from] TransportError),
    #[error("jsonl output: {0}")]
    Jsonl(#[from] std::io::Error),
}

#[derive(Debug, Default)]
struct Counters {
    exchanges: AtomicU64,
    spans_built: AtomicU64,
    skipped_unknown_role: AtomicU64,
    skipped_db_server: AtomicU64,
    spans_emitted: AtomicU64,
    console_traces: AtomicU64,
    jsonl_written: AtomicU64,
    jsonl_errors: AtomicU64,
    metrics_exports: AtomicU64,
    metrics_errors: AtomicU64,
    metrics_dropped_series: AtomicU64,
}

/// A snapshot of the pipeline's counters, for logging.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PipelineStats {
    pub exchanges_received: u64,
    pub spans_built: u64,
    pub skipped_unknown_role: u64,
    pub skipped_db_server: u64,
    /// Spans that left the correlator (went to the exporters).
    pub spans_emitted: u64,
    pub correlate: CorrelateStats,
    pub otlp_exported: u64,
    pub otlp_dropped_queue_full: u64,
    pub otlp_dropped_failed: u64,
    pub otlp_export_errors: u64,
    pub otlp_batches: u64,
    /// Spans waiting in the export queue or in a request not yet answered (a gauge).
    pub otlp_queued: u64,
    pub console_traces_printed: u64,
    pub jsonl_written: u64,
    pub jsonl_errors: u64,
    /// RED metric snapshots sent / failed, and series refused over the cap.
    pub metrics_exports: u64,
    pub metrics_errors: u64,
    pub metrics_dropped_series: u64,
}

impl PipelineStats {
    /// Spans lost anywhere after being built.
    pub fn dropped(&self) -> u64 {
        self.otlp_dropped_queue_full + self.otlp_dropped_failed
    }
}

struct Shared {
    counters: Counters,
    correlate: std::sync::Mutex<CorrelateStats>,
    otlp: Option<Arc<OtlpStats>>,
    /// The OTLP queue's capacity (spans).
    otlp_max_queue: u64,
}

/// Whether the export side keeps up, read without locks (often: after every ring drain).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportPressure {
    /// Spans lost in the OTLP queue or to failed exports so far.
    pub lost: u64,
    /// The OTLP queue is more than a quarter full.
    pub backlogged: bool,
    /// Spans in the OTLP queue or in requests not yet answered.
    pub queued: u64,
}

impl Shared {
    fn snapshot(&self) -> PipelineStats {
        let c = &self.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let o = self.otlp.as_deref();
        let og = |f: fn(&OtlpStats) -> &AtomicU64| o.map_or(0, |s| f(s).load(Ordering::Relaxed));
        PipelineStats {
            exchanges_received: g(&c.exchanges),
            spans_built: g(&c.spans_built),
            skipped_unknown_role: g(&c.skipped_unknown_role),
            skipped_db_server: g(&c.skipped_db_server),
            spans_emitted: g(&c.spans_emitted),
            correlate: self.correlate.lock().map(|s| *s).unwrap_or_default(),
            otlp_exported: og(|s| &s.exported),
            otlp_dropped_queue_full: og(|s| &s.dropped_queue_full),
            otlp_dropped_failed: og(|s| &s.dropped_failed),
            otlp_export_errors: og(|s| &s.export_errors),
            otlp_batches: og(|s| &s.batches_sent),
            otlp_queued: og(|s| &s.in_flight),
            console_traces_printed: g(&c.console_traces),
            jsonl_written: g(&c.jsonl_written),
            jsonl_errors: g(&c.jsonl_errors),
            metrics_exports: g(&c.metrics_exports),
            metrics_errors: g(&c.metrics_errors),
            metrics_dropped_series: g(&c.metrics_dropped_series),
        }
    }
}

/// Handle to a running pipeline.
pub struct PipelineHandle {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    join: JoinHandle<Leftovers>,
}

/// What outlives the pipeline loop and is drained by `shutdown`.
struct Leftovers {
    otlp: Option<OtlpExporter>,
    metrics: Option<JoinHandle<()>>,
}

impl PipelineHandle {
    pub fn stats(&self) -> PipelineStats {
        self.shared.snapshot()
    }

    /// See [`ExportPressure`].
    pub fn export_pressure(&self) -> ExportPressure {
        let Some(o) = self.shared.otlp.as_deref() else {
            return ExportPressure::default();
        };
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let queued = g(&o.in_flight);
        ExportPressure {
            lost: g(&o.dropped_queue_full) + g(&o.dropped_failed),
            backlogged: crate::yielding::backlogged(queued, self.shared.otlp_max_queue),
            queued,
        }
    }

    /// Stop: release every held span, flush the console/jsonl sinks, and drain the OTLP queue
    /// within `deadline`. Also happens when the Exchange sender is dropped.
    pub async fn shutdown(mut self, deadline: Duration) -> PipelineStats {
        let start = tokio::time::Instant::now();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let left = match tokio::time::timeout(deadline, &mut self.join).await {
            Ok(Ok(l)) => l,
            _ => {
                self.join.abort();
                Leftovers {
                    otlp: None,
                    metrics: None,
                }
            }
        };
        if let Some(o) = left.otlp {
            o.shutdown(deadline.saturating_sub(start.elapsed())).await;
        }
        if let Some(mut m) = left.metrics
            && tokio::time::timeout(deadline.saturating_sub(start.elapsed()), &mut m)
                .await
                .is_err()
        {
            m.abort();
        }
        self.shared.snapshot()
    }
}

/// Where released spans go.
struct Sinks {
    otlp: Option<OtlpExporter>,
    console: Option<ConsoleTraces>,
    jsonl: Option<JsonlWriter>,
    red: Option<RedMetrics>,
    metrics_tx: Option<mpsc::Sender<ExportMetricsServiceRequest>>,
}

impl Sinks {
    fn export_backlogged(&self) -> bool {
        self.otlp.as_ref().is_some_and(OtlpExporter::backlogged)
    }

    fn emit(&mut self, spans: SpanBatch, now_ns: u64, shared: &Shared) {
        if spans.is_empty() {
            return;
        }
        if let Some(r) = &mut self.red {
            for s in &spans {
                r.record(s);
            }
            shared
                .counters
                .metrics_dropped_series
                .store(r.dropped_series, Ordering::Relaxed);
        }
        shared
            .counters
            .spans_emitted
            .fetch_add(spans.len() as u64, Ordering::Relaxed);
        if let Some(j) = &mut self.jsonl {
            j.write_all(&spans);
            shared
                .counters
                .jsonl_written
                .store(j.written, Ordering::Relaxed);
            shared
                .counters
                .jsonl_errors
                .store(j.errors, Ordering::Relaxed);
        }
        if let Some(c) = &mut self.console {
            for s in &spans {
                if let Some(text) = c.push(SpanData::clone(s), now_ns) {
                    print_trace(&text, shared);
                }
            }
        }
        if let Some(o) = &self.otlp {
            o.offer_batch(spans);
        }
    }

    /// Queue a cumulative RED snapshot for the metrics sender (skipped if it is still busy).
    fn export_metrics(&mut self, clock: &ClockOffset, shared: &Shared) {
        if let (Some(r), Some(tx)) = (&self.red, &self.metrics_tx) {
            let req = r.to_request(clock.to_unix_ns(ClockOffset::now_mono_ns()));
            if !req.resource_metrics.is_empty() && tx.try_send(req).is_err() {
                shared
                    .counters
                    .metrics_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Traces waiting to be printed on the console.
    fn console_open(&self) -> bool {
        self.console.as_ref().is_some_and(|c| c.open_traces() > 0)
    }

    fn tick_console(&mut self, now_ns: u64, force: bool, shared: &Shared) {
        if let Some(c) = &mut self.console {
            for t in c.take_ready(now_ns, force) {
                print_trace(&t, shared);
            }
        }
    }
}

fn print_trace(text: &str, shared: &Shared) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
    shared
        .counters
        .console_traces
        .fetch_add(1, Ordering::Relaxed);
}

/// Start the pipeline on the current tokio runtime. It ends when `rx` closes or on
/// [`PipelineHandle::shutdown`].
pub fn spawn_span_pipeline(
    cfg: PipelineConfig,
    rx: HandoffRx,
) -> Result<PipelineHandle, PipelineError> {
    let kinds = &cfg.export.exporters;
    let otlp = if kinds.contains(&ExporterKind::Otlp) {
        Some(OtlpExporter::spawn(&cfg.export.otlp, &cfg.export.batch)?)
    } else {
        None
    };
    let console = kinds.contains(&ExporterKind::Console).then(|| {
        ConsoleTraces::new(
            u64::try_from(cfg.console_quiet.as_nanos()).unwrap_or(u64::MAX),
            cfg.console_max_traces,
        )
    });
    let jsonl = if kinds.contains(&ExporterKind::Jsonl) {
        Some(JsonlWriter::open(cfg.export.jsonl_path.as_deref())?)
    } else {
        None
    };
    let shared = Arc::new(Shared {
        counters: Counters::default(),
        correlate: std::sync::Mutex::new(CorrelateStats::default()),
        otlp: otlp.as_ref().map(|o| Arc::clone(o.stats())),
        otlp_max_queue: u64::try_from(cfg.export.batch.max_queue).unwrap_or(u64::MAX),
    });
    let (stop_tx, stop_rx) = oneshot::channel();
    let (red, metrics_tx, metrics_join) = match &cfg.export.metrics {
        Some(m) => {
            let transport = Transport::new(&cfg.export.otlp, &m.endpoint)?;
            let (tx, mrx) = mpsc::channel(2);
            let join = tokio::spawn(metrics_sender(transport, mrx, Arc::clone(&shared)));
            let start = ClockOffset::measure().to_unix_ns(ClockOffset::now_mono_ns());
            (
                Some(RedMetrics::new(start, m.max_series)),
                Some(tx),
                Some(join),
            )
        }
        None => (None, None, None),
    };
    let sinks = Sinks {
        otlp,
        console,
        jsonl,
        red,
        metrics_tx,
    };
    let join = tokio::spawn(run(
        cfg,
        rx,
        stop_rx,
        sinks,
        Arc::clone(&shared),
        metrics_join,
    ));
    Ok(PipelineHandle {
        shared,
        stop: Some(stop_tx),
        join,
    })
}

async fn run(
    cfg: PipelineConfig,
    mut rx: HandoffRx,
    mut stop: oneshot::Receiver<()>,
    mut sinks: Sinks,
    shared: Arc<Shared>,
    metrics_join: Option<JoinHandle<()>>,
) -> Leftovers {
    // Re-measured now and then: the wall clock may be stepped or slewed (NTP).
    let mut clock = ClockOffset::measure();
    let mut clock_at = tokio::time::Instant::now();
    let mut procs = ProcessCache::new(cfg.discovery.clone());
    if let Some(p) = &cfg.prefetched {
        procs = procs.with_prefetched(Arc::clone(p));
    }
    let mut corr = Correlator::new(cfg.correlate.clone());
    let mut yielder = YieldEvery::new(YIELD_EVERY_EXCHANGES);
    // The periodic work (releases, console, stats) runs after every batch, which hands out
    // the spans that settled on arrival at once, and on a timer armed only while spans wait
    // for their window or the console has traces to print: under light traffic it shares the
    // batch's wakeup, and an idle agent does not wake for it (a wakeup costs far more than
    // the work on a VM; see `ingest`).
    let tick = tokio::time::sleep(cfg.tick);
    tokio::pin!(tick);
    let mut tick_armed = true;
    let metrics_every = cfg
        .export
        .metrics
        .as_ref()
        .map_or(Duration::from_secs(3600), |m| m.interval);
    let mut metrics_tick =
        tokio::time::interval_at(tokio::time::Instant::now() + metrics_every, metrics_every);
    metrics_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let tick_now = tokio::select! {
            batch = rx.recv() => {
                let Some(batch) = batch else { break };
                remeasure_if_due(&mut clock, &mut clock_at);
                let polite = !(rx.behind() || sinks.export_backlogged());
                spans_from(batch, &mut procs, &mut corr, &clock, &cfg.spans, &shared, || {
                    // Yield only while keeping up: a pipeline that gives its CPU away while
                    // its queue (or the export queue behind it, on the same thread) fills
                    // would drop spans (it did, under redis -P 16 and pgbench).
                    if polite {
                        yielder.step();
                    }
                });
                true
            }
            _ = &mut tick, if tick_armed => true,
            _ = metrics_tick.tick() => { sinks.export_metrics(&clock, &shared); false }
            _ = &mut stop => break,
        };
        if tick_now {
            remeasure_if_due(&mut clock, &mut clock_at);
            let now = ClockOffset::now_mono_ns();
            let behind = rx.behind() || sinks.export_backlogged();
            let out = corr.poll_with(now, || {
                if !behind {
                    yielder.step()
                }
            });
            sinks.emit(out, now, &shared);
            sinks.tick_console(now, false, &shared);
            if let Ok(mut s) = shared.correlate.lock() {
                *s = corr.stats();
            }
            tick_armed = corr.has_unreleased() || sinks.console_open();
            if tick_armed {
                tick.as_mut().reset(tokio::time::Instant::now() + cfg.tick);
            }
        }
    }
    // Batches the ingest thread handed over before it stopped: a stop picked before them
    // would lose their spans without counting them.
    while let Some(batch) = rx.try_recv() {
        spans_from(
            batch,
            &mut procs,
            &mut corr,
            &clock,
            &cfg.spans,
            &shared,
            || {},
        );
    }
    let now = ClockOffset::now_mono_ns();
    let out = corr.flush();
    // Every held span at once: wait for queue room (bounded) instead of dropping the excess.
    let otlp = sinks.otlp.take();
    if let Some(o) = &otlp {
        let deadline = tokio::time::Instant::now() + FINAL_FLUSH;
        o.offer_all_until(out.clone(), deadline).await;
    }
    sinks.emit(out, now, &shared);
    sinks.otlp = otlp;
    sinks.tick_console(now, true, &shared);
    sinks.export_metrics(&clock, &shared);
    if let Ok(mut s) = shared.correlate.lock() {
        *s = corr.stats();
    }
    Leftovers {
        otlp: sinks.otlp.take(),
        metrics: metrics_join,
    }
}

/// Re-measures the wall-clock offset when it is older than [`CLOCK_REMEASURE`] (the wall clock
/// may be stepped or slewed by NTP).
fn remeasure_if_due(clock: &mut ClockOffset, at: &mut tokio::time::Instant) {
    if at.elapsed() >= CLOCK_REMEASURE {
        *clock = ClockOffset::measure();
        *at = tokio::time::Instant::now();
    }
}

/// Turns a batch of exchanges into spans for the correlator, calling `after_each` after each.
fn spans_from(
    batch: crate::handoff::Batch,
    procs: &mut ProcessCache,
    corr: &mut Correlator,
    clock: &ClockOffset,
    cfg: &SpanConfig,
    shared: &Shared,
    mut after_each: impl FnMut(),
) {
    shared
        .counters
        .exchanges
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    let now = ClockOffset::now_mono_ns();
    for ex in batch {
        after_each();
        let res = procs.resource(ex.conn.pid, &ex.conn.comm);
        match build_span(&ex, res, clock, cfg) {
            Ok(span) => {
                shared.counters.spans_built.fetch_add(1, Ordering::Relaxed);
                corr.push(span, now);
            }
            Err(SkipReason::UnknownRole) => {
                shared
                    .counters
                    .skipped_unknown_role
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(SkipReason::DbServerSide) => {
                shared
                    .counters
                    .skipped_db_server
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// How long the final flush waits for room in the export queue (within the shutdown deadline).
const FINAL_FLUSH: Duration = Duration::from_secs(3);

/// Sends RED snapshots; cumulative, so a failed one is simply superseded by the next.
async fn metrics_sender(
    mut transport: Transport,
    mut rx: mpsc::Receiver<ExportMetricsServiceRequest>,
    shared: Arc<Shared>,
) {
    while let Some(req) = rx.recv().await {
        match transport.send_metrics(req).await {
            Ok(()) => {
                shared
                    .counters
                    .metrics_exports
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::warn!(error = %e.message, "OTLP metrics export failed");
                shared
                    .counters
                    .metrics_errors
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
