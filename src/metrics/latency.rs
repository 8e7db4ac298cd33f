//! The per-pool latency histograms (borrow wait, connection held, transaction), written on every
//! transaction by whichever worker thread runs the session.
//!
//! The crate's `Histogram` keeps one hot set of counters every writer updates: four atomic
//! read-modify-writes per observation (a shard switch count, the bucket, a floating-point sum in a
//! compare-and-swap loop, the count), all on cache lines two cores hand back and forth when both
//! run transactions of the same pool, and a search through the bucket bounds as `f64`s. Here a
//! writer picks one of a few stripes (by server connection: one borrower at a time uses it), and an
//! observation is two integer adds on that stripe's own cache lines; a scrape sums the stripes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus::proto;

/// Stripes per histogram: connections of a pool spread over them, so two transactions running at
/// once rarely share one.
const STRIPES: usize = 8;

/// Bucket bounds in nanoseconds (published in seconds): from 100 µs (a borrow served at once, a
/// cached point SELECT) to two minutes (the default `borrow_timeout`).
const BOUNDS_NS: [u64; 14] = [
    100_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    500_000_000,
    1_000_000_000,
    5_000_000_000,
    30_000_000_000,
    120_000_000_000,
];

/// One writer's counters: a count per bucket (the last one past every bound) and the sum,
/// 16 × 8 bytes, aligned so no two stripes share a cache line (or the pair the CPU fetches).
#[repr(align(128))]
#[derive(Debug, Default)]
struct Stripe {
    counts: [AtomicU64; BOUNDS_NS.len() + 1],
    sum_ns: AtomicU64,
}

#[derive(Debug, Default)]
pub struct LatencyHistogram {
    stripes: Box<[Stripe; STRIPES]>,
}

impl LatencyHistogram {
    /// Records `d` on the stripe `writer` picks (any number: it is reduced to a stripe).
    pub fn observe(&self, writer: usize, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NS.iter().position(|&b| ns <= b).unwrap_or(BOUNDS_NS.len());
        let stripe = &self.stripes[writer % STRIPES];
        stripe.counts[bucket].fetch_add(1, Relaxed);
        stripe.sum_ns.fetch_add(ns, Relaxed);
    }

    /// The stripes summed, as Prometheus's histogram (cumulative buckets; `+Inf` is the count).
    pub fn proto(&self) -> proto::Histogram {
        let mut counts = [0u64; BOUNDS_NS.len() + 1];
        let mut sum_ns = 0u64;
        for stripe in self.stripes.iter() {
            for (total, c) in counts.iter_mut().zip(&stripe.counts) {
                *total += c.load(Relaxed);
            }
            sum_ns = sum_ns.wrapping_add(stripe.sum_ns.load(Relaxed));
        }
        let mut cumulative = 0;
        let buckets = BOUNDS_NS
            .iter()
            .zip(counts)
            .map(|(&bound, n)| {
                cumulative += n;
                let mut b = proto::Bucket::default();
                b.set_upper_bound(bound as f64 / 1e9);
                b.set_cumulative_count(cumulative);
                b
            })
            .collect();
        let mut h = proto::Histogram::default();
        h.set_sample_count(counts.iter().sum());
        h.set_sample_sum(sum_ns as f64 / 1e9);
        h.set_bucket(buckets);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_published_in_seconds() {
        let published: Vec<f64> =
            LatencyHistogram::default().proto().get_bucket().iter().map(|b| b.upper_bound()).collect();
        assert_eq!(
            published,
            [0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0]
        );
    }

    #[test]
    fn stripes_sum_into_cumulative_buckets() {
        let h = LatencyHistogram::default();
        h.observe(0, Duration::ZERO);
        h.observe(1, Duration::from_micros(100)); // on the bound: counted in it
        h.observe(9, Duration::from_micros(101));
        h.observe(3, Duration::from_secs(1000)); // past every bound: only in the count
        let p = h.proto();
        assert_eq!(p.get_sample_count(), 4);
        assert!((p.get_sample_sum() - 1000.000201).abs() < 1e-9, "{}", p.get_sample_sum());
        let cumulative: Vec<u64> = p.get_bucket().iter().map(|b| b.cumulative_count()).collect();
        assert_eq!(cumulative, [2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3]);
        assert_eq!(p.get_bucket()[0].upper_bound(), 0.0001);
    }
}
