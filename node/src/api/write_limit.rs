//! Per-user limit on HTTP writes (`--api-write-rate-limit`, default 10 per second with bursts of
//! ten times that): creating conversations, sending, editing, uploading attachments, changing
//! members or a profile. A write over the limit gets 429 `rate_limited` with `Retry-After` and
//! changes nothing. Reads are not limited here; sign-up and login have their own throttles.
//!
//! Memory: one bucket per user who wrote recently. When the map holds more than
//! [`SWEEP_AT`] users, buckets that have refilled (idle users) are dropped, so the map holds at
//! most the users writing within the last burst period plus that bound.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use rookery_actors::limits::{Bucket, Limit};

/// Map size that triggers a sweep of refilled buckets.
const SWEEP_AT: usize = 100_000;

/// Buckets per user.
pub struct WriteLimit {
    limit: Limit,
    buckets: DashMap<String, Bucket>,
}

impl WriteLimit {
    /// `per_s` sustained writes per user (0: no limit), bursts of `10 * per_s`.
    pub fn new(per_s: f64) -> Self {
        WriteLimit { limit: Limit { per_s, burst: per_s * 10.0 }, buckets: DashMap::new() }
    }

    /// Takes one write for `user`, or says how long until one is allowed.
    pub fn take(&self, user: &str, now: Instant) -> Result<(), Duration> {
        if self.limit.per_s <= 0.0 {
            return Ok(());
        }
        if self.buckets.len() > SWEEP_AT {
            self.sweep(now);
        }
        let mut bucket = self.buckets.entry(user.to_string()).or_insert_with(|| Bucket::new(self.limit, now));
        bucket.take(now)
    }

    /// Drops the buckets of users idle long enough for their bucket to be full again.
    fn sweep(&self, now: Instant) {
        let refill = Duration::from_secs_f64(self.limit.burst / self.limit.per_s);
        self.buckets.retain(|_, b| now.saturating_duration_since(b.last_take()) < refill);
    }

    /// Users currently tracked.
    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_then_refills() {
        let l = WriteLimit::new(2.0);
        let t0 = Instant::now();
        for _ in 0..20 {
            l.take("u", t0).unwrap();
        }
        let wait = l.take("u", t0).unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
        assert!(l.take("other", t0).is_ok(), "users have their own buckets");
        assert!(l.take("u", t0 + Duration::from_millis(600)).is_ok(), "refilled");
    }

    #[test]
    fn zero_means_unlimited_and_tracks_nobody() {
        let l = WriteLimit::new(0.0);
        for _ in 0..1000 {
            l.take("u", Instant::now()).unwrap();
        }
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn idle_users_are_swept() {
        let l = WriteLimit::new(1.0);
        let t0 = Instant::now();
        for i in 0..=SWEEP_AT {
            l.take(&i.to_string(), t0).unwrap();
        }
        l.take("late", t0 + Duration::from_secs(11)).unwrap();
        assert_eq!(l.tracked(), 1, "only the user who just wrote is kept");
    }
}
