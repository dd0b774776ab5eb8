//! Dynamic database credentials: fetch, write, renew, rotate make-before-break,
//! revoke the old lease after a grace period.
//!
//! ```text
//!   acquire ──▶ write v1 ──▶ renew at half-life ──▶ … ──▶ lifetime < rotate_before
//!                                                            │
//!        revoke old lease ◀── wait revoke_grace ◀── write v2 ◀┘ (new lease first)
//! ```
//!
//! A lease's lifetime ends at the first of: its max TTL (learnt when a
//! renewal is capped, or at once if it is not renewable) and the expiry of
//! the token it was created under (leases die with their parent token).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::clock::rfc3339;
use crate::config::{BackoffConfig, DatabaseSecret, FileFormat};
use crate::openbao::{current_token, LeaseBook, Token, TokenCheck, Tokens};
use crate::openbao::{DbLease, OpenBao};
use crate::secrets::SecretsEnv;
use crate::secrets::{remove, write_atomic, FilePolicy};
use crate::status::{SecretKind, State};

/// The credentials the app is using now.
#[derive(Debug)]
struct Current {
    lease: DbLease,
    generation: u64,
    issued_at: SystemTime,
    expires_at: SystemTime,
    /// `expires_at` is final (max TTL reached or not renewable).
    hard: bool,
    renew_at: Instant,
}

/// An old lease waiting for its grace period to end.
#[derive(Debug)]
struct Pending {
    lease_id: String,
    revoke_at: Instant,
    expires_at: SystemTime,
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
            backoff: env.backoff,
            check: env.check,
            version: 0,
        }
    }

    /// Runs until cancelled.
    pub(crate) async fn run(mut self, cancel: CancellationToken) -> Leftovers {
        let name = self.cfg.name.clone();
        let mut backoff = Backoff::new(self.backoff);
        let mut current: Option<Current> = None;
        // A file left by a previous run names a lease nobody will renew:
        // revoke it once our own credentials are in place (no lease pile-up).
        let mut pending: Vec<Pending> = self.previous_lease().into_iter().collect();
        let mut retry_at: Option<Instant> = None;
        let trigger = self.state.rotation_trigger(&name);
        let mut forced = false;

        loop {
            let now_wall = SystemTime::now();
            let now = Instant::now();
            let tokens = self.tokens.borrow().clone();

            // When must the current credentials be replaced? At the first
            // final deadline: the lease's max TTL, or its parent token's end
            // once that token can no longer be renewed (capped or retired).
            let rotate_at = current.as_ref().and_then(|c| {
                let parent_end = match tokens.find(c.generation) {
                    None => Some(now_wall),
                    Some(t) if t.capped => Some(t.expires_at),
                    Some(_) => None,
                };
                let lease_end = c.hard.then_some(c.expires_at);
                let end = parent_end.into_iter().chain(lease_end).min()?;
                let left = end.duration_since(now_wall).unwrap_or_default();
                Some(now + left.saturating_sub(self.cfg.rotate_before))
            });
            let rotate_due = current.is_none() || forced || rotate_at.is_some_and(|at| at <= now);

            if rotate_due && retry_at.is_none_or(|r| r <= now) {
                let Some(token) = current_token(&mut self.tokens, &cancel).await else {
                    break;
                };
                match self.acquire(&token).await {
                    Ok(new) => {
                        backoff.reset();
                        forced = false;
                        retry_at = None;
                        if let Some(old) = current.take() {
                            tracing::info!(secret = %name, old_user = %old.lease.username, new_user = %new.lease.username, version = self.version, grace_s = self.cfg.revoke_grace.as_secs(), "rotated credentials (new version written; old lease revoked after grace)");
                            self.state.update_secret(&name, |s| s.rotations += 1);
                            pending.push(Pending {
                                lease_id: old.lease.lease_id,
                                revoke_at: Instant::now() + self.cfg.revoke_grace,
                                expires_at: old.expires_at,
                            });
                        } else {
                            tracing::info!(secret = %name, user = %new.lease.username, version = self.version, "credentials written");
                            for p in &mut pending {
                                p.revoke_at = Instant::now() + self.cfg.revoke_grace;
                            }
                        }
                        current = Some(new);
                    }
                    Err(e) => {
                        let delay = backoff.next_delay();
                        tracing::warn!(secret = %name, error = %e, retry_in_ms = delay.as_millis() as u64, "cannot obtain database credentials");
                        retry_at = Some(Instant::now() + delay);
                    }
                }
                continue;
            }

            // Renew the current lease at half-life.
            if let Some(c) = current.as_mut() {
                if !c.hard && c.renew_at <= now {
                    let token = self.tokens.borrow().current.clone();
                    match token {
                        Some(t) => match self.renew(c, &t).await {
                            Ok(()) => backoff.reset(),
                            Err(gone) if gone => {
                                // The lease is gone (revoked, expired): replace it now.
                                self.book.remove(&c.lease.lease_id);
                                current = None;
                                retry_at = None;
                                continue;
                            }
                            Err(_) => c.renew_at = Instant::now() + backoff.next_delay(),
                        },
                        None => c.renew_at = Instant::now() + Duration::from_secs(1),
                    }
                    continue;
                }
            }

            // Revoke old leases whose grace period is over.
            if let Some(i) = pending.iter().position(|p| p.revoke_at <= now) {
                let p = pending.remove(i);
                if !self.revoke(&p).await {
                    if p.expires_at > SystemTime::now() {
                        pending.push(Pending {
                            revoke_at: Instant::now() + backoff.next_delay(),
                            ..p
                        });
                    } else {
                        self.book.remove(&p.lease_id);
                    }
                }
                continue;
            }

            // Sleep until the next thing to do.
            let mut wake = now + Duration::from_secs(60);
            if let Some(at) = rotate_at {
                wake = wake.min(at);
            }
            if let Some(c) = &current {
                if !c.hard {
                    wake = wake.min(c.renew_at);
                }
            }
            if let Some(r) = retry_at {
                wake = wake.min(r);
            }
            for p in &pending {
                wake = wake.min(p.revoke_at);
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                r = self.tokens.changed() => if r.is_err() { break },
                () = trigger.notified() => {
                    tracing::info!(secret = %name, "rotation requested through the admin endpoint");
                    forced = true;
                }
                () = cancel.cancelled() => break,
            }
        }

        let mut lease_ids: Vec<String> = pending.into_iter().map(|p| p.lease_id).collect();
        lease_ids.extend(current.map(|c| c.lease.lease_id));
        Leftovers {
            lease_ids,
            file: Some(self.file.clone()),
        }
    }

    fn previous_lease(&self) -> Option<Pending> {
        let text = std::fs::read_to_string(&self.file).ok()?;
        let lease_id = match self.cfg.format {
            FileFormat::Json => serde_json::from_str::<serde_json::Value>(&text).ok()?["lease_id"]
                .as_str()?
                .to_string(),
            FileFormat::Env => text
                .lines()
                .find_map(|l| l.strip_prefix("DB_LEASE_ID="))?
                .trim_matches('\'')
                .to_string(),
        };
        let prefix = format!("{}/creds/{}/", self.cfg.mount, self.cfg.role);
        lease_id.starts_with(&prefix).then(|| Pending {
            lease_id,
            revoke_at: Instant::now() + Duration::from_secs(3600 * 24 * 365),
            expires_at: SystemTime::now() + Duration::from_secs(3600 * 24),
        })
    }

    async fn acquire(&mut self, token: &Arc<Token>) -> Result<Current, String> {
        let lease = self
            .bao
            .db_creds(&token.secret, &self.cfg.mount, &self.cfg.role)
            .await
            .map_err(|e| {
                self.state.failure("creds");
                if e.is_invalid_credential() {
                    self.check.suspect();
                }
                e.to_string()
            })?;
        let issued_at = SystemTime::now();
        let expires_at = issued_at + lease.ttl;
        self.book.insert(&lease.lease_id, token.generation);
        let version = self.version + 1;
        if let Err(e) = self.write(&lease, issued_at, expires_at, version) {
            self.state.failure("file");
            // Do not leave an unused lease behind.
            let _ = self.bao.revoke_lease(&token.secret, &lease.lease_id).await;
            self.book.remove(&lease.lease_id);
            return Err(format!("cannot write {}: {e}", self.file.display()));
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
            renew_at: Instant::now() + lease.ttl / 2,
            hard: !lease.renewable,
            lease,
            generation: token.generation,
            issued_at,
            expires_at,
        })
    }

    /// `Err(true)` = the lease is gone; `Err(false)` = try again later.
    async fn renew(&mut self, c: &mut Current, token: &Arc<Token>) -> Result<(), bool> {
        let asked = c.lease.ttl;
        match self
            .bao
            .renew_lease(&token.secret, &c.lease.lease_id, asked)
            .await
        {
            Ok(granted) => {
                c.expires_at = SystemTime::now() + granted;
                if granted + Duration::from_secs(1) < asked {
                    c.hard = true;
                    tracing::info!(secret = %self.cfg.name, remaining_s = granted.as_secs(), "lease reached its max TTL; rotation scheduled");
                }
                c.renew_at = Instant::now() + granted / 2;
                if let Err(e) = self.write(&c.lease, c.issued_at, c.expires_at, self.version) {
                    self.state.failure("file");
                    tracing::error!(secret = %self.cfg.name, error = %e, "cannot rewrite credentials file after renewal");
                }
                let expires_at = c.expires_at;
                self.state.update_secret(&self.cfg.name, |s| {
                    s.renewals += 1;
                    s.expires_at = Some(expires_at);
                });
                Ok(())
            }
            Err(e) => {
                self.state.failure("lease_renew");
                let gone = e.is_invalid_credential();
                if gone {
                    self.check.suspect();
                }
                tracing::warn!(secret = %self.cfg.name, error = %e, lease_gone = gone, "lease renewal failed");
                Err(gone)
            }
        }
    }

    async fn revoke(&self, p: &Pending) -> bool {
        let Some(token) = self.tokens.borrow().current.clone() else {
            return false;
        };
        match self.bao.revoke_lease(&token.secret, &p.lease_id).await {
            Ok(()) => {
                self.book.remove(&p.lease_id);
                self.state
                    .update_secret(&self.cfg.name, |s| s.revocations += 1);
                tracing::info!(secret = %self.cfg.name, lease_id = %p.lease_id, "revoked old lease");
                true
            }
            Err(e) => {
                self.state.failure("revoke");
                tracing::warn!(secret = %self.cfg.name, lease_id = %p.lease_id, error = %e, "cannot revoke old lease yet");
                false
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
            FileFormat::Json => {
                let v = json!({
                    "username": lease.username,
                    "password": lease.password.expose(),
                    "host": c.host,
                    "port": c.port,
                    "database": c.database,
                    "lease_id": lease.lease_id,
                    "issued_at": rfc3339(issued_at),
                    "expires_at": rfc3339(expires_at),
                    "version": version,
                });
                let mut b = serde_json::to_vec_pretty(&v).map_err(std::io::Error::other)?;
                b.push(b'\n');
                b
            }
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
    use super::shell_quote;

    #[test]
    fn shell_quoting_survives_quotes_and_dollars() {
        assert_eq!(shell_quote("a'b$c"), "'a'\\''b$c'");
    }
}
