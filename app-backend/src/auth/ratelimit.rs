//! Failed-login limiter: at most `max` failures per client in a fixed
//! window; then every login from that client gets 429 with `Retry-After`
//! until the window ends. Successes do not reset the count (an attacker with
//! one valid account could otherwise keep guessing another's password).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Clients tracked before expired windows are pruned.
const PRUNE_AT: usize = 10_000;
/// Hard bound on tracked clients (memory); beyond it the oldest are dropped.
const MAX_CLIENTS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    failures: u32,
}

#[derive(Debug)]
struct Clients {
    map: HashMap<String, Window>,
    /// Size at which the next prune runs (doubles, so pruning is amortised).
    prune_at: usize,
}

/// The limiter.
#[derive(Debug)]
pub struct LoginLimiter {
    max: u32,
    window: Duration,
    clients: Mutex<Clients>,
}

impl LoginLimiter {
    /// `max` failures per `window`.
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            clients: Mutex::new(Clients {
                map: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
        }
    }

    /// `Err(seconds)` when `client` must wait that long.
    pub fn check(&self, client: &str, now: Instant) -> Result<(), u64> {
        let c = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        match c.map.get(client) {
            Some(w) if now.duration_since(w.start) < self.window && w.failures >= self.max => {
                let left = self.window.saturating_sub(now.duration_since(w.start));
                Err((left.as_secs_f64().ceil() as u64).max(1))
            }
            _ => Ok(()),
        }
    }

    /// Counts a failed login of `client`.
    pub fn record_failure(&self, client: &str, now: Instant) {
        let mut c = self.clients.lock().unwrap_or_else(PoisonError::into_inner);
        if c.map.len() >= c.prune_at && !c.map.contains_key(client) {
            let window = self.window;
            c.map.retain(|_, w| now.duration_since(w.start) < window);
            if c.map.len() >= MAX_CLIENTS {
                let mut starts: Vec<Instant> = c.map.values().map(|w| w.start).collect();
                starts.sort();
                let cutoff = starts[starts.len() / 2];
                c.map.retain(|_, w| w.start > cutoff);
            }
            c.prune_at = (c.map.len() * 2).clamp(PRUNE_AT, MAX_CLIENTS);
        }
        let w = c.map.entry(client.to_string()).or_insert(Window {
            start: now,
            failures: 0,
        });
        if now.duration_since(w.start) >= self.window {
            *w = Window {
                start: now,
                failures: 0,
            };
        }
        w.failures = w.failures.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_after_max_failures_until_the_window_ends() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check("a", t0).is_ok());
            l.record_failure("a", t0);
        }
        assert_eq!(l.check("a", t0), Err(60));
        assert_eq!(l.check("a", t0 + Duration::from_secs(50)), Err(10));
        assert!(l.check("b", t0).is_ok(), "other clients are not affected");
        assert!(l.check("a", t0 + Duration::from_secs(60)).is_ok());
        l.record_failure("a", t0 + Duration::from_secs(61));
        assert!(
            l.check("a", t0 + Duration::from_secs(61)).is_ok(),
            "a new window starts"
        );
    }

    #[test]
    fn memory_stays_bounded_under_many_clients() {
        let l = LoginLimiter::new(1, Duration::from_secs(3600));
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS + 10) {
            l.record_failure(&format!("c{i}"), t0 + Duration::from_micros(i as u64));
        }
        assert!(l.clients.lock().unwrap().map.len() <= MAX_CLIENTS);
    }
}
