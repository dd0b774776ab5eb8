//! Dynamic database credentials: fetch, write, renew, rotate make-before-break,
//! revoke the old lease after a grace period.
//!
//! ```text
//!   acquire ──▶ write v1 ──▶ renew at half-life ──▶ … ──▶ lifetime < rotate_before
//!                                                            │
//!        revoke old lease ◀── wait revoke_grace ◀── write v2 ◀┘ (new lease first)
//! ```
//!
//! A `releasable` secret (the migrator's) is given back by the app once it
//! is done with it (`POST /release/<name>`): the admin endpoint leaves the
//! marker `<name>.released` (`release.rs`) before it answers; the rotator
//! then names every lease in it, removes the file and revokes the leases at
//! once. A sidecar restarted in the same pod sees the marker, issues nothing,
//! and finishes the revocations it names.
//!
//! When to do what is decided by the pure functions of `lease_schedule.rs`
//! (tested as tables); this file carries the steps out against OpenBao and
//! the file system.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use zt_contracts::{whole_seconds, DbCredentials};

use super::lease_schedule::{
    self as schedule, FailedRevocation, LeaseStep, LeaseTiming, Pending, RenewAnswer, Renewal,
    Situation,
};
use crate::backoff::Backoff;
use crate::clock::rfc3339;
use crate::config::{BackoffConfig, DatabaseSecret, FileFormat};
use crate::openbao::{current_token, LeaseBook, Token, TokenCheck, Tokens};
use crate::openbao::{BaoError, DbLease, OpenBao};
use crate::secrets::release::{
    leave_marker, marker_leases, marker_path, marker_present, our_lease_id,
};
use crate::secrets::SecretsEnv;
use crate::secrets::{remove, write_atomic, FilePolicy};
use crate::status::{SecretKind, State};

/// The credentials the app is using now.
#[derive(Debug)]
struct Current {
    lease: DbLease,
    issued_at: SystemTime,
    timing: LeaseTiming,
}

/// Why new credentials could not be put in place.
#[derive(Debug, thiserror::Error)]
enum AcquireError {
    /// OpenBao gave none.
    #[error("{0}")]
    OpenBao(BaoError),
    /// They could not be written (the lease was revoked again).
    #[error("cannot write {}: {source}", path.display())]
    File {
        /// The credentials file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The app released the secret while OpenBao was issuing this lease:
    /// not written; to be revoked with the others.
    #[error("released while being issued")]
    Released(Pending),
}

/// Whether an old lease was revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revocation {
    Revoked,
    NotYet,
}

/// Keeps one `[[secrets.database]]` fresh.
pub(crate) struct LeaseRotator {
    cfg: DatabaseSecret,
    bao: OpenBao,
    tokens: watch::Receiver<Tokens>,
    book: LeaseBook,
    state: State,
    policy: FilePolicy,
    file: PathBuf,
    /// `<dir>/<name>.released` (releasable secrets).
    marker: PathBuf,
    backoff: BackoffConfig,
    check: TokenCheck,
    version: u64,
}

/// What the rotator leaves behind for the shutdown revocation.
#[derive(Debug, Default)]
pub(crate) struct Leftovers {
    /// Lease ids still alive.
    pub lease_ids: Vec<String>,
    /// The credentials file.
    pub file: Option<PathBuf>,
}

impl LeaseRotator {
    /// A rotator writing `<dir>/<name>.json` (or `.env`).
    pub(crate) fn new(cfg: DatabaseSecret, env: SecretsEnv, book: LeaseBook) -> Self {
        let ext = match cfg.format {
            FileFormat::Json => "json",
            FileFormat::Env => "env",
        };
        let file = env.dir.join(format!("{}.{ext}", cfg.name));
        let marker = marker_path(&env.dir, &cfg.name);
        env.declare(
            &cfg.name,
            SecretKind::Database,
            cfg.role.clone(),
            file.clone(),
            cfg.required,
        );
        Self {
            cfg,
            bao: env.bao,
            tokens: env.tokens,
            book,
            state: env.state,
            policy: env.policy,
            file,
            marker,
            backoff: env.backoff,
            check: env.check,
            version: 0,
        }
    }

    /// Runs until cancelled: each turn carries out the step
    /// [`schedule::next_step`] gives.
    pub(crate) async fn run(mut self, cancel: CancellationToken) -> Leftovers {
        let name = self.cfg.name.clone();
        let mut backoff = Backoff::new(self.backoff);
        let mut current: Option<Current> = None;
        // A file left by a previous run names a lease nobody will renew:
        // revoke it once our own credentials are in place (no lease pile-up).
        let mut pending: Vec<Pending> = self.previous_lease().into_iter().collect();
        let mut retry_at: Option<Instant> = None;
        let trigger = self.state.rotation_trigger(&name);
        let release = self.state.release_trigger(&name);
        let mut forced = false;
        let mut released = false;
        // A file left by a previous run whose marker does not name its
        // lease: only then is the marker rewritten at start (it keeps the
        // time of the release either way).
        let mut at_start = true;

        loop {
            // The marker, not the wake-up, decides: the admin endpoint
            // writes it before it answers, so an acquisition or a forced
            // rotation that was already under way cannot issue anything
            // after the release (a `stat` per turn; turns are events).
            if !released && self.cfg.releasable && marker_present(&self.marker) {
                released = true;
                let text = std::fs::read_to_string(&self.marker).unwrap_or_default();
                let named = marker_leases(&text, &self.cfg.mount, &self.cfg.role);
                let rename = !at_start
                    || current.is_some()
                    || pending.iter().any(|p| !named.contains(&p.lease_id));
                for lease_id in named {
                    if !pending.iter().any(|p| p.lease_id == lease_id) {
                        pending.push(Pending::leftover(
                            lease_id,
                            SystemTime::now(),
                            Instant::now(),
                        ));
                    }
                }
                if at_start {
                    tracing::info!(secret = %name, marker = %self.marker.display(), "released earlier in this pod (the marker is there): not issued again");
                } else {
                    tracing::info!(secret = %name, "released by the app through the admin endpoint: revoking its lease and removing its file");
                }
                self.released(&mut pending, &mut current, rename);
            }
            at_start = false;
            let tokens = self.tokens.borrow().clone();
            let step = if released {
                schedule::released_step(&pending, Instant::now())
            } else {
                schedule::next_step(&Situation {
                    now: Instant::now(),
                    now_wall: SystemTime::now(),
                    current: current
                        .as_ref()
                        .map(|c| (c.timing, schedule::parent(&tokens, c.timing.generation))),
                    pending: &pending,
                    retry_at,
                    forced,
                    rotate_before: self.cfg.rotate_before,
                })
            };
            match step {
                LeaseStep::Acquire => {
                    // A release while waiting for a token (OpenBao down)
                    // ends the wait: the marker is read at the top.
                    let token = tokio::select! {
                        t = current_token(&mut self.tokens, &cancel) => t,
                        () = release.notified(), if self.cfg.releasable => continue,
                    };
                    let Some(token) = token else {
                        break;
                    };
                    match self.acquire(&token).await {
                        Ok(new) => {
                            backoff.reset();
                            forced = false;
                            retry_at = None;
                            let replaced = current.take();
                            if let Some(old) = &replaced {
                                tracing::info!(secret = %name, old_user = %old.lease.username, new_user = %new.lease.username, version = self.version, grace_s = self.cfg.revoke_grace.as_secs(), "rotated credentials (new version written; old lease revoked after grace)");
                                self.state.update_secret(&name, |s| s.rotations += 1);
                            } else {
                                tracing::info!(secret = %name, user = %new.lease.username, version = self.version, "credentials written");
                            }
                            schedule::schedule_revocations(
                                &mut pending,
                                replaced.map(|old| (old.lease.lease_id, old.timing.expires_at)),
                                self.cfg.revoke_grace,
                                Instant::now(),
                            );
                            current = Some(new);
                        }
                        Err(AcquireError::Released(lease)) => pending.push(lease),
                        Err(e) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(secret = %name, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot obtain database credentials");
                            retry_at = Some(Instant::now() + delay);
                        }
                    }
                }
                LeaseStep::Renew => {
                    let Some(c) = current.as_mut() else { continue };
                    let token = self.tokens.borrow().current.clone();
                    let answer = match token {
                        Some(t) => self.renew(c, &t, &mut backoff).await,
                        None => RenewAnswer::NoToken,
                    };
                    let now_wall = SystemTime::now();
                    match schedule::renewal(c.timing, c.lease.ttl, answer, now_wall, Instant::now())
                    {
                        Renewal::Renewed { lease, capped } => {
                            c.timing = lease;
                            if capped {
                                let remaining = lease
                                    .expires_at
                                    .duration_since(now_wall)
                                    .unwrap_or_default();
                                tracing::info!(secret = %self.cfg.name, remaining_s = remaining.as_secs(), "lease reached its max TTL; rotation scheduled");
                            }
                            self.renewed(c);
                            backoff.reset();
                        }
                        Renewal::Replace => {
                            // The lease is gone (revoked, expired): replace it now.
                            self.book.remove(&c.lease.lease_id);
                            current = None;
                            retry_at = None;
                        }
                        Renewal::RetryAt(at) => c.timing.renew_at = at,
                    }
                }
                LeaseStep::Revoke(i) => {
                    let p = pending.remove(i);
                    if self.revoke(&p).await == Revocation::NotYet {
                        match schedule::failed_revocation(p.expires_at, SystemTime::now()) {
                            FailedRevocation::RetryLater => pending.push(Pending {
                                revoke_at: Instant::now() + backoff.next_delay(),
                                ..p
                            }),
                            FailedRevocation::Forget => self.book.remove(&p.lease_id),
                        }
                    }
                    if released && pending.is_empty() && marker_present(&self.marker) {
                        // Done: the marker need name no lease any more
                        // (a restart would revoke them again).
                        if let Err(e) = leave_marker(&self.marker, &[], self.policy) {
                            tracing::debug!(secret = %name, error = %e, "cannot clear the leases from the marker");
                        }
                    }
                }
                LeaseStep::Sleep { until } => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        r = self.tokens.changed() => if r.is_err() { break },
                        () = trigger.notified() => {
                            tracing::info!(secret = %name, "rotation requested through the admin endpoint");
                            forced = true;
                        }
                        // The release itself is read from the marker at the top of the loop.
                        () = release.notified(), if self.cfg.releasable && !released => {}
                        () = cancel.cancelled() => break,
                    }
                }
            }
        }

        let mut lease_ids: Vec<String> = pending.into_iter().map(|p| p.lease_id).collect();
        lease_ids.extend(current.map(|c| c.lease.lease_id));
        Leftovers {
            lease_ids,
            file: Some(self.file.clone()),
        }
    }

    /// The app needs the secret no more: name every lease in the marker (a
    /// sidecar restarted before they are revoked revokes them) unless it
    /// names them already, remove the file, and revoke every lease now.
    fn released(
        &mut self,
        pending: &mut Vec<Pending>,
        current: &mut Option<Current>,
        name_leases: bool,
    ) {
        schedule::release(
            pending,
            current
                .take()
                .map(|c| (c.lease.lease_id, c.timing.expires_at)),
            Instant::now(),
        );
        let ids: Vec<String> = pending.iter().map(|p| p.lease_id.clone()).collect();
        let named = if name_leases {
            leave_marker(&self.marker, &ids, self.policy)
        } else {
            Ok(())
        };
        if let Err(e) = named {
            self.state.failure("file");
            tracing::warn!(secret = %self.cfg.name, file = %self.marker.display(), error = %e, "cannot name the released leases in the marker: a sidecar restarted before they are revoked would leave them to expire");
        }
        if let Err(e) = remove(&self.file) {
            self.state.failure("file");
            tracing::error!(secret = %self.cfg.name, file = %self.file.display(), error = %e, "cannot remove the released credentials file (its lease is revoked all the same)");
        }
        self.state.update_secret(&self.cfg.name, |s| {
            s.released = true;
            s.username = None;
            s.lease_id = None;
            s.expires_at = None;
        });
    }

    fn previous_lease(&self) -> Option<Pending> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        let lease_id = leftover_lease_id(&text, self.cfg.format, &self.cfg.mount, &self.cfg.role)?;
        Some(Pending::leftover(
            lease_id,
            SystemTime::now(),
            Instant::now(),
        ))
    }

    async fn acquire(&mut self, token: &Arc<Token>) -> Result<Current, AcquireError> {
        let lease = self
            .bao
            .db_creds(&token.secret, &self.cfg.mount, &self.cfg.role)
            .await
            .map_err(|e| {
                self.state.failure("creds");
                if e.is_invalid_credential() {
                    self.check.suspect();
                }
                AcquireError::OpenBao(e)
            })?;
        let issued_at = SystemTime::now();
        let expires_at = issued_at + lease.ttl;
        self.book.insert(&lease.lease_id, token.generation);
        if self.cfg.releasable && marker_present(&self.marker) {
            return Err(AcquireError::Released(Pending {
                lease_id: lease.lease_id,
                revoke_at: Instant::now(),
                expires_at,
            }));
        }
        let version = self.version + 1;
        if let Err(e) = self.write(&lease, issued_at, expires_at, version) {
            self.state.failure("file");
            // Do not leave an unused lease behind.
            let _ = self.bao.revoke_lease(&token.secret, &lease.lease_id).await;
            self.book.remove(&lease.lease_id);
            return Err(AcquireError::File {
                path: self.file.clone(),
                source: e,
            });
        }
        self.version = version;
        self.state.update_secret(&self.cfg.name, |s| {
            s.written = true;
            s.username = Some(lease.username.clone());
            s.lease_id = Some(lease.lease_id.clone());
            s.expires_at = Some(expires_at);
            s.version = version;
        });
        Ok(Current {
            timing: schedule::new_lease(
                token.generation,
                lease.ttl,
                lease.renewable,
                issued_at,
                Instant::now(),
            ),
            lease,
            issued_at,
        })
    }

    /// Asks OpenBao to renew the current lease.
    async fn renew(
        &mut self,
        c: &Current,
        token: &Arc<Token>,
        backoff: &mut Backoff,
    ) -> RenewAnswer {
        match self
            .bao
            .renew_lease(&token.secret, &c.lease.lease_id, c.lease.ttl)
            .await
        {
            Ok(granted) => RenewAnswer::Granted(granted),
            Err(e) => {
                self.state.failure("lease_renew");
                let gone = e.is_invalid_credential();
                if gone {
                    self.check.suspect();
                }
                tracing::warn!(secret = %self.cfg.name, error = %e, lease_gone = gone, "lease renewal failed");
                if gone {
                    RenewAnswer::Gone
                } else {
                    RenewAnswer::Failed {
                        retry_in: backoff.next_delay(),
                    }
                }
            }
        }
    }

    /// The lease was renewed: rewrite the file with its new expiry.
    fn renewed(&self, c: &Current) {
        if let Err(e) = self.write(&c.lease, c.issued_at, c.timing.expires_at, self.version) {
            self.state.failure("file");
            tracing::error!(secret = %self.cfg.name, error = %e, "cannot rewrite credentials file after renewal");
        }
        let expires_at = c.timing.expires_at;
        self.state.update_secret(&self.cfg.name, |s| {
            s.renewals += 1;
            s.expires_at = Some(expires_at);
        });
    }

    async fn revoke(&self, p: &Pending) -> Revocation {
        let Some(token) = self.tokens.borrow().current.clone() else {
            return Revocation::NotYet;
        };
        match self.bao.revoke_lease(&token.secret, &p.lease_id).await {
            Ok(()) => {
                self.book.remove(&p.lease_id);
                self.state
                    .update_secret(&self.cfg.name, |s| s.revocations += 1);
                tracing::info!(secret = %self.cfg.name, lease_id = %p.lease_id, "revoked old lease");
                Revocation::Revoked
            }
            Err(e) => {
                self.state.failure("revoke");
                tracing::warn!(secret = %self.cfg.name, lease_id = %p.lease_id, error = %e, "cannot revoke old lease yet");
                Revocation::NotYet
            }
        }
    }

    fn write(
        &self,
        lease: &DbLease,
        issued_at: SystemTime,
        expires_at: SystemTime,
        version: u64,
    ) -> std::io::Result<()> {
        let c = &self.cfg;
        let bytes = match c.format {
            FileFormat::Json => DbCredentials {
                username: lease.username.clone(),
                password: lease.password.clone(),
                host: c.host.clone(),
                port: c.port,
                database: c.database.clone(),
                lease_id: lease.lease_id.clone(),
                issued_at: whole_seconds(issued_at),
                expires_at: whole_seconds(expires_at),
                version,
            }
            .to_file_bytes()
            // serde_json's errors name no value (only a timestamp out of
            // RFC 3339's range can fail here).
            .map_err(std::io::Error::other)?,
            FileFormat::Env => {
                let pairs = [
                    ("DB_USERNAME", lease.username.clone()),
                    ("DB_PASSWORD", lease.password.expose().to_string()),
                    ("DB_HOST", c.host.clone()),
                    ("DB_PORT", c.port.to_string()),
                    ("DB_DATABASE", c.database.clone()),
                    ("DB_LEASE_ID", lease.lease_id.clone()),
                    ("DB_ISSUED_AT", rfc3339(issued_at)),
                    ("DB_EXPIRES_AT", rfc3339(expires_at)),
                    ("DB_VERSION", version.to_string()),
                ];
                pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={}\n", shell_quote(v)))
                    .collect::<String>()
                    .into_bytes()
            }
        };
        write_atomic(&self.file, &bytes, self.policy)
    }
}

/// Single-quotes a value for POSIX shells.
fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

/// Revokes leftover leases and removes credential files (shutdown).
/// The lease id in a credentials file left by a previous run, if it is one of
/// ours: `<mount>/creds/<role>/` and one plain segment. Whoever could edit
/// the file must not steer the revocation (which carries our token) to
/// another path with `..` or an encoded character.
fn leftover_lease_id(text: &str, format: FileFormat, mount: &str, role: &str) -> Option<String> {
    let lease_id = match format {
        FileFormat::Json => serde_json::from_str::<DbCredentials>(text).ok()?.lease_id,
        FileFormat::Env => text
            .lines()
            .find_map(|l| l.strip_prefix("DB_LEASE_ID="))?
            .trim_matches('\'')
            .to_string(),
    };
    our_lease_id(&lease_id, mount, role)
}

pub(crate) async fn revoke_leftovers(bao: &OpenBao, token: &Token, leftovers: &[Leftovers]) {
    for l in leftovers {
        for id in &l.lease_ids {
            match bao.revoke_lease(&token.secret, id).await {
                Ok(()) => tracing::info!(lease_id = %id, "revoked lease on shutdown"),
                Err(e) => {
                    tracing::warn!(lease_id = %id, error = %e, "could not revoke lease on shutdown")
                }
            }
        }
        if let Some(f) = &l.file {
            if let Err(e) = remove(f) {
                tracing::warn!(file = %f.display(), error = %e, "could not remove credentials file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{leftover_lease_id, shell_quote, FileFormat};

    fn json(lease_id: &str) -> String {
        format!(
            r#"{{"database":"app","expires_at":"2026-12-01T10:00:00Z","host":"db","issued_at":"2026-12-01T09:00:00Z","lease_id":"{lease_id}","password":"pw","port":5432,"username":"u","version":1}}"#
        )
    }

    #[test]
    fn only_our_plain_leftover_lease_ids_are_revoked() {
        let ours = "database/creds/app/AbC123";
        assert_eq!(
            leftover_lease_id(&json(ours), FileFormat::Json, "database", "app").as_deref(),
            Some(ours)
        );
        assert_eq!(
            leftover_lease_id(
                &format!("DB_LEASE_ID='{ours}'\n"),
                FileFormat::Env,
                "database",
                "app"
            )
            .as_deref(),
            Some(ours)
        );
        for bad in [
            "database/creds/app/../../../../../auth/token/revoke-self",
            "database/creds/app/%2e%2e/%2e%2e/sys/seal",
            "database/creds/app/x/y",
            "database/creds/other/AbC123",
            "database/creds/app/",
            "database/creds/app/a?b",
        ] {
            assert_eq!(
                leftover_lease_id(&json(bad), FileFormat::Json, "database", "app"),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            leftover_lease_id("not json", FileFormat::Json, "database", "app"),
            None
        );
    }

    #[test]
    fn shell_quoting_survives_quotes_and_dollars() {
        assert_eq!(shell_quote("a'b$c"), "'a'\\''b$c'");
    }
}
