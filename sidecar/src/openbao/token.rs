//! The OpenBao token: log in with a JWT-SVID, renew at half-life, log in
//! again when renewal is refused or the token's max TTL is reached.
//!
//! Leases die with the token that created them. So a token is never simply
//! dropped: when a new one replaces it, the old one is *retired* — kept (and
//! published with its expiry) until no lease created under it is still in
//! use, then revoked. Lease rotators see each parent token's expiry and
//! rotate before it, so no lease dies under the app because its parent token
//! expired. A new token does not by itself mint new credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::token_schedule::{self as schedule, RenewAnswer, Renewal, Retired, TokenStep};
use super::{BaoError, OpenBao};
use crate::backoff::Backoff;
use crate::config::{BackoffConfig, OpenBaoConfig};
use crate::identity::{Identity, IdentityError};
use crate::status::{State, TokenInfo};
use zt_contracts::Sensitive;

/// One OpenBao token.
#[derive(Debug)]
pub struct Token {
    /// The token itself.
    pub secret: Sensitive,
    /// 1 for the first login, +1 per login.
    pub generation: u64,
    /// When it expires unless renewed (or for good, if `capped`).
    pub expires_at: SystemTime,
    /// The max TTL was reached: `expires_at` is final.
    pub capped: bool,
}

/// What rotators see: the current token and the expiry of every live one.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    /// The token new requests use.
    pub current: Option<Arc<Token>>,
    /// Retired tokens still holding leases.
    pub retired: Vec<Arc<Token>>,
}

impl Tokens {
    /// The live token of `generation` (current or retired), if any.
    pub(crate) fn find(&self, generation: u64) -> Option<&Arc<Token>> {
        self.current
            .iter()
            .chain(self.retired.iter())
            .find(|t| t.generation == generation)
    }
}

/// Which token generation each live lease belongs to.
#[derive(Debug, Clone, Default)]
pub(crate) struct LeaseBook(Arc<Mutex<HashMap<String, u64>>>);

impl LeaseBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a lease.
    pub(crate) fn insert(&self, lease_id: &str, generation: u64) {
        self.lock().insert(lease_id.to_string(), generation);
    }

    /// Forgets a lease (revoked or expired).
    pub(crate) fn remove(&self, lease_id: &str) {
        self.lock().remove(lease_id);
    }

    /// Whether any lease still belongs to `generation`.
    pub(crate) fn references(&self, generation: u64) -> bool {
        self.lock().values().any(|g| *g == generation)
    }
}

/// Lets any task that got "permission denied" with the current token ask the
/// keeper to check it now (it may have been revoked behind our back) instead
/// of at the next scheduled renewal.
#[derive(Debug, Clone, Default)]
pub struct TokenCheck(Arc<tokio::sync::Notify>);

impl TokenCheck {
    /// Reports that OpenBao refused the current token.
    pub fn suspect(&self) {
        self.0.notify_one();
    }
}

/// Keeps a valid token published on a watch channel.
pub(crate) struct TokenKeeper {
    cfg: OpenBaoConfig,
    bao: OpenBao,
    identity: Identity,
    backoff: BackoffConfig,
    state: State,
    book: LeaseBook,
    tx: watch::Sender<Tokens>,
    check: TokenCheck,
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
enum LoginError {
    /// The Workload API gave no JWT-SVID.
    #[error("cannot get a JWT-SVID: {0}")]
    JwtSvid(IdentityError),
    /// OpenBao refused the login or could not be reached.
    #[error("login to OpenBao refused or failed: {0}")]
    OpenBao(BaoError),
}

/// A retired token and when it was retired.
struct Retiree {
    token: Arc<Token>,
    since: SystemTime,
}

fn published(retired: &[Retiree]) -> Vec<Arc<Token>> {
    retired.iter().map(|r| r.token.clone()).collect()
}

/// The token new requests use, and what its renewal needs.
struct Held {
    token: Arc<Token>,
    /// TTL granted at login (asked again at each renewal).
    ttl: Duration,
    policies: Vec<String>,
    /// When to renew next.
    renew_at: Instant,
}

impl TokenKeeper {
    /// A keeper and the receiver rotators watch.
    pub(crate) fn new(
        cfg: OpenBaoConfig,
        bao: OpenBao,
        identity: Identity,
        backoff: BackoffConfig,
        state: State,
        book: LeaseBook,
    ) -> (Self, watch::Receiver<Tokens>, TokenCheck) {
        let (tx, rx) = watch::channel(Tokens::default());
        let check = TokenCheck::default();
        (
            Self {
                cfg,
                bao,
                identity,
                backoff,
                state,
                book,
                tx,
                check: check.clone(),
            },
            rx,
            check,
        )
    }

    async fn login(&self, generation: u64) -> Result<Held, LoginError> {
        let jwt = self
            .identity
            .jwt_svid(&self.cfg.audience)
            .await
            .map_err(|e| {
                self.state.failure("jwt_svid");
                LoginError::JwtSvid(e)
            })?;
        let auth = self
            .bao
            .login_jwt(&self.cfg.auth_mount, &self.cfg.role, &jwt)
            .await
            .map_err(|e| {
                self.state.failure("login");
                LoginError::OpenBao(e)
            })?;
        let fresh =
            schedule::logged_in(auth.ttl, auth.renewable, SystemTime::now(), Instant::now());
        Ok(Held {
            token: Arc::new(Token {
                secret: auth.token,
                generation,
                expires_at: fresh.expires_at,
                capped: fresh.capped,
            }),
            ttl: auth.ttl,
            policies: auth.policies,
            renew_at: fresh.renew_at,
        })
    }

    /// Revokes or forgets the retired tokens whose time has come.
    fn sweep_retired(&self, retired: &mut Vec<Retiree>) {
        let now = SystemTime::now();
        retired.retain(|Retiree { token: t, since }| {
            let has_leases = self.book.references(t.generation);
            match schedule::retired(t.expires_at, has_leases, *since, self.cfg.request_timeout, now) {
                Retired::Keep => true,
                Retired::Expired => {
                    tracing::info!(generation = t.generation, "retired token expired");
                    false
                }
                Retired::Release => {
                    let (bao, secret, g) = (self.bao.clone(), t.secret.clone(), t.generation);
                    tokio::spawn(async move {
                        match bao.revoke_self(&secret).await {
                            Ok(()) => tracing::info!(generation = g, "revoked retired token (its leases were rotated)"),
                            Err(e) => tracing::warn!(generation = g, error = %e, "could not revoke retired token; it will expire"),
                        }
                    });
                    false
                }
            }
        });
    }

    /// Runs until cancelled. Returns the last published tokens (for the
    /// shutdown revocation).
    pub(crate) async fn run(self, cancel: CancellationToken) -> Tokens {
        let mut backoff = Backoff::new(self.backoff);
        let mut generation = 0;
        let mut current: Option<Held> = None;
        let mut retired: Vec<Retiree> = Vec::new();
        let mut last_forced = Instant::now() - schedule::MIN_CHECK_INTERVAL;
        loop {
            self.sweep_retired(&mut retired);
            self.tx.send_replace(Tokens {
                current: current.as_ref().map(|c| c.token.clone()),
                retired: published(&retired),
            });

            match schedule::next_step(Instant::now(), current.as_ref().map(|c| c.renew_at)) {
                TokenStep::Login => {
                    generation += 1;
                    match self.login(generation).await {
                        Ok(held) => {
                            tracing::info!(
                                generation,
                                ttl_s = held.ttl.as_secs(),
                                policies = ?held.policies,
                                "logged in to OpenBao with JWT-SVID"
                            );
                            self.state.token_login(TokenInfo {
                                expires_at: held.token.expires_at,
                                policies: held.policies.clone(),
                            });
                            backoff.reset();
                            current = Some(held);
                        }
                        Err(e) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "OpenBao login failed");
                            if sleep_or_cancel(delay, &cancel).await {
                                break;
                            }
                        }
                    }
                    continue;
                }
                TokenStep::Renew => {
                    if cancel.is_cancelled() {
                        break;
                    }
                }
                TokenStep::Wait { until } => {
                    let Some(held) = current.as_mut() else {
                        continue;
                    };
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = self.check.0.notified(), if schedule::forced_check_allowed(last_forced, Instant::now()) => {
                            tracing::info!(generation = held.token.generation, "OpenBao refused our token somewhere; checking it now");
                            last_forced = Instant::now();
                            held.renew_at = last_forced;
                        }
                        () = cancel.cancelled() => break,
                    }
                    if schedule::next_step(Instant::now(), Some(held.renew_at)) != TokenStep::Renew
                    {
                        continue;
                    }
                }
            }
            let Some(held) = current.take() else {
                continue;
            };
            current = self.renew(held, &mut backoff, &mut retired).await;
        }
        Tokens {
            current: current.map(|c| c.token),
            retired: published(&retired),
        }
    }

    /// Renews the current token and carries out what [`schedule::renewal`]
    /// decides; returns the token to keep using, if any.
    async fn renew(
        &self,
        held: Held,
        backoff: &mut Backoff,
        retired: &mut Vec<Retiree>,
    ) -> Option<Held> {
        let token = &held.token;
        let result = self.bao.renew_self(&token.secret, held.ttl).await;
        let answer = match &result {
            Ok(auth) => RenewAnswer::Granted {
                ttl: auth.ttl,
                renewable: auth.renewable,
            },
            Err(e) if e.is_invalid_credential() => RenewAnswer::Refused,
            Err(_) => RenewAnswer::Failed {
                retry_in: backoff.next_delay(),
            },
        };
        let (granted, policies, error) = match result {
            Ok(auth) => (auth.ttl, auth.policies, String::new()),
            Err(e) => {
                self.state.failure("token_renew");
                (Duration::ZERO, Vec::new(), e.to_string())
            }
        };
        let now = Instant::now();
        let renewed = |expires_at, capped| {
            Arc::new(Token {
                secret: token.secret.clone(),
                generation: token.generation,
                expires_at,
                capped,
            })
        };
        match schedule::renewal(held.ttl, token.expires_at, answer, SystemTime::now(), now) {
            Renewal::Renewed {
                expires_at,
                renew_at,
            } => {
                backoff.reset();
                self.state.token_renewed(TokenInfo {
                    expires_at,
                    policies,
                });
                tracing::debug!(
                    generation = token.generation,
                    ttl_s = granted.as_secs(),
                    "token renewed"
                );
                Some(Held {
                    token: renewed(expires_at, false),
                    renew_at,
                    ..held
                })
            }
            Renewal::Capped { expires_at } => {
                backoff.reset();
                self.state.token_renewed(TokenInfo {
                    expires_at,
                    policies,
                });
                tracing::info!(generation = token.generation, remaining_s = granted.as_secs(), "token reached its max TTL; logging in again (old token kept until its leases rotate)");
                retired.push(Retiree {
                    token: renewed(expires_at, true),
                    since: SystemTime::now(),
                });
                None
            }
            Renewal::Refused => {
                tracing::warn!(generation = token.generation, error = %error, "token renewal refused; logging in again");
                self.state.token_cleared();
                None
            }
            Renewal::Expired => {
                tracing::warn!(generation = token.generation, error = %error, "token expired while OpenBao was unreachable; logging in again");
                self.state.token_cleared();
                None
            }
            Renewal::Retry { retry_at } => {
                let delay = retry_at.saturating_duration_since(now);
                tracing::warn!(generation = token.generation, error = %error, retry_in_ms = delay.as_millis() as u64, "token renewal failed; retrying");
                Some(Held {
                    renew_at: retry_at,
                    ..held
                })
            }
        }
    }
}

/// Sleeps `d`; `true` if cancelled first.
pub(crate) async fn sleep_or_cancel(d: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = cancel.cancelled() => true,
    }
}

/// Waits for a current token; `None` if cancelled.
pub(crate) async fn current_token(
    rx: &mut watch::Receiver<Tokens>,
    cancel: &CancellationToken,
) -> Option<Arc<Token>> {
    tokio::select! {
        r = rx.wait_for(|t| t.current.is_some()) => r.ok().and_then(|t| t.current.clone()),
        () = cancel.cancelled() => None,
    }
}
