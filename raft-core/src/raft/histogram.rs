//! [`LatencyHistogram`]: a small fixed-bucket histogram of durations, the raw form of the latency
//! figures in [`Metrics`](super::Metrics), ready for an exporter to map onto its own histogram type.

use std::time::Duration;

/// The upper bounds of [`LatencyHistogram`]'s buckets, in microseconds, increasing: from 10 µs (an
/// apply batch in memory) to 10 s (an fsync on a disk in trouble). A value goes to the first bucket
/// whose bound is at least the value (Prometheus's `le`); larger values go to the overflow bucket.
pub const LATENCY_BOUNDS_US: &[u64] = &[
    10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000,
];

/// How many buckets a [`LatencyHistogram`] has: one per bound and the overflow bucket.
const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// A histogram of durations over the fixed buckets of [`LATENCY_BOUNDS_US`].
///
/// Contract: every figure only grows (a monotonic counter), saturating at `u64::MAX` rather than
/// wrapping, so an exporter may publish it as a cumulative Prometheus histogram as it is. Recording
/// costs a binary search over 19 bounds and three additions; the type is `Copy` (about 180 bytes)
/// and allocates nothing, so a snapshot of it is a plain copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Per bucket (not cumulative): `counts[i]` holds the values in `(bound[i-1], bound[i]]`, the
    /// last one the values above the last bound.
    counts: [u64; BUCKETS],
    /// The sum of the recorded values, in microseconds.
    sum_us: u64,
    /// How many values were recorded.
    count: u64,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram {
            counts: [0; BUCKETS],
            sum_us: 0,
            count: 0,
        }
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one duration (rounded down to whole microseconds; beyond `u64::MAX` µs it counts as
    /// `u64::MAX`).
    pub fn record(&mut self, took: Duration) {
        self.record_us(u64::try_from(took.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one value of `us` microseconds.
    pub fn record_us(&mut self, us: u64) {
        let bucket = LATENCY_BOUNDS_US.partition_point(|&bound| bound < us);
        self.counts[bucket] = self.counts[bucket].saturating_add(1);
        self.sum_us = self.sum_us.saturating_add(us);
        self.count = self.count.saturating_add(1);
    }

    /// The buckets' upper bounds in microseconds ([`LATENCY_BOUNDS_US`]).
    pub fn bounds_us(&self) -> &'static [u64] {
        LATENCY_BOUNDS_US
    }

    /// The count of each bucket, not cumulative: one per bound of [`bounds_us`](Self::bounds_us),
    /// then the overflow bucket (values above the last bound).
    pub fn bucket_counts(&self) -> &[u64] {
        &self.counts
    }

    /// Prometheus's cumulative view: `(upper bound in µs, values at most that)` for each bound, then
    /// `(None, count)` for `+Inf`.
    pub fn cumulative(&self) -> impl Iterator<Item = (Option<u64>, u64)> + '_ {
        let bounds = LATENCY_BOUNDS_US.iter().map(|&b| Some(b)).chain([None]);
        bounds
            .zip(self.counts.iter())
            .scan(0u64, |total, (bound, &n)| {
                *total = total.saturating_add(n);
                Some((bound, *total))
            })
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The sum of the recorded values, in microseconds.
    pub fn sum_us(&self) -> u64 {
        self.sum_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_increase_strictly() {
        assert!(LATENCY_BOUNDS_US.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn a_value_goes_to_the_first_bucket_whose_bound_is_at_least_it() {
        let mut h = LatencyHistogram::new();
        h.record_us(0); // bucket 0 (<= 10)
        h.record_us(10); // bucket 0: bounds are inclusive
        h.record_us(11); // bucket 1 (<= 25)
        h.record_us(1_000); // bucket of 1_000
        h.record_us(10_000_000); // the last bound
        h.record_us(10_000_001); // overflow
        let counts = h.bucket_counts();
        assert_eq!(counts.len(), LATENCY_BOUNDS_US.len() + 1);
        assert_eq!(counts[0], 2);
        assert_eq!(counts[1], 1);
        let ms = LATENCY_BOUNDS_US.iter().position(|&b| b == 1_000).unwrap();
        assert_eq!(counts[ms], 1);
        assert_eq!(counts[LATENCY_BOUNDS_US.len() - 1], 1);
        assert_eq!(counts[LATENCY_BOUNDS_US.len()], 1);
        assert_eq!(counts.iter().sum::<u64>(), 6);
        assert_eq!(h.count(), 6);
        assert_eq!(h.sum_us(), 10 + 11 + 1_000 + 10_000_000 + 10_000_001);
    }

    #[test]
    fn durations_are_recorded_in_whole_microseconds() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::from_nanos(25_999)); // 25 µs: bucket of 25
        h.record(Duration::from_millis(3)); // 3000 µs: bucket of 5000
        assert_eq!(h.sum_us(), 25 + 3_000);
        assert_eq!(h.bucket_counts()[1], 1);
        let five_ms = LATENCY_BOUNDS_US.iter().position(|&b| b == 5_000).unwrap();
        assert_eq!(h.bucket_counts()[five_ms], 1);
    }

    #[test]
    fn cumulative_view_ends_with_inf_at_the_count() {
        let mut h = LatencyHistogram::new();
        for us in [5, 30, 30, 2_000, 20_000_000] {
            h.record_us(us);
        }
        let cumulative: Vec<_> = h.cumulative().collect();
        assert_eq!(cumulative.len(), LATENCY_BOUNDS_US.len() + 1);
        assert_eq!(cumulative[0], (Some(10), 1));
        assert_eq!(cumulative[2], (Some(50), 3));
        assert!(cumulative.windows(2).all(|w| w[0].1 <= w[1].1));
        assert_eq!(
            cumulative[LATENCY_BOUNDS_US.len() - 1],
            (Some(10_000_000), 4)
        );
        assert_eq!(*cumulative.last().unwrap(), (None, h.count()));
    }

    #[test]
    fn huge_values_saturate_instead_of_wrapping() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::MAX); // beyond u64::MAX µs
        h.record_us(u64::MAX);
        assert_eq!(h.sum_us(), u64::MAX);
        assert_eq!(h.count(), 2);
        assert_eq!(h.bucket_counts()[LATENCY_BOUNDS_US.len()], 2);
        // Counters at their limit stay there.
        h.count = u64::MAX;
        h.counts[0] = u64::MAX;
        h.record_us(1);
        assert_eq!(h.count(), u64::MAX);
        assert_eq!(h.bucket_counts()[0], u64::MAX);
        assert_eq!(h.cumulative().last(), Some((None, u64::MAX)));
    }
}
