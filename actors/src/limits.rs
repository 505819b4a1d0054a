//! Per-session rate limits: token buckets for sends, typing and call signalling.
//!
//! A request over its bucket gets `error {code: "rate_limited", retry_after_ms}` and is dropped.
//! A session that keeps hammering (more than `abuse_threshold` refusals within
//! `ABUSE_WINDOW`) is closed with 4008.

use std::time::{Duration, Instant};

/// Refusals are counted over this window to detect abuse.
pub const ABUSE_WINDOW: Duration = Duration::from_secs(10);

/// One limit: `per_s` sustained, `burst` at once. `per_s == 0` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub per_s: f64,
    pub burst: f64,
}

impl Limit {
    /// No limit.
    pub const UNLIMITED: Limit = Limit { per_s: 0.0, burst: 0.0 };
}

/// A token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    limit: Limit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(limit: Limit, now: Instant) -> Self {
        Bucket { limit, tokens: limit.burst.max(1.0), last: now }
    }

    /// When a token was last asked for.
    pub fn last_take(&self) -> Instant {
        self.last
    }

    /// Takes one token, or says how long until one is available.
    pub fn take(&mut self, now: Instant) -> Result<(), Duration> {
        if self.limit.per_s <= 0.0 {
            return Ok(());
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.limit.per_s).min(self.limit.burst.max(1.0));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.limit.per_s))
        }
    }
}

/// Counts refusals in a sliding window to spot sustained abuse.
#[derive(Debug, Clone)]
pub struct AbuseMeter {
    threshold: u32,
    window_start: Instant,
    refusals: u32,
}

impl AbuseMeter {
    pub fn new(threshold: u32, now: Instant) -> Self {
        AbuseMeter { threshold, window_start: now, refusals: 0 }
    }

    /// Records a refusal; returns `true` when the session should be closed for abuse.
    pub fn refused(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.window_start) > ABUSE_WINDOW {
            self.window_start = now;
            self.refusals = 0;
        }
        self.refusals += 1;
        self.threshold > 0 && self.refusals > self.threshold
    }
}

/// A session's rate-limit state: one bucket per limited op and the abuse meter. The session's
/// [`SessionInput`](crate::session::SessionInput) keeps it for the connection's whole life, so
/// a quiet spell (the session's actor hibernating) never resets a limit.
#[derive(Debug, Clone)]
pub struct Meters {
    pub sends: Bucket,
    pub typing: Bucket,
    pub calls: Bucket,
    pub abuse: AbuseMeter,
}

impl Meters {
    /// Full buckets and no refusals, under `config`'s limits.
    pub fn new(config: &crate::HubConfig, now: Instant) -> Self {
        Meters {
            sends: Bucket::new(config.send_limit, now),
            typing: Bucket::new(config.typing_limit, now),
            calls: Bucket::new(config.call_limit, now),
            abuse: AbuseMeter::new(config.abuse_threshold, now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_allow_bursts_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(Limit { per_s: 10.0, burst: 3.0 }, t0);
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        assert!(b.take(t0).is_ok());
        let wait = b.take(t0).unwrap_err();
        assert!(wait <= Duration::from_millis(100) && wait > Duration::ZERO);
        assert!(b.take(t0 + Duration::from_millis(100)).is_ok());
        let mut free = Bucket::new(Limit::UNLIMITED, t0);
        for _ in 0..10_000 {
            assert!(free.take(t0).is_ok());
        }
    }

    #[test]
    fn abuse_is_sustained_refusal() {
        let t0 = Instant::now();
        let mut m = AbuseMeter::new(3, t0);
        assert!(!m.refused(t0));
        assert!(!m.refused(t0));
        assert!(!m.refused(t0));
        assert!(m.refused(t0));
        assert!(!m.refused(t0 + ABUSE_WINDOW + Duration::from_millis(1)), "a new window");
    }
}
