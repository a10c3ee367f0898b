//! The OTLP export worker: a bounded queue, batching by size and delay, retries with
//! exponential backoff on retryable failures, drop counters, and a drain on shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::transport::{Transport, TransportError};
use crate::exportcfg::{BatchConfig, OtlpConfig};
use crate::spans::{SpanBatch, SpanData};
use crate::yielding::{YieldEvery, backlogged};

/// Counters shared with the pipeline (monotonic).
#[derive(Debug, Default)]
pub struct OtlpStats {
    pub exported: AtomicU64,
    /// Queue full (collector down or slow).
    pub dropped_queue_full: AtomicU64,
    /// Given up after retries, a non-retryable error, or shutdown deadline.
    pub dropped_failed: AtomicU64,
    /// Failed send attempts (each retry counts).
    pub export_errors: AtomicU64,
    pub batches_sent: AtomicU64,
    /// Spans in the queue or in the batch being sent.
    pub in_flight: AtomicU64,
}

/// The queue holds batches (one handoff per released batch, not per span), bounded in spans:
/// `in_flight` (queued or being sent) never exceeds `max_queue`.
pub struct OtlpExporter {
    tx: mpsc::UnboundedSender<SpanBatch>,
    max_queue: u64,
    join: JoinHandle<()>,
    stats: Arc<OtlpStats>,
}

impl OtlpExporter {
    /// Must be called inside a tokio runtime.
    pub fn spawn(otlp: &OtlpConfig, batch: &BatchConfig) -> Result<Self, TransportError> {
        let transport = Transport::new(otlp, &otlp.endpoint)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(OtlpStats::default());
        let join = tokio::spawn(worker(transport, batch.clone(), rx, Arc::clone(&stats)));
        Ok(OtlpExporter {
            tx,
            max_queue: u64::try_from(batch.max_queue.max(1)).unwrap_or(u64::MAX),
            join,
            stats,
        })
    }

    pub fn stats(&self) -> &Arc<OtlpStats> {
        &self.stats
    }

    /// Whether the queue is filling faster than it drains ([`backlogged`]): then nothing that
    /// shares the export thread may give its CPU away, or the queue overflows (it did, with
    /// pgbench saturating both cores: the thread waited 6.3 s of 8 to run after its yields).
    pub fn backlogged(&self) -> bool {
        backlogged(self.stats.in_flight.load(Ordering::Relaxed), self.max_queue)
    }

    /// Queue a span; never blocks. Returns false (and counts) when the queue is full.
    pub fn offer(&self, span: SpanData) -> bool {
        self.offer_batch(vec![Box::new(span)]) == 1
    }

    /// Queue as many of `spans` as there is room for; never blocks. The rest are dropped and
    /// counted. Returns how many were queued.
    pub fn offer_batch(&self, mut spans: SpanBatch) -> usize {
        let n = self.admit(spans.len());
        let dropped = spans.len() - n;
        if dropped > 0 {
            spans.truncate(n);
            self.stats
                .dropped_queue_full
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        if n > 0 && self.tx.send(spans).is_err() {
            // The worker is gone (shutdown): nothing will send them.
            self.release(n);
            self.stats
                .dropped_failed
                .fetch_add(n as u64, Ordering::Relaxed);
            return 0;
        }
        n
    }

    /// Reserve queue room for up to `want` spans; returns how many fit.
    fn admit(&self, want: usize) -> usize {
        let want = want as u64;
        let mut got = 0;
        let _ = self
            .stats
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                got = want.min(self.max_queue.saturating_sub(v));
                Some(v + got)
            });
        got as usize
    }

    fn release(&self, n: usize) {
        let _ = self
            .stats
            .in_flight
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n as u64))
            });
    }

    /// Queue every span, waiting for room until `deadline`: the final flush hands over every
    /// held span at once, more than the queue holds, while the worker drains it. What is left
    /// at the deadline is dropped and counted.
    pub async fn offer_all_until(&self, mut spans: SpanBatch, deadline: Instant) {
        while !spans.is_empty() {
            let n = self.admit(spans.len());
            if n > 0 {
                let rest = spans.split_off(n);
                if self.tx.send(std::mem::replace(&mut spans, rest)).is_err() {
                    self.release(n);
                    self.stats
                        .dropped_failed
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                continue;
            }
            if Instant::now() >= deadline {
                self.stats
                    .dropped_failed
                    .fetch_add(spans.len() as u64, Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Stop accepting spans and export what is queued, giving up at `deadline`.
    pub async fn shutdown(self, deadline: Duration) {
        let OtlpExporter {
            tx,
            mut join,
            stats,
            ..
        } = self;
        drop(tx);
        if tokio::time::timeout(deadline, &mut join).await.is_err() {
            join.abort();
            let left = stats.in_flight.swap(0, Ordering::Relaxed);
            stats.dropped_failed.fetch_add(left, Ordering::Relaxed);
        }
    }
}

/// Spans encoded between two yields of the CPU (see `yielding`).
const YIELD_EVERY_SPANS: u32 = 64;

/// Export requests in flight at once.
const MAX_CONCURRENT_EXPORTS: usize = 4;

async fn worker(
    mut transport: Transport,
    cfg: BatchConfig,
    mut rx: mpsc::UnboundedReceiver<SpanBatch>,
    stats: Arc<OtlpStats>,
) {
    warm_up(&transport);
    let max_batch = cfg.max_batch.max(1);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_EXPORTS));
    let mut buf: SpanBatch = Vec::with_capacity(max_batch.min(4096));
    let mut flush_at: Option<Instant> = None;
    loop {
        let next = match flush_at {
            None => rx.recv().await.map(Some),
            Some(at) => match tokio::time::timeout_at(at, rx.recv()).await {
                Ok(v) => v.map(Some),
                Err(_) => Some(None),
            },
        };
        match next {
            Some(Some(mut spans)) => {
                // Moved in bulk, up to a batch at a time (one copy, not a push per span).
                while !spans.is_empty() {
                    if buf.is_empty() {
                        flush_at = Some(Instant::now() + cfg.max_delay);
                    }
                    let room = max_batch - buf.len();
                    if spans.len() <= room {
                        buf.append(&mut spans);
                    } else {
                        let rest = spans.split_off(room);
                        buf.append(&mut spans);
                        spans = rest;
                    }
                    if buf.len() >= max_batch {
                        // Full batches go out concurrently (bounded), so one slow round trip
                        // does not stall the queue behind it.
                        let batch = std::mem::replace(&mut buf, Vec::with_capacity(max_batch));
                        flush_at = None;
                        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                            return;
                        };
                        let (mut t, c, s) = (transport.clone(), cfg.clone(), Arc::clone(&stats));
                        tokio::spawn(async move {
                            send_with_retry(&mut t, &c, batch, &s).await;
                            drop(permit);
                        });
                    }
                }
            }
            Some(None) => {
                send_with_retry(&mut transport, &cfg, std::mem::take(&mut buf), &stats).await;
                flush_at = None;
            }
            None => {
                // Closed: wait for the concurrent sends, then drain.
                let _ = in_flight.acquire_many(MAX_CONCURRENT_EXPORTS as u32).await;
                while !buf.is_empty() {
                    let n = buf.len().min(max_batch);
                    let rest = buf.split_off(n);
                    send_with_retry(
                        &mut transport,
                        &cfg,
                        std::mem::replace(&mut buf, rest),
                        &stats,
                    )
                    .await;
                }
                return;
            }
        }
    }
}

/// Opens the connection to the collector before the first batch, with an empty export
/// request (valid OTLP: no spans). Connected lazily, the first batch of a load that starts
/// waited for the connection while the load filled the queue: redis-benchmark -P 16 at the
/// agent's start saw nothing exported for 60-100 ms, and the queue overflowed in 5 of 12
/// runs. A collector that does not answer is only reported: batches retry as usual.
fn warm_up(transport: &Transport) {
    let mut t = transport.clone();
    tokio::spawn(async move {
        if let Err(e) = t.send_encoded(bytes::Bytes::new()).await {
            tracing::warn!(error = %e.message, "OTLP collector not reachable at start; spans are queued and retried");
        }
    });
}

async fn send_with_retry(
    transport: &mut Transport,
    cfg: &BatchConfig,
    batch: SpanBatch,
    stats: &OtlpStats,
) {
    if batch.is_empty() {
        return;
    }
    let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
    // Encoded once, straight from the spans; retries resend the same bytes.
    let mut buf = Vec::new();
    let behind = backlogged(
        stats.in_flight.load(Ordering::Relaxed),
        u64::try_from(cfg.max_queue).unwrap_or(u64::MAX),
    );
    let mut yielder = YieldEvery::new(if behind { 0 } else { YIELD_EVERY_SPANS });
    super::otlp::direct::encode_request_with(&batch, &mut buf, || yielder.step());
    let body = bytes::Bytes::from(buf);
    drop(batch);
    let started = Instant::now();
    let mut backoff = cfg.initial_backoff;
    loop {
        match transport.send_encoded(body.clone()).await {
            Ok(()) => {
                stats.exported.fetch_add(n, Ordering::Relaxed);
                stats.batches_sent.fetch_add(1, Ordering::Relaxed);
                break;
            }
            Err(e) => {
                stats.export_errors.fetch_add(1, Ordering::Relaxed);
                let give_up = !e.retryable || started.elapsed() + backoff > cfg.max_retry_time;
                if give_up {
                    tracing::warn!(spans = n, error = %e.message, "OTLP export failed, batch dropped");
                    stats.dropped_failed.fetch_add(n, Ordering::Relaxed);
                    break;
                }
                tracing::debug!(error = %e.message, backoff_ms = backoff.as_millis() as u64, "OTLP export retry");
                // Jitter: 50..100% of the backoff.
                let jitter = rand::random_range(0.5..=1.0);
                tokio::time::sleep(backoff.mul_f64(jitter)).await;
                backoff = (backoff * 2).min(cfg.max_backoff);
            }
        }
    }
    let _ = stats
        .in_flight
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
}
