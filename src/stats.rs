//! Lock-free counters and a latency histogram for a parent's metrics.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Sub-buckets per power of two: percentiles are within ~9 % of the truth.
const SUB: usize = 8;
/// Powers of two covered, from 1 µs to about 2^40 µs (12 days).
const OCTAVES: usize = 40;
const BUCKETS: usize = SUB * OCTAVES;

/// Latencies in microseconds, bucketed logarithmically.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }
}

fn bucket_of(us: u64) -> usize {
    let us = us.max(1);
    let octave = 63 - us.leading_zeros() as usize;
    let sub = if octave >= 3 {
        ((us >> (octave - 3)) & 7) as usize
    } else {
        ((us << (3 - octave)) & 7) as usize
    };
    (octave * SUB + sub).min(BUCKETS - 1)
}

/// The middle of a bucket, in microseconds.
fn bucket_value(i: usize) -> f64 {
    let octave = i / SUB;
    let sub = i % SUB;
    let low = (1u64 << octave) as f64 * (1.0 + sub as f64 / SUB as f64);
    let width = (1u64 << octave) as f64 / SUB as f64;
    low + width / 2.0
}

impl Histogram {
    /// One histogram holding what each of `parts` holds.
    pub fn merged<'a>(parts: impl IntoIterator<Item = &'a Histogram>) -> Histogram {
        let h = Histogram::default();
        for part in parts {
            for (mine, theirs) in h.buckets.iter().zip(part.buckets.iter()) {
                mine.fetch_add(theirs.load(Relaxed), Relaxed);
            }
            h.count.fetch_add(part.count.load(Relaxed), Relaxed);
            h.sum_us.fetch_add(part.sum_us.load(Relaxed), Relaxed);
        }
        h
    }

    pub fn record(&self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.buckets[bucket_of(us)].fetch_add(1, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn mean_ms(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            return 0.0;
        }
        self.sum_us.load(Relaxed) as f64 / n as f64 / 1000.0
    }

    /// The `q` quantile (0..1) in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_value(i) / 1000.0;
            }
        }
        0.0
    }
}

/// Counters of one parent; every field is updated without a lock.
#[derive(Default)]
pub struct Stats {
    pub requests_total: AtomicU64,
    pub requests_success: AtomicU64,
    pub requests_failed: AtomicU64,
    pub remote_errors: AtomicU64,
    pub timeouts: AtomicU64,
    /// Calls cancelled by their caller while in flight.
    pub cancels: AtomicU64,
    /// Spawned workers stopped because a cancelled or timed-out call's
    /// handler ran past the cancel grace.
    pub escalations: AtomicU64,
    /// Spawned workers stopped because they missed `max_misses` heartbeats in a row.
    pub hangs: AtomicU64,
    /// Streams not ended yet, and the items all streams received.
    pub streams_open: AtomicI64,
    pub stream_items: AtomicU64,
    pub in_flight: AtomicI64,
    pub latency: Histogram,
    pub heartbeat_rtt: Histogram,
    /// Last heartbeat RTT in microseconds.
    pub heartbeat_rtt_last_us: AtomicU64,
    pub heartbeat_misses: AtomicU64,
    pub restarts: AtomicU64,
    /// Workers stopped and started again after `max_calls_per_worker` calls.
    pub recycles: AtomicU64,
    /// Payloads that were not valid messages (dropped).
    pub dropped_malformed: AtomicU64,
    /// Replies whose id matched no pending call (late or unknown).
    pub dropped_unknown: AtomicU64,
    /// Replies that waited more than 10 ms in the transport while no
    /// thread was driving it (0 unless the core has a liveness bug).
    pub stalls: AtomicU64,
    pub worker_pid: AtomicI64,
    /// The worker is reached over the private link (see [`crate::link`]),
    /// not the DEALER.
    pub private_link: AtomicBool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_close() {
        let h = Histogram::default();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us * 10));
        }
        let p50 = h.quantile_ms(0.5);
        let p99 = h.quantile_ms(0.99);
        assert!((p50 - 5.0).abs() < 0.5, "{p50}");
        assert!((p99 - 9.9).abs() < 1.0, "{p99}");
        assert!((h.mean_ms() - 5.005).abs() < 0.01);
        assert_eq!(Histogram::default().quantile_ms(0.5), 0.0);
    }

    #[test]
    fn merged_holds_every_part() {
        let (a, b) = (Histogram::default(), Histogram::default());
        for us in 1..=500u64 {
            a.record(Duration::from_micros(us * 10));
            b.record(Duration::from_micros((us + 500) * 10));
        }
        let m = Histogram::merged([&a, &b]);
        assert_eq!(m.count(), 1000);
        assert!(
            (m.quantile_ms(0.5) - 5.0).abs() < 0.5,
            "{}",
            m.quantile_ms(0.5)
        );
        assert!((m.mean_ms() - 5.005).abs() < 0.01);
    }

    #[test]
    fn buckets_are_monotonic() {
        let mut last = 0;
        for us in 1..100_000u64 {
            let b = bucket_of(us);
            assert!(b >= last);
            last = b;
        }
    }
}
