//! Login throttling: failed attempts counted per username and per client address in fixed
//! one-minute windows. Past the limit, logins from that key answer 429 with `Retry-After` until
//! the window ends, before any password is hashed.
//!
//! Memory bound: at most `MAX_KEYS` keys per table. When a table is full, expired windows are
//! dropped; if it is still full, the table is cleared (failing open rather than growing
//! without bound under a spray of distinct usernames).

use std::time::{Duration, Instant};

use dashmap::DashMap;

const WINDOW: Duration = Duration::from_secs(60);
const MAX_KEYS: usize = 100_000;

struct Window {
    started: Instant,
    failures: u32,
}

/// Per-key failure counters.
pub struct LoginThrottle {
    per_user: DashMap<String, Window>,
    per_addr: DashMap<String, Window>,
    user_limit: u32,
    addr_limit: u32,
}

impl LoginThrottle {
    /// Allows `user_limit` failures per username and `addr_limit` per address per minute.
    pub fn new(user_limit: u32, addr_limit: u32) -> Self {
        LoginThrottle { per_user: DashMap::new(), per_addr: DashMap::new(), user_limit, addr_limit }
    }

    /// `Some(retry_after)` when a login for `user` from `addr` must be refused now.
    pub fn check(&self, user: &str, addr: &str, now: Instant) -> Option<Duration> {
        let blocked = |table: &DashMap<String, Window>, key: &str, limit: u32| {
            table.get(key).and_then(|w| {
                let elapsed = now.saturating_duration_since(w.started);
                (elapsed < WINDOW && w.failures >= limit).then(|| WINDOW - elapsed)
            })
        };
        match (blocked(&self.per_user, user, self.user_limit), blocked(&self.per_addr, addr, self.addr_limit)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Records a failed login.
    pub fn failed(&self, user: &str, addr: &str, now: Instant) {
        bump(&self.per_user, user, now);
        bump(&self.per_addr, addr, now);
    }

    /// A successful login clears the username's failures (not the address's).
    pub fn succeeded(&self, user: &str) {
        self.per_user.remove(user);
    }
}

fn bump(table: &DashMap<String, Window>, key: &str, now: Instant) {
    if table.len() >= MAX_KEYS && !table.contains_key(key) {
        table.retain(|_, w| now.saturating_duration_since(w.started) < WINDOW);
        if table.len() >= MAX_KEYS {
            table.clear();
        }
    }
    let mut w = table.entry(key.to_string()).or_insert(Window { started: now, failures: 0 });
    if now.saturating_duration_since(w.started) >= WINDOW {
        *w = Window { started: now, failures: 0 };
    }
    w.failures += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_per_user_and_per_address_until_the_window_ends() {
        let t = LoginThrottle::new(3, 5);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(t.check("alice", "1.1.1.1", t0).is_none());
            t.failed("alice", "1.1.1.1", t0);
        }
        let wait = t.check("alice", "9.9.9.9", t0 + Duration::from_secs(10)).expect("user blocked");
        assert_eq!(wait, Duration::from_secs(50));
        assert!(t.check("bob", "9.9.9.9", t0).is_none(), "other users are not affected");
        assert!(t.check("alice", "1.1.1.1", t0 + WINDOW).is_none(), "the window ends");
        for i in 0..5 {
            t.failed(&format!("u{i}"), "2.2.2.2", t0);
        }
        assert!(t.check("fresh", "2.2.2.2", t0).is_some(), "address blocked across usernames");
        t.succeeded("alice");
        assert!(t.check("alice", "3.3.3.3", t0).is_none());
    }
}
