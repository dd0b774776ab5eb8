//! Per-client attempt limiter: at most `max` counted attempts per client in a
//! fixed window; then every attempt from that client gets 429 with
//! `Retry-After` until the window ends.
//!
//! An attempt is **reserved before** the expensive work (an argon2 hash) and
//! settled after it, and reserved attempts count against the limit while
//! they are in flight. Checking first and counting afterwards let any number
//! of concurrent requests pass the check before the first one was counted
//! (issue 16). A client may also have only `max_pending` attempts in flight
//! at once, so one client cannot fill the hashing queue.
//!
//! The login limiter counts failures only (a success releases its
//! reservation; it does not reset the count, or an attacker with one valid
//! account could keep guessing another's password). The registration limiter
//! counts every attempt: each one costs a hash.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Clients tracked before expired windows are pruned.
const PRUNE_AT: usize = 10_000;
/// Hard bound on tracked clients (memory); beyond it the oldest are dropped.
const MAX_CLIENTS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    /// Settled attempts that count in this window.
    counted: u32,
    /// Reserved attempts still in flight.
    pending: u32,
}

#[derive(Debug)]
struct Clients {
    map: HashMap<String, Window>,
    /// Size at which the next prune runs (doubles, so pruning is amortised).
    prune_at: usize,
}

/// Why an attempt may not start now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client used up its window; retry after this many seconds.
    Limited(u64),
    /// The client already has `max_pending` attempts in flight (or enough in
    /// flight to reach the limit if they all count); retry after this many seconds.
    Busy(u64),
}

impl Refused {
    /// Seconds for `Retry-After`.
    pub fn retry_after(self) -> u64 {
        match self {
            Refused::Limited(s) | Refused::Busy(s) => s,
        }
    }
}

/// The limiter.
#[derive(Debug)]
pub struct AttemptLimiter {
    max: u32,
    max_pending: u32,
    window: Duration,
    clients: Mutex<Clients>,
}

/// A reserved attempt. Settle it with [`Attempt::count`] or
/// [`Attempt::release`]; one dropped unsettled (the client went away while
/// its attempt ran) counts, so abandoning requests cannot buy free guesses.
#[derive(Debug)]
#[must_use = "an attempt must be settled with count() or release()"]
pub struct Attempt<'a> {
    limiter: &'a AttemptLimiter,
    client: String,
    settled: bool,
}

impl Attempt<'_> {
    /// The attempt counts against the client's limit (a failed login, a registration).
    pub fn count(mut self) {
        self.settled = true;
        self.limiter.settle(&self.client, true, Instant::now());
    }

    /// The attempt does not count (a successful login, or our own failure
    /// before the password was checked, e.g. the database was down).
    pub fn release(mut self) {
        self.settled = true;
        self.limiter.settle(&self.client, false, Instant::now());
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.limiter.settle(&self.client, true, Instant::now());
        }
    }
}

impl AttemptLimiter {
    /// `max` counted attempts per `window`, at most `max_pending` in flight per client.
    pub fn new(max: u32, window: Duration, max_pending: u32) -> Self {
        Self {
            max: max.max(1),
            max_pending: max_pending.max(1),
            window,
            clients: Mutex::new(Clients {
                map: HashMap::new(),
                prune_at: PRUNE_AT,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Clients> {
        // Counters stay meaningful even if a holder panicked.
        self.clients.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reserves an attempt for `client`, or says why it may not start.
    pub fn begin(&self, client: &str, now: Instant) -> Result<Attempt<'_>, Refused> {
        let mut c = self.lock();
        if c.map.len() >= c.prune_at && !c.map.contains_key(client) {
            self.prune(&mut c, now);
        }
        let w = c.map.entry(client.to_string()).or_insert(Window {
            start: now,
            counted: 0,
            pending: 0,
        });
        if now.duration_since(w.start) >= self.window {
            w.start = now;
            w.counted = 0;
        }
        if w.counted >= self.max {
            let left = self.window.saturating_sub(now.duration_since(w.start));
            return Err(Refused::Limited((left.as_secs_f64().ceil() as u64).max(1)));
        }
        if w.pending >= self.max_pending || w.counted + w.pending >= self.max {
            // What is in flight decides: a second is about one argon2 queue.
            return Err(Refused::Busy(1));
        }
        w.pending += 1;
        Ok(Attempt {
            limiter: self,
            client: client.to_string(),
            settled: false,
        })
    }

    fn settle(&self, client: &str, counts: bool, now: Instant) {
        let mut c = self.lock();
        let w = c.map.entry(client.to_string()).or_insert(Window {
            start: now,
            counted: 0,
            pending: 0,
        });
        w.pending = w.pending.saturating_sub(1);
        if counts {
            if now.duration_since(w.start) >= self.window {
                w.start = now;
                w.counted = 0;
            }
            w.counted = w.counted.saturating_add(1);
        }
        // A client with nothing counted and nothing in flight is not kept:
        // attempts that did not count (released, refused on our side) must
        // not fill the map, or a flood of them would push out the windows
        // that did count.
        if w.counted == 0 && w.pending == 0 {
            c.map.remove(client);
        }
    }

    /// Drops expired windows with nothing in flight; if still too many, the
    /// oldest half of those with nothing in flight.
    fn prune(&self, c: &mut Clients, now: Instant) {
        let window = self.window;
        c.map
            .retain(|_, w| w.pending > 0 || now.duration_since(w.start) < window);
        if c.map.len() >= MAX_CLIENTS {
            let mut starts: Vec<Instant> = c
                .map
                .values()
                .filter(|w| w.pending == 0)
                .map(|w| w.start)
                .collect();
            starts.sort();
            if let Some(cutoff) = starts.get(starts.len() / 2).copied() {
                c.map.retain(|_, w| w.pending > 0 || w.start > cutoff);
            }
        }
        c.prune_at = (c.map.len() * 2).clamp(PRUNE_AT, MAX_CLIENTS);
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.lock().map.len()
    }
}

/// Accounts [`KnownClients`] remembers (a few hundred bytes each).
const MAX_KNOWN_ACCOUNTS: usize = 100_000;
/// Clients remembered per account (the newest).
const CLIENTS_PER_ACCOUNT: usize = 4;

/// The clients (rate-limit keys) that signed in to each account recently.
/// The per-account limit does not apply to them: someone failing on purpose
/// from elsewhere cannot keep an account's own user out, only the clients
/// that never signed in to it. Bounded: when full, expired entries go, then
/// the tenth of the accounts signed in to longest ago (pushing one out
/// takes as many successful sign-ins, to as many accounts, as a tenth of
/// the bound). In memory: a restart forgets every client.
#[derive(Debug)]
pub struct KnownClients {
    ttl: Duration,
    accounts: Mutex<HashMap<String, Vec<(String, Instant)>>>,
}

impl KnownClients {
    /// Remembers a sign-in for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            accounts: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Vec<(String, Instant)>>> {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `client` signed in to `account` at `now`.
    pub fn remember(&self, account: &str, client: &str, now: Instant) {
        let ttl = self.ttl;
        let mut map = self.lock();
        if map.len() >= MAX_KNOWN_ACCOUNTS && !map.contains_key(account) {
            map.retain(|_, clients| {
                clients.retain(|(_, at)| now.duration_since(*at) < ttl);
                !clients.is_empty()
            });
            if map.len() >= MAX_KNOWN_ACCOUNTS {
                let latest =
                    |clients: &Vec<(String, Instant)>| clients.iter().map(|(_, at)| *at).max();
                let mut times: Vec<Instant> = map.values().filter_map(latest).collect();
                times.sort_unstable();
                if let Some(cutoff) = times.get(times.len() / 10).copied() {
                    map.retain(|_, clients| latest(clients).is_some_and(|at| at > cutoff));
                }
            }
        }
        let clients = map.entry(account.to_string()).or_default();
        clients.retain(|(c, at)| c != client && now.duration_since(*at) < ttl);
        clients.push((client.to_string(), now));
        if clients.len() > CLIENTS_PER_ACCOUNT {
            clients.remove(0);
        }
    }

    /// Whether `client` signed in to `account` within the last `ttl`.
    pub fn knows(&self, account: &str, client: &str, now: Instant) -> bool {
        self.lock().get(account).is_some_and(|clients| {
            clients
                .iter()
                .any(|(c, at)| c == client && now.duration_since(*at) < self.ttl)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_clients_are_the_recent_newest_few_per_account() {
        let k = KnownClients::new(Duration::from_secs(100));
        let t0 = Instant::now();
        assert!(!k.knows("jake", "ip:10.0.0.1", t0));
        k.remember("jake", "ip:10.0.0.1", t0);
        assert!(k.knows("jake", "ip:10.0.0.1", t0 + Duration::from_secs(99)));
        assert!(
            !k.knows("jake", "ip:10.0.0.1", t0 + Duration::from_secs(100)),
            "expired"
        );
        assert!(!k.knows("amy", "ip:10.0.0.1", t0), "per account");
        assert!(!k.knows("jake", "ip:10.0.0.2", t0), "per client");
        for i in 2..=(CLIENTS_PER_ACCOUNT + 1) {
            k.remember("jake", &format!("ip:10.0.0.{i}"), t0);
        }
        assert!(!k.knows("jake", "ip:10.0.0.1", t0), "the oldest goes");
        assert!(k.knows(
            "jake",
            &format!("ip:10.0.0.{}", CLIENTS_PER_ACCOUNT + 1),
            t0
        ));
        // Full of accounts: those signed in to longest ago go, not the
        // recent ones, and it never grows past the bound.
        let later = t0 + Duration::from_secs(1);
        k.remember("jake", "ip:10.0.0.9", later);
        for i in 0..=MAX_KNOWN_ACCOUNTS {
            k.remember(&format!("user-{i}"), "ip:10.0.0.9", t0);
        }
        assert!(k.lock().len() <= MAX_KNOWN_ACCOUNTS);
        assert!(
            k.knows("jake", "ip:10.0.0.9", later),
            "a recent sign-in is kept"
        );
    }

    #[test]
    fn attempts_that_do_not_count_leave_nothing_behind_and_cannot_push_out_a_count() {
        let l = AttemptLimiter::new(3, Duration::from_secs(60), 4);
        let now = Instant::now();
        l.begin("victim", now).unwrap().count();
        l.begin("victim", now).unwrap().count();
        // A flood of released attempts under other names, more than the
        // limiter ever holds.
        for i in 0..(MAX_CLIENTS + 10) {
            l.begin(&format!("name-{i}"), now).unwrap().release();
        }
        assert_eq!(l.tracked(), 1, "only the window that counted is kept");
        l.begin("victim", now).unwrap().count();
        assert_eq!(
            l.begin("victim", now).unwrap_err(),
            Refused::Limited(60),
            "the victim's count survived the flood"
        );
    }

    #[test]
    fn limits_after_max_counted_attempts_until_the_window_ends() {
        let l = AttemptLimiter::new(3, Duration::from_secs(60), 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            l.begin("a", t0).unwrap().count();
        }
        assert_eq!(l.begin("a", t0).unwrap_err(), Refused::Limited(60));
        assert_eq!(
            l.begin("a", t0 + Duration::from_secs(50)).unwrap_err(),
            Refused::Limited(10)
        );
        l.begin("b", t0)
            .expect("other clients are not affected")
            .count();
        let later = t0 + Duration::from_secs(61);
        l.begin("a", later).expect("a new window starts").release();
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        // The race of issue 16: all of these would have passed a check-then-count.
        let l = AttemptLimiter::new(5, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        let held: Vec<_> = (0..5).map(|_| l.begin("a", t0).unwrap()).collect();
        for _ in 0..195 {
            assert_eq!(l.begin("a", t0).unwrap_err(), Refused::Busy(1));
        }
        for a in held {
            a.count();
        }
        assert!(matches!(l.begin("a", t0), Err(Refused::Limited(_))));
    }

    #[test]
    fn released_attempts_do_not_count_and_free_their_slot() {
        let l = AttemptLimiter::new(2, Duration::from_secs(60), 1);
        let t0 = Instant::now();
        let a = l.begin("a", t0).unwrap();
        assert_eq!(
            l.begin("a", t0).unwrap_err(),
            Refused::Busy(1),
            "one in flight at most"
        );
        a.release();
        for _ in 0..10 {
            l.begin("a", t0).unwrap().release();
        }
        l.begin("a", t0).unwrap().count();
        l.begin("a", t0).unwrap().count();
        assert!(matches!(l.begin("a", t0), Err(Refused::Limited(_))));
    }

    #[test]
    fn an_abandoned_attempt_counts() {
        let l = AttemptLimiter::new(1, Duration::from_secs(60), 1);
        let t0 = Instant::now();
        drop(l.begin("a", t0).unwrap());
        assert!(matches!(l.begin("a", t0), Err(Refused::Limited(_))));
    }

    #[test]
    fn memory_stays_bounded_under_many_clients() {
        let l = AttemptLimiter::new(1, Duration::from_secs(3600), 1);
        let t0 = Instant::now();
        for i in 0..(MAX_CLIENTS + 10) {
            l.begin(&format!("c{i}"), t0 + Duration::from_micros(i as u64))
                .unwrap()
                .count();
        }
        assert!(l.tracked() <= MAX_CLIENTS);
    }

    #[test]
    fn pruning_keeps_clients_with_attempts_in_flight() {
        let l = AttemptLimiter::new(1, Duration::from_secs(1), 1);
        let t0 = Instant::now();
        let held = l.begin("held", t0).unwrap();
        let later = t0 + Duration::from_secs(10);
        for i in 0..(PRUNE_AT + 10) {
            l.begin(&format!("c{i}"), later).unwrap().release();
        }
        assert_eq!(
            l.begin("held", later).unwrap_err(),
            Refused::Busy(1),
            "the in-flight attempt survived pruning"
        );
        held.count();
    }
}
