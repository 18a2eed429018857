//! Lock-free fixed-bucket histograms. The raft thread records into them (group-commit batch
//! sizes, fsync and snapshot durations) with a few relaxed atomic adds and no lock; the
//! `/metrics` scrape reads a [`HistogramSnapshot`] from any thread at any time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds, in µs, of the duration histograms: 50 µs to 10 s.
pub const DURATION_BOUNDS_US: &[u64] = &[
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// Upper bounds of the count histograms (entries per batch): powers of two to 4096.
pub const COUNT_BOUNDS: &[u64] = &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096];

/// A histogram over whole numbers (µs, entries), exported divided by a unit (µs → seconds).
#[derive(Debug)]
pub struct AtomicHistogram {
    /// Inclusive upper bound of each bucket, ascending; one more bucket (+Inf) follows.
    bounds: &'static [u64],
    /// Observations per bucket (not cumulative), `bounds.len() + 1` of them.
    buckets: Box<[AtomicU64]>,
    /// Sum of all observations, in the histogram's unit.
    sum: AtomicU64,
    /// Observations per exported unit (1e6 for µs exported as seconds). A divisor rather
    /// than a factor so that bounds come out exact (50 / 1e6 is 5e-5; 50 × 1e-6 is not).
    per_unit: f64,
}

/// What a scrape reads: cumulative buckets as Prometheus wants them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// (upper bound, observations ≤ it), ascending, without the +Inf bucket.
    pub buckets: Vec<(f64, u64)>,
    /// Observations in all (the +Inf bucket).
    pub count: u64,
    /// Sum of the observations, in the exported unit.
    pub sum: f64,
}

/// A duration histogram ([`AtomicHistogram::durations`]), the common kind.
impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram::durations()
    }
}

impl AtomicHistogram {
    /// An empty histogram with these bucket bounds; values are divided by `per_unit` on
    /// export.
    pub fn new(bounds: &'static [u64], per_unit: f64) -> AtomicHistogram {
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            per_unit,
        }
    }

    /// A duration histogram in µs, exported in seconds.
    pub fn durations() -> AtomicHistogram {
        AtomicHistogram::new(DURATION_BOUNDS_US, 1e6)
    }

    /// A count histogram (exported as is).
    pub fn counts() -> AtomicHistogram {
        AtomicHistogram::new(COUNT_BOUNDS, 1.0)
    }

    /// Records one observation.
    pub fn observe(&self, value: u64) {
        let at = self.bounds.partition_point(|bound| *bound < value);
        if let Some(bucket) = self.buckets.get(at) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// Records a duration, in µs.
    pub fn observe_duration(&self, elapsed: Duration) {
        self.observe(u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
    }

    /// The current state. Not one atomic read (a concurrent observation may show in a bucket
    /// and not yet in the sum), but buckets and count always agree with each other.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, bucket) in self.bounds.iter().zip(self.buckets.iter()) {
            cumulative += bucket.load(Ordering::Relaxed);
            buckets.push((*bound as f64 / self.per_unit, cumulative));
        }
        let count = cumulative + self.buckets.last().map_or(0, |b| b.load(Ordering::Relaxed));
        HistogramSnapshot {
            buckets,
            count,
            sum: self.sum.load(Ordering::Relaxed) as f64 / self.per_unit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_that_holds_them() {
        let h = AtomicHistogram::counts();
        for v in [1, 1, 2, 3, 4096, 5000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.count, 6);
        assert_eq!(s.sum, 1.0 + 1.0 + 2.0 + 3.0 + 4096.0 + 5000.0);
        let at = |bound: f64| s.buckets.iter().find(|b| b.0 == bound).map(|b| b.1);
        assert_eq!(at(1.0), Some(2));
        assert_eq!(at(2.0), Some(3));
        assert_eq!(at(4.0), Some(4));
        assert_eq!(at(2048.0), Some(4));
        assert_eq!(at(4096.0), Some(5), "5000 is only in +Inf");
        assert!(s.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    }

    #[test]
    fn durations_are_exported_in_seconds() {
        let h = AtomicHistogram::durations();
        h.observe_duration(Duration::from_millis(3));
        let s = h.snapshot();
        assert_eq!(s.count, 1);
        assert!((s.sum - 0.003).abs() < 1e-9);
        let first_holding = s.buckets.iter().find(|b| b.1 == 1).map(|b| b.0);
        assert_eq!(first_holding, Some(0.005));
        assert_eq!(s.buckets.first().map(|b| b.0), Some(0.00005));
    }
}
