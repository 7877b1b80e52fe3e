//! A per-key token bucket, kept as one atomic number so that checks never lock.
//!
//! The bucket is the generic cell rate algorithm (GCRA), which behaves exactly
//! like a token bucket holding `burst` tokens refilled at `requests` per
//! `period`, but stores a single "theoretical arrival time" instead of a count
//! and a timestamp. Time is the verifier's monotonic clock in nanoseconds,
//! passed in, so tests drive it by hand.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::keyset::RateLimit;

/// The token bucket of one key.
#[derive(Debug)]
pub struct Bucket {
    /// Nanoseconds between two tokens: `period / requests`, at least 1.
    interval: u64,
    /// How far ahead of now the arrival time may run: `burst * interval`.
    capacity: u64,
    /// The theoretical arrival time of the next request, in monotonic nanoseconds.
    tat: AtomicU64,
    /// The limit this bucket was made from, so a reload can tell whether it still applies;
    /// shared by the keys with the same limit.
    limit: Arc<RateLimit>,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Bucket {
    /// A full bucket for `limit`.
    #[must_use]
    pub fn new(limit: &RateLimit) -> Bucket {
        Bucket::shared(Arc::new(limit.clone()))
    }

    /// A full bucket for a limit that other buckets may share.
    #[must_use]
    pub fn shared(limit: Arc<RateLimit>) -> Bucket {
        let period = nanos(limit.period.get());
        let interval = (period / u64::from(limit.requests.max(1))).max(1);
        let capacity = interval.saturating_mul(u64::from(limit.burst.max(1)));
        Bucket { interval, capacity, tat: AtomicU64::new(0), limit }
    }

    /// The limit this bucket enforces.
    #[must_use]
    pub fn limit(&self) -> &RateLimit {
        &self.limit
    }

    /// Take one token at monotonic time `now`; on refusal, how long until one is available.
    pub fn try_acquire(&self, now: Duration) -> Result<(), Duration> {
        let now = nanos(now);
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let new_tat = tat.max(now).saturating_add(self.interval);
            // Allowed while the arrival time stays within `capacity` of now:
            // that is a bucket with at least one token left.
            if new_tat - now > self.capacity {
                let wait = new_tat - now - self.capacity;
                return Err(Duration::from_nanos(wait));
            }
            match self.tat.compare_exchange_weak(tat, new_tat, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(current) => tat = current,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(text: &str) -> Bucket {
        let mut parts = text.split('/');
        let requests = parts.next().unwrap().parse().unwrap();
        let period = parts.next().unwrap().parse().unwrap();
        let burst = parts.next().map_or(requests, |b| b.parse().unwrap());
        Bucket::new(&RateLimit { requests, period, burst })
    }

    fn count_allowed(b: &Bucket, at: Duration, attempts: usize) -> usize {
        (0..attempts).filter(|_| b.try_acquire(at).is_ok()).count()
    }

    #[test]
    fn a_full_bucket_allows_exactly_the_burst_at_once() {
        for (limit, burst) in [("10/1m", 10), ("100/1m/20", 20), ("1/1h", 1), ("5/1s/1", 1)] {
            let b = bucket(limit);
            let start = Duration::from_secs(1000);
            assert_eq!(count_allowed(&b, start, 200), burst, "limit {limit}");
        }
    }

    #[test]
    fn tokens_come_back_at_the_configured_rate() {
        let b = bucket("60/1m/1");
        let t0 = Duration::from_secs(50);
        assert!(b.try_acquire(t0).is_ok());
        assert!(b.try_acquire(t0).is_err(), "bucket of one is empty");
        assert!(b.try_acquire(t0 + Duration::from_millis(999)).is_err(), "refill needs a whole second");
        assert!(b.try_acquire(t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn the_refusal_says_how_long_until_the_next_token() {
        let b = bucket("10/1m/2");
        let t0 = Duration::from_secs(100);
        assert_eq!(count_allowed(&b, t0, 5), 2);
        assert_eq!(b.try_acquire(t0), Err(Duration::from_secs(6)));
        assert_eq!(b.try_acquire(t0 + Duration::from_secs(4)), Err(Duration::from_secs(2)));
        assert!(b.try_acquire(t0 + Duration::from_secs(6)).is_ok());
    }

    #[test]
    fn a_long_pause_refills_no_more_than_the_burst() {
        let b = bucket("100/1m/5");
        assert_eq!(count_allowed(&b, Duration::from_secs(10), 50), 5);
        assert_eq!(count_allowed(&b, Duration::from_secs(100_000), 50), 5);
    }

    #[test]
    fn concurrent_takers_never_exceed_the_burst() {
        let b = std::sync::Arc::new(bucket("1/1h/64"));
        let at = Duration::from_secs(5);
        let handles: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn({
                    let b = b.clone();
                    move || count_allowed(&b, at, 100)
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(total, 64);
    }
}
