//! The token keeper's decisions, as pure functions of the time, the current
//! token and what OpenBao answered. The keeper (`token.rs`) only carries
//! them out, so every edge case is a row in a table below, tested in
//! milliseconds without a server.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

/// How often retired tokens are checked for release.
pub(crate) const RETIRE_CHECK: Duration = Duration::from_secs(2);

/// At most one forced check per this interval (403s may be plain policy denials).
pub(crate) const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// OpenBao grants less than asked only when the max TTL caps it; whole
/// seconds of rounding are not a cap.
pub(crate) const CAP_TOLERANCE: Duration = Duration::from_secs(1);

/// What the keeper does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenStep {
    /// No current token: log in with a fresh JWT-SVID.
    Login,
    /// The current token is due for renewal.
    Renew,
    /// Nothing is due before `until` (a forced check or cancellation may
    /// come first). The keeper wakes at least every [`RETIRE_CHECK`] to
    /// release retired tokens in time.
    Wait {
        /// When to look again.
        until: Instant,
    },
}

/// The next step, given when the current token (if any) is due for renewal.
pub(crate) fn next_step(now: Instant, renew_at: Option<Instant>) -> TokenStep {
    match renew_at {
        None => TokenStep::Login,
        Some(at) if at <= now => TokenStep::Renew,
        Some(at) => TokenStep::Wait {
            until: at.min(now + RETIRE_CHECK),
        },
    }
}

/// Whether a "this token was refused" report may trigger a check now.
pub(crate) fn forced_check_allowed(last_forced: Instant, now: Instant) -> bool {
    now.saturating_duration_since(last_forced) >= MIN_CHECK_INTERVAL
}

/// A token just obtained by a login.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoggedIn {
    /// When it expires unless renewed.
    pub(crate) expires_at: SystemTime,
    /// Not renewable: `expires_at` is final.
    pub(crate) capped: bool,
    /// First renewal, at half its TTL.
    pub(crate) renew_at: Instant,
}

/// The schedule of a token granted `ttl` at `now_wall`/`now`.
pub(crate) fn logged_in(
    ttl: Duration,
    renewable: bool,
    now_wall: SystemTime,
    now: Instant,
) -> LoggedIn {
    LoggedIn {
        expires_at: now_wall + ttl,
        capped: !renewable,
        renew_at: now + crate::clock::half_life(ttl),
    }
}

/// What OpenBao answered to a token renewal, reduced to what decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RenewAnswer {
    /// Renewed for `ttl`.
    Granted {
        /// The TTL granted.
        ttl: Duration,
        /// Whether it can be renewed again.
        renewable: bool,
    },
    /// OpenBao says the token is invalid (revoked, expired).
    Refused,
    /// No answer, or an error that may pass; the back-off says to retry in
    /// `retry_in`.
    Failed {
        /// The back-off's next delay.
        retry_in: Duration,
    },
}

/// What becomes of the current token after a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// Keep using it; renew again at half the granted TTL.
    Renewed {
        /// New expiry.
        expires_at: SystemTime,
        /// Next renewal.
        renew_at: Instant,
    },
    /// Its max TTL is reached (granted less than asked, or no longer
    /// renewable): `expires_at` is final. Retire it — kept until its leases
    /// are rotated — and log in again.
    Capped {
        /// Final expiry.
        expires_at: SystemTime,
    },
    /// OpenBao refused it: drop it and log in again.
    Refused,
    /// It expired while OpenBao could not renew it: drop it and log in again.
    Expired,
    /// Keep it and try again at `retry_at`.
    Retry {
        /// When to try again.
        retry_at: Instant,
    },
}

/// The fate of a token that expires at `expires_at`, asked to be renewed
/// for `asked`, after OpenBao's `answer` (times sampled after the answer).
pub(crate) fn renewal(
    asked: Duration,
    expires_at: SystemTime,
    answer: RenewAnswer,
    now_wall: SystemTime,
    now: Instant,
) -> Renewal {
    match answer {
        RenewAnswer::Granted { ttl, renewable } => {
            let expires_at = now_wall + ttl;
            if !renewable || ttl + CAP_TOLERANCE < asked {
                Renewal::Capped { expires_at }
            } else {
                Renewal::Renewed {
                    expires_at,
                    renew_at: now + crate::clock::half_life(ttl),
                }
            }
        }
        RenewAnswer::Refused => Renewal::Refused,
        RenewAnswer::Failed { .. } if expires_at <= now_wall => Renewal::Expired,
        RenewAnswer::Failed { retry_in } => Renewal::Retry {
            retry_at: now + retry_in,
        },
    }
}

/// What becomes of a retired token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retired {
    /// It has expired on its own: forget it.
    Expired,
    /// No lease created under it is in use any more: revoke it.
    Release,
    /// Leases still depend on it.
    Keep,
}

/// The fate of a retired token expiring at `expires_at`, retired at
/// `retired_at`. `in_flight` is the longest a request may take (the OpenBao
/// request timeout): a rotator that took this token just before it was
/// retired may still be creating a lease under it, which the lease book only
/// learns when the answer arrives — revoking the token before then would
/// revoke that new lease with it.
pub(crate) fn retired(
    expires_at: SystemTime,
    has_leases: bool,
    retired_at: SystemTime,
    in_flight: Duration,
    now_wall: SystemTime,
) -> Retired {
    if expires_at <= now_wall {
        Retired::Expired
    } else if has_leases || now_wall < retired_at + in_flight {
        Retired::Keep
    } else {
        Retired::Release
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    /// One fixed moment, so the tables compare exact instants.
    fn clocks() -> (SystemTime, Instant) {
        static NOW: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        (
            SystemTime::UNIX_EPOCH + 1_000_000 * S,
            *NOW.get_or_init(Instant::now),
        )
    }

    #[test]
    fn next_step_table() {
        let (_, t) = clocks();
        let cases = [
            ("no token: log in", None, TokenStep::Login),
            ("renewal due now", Some(t), TokenStep::Renew),
            ("renewal overdue", Some(t - 5 * S), TokenStep::Renew),
            (
                "renewal soon: wait for it",
                Some(t + S),
                TokenStep::Wait { until: t + S },
            ),
            (
                "renewal far: wake for retired tokens",
                Some(t + 600 * S),
                TokenStep::Wait {
                    until: t + RETIRE_CHECK,
                },
            ),
        ];
        for (case, renew_at, want) in cases {
            assert_eq!(next_step(t, renew_at), want, "{case}");
        }
    }

    #[test]
    fn forced_checks_are_rate_limited() {
        let (_, t) = clocks();
        assert!(forced_check_allowed(t, t + MIN_CHECK_INTERVAL));
        assert!(!forced_check_allowed(t, t + MIN_CHECK_INTERVAL - S / 10));
        assert!(forced_check_allowed(t - MIN_CHECK_INTERVAL, t));
    }

    #[test]
    fn login_table() {
        let (w, t) = clocks();
        let cases = [
            (
                "renewable: renew at half-life",
                60 * S,
                true,
                LoggedIn {
                    expires_at: w + 60 * S,
                    capped: false,
                    renew_at: t + 30 * S,
                },
            ),
            (
                "not renewable: its expiry is final",
                60 * S,
                false,
                LoggedIn {
                    expires_at: w + 60 * S,
                    capped: true,
                    renew_at: t + 30 * S,
                },
            ),
            (
                "granted 0 s: renew after a second, not in a busy loop",
                Duration::ZERO,
                true,
                LoggedIn {
                    expires_at: w,
                    capped: false,
                    renew_at: t + S,
                },
            ),
        ];
        for (case, ttl, renewable, want) in cases {
            assert_eq!(logged_in(ttl, renewable, w, t), want, "{case}");
        }
    }

    #[test]
    fn renewal_table() {
        let (w, t) = clocks();
        let asked = 60 * S;
        let valid = w + 20 * S;
        let granted = |ttl, renewable| RenewAnswer::Granted { ttl, renewable };
        let cases = [
            (
                "full TTL: renewed, next at half-life",
                valid,
                granted(60 * S, true),
                Renewal::Renewed {
                    expires_at: w + 60 * S,
                    renew_at: t + 30 * S,
                },
            ),
            (
                "a second less is rounding, not a cap",
                valid,
                granted(59 * S, true),
                Renewal::Renewed {
                    expires_at: w + 59 * S,
                    renew_at: t + S * 59 / 2,
                },
            ),
            (
                "shorter TTL than asked: max TTL reached, retire",
                valid,
                granted(25 * S, true),
                Renewal::Capped {
                    expires_at: w + 25 * S,
                },
            ),
            (
                "no longer renewable: retire",
                valid,
                granted(60 * S, false),
                Renewal::Capped {
                    expires_at: w + 60 * S,
                },
            ),
            (
                "refused: drop and log in",
                valid,
                RenewAnswer::Refused,
                Renewal::Refused,
            ),
            (
                "refused even with time left: no retry",
                w + 3600 * S,
                RenewAnswer::Refused,
                Renewal::Refused,
            ),
            (
                "OpenBao down, token valid: retry after the back-off",
                valid,
                RenewAnswer::Failed { retry_in: 4 * S },
                Renewal::Retry {
                    retry_at: t + 4 * S,
                },
            ),
            (
                "OpenBao down, clock at expiry: log in again",
                w,
                RenewAnswer::Failed { retry_in: 4 * S },
                Renewal::Expired,
            ),
            (
                "OpenBao down, expired meanwhile: log in again",
                w - S,
                RenewAnswer::Failed { retry_in: 4 * S },
                Renewal::Expired,
            ),
        ];
        for (case, expires_at, answer, want) in cases {
            assert_eq!(renewal(asked, expires_at, answer, w, t), want, "{case}");
        }
    }

    #[test]
    fn retired_table() {
        let (w, _) = clocks();
        let in_flight = 10 * S;
        let long_ago = w - 60 * S;
        let cases = [
            (
                "expired, leases or not",
                w,
                true,
                long_ago,
                Retired::Expired,
            ),
            (
                "expired long ago",
                w - 60 * S,
                false,
                long_ago,
                Retired::Expired,
            ),
            ("leases still on it", w + S, true, long_ago, Retired::Keep),
            (
                "its leases rotated",
                w + S,
                false,
                long_ago,
                Retired::Release,
            ),
            (
                "just retired: a lease may be in flight under it",
                w + 600 * S,
                false,
                w - S,
                Retired::Keep,
            ),
            (
                "retired a request timeout ago: nothing in flight",
                w + 600 * S,
                false,
                w - in_flight,
                Retired::Release,
            ),
            (
                "just retired but expired: forget it",
                w,
                false,
                w,
                Retired::Expired,
            ),
        ];
        for (case, expires_at, has_leases, retired_at, want) in cases {
            assert_eq!(
                retired(expires_at, has_leases, retired_at, in_flight, w),
                want,
                "{case}"
            );
        }
    }
}
