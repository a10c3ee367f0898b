//! `tracewire run`: the kernel programs feed a dedicated ingest thread (ring buffer ->
//! conntrack -> parsers -> exchanges); exchanges cross a bounded channel to the span pipeline
//! (spans -> correlation -> exporters) on a small tokio runtime.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use agent_common::CONN_OP_CLOSE;

use crate::conntrack::{Conntrack, ConntrackConfig, ConntrackStats};
use crate::cpuclass::{Backlog, Signals};
use crate::discovery::{Prefetched, Prefetcher};
use crate::export::pipeline::{PipelineConfig, PipelineHandle, PipelineStats, spawn_span_pipeline};
use crate::handoff::{HandoffTx, handoff};
use crate::hostcpu::{HostCpu, online_cpus};
use crate::ingest::{EventRef, EventSink, IngestStats, run_loop};
use crate::model::Exchange;
use crate::probes::{KernelCounters, ProbeConfig, Probes};
use crate::sampler::{Sampler, Totals};

/// Most exchanges handed to the span pipeline at once.
const BATCH: usize = 256;

pub struct DaemonConfig {
    pub probes: ProbeConfig,
    pub conntrack: ConntrackConfig,
    pub pipeline: PipelineConfig,
    /// Exchanges waiting for the span pipeline; beyond it they are dropped and counted.
    pub channel_capacity: usize,
    /// Where to write the final counters as JSON (benchmarks read it).
    pub stats_file: Option<PathBuf>,
    /// Log counters this often.
    pub stats_interval: Duration,
    /// Calls per second captured in full before whole exchanges are sampled; 0: no limit.
    pub capture_budget: u64,
    /// The capture budget's cap while the node's CPUs are saturated, per CPU of the node; 0:
    /// no cap.
    pub saturated_budget_per_cpu: u64,
    /// The scheduler slice the agent's threads ask for (see `cpuslice`); None: the kernel's.
    pub cpu_slice: Option<Duration>,
    /// Move the agent's threads to the idle scheduling class while the node is saturated and
    /// the agent keeps up (see `cpuclass`).
    pub idle_when_saturated: bool,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct FinalStats {
    pub kernel: KernelCounters,
    pub conntrack: ConntrackStats,
    pub exchanges_dropped_channel_full: u64,
    pub spans_built: u64,
    pub spans_exported: u64,
    pub otlp_dropped: u64,
    pub otlp_export_errors: u64,
    /// Parent inference: links per rule, roots, and spans released early (buffer full).
    pub correlate: crate::correlate::CorrelateStats,
    /// Every loss anywhere: kernel ring buffer, channel, exporter queue and failures.
    pub total_drops: u64,
    /// Calls/s captured in full: as configured, and the lowest in force after the export side
    /// fell behind or the node was saturated (0 = no limit).
    pub capture_budget: u64,
    pub capture_budget_lowest: u64,
    /// The cap on it while the node's CPUs were saturated (calls/s for the whole node; 0 =
    /// none), and for how long they were.
    pub saturated_budget: u64,
    pub node_saturated_ms: u64,
    /// Time the agent's threads spent in the idle scheduling class, and its class changes.
    pub idle_class_ms: u64,
    pub class_switches: u64,
}

/// Runs until `stop` is set (SIGINT/SIGTERM), then flushes and reports.
pub fn run(cfg: DaemonConfig, stop: Arc<AtomicBool>) -> Result<FinalStats> {
    // First, on the main thread: every thread started from here on inherits the slice.
    if let Some(slice) = cfg.cpu_slice {
        eprintln!(
            "tracewire: scheduler: {}",
            crate::cpuslice::set_current_thread_slice(slice)
        );
    }
    let slice_ns = cfg
        .cpu_slice
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let idle_class = cfg.idle_when_saturated
        && {
            match crate::cpuclass::can_switch(slice_ns) {
                Ok(()) => {
                    eprintln!(
                        "tracewire: scheduling: the agent's threads run in the idle class (SCHED_IDLE) while the node is saturated and they keep up"
                    );
                    true
                }
                Err(e) => {
                    eprintln!(
                        "tracewire: scheduling: the agent stays in the normal class: leaving the idle class again was refused ({e}; needs CAP_SYS_NICE)"
                    );
                    false
                }
            }
        };
    crate::cpuclass::register_current_thread();
    let mut probes = Probes::load(&cfg.probes)?;
    crate::memory::release_free_memory();
    let hooks: Vec<String> = probes
        .attached
        .iter()
        .map(|h| format!("{}:{}", h.category, h.name))
        .collect();
    eprintln!(
        "tracewire: tracing via {} tracepoints ({}): {}; reads seen {}; kprobes/fentry not used",
        hooks.len(),
        hooks.join(", "),
        probes.hooks_mode(),
        probes.reads_mode()
    );
    let mut ring = probes.take_ring()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("tracewire-export")
        .on_thread_start(crate::cpuclass::register_current_thread)
        .on_thread_stop(crate::cpuclass::unregister_current_thread)
        .enable_all()
        .build()
        .context("starting the export runtime")?;
    let (tx, rx) = handoff(cfg.channel_capacity);
    let prefetched = Prefetched::new();
    let mut pipeline_cfg = cfg.pipeline.clone();
    pipeline_cfg.prefetched = Some(Arc::clone(&prefetched));
    let prefetcher = Prefetcher::new(&pipeline_cfg.discovery, prefetched);
    let pipeline = rt
        .block_on(async { spawn_span_pipeline(pipeline_cfg, rx) })
        .context("starting the span pipeline")?;

    let cpus = online_cpus();
    // The cap scales with the node: what the agent may take from the applications of a
    // saturated node is a share of its CPUs.
    let saturated_budget = (cfg.saturated_budget_per_cpu as f64 * cpus) as u64;
    let mut host_cpu = HostCpu::open();
    if saturated_budget > 0 && cfg.capture_budget > 0 && !host_cpu.available() {
        eprintln!(
            "tracewire: warning: /proc/stat is not readable: the node's saturation is not measured, and the capture budget stays {}/s when it is saturated",
            cfg.capture_budget
        );
    }
    let class_signals = Arc::new(Signals::default());
    // Stopped by the same flag as the ingest loop: the final drain and flush run in the
    // normal class.
    let class_control = crate::cpuclass::spawn_controller(
        idle_class,
        slice_ns,
        Arc::clone(&class_signals),
        Arc::clone(&stop),
        monotonic_ns,
    )
    .context("starting the scheduling-class controller")?;
    let mut sink = DaemonSink {
        conntrack: Conntrack::new(cfg.conntrack.clone()),
        out: Vec::with_capacity(BATCH),
        tx,
        dropped: 0,
        last_evict: Instant::now(),
        last_log: Instant::now(),
        stats_interval: cfg.stats_interval,
        probes: &mut probes,
        pipeline: &pipeline,
        sampler: Sampler::new(cfg.capture_budget).with_saturated_budget(saturated_budget, cpus),
        host_cpu,
        prefetcher,
        window_cap: 0,
        class: Arc::clone(&class_signals),
    };
    sink.update_window_cap();
    let ingest = run_loop(&mut ring, &stop, Duration::from_millis(10), &mut sink);
    let DaemonSink {
        conntrack,
        tx,
        dropped: ch_dropped,
        sampler,
        ..
    } = sink;
    class_signals.wake_controller();
    let (idle_class_ms, class_switches) = class_control.join().unwrap_or_default();
    drop(tx);
    let p: PipelineStats = rt.block_on(pipeline.shutdown(Duration::from_secs(5)));
    let kernel = probes.counters().unwrap_or_default();
    let fin = FinalStats {
        kernel,
        conntrack: conntrack.stats(),
        exchanges_dropped_channel_full: ch_dropped,
        spans_built: p.spans_built,
        spans_exported: p.otlp_exported,
        otlp_dropped: p.dropped(),
        otlp_export_errors: p.otlp_export_errors,
        correlate: p.correlate,
        total_drops: kernel.dropped_events + kernel.call_collisions + ch_dropped + p.dropped(),
        capture_budget: cfg.capture_budget,
        capture_budget_lowest: sampler.lowest_budget_in_force(),
        saturated_budget,
        node_saturated_ms: sampler.saturated_ms(),
        idle_class_ms,
        class_switches,
    };
    eprintln!(
        "tracewire: stopped: events={} spans_built={} exported={} total_drops={}",
        ingest.events, fin.spans_built, fin.spans_exported, fin.total_drops
    );
    if let Some(path) = &cfg.stats_file {
        std::fs::write(path, serde_json::to_string_pretty(&fin)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(fin)
}

/// The ingest thread's consumer: conntrack in, exchanges out to the span pipeline.
struct DaemonSink<'a> {
    conntrack: Conntrack,
    out: Vec<Exchange>,
    tx: HandoffTx,
    dropped: u64,
    last_evict: Instant,
    last_log: Instant,
    stats_interval: Duration,
    probes: &'a mut Probes,
    pipeline: &'a PipelineHandle,
    sampler: Sampler,
    host_cpu: HostCpu,
    prefetcher: Prefetcher,
    /// The kernel's per-CPU window cap as last written.
    window_cap: u32,
    /// What the scheduling-class controller is told at each tick (see `cpuclass`).
    class: Arc<Signals>,
}

impl DaemonSink<'_> {
    /// Writes the sampler's per-CPU window cap to the kernel when it changed.
    fn update_window_cap(&mut self) {
        let cap = self.sampler.window_cap();
        if cap != self.window_cap && self.probes.set_window_cap(cap).is_ok() {
            self.window_cap = cap;
        }
    }

    fn send_all(&mut self) {
        if self.out.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.out, Vec::with_capacity(BATCH));
        let n = batch.len() as u64;
        // Never block the ingest thread: a full channel drops (and counts) the batch.
        if self.tx.try_send(batch).is_err() {
            self.dropped += n;
        }
    }
}

impl EventSink for DaemonSink<'_> {
    fn event(&mut self, ev: EventRef<'_>) {
        match ev {
            EventRef::Conn(c) => {
                if c.op != CONN_OP_CLOSE {
                    self.prefetcher.connection_opened(c.pid);
                }
                self.conntrack.on_conn(c, &mut self.out)
            }
            EventRef::Data(h, p) => self.conntrack.on_data(h, p, &mut self.out),
        }
        if self.out.len() >= BATCH {
            self.send_all();
        }
    }

    fn tick(&mut self, stats: &IngestStats) {
        // After every drained batch of events: what is ready goes now.
        self.send_all();
        let ignored = self.conntrack.take_ignored();
        if !ignored.is_empty() {
            let _ = self.probes.ignore_conns(&ignored);
        }
        let samplable = self.conntrack.take_samplable();
        if !samplable.is_empty() {
            let _ = self.probes.allow_sampling(&samplable);
        }
        // Every tick: only the two counters the sampler needs (one map read each).
        let (offered, sampled_out) = self.probes.sampling_counters().unwrap_or_default();
        let pressure = self.pipeline.export_pressure();
        let now = monotonic_ns();
        let cpu = if self.sampler.wants_host_cpu(now) {
            self.host_cpu.read()
        } else {
            self.host_cpu.last()
        };
        let totals = Totals {
            offered,
            sampled_out,
            records: self.conntrack.records(),
            lost: pressure.lost + self.dropped,
            backlogged: pressure.backlogged,
            queued: pressure.queued,
            cpu,
        };
        if let Some(t) = self.sampler.update(totals, now) {
            let _ = self.probes.set_skip_threshold(t);
        }
        self.update_window_cap();
        crate::yielding::set_node_saturated(self.sampler.node_saturated());
        let backlog = Backlog {
            drain_events: stats.drain_events,
            tick_age_ns: 0,
            handoff_behind: self.tx.behind(),
            export_backlogged: pressure.backlogged,
            lost: pressure.lost + self.dropped,
        };
        self.class
            .tick(now, self.sampler.node_saturated(), &backlog);
        if self.last_evict.elapsed() > Duration::from_secs(1) {
            self.conntrack.evict_idle(monotonic_ns(), &mut self.out);
            self.send_all();
            self.last_evict = Instant::now();
        }
        if self.last_log.elapsed() > self.stats_interval {
            self.last_log = Instant::now();
            let s = self.conntrack.stats();
            let p = self.pipeline.stats();
            let k = self.probes.counters().unwrap_or_default();
            eprintln!(
                "tracewire: conns={} records={} spans={} exported={} queued={} sampled: budget={}/s{} kept={:.3} out={} drops: ring={} channel={} export={} unknown_protocol={} parse_errors={}",
                self.conntrack.len(),
                s.records,
                p.spans_built,
                p.otlp_exported,
                p.otlp_queued,
                self.sampler.budget_in_force(),
                if self.sampler.node_saturated() {
                    " (node saturated)"
                } else {
                    ""
                },
                self.sampler.kept_fraction(),
                k.sampled_out,
                k.dropped_events,
                self.dropped,
                p.dropped(),
                s.unknown_protocol,
                s.parse_errors
            );
        }
    }
}

/// CLOCK_MONOTONIC in ns: the clock bpf_ktime_get_ns uses.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}
