//! The lease rotator's decisions, as pure functions of the time, the
//! current lease, its parent token, the pending revocations and the retry
//! state. The rotator (`database.rs`) only carries them out, so every edge
//! case is a row in a table below, tested in milliseconds without a server.
//!
//! A lease's lifetime ends at the first of: its max TTL (learnt when a
//! renewal is capped, or at once if it is not renewable) and the expiry of
//! the token it was created under (leases die with their parent token).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::openbao::Tokens;

/// Longest sleep when nothing is scheduled.
pub(crate) const IDLE_WAKE: Duration = Duration::from_secs(60);

/// Renewal granting this much less than asked means the max TTL capped it.
pub(crate) const CAP_TOLERANCE: Duration = Duration::from_secs(1);

/// How soon to try a renewal again when no token is available.
pub(crate) const NO_TOKEN_RETRY: Duration = Duration::from_secs(1);

/// When a lease left by a previous run is revoked if no credentials of ours
/// ever replace it (in practice: once ours are written, after the grace).
pub(crate) const LEFTOVER_REVOKE_AFTER: Duration = Duration::from_secs(3600 * 24 * 365);

/// How long a lease left by a previous run is assumed to live.
pub(crate) const LEFTOVER_LIFETIME: Duration = Duration::from_secs(3600 * 24);

/// The current lease's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LeaseTiming {
    /// Generation of the token it was created under.
    pub(crate) generation: u64,
    /// When it ends unless renewed (or for good, if `hard`).
    pub(crate) expires_at: SystemTime,
    /// `expires_at` is final (max TTL reached or not renewable).
    pub(crate) hard: bool,
    /// Next renewal.
    pub(crate) renew_at: Instant,
}

/// The clock of a lease granted `ttl` under token `generation`, issued at
/// `issued_at`; `now` is when its renewal is scheduled from.
pub(crate) fn new_lease(
    generation: u64,
    ttl: Duration,
    renewable: bool,
    issued_at: SystemTime,
    now: Instant,
) -> LeaseTiming {
    LeaseTiming {
        generation,
        expires_at: issued_at + ttl,
        hard: !renewable,
        renew_at: now + crate::clock::half_life(ttl),
    }
}

/// The current lease's parent token, as the rotator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parent {
    /// No longer published (revoked or expired): the lease is as good as gone.
    Gone,
    /// Capped or retired: it ends at `expires_at` for good.
    Ends {
        /// The token's final expiry.
        expires_at: SystemTime,
    },
    /// Still renewable: it does not limit the lease.
    Renewable,
}

/// What `tokens` say about the token of `generation`.
pub(crate) fn parent(tokens: &Tokens, generation: u64) -> Parent {
    match tokens.find(generation) {
        None => Parent::Gone,
        Some(t) if t.capped => Parent::Ends {
            expires_at: t.expires_at,
        },
        Some(_) => Parent::Renewable,
    }
}

/// When the current credentials must be replaced: `rotate_before` ahead of
/// the first final deadline (the lease's max TTL, its parent token's end);
/// `None` while neither is final.
pub(crate) fn rotate_at(
    lease: &LeaseTiming,
    parent: Parent,
    rotate_before: Duration,
    now_wall: SystemTime,
    now: Instant,
) -> Option<Instant> {
    let parent_end = match parent {
        Parent::Gone => Some(now_wall),
        Parent::Ends { expires_at } => Some(expires_at),
        Parent::Renewable => None,
    };
    let lease_end = lease.hard.then_some(lease.expires_at);
    let end = parent_end.into_iter().chain(lease_end).min()?;
    let left = end.duration_since(now_wall).unwrap_or_default();
    Some(now + left.saturating_sub(rotate_before))
}

/// An old lease waiting for its grace period to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    /// The lease to revoke.
    pub(crate) lease_id: String,
    /// When its grace period ends.
    pub(crate) revoke_at: Instant,
    /// When it dies anyway (no point revoking after).
    pub(crate) expires_at: SystemTime,
}

impl Pending {
    /// A lease named in a file left by a previous run: nobody renews it;
    /// it is revoked once our own credentials are in place.
    pub(crate) fn leftover(lease_id: String, now_wall: SystemTime, now: Instant) -> Self {
        Self {
            lease_id,
            revoke_at: now + LEFTOVER_REVOKE_AFTER,
            expires_at: now_wall + LEFTOVER_LIFETIME,
        }
    }
}

/// Everything the rotator's next step depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Situation<'a> {
    /// Monotonic now.
    pub(crate) now: Instant,
    /// Wall-clock now.
    pub(crate) now_wall: SystemTime,
    /// The current lease and its parent token, if credentials were written.
    pub(crate) current: Option<(LeaseTiming, Parent)>,
    /// Old leases waiting for revocation.
    pub(crate) pending: &'a [Pending],
    /// After a failed acquisition: not before this.
    pub(crate) retry_at: Option<Instant>,
    /// A rotation was requested through the admin endpoint.
    pub(crate) forced: bool,
    /// `rotate_before` of this secret.
    pub(crate) rotate_before: Duration,
}

/// What the rotator does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseStep {
    /// Get new credentials: the first ones, or a make-before-break rotation.
    Acquire,
    /// Renew the current lease.
    Renew,
    /// Revoke `pending[i]`: its grace period is over.
    Revoke(usize),
    /// Nothing is due before `until` (a token change, a forced rotation or
    /// cancellation may come first).
    Sleep {
        /// When to look again.
        until: Instant,
    },
}

/// The next step. In order: rotate when due (unless a failed attempt's
/// back-off still runs — a forced rotation waits for it too), renew at
/// half-life, revoke what has served its grace, else sleep until the first
/// of these times.
pub(crate) fn next_step(s: &Situation<'_>) -> LeaseStep {
    let now = s.now;
    let rotate_at = s
        .current
        .and_then(|(lease, parent)| rotate_at(&lease, parent, s.rotate_before, s.now_wall, now));
    let rotate_due = s.current.is_none() || s.forced || rotate_at.is_some_and(|at| at <= now);
    if rotate_due && s.retry_at.is_none_or(|r| r <= now) {
        return LeaseStep::Acquire;
    }
    let renew_at = s
        .current
        .and_then(|(lease, _)| (!lease.hard).then_some(lease.renew_at));
    if renew_at.is_some_and(|at| at <= now) {
        return LeaseStep::Renew;
    }
    if let Some(i) = s.pending.iter().position(|p| p.revoke_at <= now) {
        return LeaseStep::Revoke(i);
    }
    let until = [rotate_at, renew_at, s.retry_at]
        .into_iter()
        .flatten()
        .chain(s.pending.iter().map(|p| p.revoke_at))
        .fold(now + IDLE_WAKE, Instant::min);
    LeaseStep::Sleep { until }
}

/// The next step of a released secret (the app said it needs it no more):
/// only the revocations of its old leases remain, each retried until done.
pub(crate) fn released_step(pending: &[Pending], now: Instant) -> LeaseStep {
    if let Some(i) = pending.iter().position(|p| p.revoke_at <= now) {
        return LeaseStep::Revoke(i);
    }
    let until = pending
        .iter()
        .map(|p| p.revoke_at)
        .fold(now + IDLE_WAKE, Instant::min);
    LeaseStep::Sleep { until }
}

/// The app released the secret: the current lease joins the pending ones
/// and every pending lease is revoked now (no grace: the app said it is
/// done with them).
pub(crate) fn release(
    pending: &mut Vec<Pending>,
    current: Option<(String, SystemTime)>,
    now: Instant,
) {
    pending.extend(current.map(|(lease_id, expires_at)| Pending {
        lease_id,
        revoke_at: now,
        expires_at,
    }));
    for p in pending.iter_mut() {
        p.revoke_at = now;
    }
}

/// New credentials are written: the lease they replace (if any) and every
/// lease left by a previous run are revoked after `grace`.
pub(crate) fn schedule_revocations(
    pending: &mut Vec<Pending>,
    replaced: Option<(String, SystemTime)>,
    grace: Duration,
    now: Instant,
) {
    match replaced {
        Some((lease_id, expires_at)) => pending.push(Pending {
            lease_id,
            revoke_at: now + grace,
            expires_at,
        }),
        None => {
            for p in pending.iter_mut() {
                p.revoke_at = now + grace;
            }
        }
    }
}

/// What OpenBao answered to a lease renewal, reduced to what decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RenewAnswer {
    /// Renewed for this long.
    Granted(Duration),
    /// The lease is gone (revoked, expired).
    Gone,
    /// No answer, or an error that may pass; the back-off says to retry in
    /// `retry_in`.
    Failed {
        /// The back-off's next delay.
        retry_in: Duration,
    },
    /// No current token to renew with.
    NoToken,
}

/// What becomes of the current lease after a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Renewal {
    /// Renewed: its new clock. `capped` when the max TTL is reached (less
    /// granted than asked): `expires_at` is now final and a rotation follows.
    Renewed {
        /// The lease's new clock.
        lease: LeaseTiming,
        /// The max TTL was reached.
        capped: bool,
    },
    /// The lease is gone: replace the credentials now.
    Replace,
    /// Try the renewal again at this time.
    RetryAt(Instant),
}

/// The fate of `lease`, asked to be renewed for `asked`, after `answer`
/// (times sampled after the answer).
pub(crate) fn renewal(
    lease: LeaseTiming,
    asked: Duration,
    answer: RenewAnswer,
    now_wall: SystemTime,
    now: Instant,
) -> Renewal {
    match answer {
        RenewAnswer::Granted(granted) => {
            let capped = granted + CAP_TOLERANCE < asked;
            Renewal::Renewed {
                lease: LeaseTiming {
                    expires_at: now_wall + granted,
                    hard: lease.hard || capped,
                    renew_at: now + crate::clock::half_life(granted),
                    ..lease
                },
                capped,
            }
        }
        RenewAnswer::Gone => Renewal::Replace,
        RenewAnswer::Failed { retry_in } => Renewal::RetryAt(now + retry_in),
        RenewAnswer::NoToken => Renewal::RetryAt(now + NO_TOKEN_RETRY),
    }
}

/// What becomes of an old lease whose revocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailedRevocation {
    /// Still alive: try again after the back-off.
    RetryLater,
    /// It has expired meanwhile: nothing left to revoke.
    Forget,
}

/// After a failed revocation of a lease that expires at `expires_at`.
pub(crate) fn failed_revocation(expires_at: SystemTime, now_wall: SystemTime) -> FailedRevocation {
    if expires_at > now_wall {
        FailedRevocation::RetryLater
    } else {
        FailedRevocation::Forget
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::openbao::Token;
    use zt_contracts::Sensitive;

    const S: Duration = Duration::from_secs(1);
    const MIN: Duration = Duration::from_secs(60);
    const ROTATE_BEFORE: Duration = Duration::from_secs(10);

    /// One fixed moment, so the tables compare exact instants.
    fn clocks() -> (SystemTime, Instant) {
        static NOW: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        (
            SystemTime::UNIX_EPOCH + 1_000_000 * S,
            *NOW.get_or_init(Instant::now),
        )
    }

    /// A renewable lease of generation 1, renewed at `renew_in`, ending at `ends_in`.
    fn lease(ends_in: Duration, renew_in: Duration, hard: bool) -> LeaseTiming {
        let (w, t) = clocks();
        LeaseTiming {
            generation: 1,
            expires_at: w + ends_in,
            hard,
            renew_at: t + renew_in,
        }
    }

    fn situation<'a>(
        current: Option<(LeaseTiming, Parent)>,
        pending: &'a [Pending],
    ) -> Situation<'a> {
        let (w, t) = clocks();
        Situation {
            now: t,
            now_wall: w,
            current,
            pending,
            retry_at: None,
            forced: false,
            rotate_before: ROTATE_BEFORE,
        }
    }

    fn pending(revoke_in: Duration) -> Pending {
        let (w, t) = clocks();
        Pending {
            lease_id: "database/creds/backend-role/old".into(),
            revoke_at: t + revoke_in,
            expires_at: w + 10 * MIN,
        }
    }

    #[test]
    fn parent_of_a_lease() {
        let (w, _) = clocks();
        let token = |generation, capped| {
            Arc::new(Token {
                secret: Sensitive::new("unused"),
                generation,
                expires_at: w + MIN,
                capped,
            })
        };
        let tokens = Tokens {
            current: Some(token(3, false)),
            retired: vec![token(2, true)],
        };
        assert_eq!(parent(&tokens, 3), Parent::Renewable);
        assert_eq!(
            parent(&tokens, 2),
            Parent::Ends {
                expires_at: w + MIN
            }
        );
        assert_eq!(parent(&tokens, 1), Parent::Gone);
    }

    #[test]
    fn rotate_at_table() {
        let (w, t) = clocks();
        let renewable = Parent::Renewable;
        let ends = |d| Parent::Ends { expires_at: w + d };
        let cases = [
            (
                "renewable lease, renewable token: no deadline",
                lease(MIN, 30 * S, false),
                renewable,
                None,
            ),
            (
                "lease not renewable: its end",
                lease(MIN, 30 * S, true),
                renewable,
                Some(t + 50 * S),
            ),
            (
                "max TTL reached: its end",
                lease(40 * S, 20 * S, true),
                renewable,
                Some(t + 30 * S),
            ),
            (
                "token capped before the lease: the token's end",
                lease(MIN, 30 * S, true),
                ends(30 * S),
                Some(t + 20 * S),
            ),
            (
                "token capped after the lease: the lease's end",
                lease(MIN, 30 * S, true),
                ends(5 * MIN),
                Some(t + 50 * S),
            ),
            (
                "token capped, lease renewable: the token's end",
                lease(MIN, 30 * S, false),
                ends(2 * MIN),
                Some(t + 110 * S),
            ),
            (
                "token gone: now",
                lease(MIN, 30 * S, false),
                Parent::Gone,
                Some(t),
            ),
            (
                "clock near expiry: now, not in the past",
                lease(3 * S, S, true),
                renewable,
                Some(t),
            ),
            (
                "already expired: now",
                lease(Duration::ZERO, S, true),
                renewable,
                Some(t),
            ),
        ];
        for (case, lease, parent, want) in cases {
            assert_eq!(
                rotate_at(&lease, parent, ROTATE_BEFORE, w, t),
                want,
                "{case}"
            );
        }
    }

    #[test]
    fn next_step_table() {
        let (_, t) = clocks();
        let renewable = Parent::Renewable;
        let fresh = lease(MIN, 30 * S, false);
        let due_pending = [pending(Duration::ZERO)];
        let later_pending = [pending(20 * S)];
        let leftover = [Pending::leftover(
            "database/creds/backend-role/prev".into(),
            clocks().0,
            t,
        )];
        type Tweak = fn(&mut Situation<'_>);
        let none: Tweak = |_| {};
        let forced: Tweak = |s| s.forced = true;
        let backing_off: Tweak = |s| s.retry_at = Some(s.now + 5 * S);
        let back_off_over: Tweak = |s| s.retry_at = Some(s.now);
        let forced_backing_off: Tweak = |s| {
            s.forced = true;
            s.retry_at = Some(s.now + 5 * S);
        };
        /// (case, current lease and parent, pending revocations, retry state, step)
        type Case<'a> = (
            &'a str,
            Option<(LeaseTiming, Parent)>,
            &'a [Pending],
            Tweak,
            LeaseStep,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "no credentials: acquire",
                None,
                &[],
                none,
                LeaseStep::Acquire,
            ),
            (
                "no credentials, backing off: sleep until the retry",
                None,
                &[],
                backing_off,
                LeaseStep::Sleep { until: t + 5 * S },
            ),
            (
                "no credentials, back-off over: acquire",
                None,
                &[],
                back_off_over,
                LeaseStep::Acquire,
            ),
            (
                "leftover lease from a previous run: acquire first, do not revoke yet",
                None,
                &leftover,
                none,
                LeaseStep::Acquire,
            ),
            (
                "leftover lease, backing off: wait, still not revoked",
                None,
                &leftover,
                backing_off,
                LeaseStep::Sleep { until: t + 5 * S },
            ),
            (
                "fresh lease: sleep until half-life",
                Some((fresh, renewable)),
                &[],
                none,
                LeaseStep::Sleep { until: t + 30 * S },
            ),
            (
                "half-life reached: renew",
                Some((lease(MIN, Duration::ZERO, false), renewable)),
                &[],
                none,
                LeaseStep::Renew,
            ),
            (
                "lease not renewable: never renew, sleep until rotation",
                Some((lease(MIN, Duration::ZERO, true), renewable)),
                &[],
                none,
                LeaseStep::Sleep { until: t + 50 * S },
            ),
            (
                "max TTL reached, inside rotate_before: rotate",
                Some((lease(8 * S, 4 * S, true), renewable)),
                &[],
                none,
                LeaseStep::Acquire,
            ),
            (
                "clock near expiry: rotate",
                Some((lease(S, Duration::ZERO, true), renewable)),
                &[],
                none,
                LeaseStep::Acquire,
            ),
            (
                "token capped before the lease: rotate before the token ends",
                Some((
                    fresh,
                    Parent::Ends {
                        expires_at: clocks().0 + 5 * S,
                    },
                )),
                &[],
                none,
                LeaseStep::Acquire,
            ),
            (
                "token capped, still time: sleep until rotation",
                Some((
                    lease(10 * MIN, 5 * MIN, false),
                    Parent::Ends {
                        expires_at: clocks().0 + 40 * S,
                    },
                )),
                &[],
                none,
                LeaseStep::Sleep { until: t + 30 * S },
            ),
            (
                "parent token gone: rotate",
                Some((fresh, Parent::Gone)),
                &[],
                none,
                LeaseStep::Acquire,
            ),
            (
                "forced: rotate",
                Some((fresh, renewable)),
                &[],
                forced,
                LeaseStep::Acquire,
            ),
            (
                "forced during a retry back-off: wait for it",
                Some((fresh, renewable)),
                &[],
                forced_backing_off,
                LeaseStep::Sleep { until: t + 5 * S },
            ),
            (
                "forced during a back-off, renewal due: renew meanwhile",
                Some((lease(MIN, Duration::ZERO, false), renewable)),
                &[],
                forced_backing_off,
                LeaseStep::Renew,
            ),
            (
                "grace over: revoke the old lease",
                Some((fresh, renewable)),
                &due_pending,
                none,
                LeaseStep::Revoke(0),
            ),
            (
                "renewal before revocation",
                Some((lease(MIN, Duration::ZERO, false), renewable)),
                &due_pending,
                none,
                LeaseStep::Renew,
            ),
            (
                "grace running: sleep until it ends",
                Some((fresh, renewable)),
                &later_pending,
                none,
                LeaseStep::Sleep { until: t + 20 * S },
            ),
            (
                "rotation due with an old lease pending: rotate first",
                Some((lease(5 * S, S, true), renewable)),
                &due_pending,
                none,
                LeaseStep::Acquire,
            ),
            (
                "nothing scheduled: idle wake",
                Some((lease(10 * MIN, 5 * MIN, false), renewable)),
                &[],
                none,
                LeaseStep::Sleep {
                    until: t + IDLE_WAKE,
                },
            ),
        ];
        for (case, current, pending, tweak, want) in cases {
            let mut s = situation(current, pending);
            tweak(&mut s);
            assert_eq!(next_step(&s), want, "{case}");
        }
    }

    #[test]
    fn a_released_secret_only_revokes_its_old_leases_and_never_acquires() {
        let (w, t) = clocks();
        // Nothing pending: sleep, never Acquire (a new lease would undo the release).
        assert_eq!(
            released_step(&[], t),
            LeaseStep::Sleep {
                until: t + IDLE_WAKE
            }
        );
        // The release revokes the current lease and the pending ones at once.
        let mut pending = vec![pending(30 * S)];
        release(
            &mut pending,
            Some(("database/creds/r/cur".into(), w + MIN)),
            t,
        );
        assert_eq!(pending.len(), 2);
        assert!(pending.iter().all(|p| p.revoke_at == t));
        assert_eq!(pending[1].lease_id, "database/creds/r/cur");
        assert_eq!(released_step(&pending, t), LeaseStep::Revoke(0));
        // A failed revocation retried later: sleep until then, not longer.
        pending.truncate(1);
        pending[0].revoke_at = t + 2 * S;
        assert_eq!(
            released_step(&pending, t),
            LeaseStep::Sleep { until: t + 2 * S }
        );
        assert_eq!(released_step(&pending, t + 2 * S), LeaseStep::Revoke(0));
        // Released before anything was written: nothing to revoke.
        let mut none = Vec::new();
        release(&mut none, None, t);
        assert!(none.is_empty());
    }

    #[test]
    fn leftover_is_revoked_after_the_grace_once_ours_are_written() {
        let (w, t) = clocks();
        let mut pending = vec![Pending::leftover("database/creds/r/prev".into(), w, t)];
        schedule_revocations(&mut pending, None, 30 * S, t);
        assert_eq!(pending[0].revoke_at, t + 30 * S);
        let fresh = lease(10 * MIN, 5 * MIN, false);
        let mut s = situation(Some((fresh, Parent::Renewable)), &pending);
        assert_eq!(next_step(&s), LeaseStep::Sleep { until: t + 30 * S });
        s.now = t + 30 * S;
        assert_eq!(next_step(&s), LeaseStep::Revoke(0));
    }

    #[test]
    fn a_rotation_schedules_the_old_lease_only() {
        let (w, t) = clocks();
        let mut pending = vec![pending(5 * S)];
        schedule_revocations(
            &mut pending,
            Some(("database/creds/r/b".into(), w + MIN)),
            30 * S,
            t,
        );
        assert_eq!(pending.len(), 2);
        assert_eq!(
            pending[0].revoke_at,
            t + 5 * S,
            "earlier revocations keep their time"
        );
        assert_eq!(
            pending[1],
            Pending {
                lease_id: "database/creds/r/b".into(),
                revoke_at: t + 30 * S,
                expires_at: w + MIN,
            }
        );
    }

    #[test]
    fn renewal_table() {
        let (w, t) = clocks();
        let asked = MIN;
        let current = lease(20 * S, Duration::ZERO, false);
        let renewed = |granted: Duration, hard, capped| Renewal::Renewed {
            lease: LeaseTiming {
                generation: 1,
                expires_at: w + granted,
                hard,
                renew_at: t + crate::clock::half_life(granted),
            },
            capped,
        };
        let cases = [
            (
                "full TTL: renewed, next at half-life",
                RenewAnswer::Granted(MIN),
                renewed(MIN, false, false),
            ),
            (
                "a second less is rounding, not a cap",
                RenewAnswer::Granted(59 * S),
                renewed(59 * S, false, false),
            ),
            (
                "shorter TTL than asked: max TTL reached, final",
                RenewAnswer::Granted(20 * S),
                renewed(20 * S, true, true),
            ),
            (
                "nothing left: final, rotation follows",
                RenewAnswer::Granted(Duration::ZERO),
                renewed(Duration::ZERO, true, true),
            ),
            (
                "lease gone: replace now",
                RenewAnswer::Gone,
                Renewal::Replace,
            ),
            (
                "OpenBao down: retry after the back-off",
                RenewAnswer::Failed { retry_in: 3 * S },
                Renewal::RetryAt(t + 3 * S),
            ),
            (
                "no token: retry in a second",
                RenewAnswer::NoToken,
                Renewal::RetryAt(t + NO_TOKEN_RETRY),
            ),
        ];
        for (case, answer, want) in cases {
            assert_eq!(renewal(current, asked, answer, w, t), want, "{case}");
        }
    }

    #[test]
    fn max_ttl_reached_then_rotate() {
        let (w, t) = clocks();
        let Renewal::Renewed {
            lease,
            capped: true,
        } = renewal(
            lease(20 * S, Duration::ZERO, false),
            MIN,
            RenewAnswer::Granted(15 * S),
            w,
            t,
        )
        else {
            panic!("a capped renewal is still a renewal");
        };
        let s = situation(Some((lease, Parent::Renewable)), &[]);
        assert_eq!(
            next_step(&s),
            LeaseStep::Sleep { until: t + 5 * S },
            "no more renewals"
        );
        let s = Situation {
            now: t + 5 * S,
            now_wall: w + 5 * S,
            ..s
        };
        assert_eq!(
            next_step(&s),
            LeaseStep::Acquire,
            "rotate_before ahead of the max TTL"
        );
    }

    #[test]
    fn new_lease_table() {
        let (w, t) = clocks();
        assert_eq!(
            new_lease(4, MIN, true, w, t),
            LeaseTiming {
                generation: 4,
                expires_at: w + MIN,
                hard: false,
                renew_at: t + 30 * S
            }
        );
        assert!(
            new_lease(4, MIN, false, w, t).hard,
            "not renewable: final from the start"
        );
        assert_eq!(
            new_lease(4, Duration::ZERO, true, w, t).renew_at,
            t + S,
            "granted 0 s: renew after a second, not in a busy loop"
        );
        let zero = renewal(
            new_lease(4, MIN, true, w, t),
            MIN,
            RenewAnswer::Granted(Duration::ZERO),
            w,
            t,
        );
        assert!(
            matches!(zero, Renewal::Renewed { ref lease, .. } if lease.renew_at >= t + S)
                || matches!(zero, Renewal::Replace),
            "a renewal granting 0 s never schedules the next one for now: {zero:?}"
        );
    }

    #[test]
    fn failed_revocation_table() {
        let (w, _) = clocks();
        assert_eq!(failed_revocation(w + S, w), FailedRevocation::RetryLater);
        assert_eq!(failed_revocation(w, w), FailedRevocation::Forget);
        assert_eq!(failed_revocation(w - S, w), FailedRevocation::Forget);
    }
}
