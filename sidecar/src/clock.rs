//! Wall-clock helpers: RFC 3339 timestamps for files and `/status`, seconds
//! for metrics.

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use zt_contracts::whole_seconds;

/// RFC 3339 UTC, seconds precision: [`whole_seconds`] as text (the `env`
/// credentials file, log lines).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    whole_seconds(t)
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}

/// Seconds since the Unix epoch (0 before it).
pub(crate) fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whole seconds from `now` until `t`, negative once `t` is past.
pub(crate) fn secs_until(t: SystemTime, now: SystemTime) -> i64 {
    match t.duration_since(now) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// The shortest time between two renewals of a token or lease.
pub(crate) const MIN_RENEW_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// When to renew something granted for `ttl`: at half its life, but never
/// sooner than [`MIN_RENEW_INTERVAL`] — an OpenBao that grants 0 s (or a
/// missing duration) must not turn renewal into a busy loop.
pub(crate) fn half_life(ttl: std::time::Duration) -> std::time::Duration {
    (ttl / 2).max(MIN_RENEW_INTERVAL)
}
