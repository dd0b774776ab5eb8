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
