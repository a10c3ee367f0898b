//! Keeps the exchanges captured in full within a budget. The kernel counts exchanges offered on
//! connections open to sampling and skips an exchange when its hash falls below a threshold;
//! this controller turns the offered rate into that threshold. Below the budget nothing is
//! skipped; above it the kept fraction is budget / offered rate, and every skipped exchange is
//! counted by the kernel (`sampled_out`).

/// How often the threshold is recomputed.
pub const INTERVAL_NS: u64 = 100_000_000;

#[derive(Debug)]
pub struct Sampler {
    /// Exchanges per second captured in full; 0 = no limit.
    budget_per_s: u64,
    last_total: Option<u64>,
    last_ns: u64,
    /// Offered rate, smoothed over a few intervals so one burst does not swing it.
    rate: f64,
    threshold: u32,
}

impl Sampler {
    pub fn new(budget_per_s: u64) -> Self {
        Self {
            budget_per_s,
            last_total: None,
            last_ns: 0,
            rate: 0.0,
            threshold: 0,
        }
    }

    /// The kernel's running count of offered exchanges at `now_ns`; returns a new threshold
    /// when it changed (exchanges hashing below it are skipped; 0 keeps all).
    pub fn update(&mut self, offered_total: u64, now_ns: u64) -> Option<u32> {
        let Some(last) = self.last_total else {
            self.last_total = Some(offered_total);
            self.last_ns = now_ns;
            return None;
        };
        let dt = now_ns.saturating_sub(self.last_ns);
        if dt < INTERVAL_NS {
            return None;
        }
        let rate = offered_total.saturating_sub(last) as f64 * 1e9 / dt as f64;
        self.last_total = Some(offered_total);
        self.last_ns = now_ns;
        // Rising load is followed at once (protect the host); falling load is smoothed.
        self.rate = if rate > self.rate {
            rate
        } else {
            0.5 * self.rate + 0.5 * rate
        };
        let threshold = threshold_for(self.budget_per_s, self.rate);
        (threshold != self.threshold).then(|| {
            self.threshold = threshold;
            threshold
        })
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

    #[test]
    fn below_budget_keeps_everything() {
        let mut s = Sampler::new(30_000);
        assert_eq!(s.update(0, 0), None);
        assert_eq!(s.update(5_000, S), None);
        assert_eq!(s.kept_fraction(), 1.0);
    }

    #[test]
    fn above_budget_keeps_the_budget_share_and_recovers() {
        let mut s = Sampler::new(30_000);
        s.update(0, 0);
        let t = s.update(120_000, S).expect("threshold set");
        let kept = 1.0 - t as f64 / u32::MAX as f64;
        assert!((kept - 0.25).abs() < 0.002, "kept {kept}");
        // Load gone: the smoothed rate falls under the budget within a few intervals.
        let mut total = 120_000;
        let mut now = S;
        let mut last = Some(t);
        for _ in 0..8 {
            total += 100;
            now += S;
            if let Some(v) = s.update(total, now) {
                last = Some(v);
            }
        }
        assert_eq!(last, Some(0));
        assert_eq!(s.kept_fraction(), 1.0);
    }

    #[test]
    fn no_budget_never_samples() {
        let mut s = Sampler::new(0);
        s.update(0, 0);
        assert_eq!(s.update(10_000_000, S), None);
    }

    #[test]
    fn too_soon_is_ignored() {
        let mut s = Sampler::new(10);
        s.update(0, 0);
        assert_eq!(s.update(1_000_000, INTERVAL_NS / 2), None);
        assert!(s.update(1_000_000, INTERVAL_NS).is_some());
    }
}
