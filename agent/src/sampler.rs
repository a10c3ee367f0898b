//! Keeps the calls captured in full within a budget. The kernel counts exchanges (turns to the
//! request direction) offered on connections open to sampling and skips an exchange when its
//! hash falls below a threshold; this controller turns the offered rate into that threshold.
//! The budget is in calls (parsed request/response records, each end counted), and one
//! exchange may carry many (a pipelined batch), so the calls per kept exchange are measured
//! too. Below the budget nothing is skipped; above it the kept fraction is budget / offered
//! calls, and every skipped exchange is counted by the kernel (`sampled_out`).
//!
//! The budget is a ceiling, not a promise: when spans are lost after parsing (the export
//! queue overflowed, exports failed), the budget in force is halved, at most once per
//! interval; while the export queue is more than a quarter full it shrinks by 15 % per
//! interval if the queue grew since the last one (falling behind: act before it overflows)
//! and holds otherwise; it grows back by 1 % of the configured budget per interval (10 s from
//! nothing to all) once the export side keeps up. A queue that is long but not growing never
//! shrinks it, so a load the agent keeps up with is not sampled below the configured budget. Shedding whole exchanges in the kernel
//! costs nothing and keeps both ends of a trace; a span dropped after it was captured, parsed,
//! built and queued wasted that work and leaves its children orphaned.
//!
//! A saturated node caps it further. While the node has CPU to spare, the agent's work runs
//! there; once no CPU is left idle, every microsecond the agent spends is taken from the
//! applications, and more than that: on a saturated 2-core host, 0.1 of a core of agent
//! work left another 0.14 idle (an application thread preempted by the agent stalls the
//! peers that wait on it), and nginx lost 15-20 % of its throughput. So while less than
//! [`SATURATED_BELOW_IDLE_CORES`] of the node's CPUs are idle (smoothed; or less than
//! [`SATURATED_AT_ONCE_BELOW_IDLE_CORES`] in one interval), the budget in force is at most the
//! saturated budget (smaller); it is lifted step by step once more than
//! [`UNSATURATED_ABOVE_IDLE_CORES`] are idle again. Measured on 2 cores: nginx + wrk and
//! pgbench leave 0.02-0.2 of a core idle, redis-benchmark 0.2-0.3, the fixed-rate check's
//! 10,000 requests/s 0.83.

use crate::hostcpu::CpuTicks;

/// How often the threshold is recomputed.
pub const INTERVAL_NS: u64 = 100_000_000;
/// The shortest interval a surge is measured over.
const SURGE_MIN_NS: u64 = 5_000_000;

/// Calls per exchange assumed until measured. Assuming 1 let a pipelined load (redis-benchmark
/// -P 16: 16 commands per exchange) capture 16 times the budget in the agent's first interval,
/// a burst that overflowed the export queue. Assuming more errs the other way on loads of one
/// call per exchange (for an interval): 4 keeps a surge at 10k calls/s, such as the fixed-rate
/// check's, from being taken for one over the budget.
const PRIOR_CALLS_PER_EXCHANGE: f64 = 4.0;

/// Kept exchanges from which their calls per exchange are measured over an interval.
const MIN_KEPT_TO_MEASURE: u64 = 16;
/// Kept exchanges since the interval began from which more calls per exchange than
/// estimated raise the estimate at once.
const MIN_KEPT_TO_RAISE: u64 = 256;

/// The kernel's per-CPU window cap over the budget in force: room for a load on one CPU, for
/// exchanges bunched within a window, and for calls per exchange overestimated (the prior
/// of 4 against 1 for plain request/response).
const WINDOW_CAP_SLACK: f64 = 4.0;
/// The smallest window cap (exchanges per CPU per window), so small budgets do not cut
/// exchanges that merely bunch together.
const MIN_WINDOW_CAP: f64 = 16.0;

/// The smallest share of the configured budget that backpressure may leave in force.
const MIN_SCALE: f64 = 1.0 / 64.0;
/// Share of the configured budget restored per interval once the export side keeps up.
const RECOVER_STEP: f64 = 0.01;

/// Idle CPU (in cores, smoothed) below which the node counts as saturated.
pub const SATURATED_BELOW_IDLE_CORES: f64 = 0.4;
/// Idle CPU of a single interval below which the node counts as saturated at once, without
/// waiting for the smoothed value: a load that starts (or resumes after a pause, as
/// redis-benchmark's tests do) is capped within one interval instead of four. A node that
/// only dips there (the fixed-rate check's 10,000 requests/s left 0.83 of 2 cores idle) never
/// has an interval this busy.
pub const SATURATED_AT_ONCE_BELOW_IDLE_CORES: f64 = 0.1;
/// Idle CPU above which a saturated node counts as having room again (a gap between the two
/// keeps a load at the edge from switching at every interval).
pub const UNSATURATED_ABOVE_IDLE_CORES: f64 = 0.6;
/// Share of the configured budget the saturation cap is lifted by per interval once the node
/// has room again (1 s from the saturated budget to the full one).
const UNSATURATED_STEP: f64 = 0.1;
/// Weight of the newest interval in the smoothed idle CPU (/proc/stat counts in 10 ms ticks:
/// over 100 ms on 2 CPUs one tick is a tenth of a core).
const IDLE_SMOOTHING: f64 = 0.5;

/// Running totals at one instant.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    /// Exchanges offered to sampling (kernel).
    pub offered: u64,
    /// Of those, skipped (kernel).
    pub sampled_out: u64,
    /// Calls parsed (userspace).
    pub records: u64,
    /// Spans lost after parsing (handoff channel, export queue, failed exports).
    pub lost: u64,
    /// The export queue is backing up.
    pub backlogged: bool,
    /// Spans in the export queue (a gauge).
    pub queued: u64,
    /// The node's CPU time (zero: unknown). Read when [`Sampler::wants_host_cpu`] says so.
    pub cpu: CpuTicks,
}

impl Totals {
    /// Exchanges kept (offered and not sampled out) since `earlier`.
    fn kept_since(&self, earlier: &Totals) -> u64 {
        self.offered
            .saturating_sub(earlier.offered)
            .saturating_sub(self.sampled_out.saturating_sub(earlier.sampled_out))
    }
}

#[derive(Debug)]
pub struct Sampler {
    /// Calls per second captured in full; 0 = no limit.
    budget_per_s: u64,
    last: Option<Totals>,
    last_ns: u64,
    /// Offered exchanges per second, smoothed so one burst does not swing it.
    rate: f64,
    /// Calls per kept exchange (None until measured: then [`PRIOR_CALLS_PER_EXCHANGE`]).
    calls_per_exchange: Option<f64>,
    threshold: u32,
    /// Share of the budget in force (1.0 unless the export side fell behind).
    scale: f64,
    /// Totals and time at the start of the current interval. The scale is adjusted and the
    /// calls per exchange are measured once per interval of at least `INTERVAL_NS`, however
    /// often surges update the threshold in between.
    interval: Totals,
    interval_ns: u64,
    /// Totals and time of the surge check's reference: the first update at least
    /// `SURGE_MIN_NS` after the previous reference (see [`Sampler::recent_surge`]).
    recent: Totals,
    recent_ns: u64,
    /// Calls per second captured in full while the node is saturated (0: no such cap).
    saturated_budget_per_s: u64,
    /// The node's online CPUs.
    cpus: f64,
    /// Idle CPU of the node in cores, smoothed (None until measured).
    idle_cores: Option<f64>,
    saturated: bool,
    /// Cap on the budget in force from the node's saturation (calls/s).
    host_cap: f64,
    /// Intervals during which the node was saturated.
    saturated_intervals: u64,
    /// The smallest budget that was in force (0 = no limit).
    lowest: u64,
}

impl Sampler {
    pub fn new(budget_per_s: u64) -> Self {
        Self {
            budget_per_s,
            last: None,
            last_ns: 0,
            rate: 0.0,
            calls_per_exchange: None,
            threshold: 0,
            scale: 1.0,
            interval: Totals::default(),
            interval_ns: 0,
            recent: Totals::default(),
            recent_ns: 0,
            saturated_budget_per_s: 0,
            cpus: 1.0,
            idle_cores: None,
            saturated: false,
            host_cap: budget_per_s as f64,
            saturated_intervals: 0,
            lowest: budget_per_s,
        }
    }

    /// Cap the budget in force at `saturated_budget_per_s` while the node's `cpus` are
    /// saturated (0: no cap; nor without a budget).
    pub fn with_saturated_budget(mut self, saturated_budget_per_s: u64, cpus: f64) -> Self {
        self.saturated_budget_per_s = saturated_budget_per_s;
        self.cpus = cpus.max(1.0);
        self
    }

    /// Whether the next update closes an interval (and so wants a fresh [`Totals::cpu`]).
    pub fn wants_host_cpu(&self, now_ns: u64) -> bool {
        self.saturated_budget_per_s > 0
            && self.budget_per_s > 0
            && (self.last.is_none() || now_ns.saturating_sub(self.interval_ns) >= INTERVAL_NS)
    }

    /// Whether the node counts as saturated now.
    pub fn node_saturated(&self) -> bool {
        self.saturated
    }

    /// Milliseconds during which the node counted as saturated.
    pub fn saturated_ms(&self) -> u64 {
        self.saturated_intervals * (INTERVAL_NS / 1_000_000)
    }

    /// Track the node's idle CPU over the interval from `m` to `t`, and the cap it sets.
    fn observe_host(&mut self, m: &Totals, t: &Totals) {
        if self.saturated_budget_per_s == 0 || self.budget_per_s == 0 {
            return;
        }
        let total = t.cpu.total.saturating_sub(m.cpu.total);
        if m.cpu.total > 0 && total > 0 {
            let idle = t.cpu.idle.saturating_sub(m.cpu.idle).min(total);
            let now = idle as f64 / total as f64 * self.cpus;
            let smoothed = self
                .idle_cores
                .map_or(now, |p| IDLE_SMOOTHING * now + (1.0 - IDLE_SMOOTHING) * p);
            self.idle_cores = Some(smoothed);
            if smoothed < SATURATED_BELOW_IDLE_CORES || now < SATURATED_AT_ONCE_BELOW_IDLE_CORES {
                self.saturated = true;
            } else if smoothed > UNSATURATED_ABOVE_IDLE_CORES {
                self.saturated = false;
            }
        }
        let full = self.budget_per_s as f64;
        self.host_cap = if self.saturated {
            self.saturated_intervals += 1;
            (self.saturated_budget_per_s as f64).min(full)
        } else {
            (self.host_cap + UNSATURATED_STEP * full).min(full)
        };
    }

    /// Calls per second captured in full now (0 = no limit).
    pub fn budget_in_force(&self) -> u64 {
        let b = self.budget_at(self.scale);
        if b == 0 {
            return 0;
        }
        b.min(self.host_cap as u64).max(1)
    }

    /// The configured budget scaled by `scale` (0 stays "no limit", anything else stays >= 1).
    fn budget_at(&self, scale: f64) -> u64 {
        if self.budget_per_s == 0 {
            return 0;
        }
        ((self.budget_per_s as f64 * scale) as u64).max(1)
    }

    /// The lowest budget in force so far (0 = no limit): below the configured budget when the
    /// export side fell behind or the node was saturated.
    pub fn lowest_budget_in_force(&self) -> u64 {
        self.lowest
    }

    /// Backpressure: shrink the budget in force while the export side falls behind, restore
    /// it once it keeps up.
    fn adjust_scale(&mut self, lost: u64, backlogged: bool, growing: bool) {
        self.scale = if lost > 0 {
            self.scale * 0.5
        } else if backlogged && growing {
            self.scale * 0.85
        } else if backlogged {
            self.scale
        } else {
            self.scale + RECOVER_STEP
        }
        .clamp(MIN_SCALE, 1.0);
    }

    /// Calls per kept exchange as measured, or [`PRIOR_CALLS_PER_EXCHANGE`] before that.
    fn calls_per_exchange_or_prior(&self) -> f64 {
        self.calls_per_exchange.unwrap_or(PRIOR_CALLS_PER_EXCHANGE)
    }

    /// The running totals at `now_ns`; returns a new threshold when it changed (exchanges
    /// hashing below it are skipped; 0 keeps all).
    pub fn update(&mut self, t: Totals, now_ns: u64) -> Option<u32> {
        let Some(last) = self.last else {
            self.last = Some(t);
            self.last_ns = now_ns;
            self.interval = t;
            self.interval_ns = now_ns;
            self.recent = t;
            self.recent_ns = now_ns;
            return None;
        };
        let dt = now_ns.saturating_sub(self.last_ns);
        let offered = t.offered.saturating_sub(last.offered);
        // A burst far over budget is acted on within a few ms, before queues fill; otherwise
        // the rate is measured over a full interval.
        self.raise_calls_per_exchange(&t);
        let surge_rate = self.recent_surge(&t, now_ns);
        if dt < INTERVAL_NS && surge_rate.is_none() {
            return None;
        }
        self.last = Some(t);
        self.last_ns = now_ns;
        if now_ns.saturating_sub(self.interval_ns) >= INTERVAL_NS {
            let m = std::mem::replace(&mut self.interval, t);
            self.interval_ns = now_ns;
            if self.budget_per_s > 0 {
                let growing = t.queued > m.queued;
                self.adjust_scale(t.lost.saturating_sub(m.lost), t.backlogged, growing);
                self.observe_host(&m, &t);
                self.lowest = self.lowest.min(self.budget_in_force());
            }
            // Measured over an interval or more, not over a surge's few milliseconds (shorter
            // than the time parsing lags the kernel's counts, they read as one call per
            // exchange; and a load far over budget surges at every update, so its intervals
            // never got longer).
            let kept = t.kept_since(&m);
            let records = t.records.saturating_sub(m.records);
            if kept >= MIN_KEPT_TO_MEASURE {
                // At least one call per kept exchange: an exchange is captured (copied, sent
                // to userspace) whether or not it parses, so exchanges that yield no record
                // (traffic no parser accepts) still count against the budget instead of
                // letting the kernel keep several times the budget of them.
                let r = (records as f64 / kept as f64).clamp(1.0, 1024.0);
                self.calls_per_exchange =
                    Some(self.calls_per_exchange.map_or(r, |c| 0.5 * c + 0.5 * r));
            }
        }
        let rate = (offered as f64 * 1e9 / dt.max(1) as f64).max(surge_rate.unwrap_or(0.0));
        // Rising load is followed at once (protect the host); falling load is smoothed.
        self.rate = if rate > self.rate {
            rate
        } else {
            0.5 * self.rate + 0.5 * rate
        };
        let calls = self.rate * self.calls_per_exchange_or_prior();
        let threshold = threshold_for(self.budget_in_force(), calls);
        (threshold != self.threshold).then(|| {
            self.threshold = threshold;
            threshold
        })
    }

    /// More calls per kept exchange than estimated are taken at once (at every update, before
    /// the surge check: a pipelined load's first burst is then a surge at its true size),
    /// measured since the interval began once enough exchanges were kept: waiting for the
    /// interval left redis-benchmark -P 16 (16 commands per exchange) captured at 4 times the
    /// budget for its first 100 ms (what comes before the first update is bounded by the
    /// kernel's window cap instead, see [`Sampler::window_cap`]). Parsing lags the kernel's
    /// counts by the exchanges in flight (one per connection at most), which reads low, and
    /// high by at most that many records when the threshold just tightened:
    /// [`MIN_KEPT_TO_RAISE`] keeps that error small.
    fn raise_calls_per_exchange(&mut self, t: &Totals) {
        let m = &self.interval;
        let kept = t.kept_since(m);
        if kept >= MIN_KEPT_TO_RAISE {
            let r = (t.records.saturating_sub(m.records) as f64 / kept as f64).min(1024.0);
            if r > self.calls_per_exchange_or_prior() {
                self.calls_per_exchange = Some(r);
            }
        }
    }

    /// A surge far over the budget in the last few ms: its rate in exchanges per second, or
    /// None. Measured from a reference that moves up at every update at least
    /// [`SURGE_MIN_NS`] after it, not from the last update: a load that started after a
    /// quiet spell was averaged over that spell, and redis-benchmark -P 16 ran 40 ms at 16
    /// times the budget (60 ms after the agent's previous update) before it counted as a
    /// surge.
    fn recent_surge(&mut self, t: &Totals, now_ns: u64) -> Option<f64> {
        let dt = now_ns.saturating_sub(self.recent_ns);
        if dt < SURGE_MIN_NS {
            return None;
        }
        let offered = t.offered.saturating_sub(self.recent.offered) as f64;
        self.recent = *t;
        self.recent_ns = now_ns;
        let rate = offered * 1e9 / dt as f64;
        let calls = rate * self.calls_per_exchange_or_prior();
        (self.budget_per_s > 0 && calls > 4.0 * self.budget_per_s as f64).then_some(rate)
    }

    /// The kernel's cap on exchanges kept per CPU per sampling window (0: none):
    /// [`WINDOW_CAP_SLACK`] times the budget in force, in exchanges, over one window. The
    /// threshold keeps the kept exchanges near the budget, so the cap is not reached in a
    /// steady load, even one on a single CPU; it bounds what the kernel captures before the
    /// threshold catches up (a load that starts, an agent slow to get the CPU). Without it,
    /// redis-benchmark -P 16 started against an idle agent was captured in full for the
    /// 10-20 ms before the agent's first update: 40,000-60,000 spans in its first second,
    /// more than the export queue holds.
    pub fn window_cap(&self) -> u32 {
        let budget = self.budget_in_force();
        if budget == 0 {
            return 0;
        }
        let window_s = (1u64 << agent_common::SAMPLE_WINDOW_SHIFT) as f64 / 1e9;
        let exchanges = budget as f64 * window_s / self.calls_per_exchange_or_prior();
        (exchanges * WINDOW_CAP_SLACK)
            .max(MIN_WINDOW_CAP)
            .ceil()
            .min(u32::MAX as f64) as u32
    }

    /// The fraction of offered exchanges currently kept.
    pub fn kept_fraction(&self) -> f64 {
        1.0 - self.threshold as f64 / u32::MAX as f64
    }
}

/// The skip threshold that keeps `budget` of `rate` exchanges per second, quantised to 1/1024
/// so small rate changes do not rewrite the kernel map.
fn threshold_for(budget: u64, rate: f64) -> u32 {
    if budget == 0 || rate <= budget as f64 {
        return 0;
    }
    let keep = budget as f64 / rate;
    let skip_1024 = ((1.0 - keep) * 1024.0).floor().clamp(0.0, 1023.0) as u64;
    ((skip_1024 << 22) as u32).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn totals(offered: u64, sampled_out: u64, records: u64) -> Totals {
        Totals {
            offered,
            sampled_out,
            records,
            ..Totals::default()
        }
    }

    fn pressured(offered: u64, records: u64, lost: u64, backlogged: bool) -> Totals {
        queued(offered, records, lost, if backlogged { 5_000 } else { 0 })
    }

    /// Totals with the export queue at `queued` of 16384 spans.
    fn queued(offered: u64, records: u64, lost: u64, queued: u64) -> Totals {
        Totals {
            offered,
            sampled_out: 0,
            records,
            lost,
            backlogged: queued * 4 > 16_384,
            queued,
            cpu: CpuTicks::default(),
        }
    }

    fn kept(t: u32) -> f64 {
        1.0 - t as f64 / u32::MAX as f64
    }

    #[test]
    fn below_budget_keeps_everything() {
        let mut s = Sampler::new(30_000);
        assert_eq!(s.update(totals(0, 0, 0), 0), None);
        assert_eq!(s.update(totals(5_000, 0, 5_000), S), None);
        assert_eq!(s.kept_fraction(), 1.0);
    }

    #[test]
    fn above_budget_keeps_the_budget_share_and_recovers() {
        let mut s = Sampler::new(30_000);
        s.update(totals(0, 0, 0), 0);
        let t = s
            .update(totals(120_000, 0, 120_000), S)
            .expect("threshold set");
        assert!((kept(t) - 0.25).abs() < 0.002, "kept {}", kept(t));
        // Load gone: the smoothed rate falls under the budget within a few intervals.
        let (mut off, mut now, mut last) = (120_000, S, Some(t));
        for _ in 0..8 {
            off += 100;
            now += S;
            if let Some(v) = s.update(totals(off, 0, off), now) {
                last = Some(v);
            }
        }
        assert_eq!(last, Some(0));
        assert_eq!(s.kept_fraction(), 1.0);
    }

    /// Pipelined batches: 16 calls per exchange, so 10k exchanges/s are 160k calls/s.
    #[test]
    fn budget_counts_calls_not_exchanges() {
        let mut s = Sampler::new(30_000);
        s.update(totals(0, 0, 0), 0);
        // First second unsampled: 10k exchanges, 160k records.
        let t = s.update(totals(10_000, 0, 160_000), S).expect("sampled");
        assert!(kept(t) < 0.2, "kept {}", kept(t));
        // Converges on 30k calls/s of 160k offered.
        let (mut off, mut out, mut rec, mut now, mut th) = (10_000u64, 0u64, 160_000u64, S, t);
        for _ in 0..10 {
            now += S;
            off += 10_000;
            let k = (10_000.0 * kept(th)) as u64;
            out += 10_000 - k;
            rec += 16 * k;
            if let Some(v) = s.update(totals(off, out, rec), now) {
                th = v;
            }
        }
        assert!((kept(th) - 30.0 / 160.0).abs() < 0.01, "kept {}", kept(th));
    }

    /// Kept exchanges that yield no record (unparseable traffic) still count as one call
    /// each: the kept share stays budget / offered exchanges, not four times it.
    #[test]
    fn exchanges_without_records_still_count_against_the_budget() {
        let mut s = Sampler::new(30_000);
        s.update(totals(0, 0, 0), 0);
        let (mut off, mut out, mut now, mut th) = (0u64, 0u64, 0u64, 0u32);
        for _ in 0..10 {
            now += S;
            off += 120_000;
            out += 120_000 - (120_000.0 * kept(th)) as u64;
            if let Some(v) = s.update(totals(off, out, 0), now) {
                th = v;
            }
        }
        assert!((kept(th) - 0.25).abs() < 0.01, "kept {}", kept(th));
    }

    #[test]
    fn no_budget_never_samples() {
        let mut s = Sampler::new(0);
        s.update(totals(0, 0, 0), 0);
        assert_eq!(s.update(totals(10_000_000, 0, 10_000_000), S), None);
    }

    #[test]
    fn too_soon_is_ignored() {
        let mut s = Sampler::new(1_000_000);
        s.update(totals(0, 0, 0), 0);
        assert_eq!(s.update(totals(1_000, 0, 1_000), INTERVAL_NS / 2), None);
        assert_eq!(s.update(totals(1_000, 0, 1_000), INTERVAL_NS), None);
    }

    /// At start the calls per exchange are unknown: a pipelined surge is cut to a few times
    /// the budget before the first measurement (it was sixteen times), and a surge of single
    /// calls at a third of the budget is not cut at all.
    #[test]
    fn a_surge_at_start_assumes_a_few_calls_per_exchange() {
        let mut s = Sampler::new(30_000);
        s.update(totals(0, 0, 0), 0);
        // 10 ms: 750 exchanges of 16 commands (75k exchanges/s), parsing not caught up yet.
        let t = s.update(totals(750, 0, 400), 10_000_000).expect("early");
        let calls_per_s = 75_000.0 * kept(t) * 16.0;
        assert!(calls_per_s <= 4.0 * 30_500.0, "{calls_per_s} calls/s kept");
        let mut s = Sampler::new(30_000);
        s.update(totals(0, 0, 0), 0);
        assert_eq!(s.update(totals(100, 0, 50), 10_000_000), None);
    }

    /// The window cap follows the budget in force, in exchanges: the default budget with the
    /// prior calls per exchange, less once more calls per exchange are measured, none
    /// without a budget.
    #[test]
    fn the_window_cap_is_a_few_times_the_budget_per_window() {
        let s = Sampler::new(30_000);
        // 30k calls/s over 8.39 ms, at 4 calls per exchange, times 4: 252 exchanges.
        assert_eq!(s.window_cap(), 252);
        let mut s = Sampler::new(30_000);
        s.update(totals(0, 0, 0), 0);
        s.update(totals(1_250, 0, 20_000), 10_000_000);
        assert_eq!(s.window_cap(), 63);
        assert_eq!(Sampler::new(0).window_cap(), 0);
        assert_eq!(Sampler::new(100).window_cap(), 16);
    }

    /// Feeds a new sampler `updates` updates 10 ms apart of a load of `per_update`
    /// exchanges of 16 calls each, the kernel keeping what the last threshold keeps and every
    /// kept call parsed by the next update. Returns the last threshold.
    fn pipelined_load(s: &mut Sampler, per_update: u64, updates: u64) -> u32 {
        s.update(totals(0, 0, 0), 0);
        let (mut off, mut out, mut rec, mut th) = (0u64, 0u64, 0u64, 0u32);
        for i in 1..=updates {
            off += per_update;
            let k = (per_update as f64 * kept(th)) as u64;
            out += per_update - k;
            rec += 16 * k;
            if let Some(v) = s.update(totals(off, out, rec), i * 10_000_000) {
                th = v;
            }
        }
        th
    }

    /// A pipelined load that starts is cut to about the budget within one update once enough
    /// exchanges show their calls, not after the first 100 ms interval.
    #[test]
    fn a_pipelined_surge_is_measured_before_the_interval_ends() {
        // 125k exchanges/s of 16 commands each, updated every 10 ms, parsed as they come.
        let th = pipelined_load(&mut Sampler::new(30_000), 1_250, 3);
        let calls_per_s = 125_000.0 * kept(th) * 16.0;
        assert!(calls_per_s <= 1.1 * 30_000.0, "{calls_per_s} calls/s kept");
        // Too few exchanges kept to tell: the prior stands.
        let mut s = Sampler::new(30_000);
        s.update(totals(0, 0, 0), 0);
        let t = s.update(totals(200, 0, 3_200), 5_000_000).expect("surge");
        assert!((40_000.0 * kept(t) * 4.0 - 30_000.0).abs() < 200.0);
    }

    /// A pipelined load that starts after a quiet spell counts as a surge at the agent's first
    /// update: not averaged over the quiet spell, and at its calls per exchange as parsed.
    /// Figures of redis-benchmark -P 16 starting 10 ms before an update of an idle agent.
    #[test]
    fn a_load_after_a_quiet_spell_is_a_surge_at_once() {
        let mut s = Sampler::new(30_000);
        s.update(totals(0, 0, 0), 0);
        assert_eq!(s.update(totals(2, 0, 2), 80_000_000), None);
        // 716 exchanges of about 16 commands, 160 of them capped in the kernel.
        let t = s
            .update(totals(718, 160, 8_722), 90_000_000)
            .expect("a surge");
        let first = 71_600.0 * kept(t) * 16.0;
        assert!(first < 2.0 * 30_000.0, "{first} calls/s kept");
        // 13 ms later: 54k exchanges/s, cut to the budget.
        let t = s
            .update(totals(1_422, 245, 19_346), 103_000_000)
            .expect("the surge goes on");
        let next = 54_000.0 * kept(t) * 16.0;
        assert!(next < 1.2 * 30_000.0, "{next} calls/s kept");
    }

    /// A load far over budget surges at every update (every few ms): the calls per exchange
    /// are still measured, over intervals of their own.
    #[test]
    fn calls_per_exchange_are_measured_during_a_lasting_surge() {
        // 128k exchanges/s of 16 calls each, updated every 10 ms for a second.
        let th = pipelined_load(&mut Sampler::new(30_000), 1_280, 100);
        let calls_per_s = 128_000.0 * kept(th) * 16.0;
        assert!(
            (25_000.0..=36_000.0).contains(&calls_per_s),
            "{calls_per_s} calls/s kept"
        );
    }

    #[test]
    fn a_surge_is_acted_on_within_milliseconds() {
        let mut s = Sampler::new(30_000);
        s.update(totals(0, 0, 0), 0);
        // 10 ms at 1M calls/s.
        let t = s
            .update(totals(10_000, 0, 10_000), 10_000_000)
            .expect("early");
        assert!(kept(t) < 0.05, "kept {}", kept(t));
        // Too short to measure anything.
        let mut s = Sampler::new(30_000);
        s.update(totals(0, 0, 0), 0);
        assert_eq!(s.update(totals(10_000, 0, 10_000), 1_000_000), None);
    }

    /// Spans lost after parsing halve the budget in force; a backlog holds it; once the
    /// export side keeps up it grows back to the configured budget, not beyond.
    #[test]
    fn export_losses_shrink_the_budget_until_the_export_keeps_up() {
        let mut s = Sampler::new(30_000);
        s.update(pressured(0, 0, 0, false), 0);
        // 20k calls/s: under budget, nothing skipped.
        assert_eq!(s.update(pressured(20_000, 20_000, 0, false), S), None);
        assert_eq!(s.budget_in_force(), 30_000);
        // Spans lost downstream: budget halved to 15k, so 20k/s is now sampled to 75 %.
        let t = s
            .update(pressured(40_000, 40_000, 500, true), 2 * S)
            .expect("threshold set");
        assert_eq!(s.budget_in_force(), 15_000);
        assert!((kept(t) - 0.75).abs() < 0.002, "kept {}", kept(t));
        // Still backlogged, no new loss: held.
        s.update(pressured(60_000, 55_000, 500, true), 3 * S);
        assert_eq!(s.budget_in_force(), 15_000);
        // Keeping up: grows back by 1 % of the budget per interval, capped at the budget.
        let mut now = 3 * S;
        let mut offered = 60_000;
        for _ in 0..100 {
            now += S;
            offered += 20_000;
            s.update(pressured(offered, offered, 500, false), now);
        }
        assert_eq!(s.budget_in_force(), 30_000);
        assert_eq!(s.kept_fraction(), 1.0);
        assert_eq!(s.lowest_budget_in_force(), 15_000);
    }

    /// A queue past a quarter that keeps growing shrinks the budget before anything is lost;
    /// one that stops growing holds it.
    #[test]
    fn a_growing_backlog_shrinks_the_budget_before_losses() {
        let mut s = Sampler::new(30_000);
        s.update(queued(0, 0, 0, 0), 0);
        s.update(queued(20_000, 20_000, 0, 5_000), S);
        assert_eq!(s.budget_in_force(), 25_500);
        s.update(queued(40_000, 40_000, 0, 9_000), 2 * S);
        let shrunk = s.budget_in_force();
        assert!((21_674..=21_675).contains(&shrunk), "{shrunk}");
        // Long but no longer growing: held.
        s.update(queued(60_000, 60_000, 0, 8_000), 3 * S);
        assert_eq!(s.budget_in_force(), shrunk);
    }

    /// A backlog that does not grow, without losses, never samples a load under the
    /// configured budget.
    #[test]
    fn a_backlog_alone_does_not_shrink_the_budget() {
        let mut s = Sampler::new(30_000);
        s.update(pressured(0, 0, 0, true), 0);
        for i in 1..=20u64 {
            assert_eq!(
                s.update(pressured(i * 20_000, i * 20_000, 0, true), i * S),
                None
            );
        }
        assert_eq!(s.budget_in_force(), 30_000);
        assert_eq!(s.kept_fraction(), 1.0);
    }

    /// Without a budget there is nothing to shrink: losses are counted, never sampled.
    #[test]
    fn no_budget_ignores_pressure() {
        let mut s = Sampler::new(0);
        s.update(pressured(0, 0, 0, false), 0);
        assert_eq!(
            s.update(pressured(1_000_000, 1_000_000, 50_000, true), S),
            None
        );
        assert_eq!(s.budget_in_force(), 0);
    }

    /// Totals after `secs` of a 2-CPU node with `idle_cores` idle, at 20k calls/s.
    fn on_node(secs: u64, idle_cores: f64) -> Totals {
        // USER_HZ ticks: 100 per second per CPU.
        let total = 200 * secs;
        Totals {
            offered: 20_000 * secs,
            records: 20_000 * secs,
            cpu: CpuTicks {
                idle: (idle_cores * 100.0) as u64 * secs,
                total,
            },
            ..Totals::default()
        }
    }

    /// A sampler with `budget` capped at `cap` on a 2-CPU node, after its first reading.
    fn on_a_node(budget: u64, cap: u64) -> (Sampler, Totals) {
        let mut s = Sampler::new(budget).with_saturated_budget(cap, 2.0);
        let mut t = on_node(0, 0.0);
        t.cpu.total = 1;
        s.update(t, 0);
        (s, t)
    }

    /// Drive `s` through `n` more seconds at `idle` cores idle; returns the new clock.
    fn run_node(s: &mut Sampler, from: u64, n: u64, idle: f64, base: &mut Totals) -> u64 {
        let mut now = from;
        for _ in 0..n {
            now += 1;
            let step = on_node(1, idle);
            base.offered += step.offered;
            base.records += step.records;
            base.cpu.idle += step.cpu.idle;
            base.cpu.total += step.cpu.total;
            s.update(*base, now * S);
        }
        now
    }

    /// A node with no idle CPU caps the budget at the saturated budget (so 20k calls/s are
    /// sampled to half); once it has room again the cap is lifted in steps, to the full budget.
    #[test]
    fn a_saturated_node_caps_the_budget_until_it_has_room_again() {
        let (mut s, mut t) = on_a_node(30_000, 10_000);
        let mut now = run_node(&mut s, 0, 2, 1.0, &mut t);
        assert!(!s.node_saturated());
        assert_eq!(s.budget_in_force(), 30_000);
        assert_eq!(s.kept_fraction(), 1.0);
        now = run_node(&mut s, now, 3, 0.05, &mut t);
        assert!(s.node_saturated());
        assert_eq!(s.budget_in_force(), 10_000);
        assert!(
            (s.kept_fraction() - 0.5).abs() < 0.002,
            "{}",
            s.kept_fraction()
        );
        assert!(s.saturated_ms() >= 200, "{}", s.saturated_ms());
        // Room again: lifted by 3,000/s per interval, all of it within a second.
        now = run_node(&mut s, now, 2, 1.5, &mut t);
        assert!(!s.node_saturated());
        let mut lifted = Vec::new();
        for _ in 0..12 {
            now = run_node(&mut s, now, 1, 1.5, &mut t);
            lifted.push(s.budget_in_force());
        }
        assert!(lifted[0] < 30_000, "{lifted:?}");
        assert!(lifted.windows(2).all(|w| w[0] <= w[1]), "{lifted:?}");
        assert_eq!(s.budget_in_force(), 30_000);
        assert_eq!(s.kept_fraction(), 1.0);
        assert_eq!(s.lowest_budget_in_force(), 10_000);
    }

    /// An interval with next to no idle CPU is enough: a load that starts is capped at once.
    #[test]
    fn a_fully_busy_interval_caps_at_once() {
        let (mut s, mut t) = on_a_node(30_000, 10_000);
        let now = run_node(&mut s, 0, 3, 1.8, &mut t);
        assert!(!s.node_saturated());
        run_node(&mut s, now, 1, 0.0, &mut t);
        assert!(s.node_saturated());
        assert_eq!(s.budget_in_force(), 10_000);
        // A busy interval that still leaves a fifth of a core idle is not enough alone.
        let (mut s, mut t) = on_a_node(30_000, 10_000);
        let now = run_node(&mut s, 0, 3, 1.8, &mut t);
        run_node(&mut s, now, 1, 0.2, &mut t);
        assert!(!s.node_saturated());
    }

    /// Between the two bounds the state holds: a node at the edge does not flip every interval.
    #[test]
    fn idle_cpu_between_the_bounds_keeps_the_state() {
        let mid = (SATURATED_BELOW_IDLE_CORES + UNSATURATED_ABOVE_IDLE_CORES) / 2.0;
        let (mut s, mut t) = on_a_node(30_000, 10_000);
        let now = run_node(&mut s, 0, 5, mid, &mut t);
        assert!(!s.node_saturated());
        let now = run_node(&mut s, now, 5, 0.0, &mut t);
        assert!(s.node_saturated());
        run_node(&mut s, now, 5, mid, &mut t);
        assert!(s.node_saturated());
        assert_eq!(s.budget_in_force(), 10_000);
    }

    /// No cap configured, no budget, or no CPU reading: a saturated node changes nothing.
    #[test]
    fn saturation_is_ignored_without_a_cap_a_budget_or_a_reading() {
        for (budget, cap) in [(30_000, 0), (0, 10_000)] {
            assert!(
                !Sampler::new(budget)
                    .with_saturated_budget(cap, 2.0)
                    .wants_host_cpu(0)
            );
            let (mut s, mut t) = on_a_node(budget, cap);
            run_node(&mut s, 0, 5, 0.0, &mut t);
            assert!(!s.node_saturated());
            assert_eq!(s.budget_in_force(), budget);
        }
        let mut s = Sampler::new(30_000).with_saturated_budget(10_000, 2.0);
        s.update(totals(0, 0, 0), 0);
        for i in 1..=5 {
            s.update(totals(i * 20_000, 0, i * 20_000), i * S);
        }
        assert!(!s.node_saturated());
        assert_eq!(s.budget_in_force(), 30_000);
    }

    /// A saturated budget above the configured one never raises it.
    #[test]
    fn the_saturated_budget_never_raises_the_budget() {
        let (mut s, mut t) = on_a_node(5_000, 10_000);
        run_node(&mut s, 0, 5, 0.0, &mut t);
        assert!(s.node_saturated());
        assert_eq!(s.budget_in_force(), 5_000);
    }

    /// The host CPU is read once per interval, not at every tick.
    #[test]
    fn the_host_cpu_is_wanted_once_per_interval() {
        let mut s = Sampler::new(30_000).with_saturated_budget(10_000, 2.0);
        assert!(s.wants_host_cpu(0));
        s.update(on_node(0, 0.0), 0);
        assert!(!s.wants_host_cpu(INTERVAL_NS / 2));
        assert!(s.wants_host_cpu(INTERVAL_NS));
    }

    /// Repeated losses never take the budget below its floor.
    #[test]
    fn pressure_has_a_floor() {
        let mut s = Sampler::new(64_000);
        s.update(pressured(0, 0, 0, false), 0);
        for i in 1..=20u64 {
            s.update(pressured(i * 100_000, i * 100_000, i * 1_000, true), i * S);
        }
        assert_eq!(s.budget_in_force(), 1_000);
    }
}
