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
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::{BackoffConfig, OpenBaoConfig};
use crate::identity::Identity;
use crate::openbao::OpenBao;
use crate::secret::Sensitive;
use crate::status::{State, TokenInfo};

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

/// At most one forced check per this interval (403s may be plain policy denials).
const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(2);

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

/// How often retired tokens are checked for release.
const RETIRE_CHECK: Duration = Duration::from_secs(2);

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

    async fn login(&self, generation: u64) -> Result<(Token, Duration, Vec<String>), String> {
        let jwt = self
            .identity
            .jwt_svid(&self.cfg.audience)
            .await
            .map_err(|e| {
                self.state.failure("jwt_svid");
                format!("cannot get a JWT-SVID: {e}")
            })?;
        let auth = self
            .bao
            .login_jwt(&self.cfg.auth_mount, &self.cfg.role, &jwt)
            .await
            .map_err(|e| {
                self.state.failure("login");
                format!("login to OpenBao refused or failed: {e}")
            })?;
        Ok((
            Token {
                secret: auth.token,
                generation,
                expires_at: SystemTime::now() + auth.ttl,
                capped: !auth.renewable,
            },
            auth.ttl,
            auth.policies,
        ))
    }

    /// Runs until cancelled. Returns the last published tokens (for the
    /// shutdown revocation).
    pub(crate) async fn run(self, cancel: CancellationToken) -> Tokens {
        let mut backoff = Backoff::new(self.backoff);
        let mut generation = 0;
        // (token, ttl granted at login, policies, when to renew next)
        let mut current: Option<(Arc<Token>, Duration, Vec<String>, tokio::time::Instant)> = None;
        let mut retired: Vec<Arc<Token>> = Vec::new();
        let mut last_forced = tokio::time::Instant::now() - MIN_CHECK_INTERVAL;
        loop {
            let now = SystemTime::now();
            retired.retain(|t| {
                if t.expires_at <= now {
                    tracing::info!(generation = t.generation, "retired token expired");
                    return false;
                }
                if self.book.references(t.generation) {
                    return true;
                }
                let (bao, secret, g) = (self.bao.clone(), t.secret.clone(), t.generation);
                tokio::spawn(async move {
                    match bao.revoke_self(&secret).await {
                        Ok(()) => tracing::info!(generation = g, "revoked retired token (its leases were rotated)"),
                        Err(e) => tracing::warn!(generation = g, error = %e, "could not revoke retired token; it will expire"),
                    }
                });
                false
            });
            self.tx.send_replace(Tokens {
                current: current.as_ref().map(|c| c.0.clone()),
                retired: retired.clone(),
            });

            let Some((token, ttl, policies, renew_at)) = current.take() else {
                generation += 1;
                match self.login(generation).await {
                    Ok((token, ttl, policies)) => {
                        tracing::info!(
                            generation,
                            ttl_s = ttl.as_secs(),
                            ?policies,
                            "logged in to OpenBao with JWT-SVID"
                        );
                        self.state.token_login(TokenInfo {
                            expires_at: token.expires_at,
                            policies: policies.clone(),
                        });
                        backoff.reset();
                        let renew_at = tokio::time::Instant::now() + ttl / 2;
                        current = Some((Arc::new(token), ttl, policies, renew_at));
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
            };

            let wake = renew_at.min(tokio::time::Instant::now() + RETIRE_CHECK);
            let mut renew_at = renew_at;
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = self.check.0.notified(), if last_forced.elapsed() >= MIN_CHECK_INTERVAL => {
                    tracing::info!(generation = token.generation, "OpenBao refused our token somewhere; checking it now");
                    last_forced = tokio::time::Instant::now();
                    renew_at = last_forced;
                }
                () = cancel.cancelled() => {
                    current = Some((token, ttl, policies, renew_at));
                    break;
                }
            }
            if tokio::time::Instant::now() < renew_at {
                current = Some((token, ttl, policies, renew_at));
                continue;
            }
            match self.bao.renew_self(&token.secret, ttl).await {
                Ok(auth) => {
                    backoff.reset();
                    let expires_at = SystemTime::now() + auth.ttl;
                    // OpenBao grants less than asked only when the max TTL caps it.
                    let capped = !auth.renewable || auth.ttl + Duration::from_secs(1) < ttl;
                    let renewed = Arc::new(Token {
                        secret: token.secret.clone(),
                        generation: token.generation,
                        expires_at,
                        capped,
                    });
                    self.state.token_renewed(TokenInfo {
                        expires_at,
                        policies: auth.policies.clone(),
                    });
                    if capped {
                        tracing::info!(generation = token.generation, remaining_s = auth.ttl.as_secs(), "token reached its max TTL; logging in again (old token kept until its leases rotate)");
                        retired.push(renewed);
                    } else {
                        tracing::debug!(
                            generation = token.generation,
                            ttl_s = auth.ttl.as_secs(),
                            "token renewed"
                        );
                        current = Some((
                            renewed,
                            ttl,
                            policies,
                            tokio::time::Instant::now() + auth.ttl / 2,
                        ));
                    }
                }
                Err(e) if e.is_invalid_credential() => {
                    self.state.failure("token_renew");
                    tracing::warn!(generation = token.generation, error = %e, "token renewal refused; logging in again");
                    self.state.token_cleared();
                }
                Err(e) => {
                    self.state.failure("token_renew");
                    let delay = backoff.next_delay();
                    if token.expires_at <= SystemTime::now() {
                        tracing::warn!(generation = token.generation, error = %e, "token expired while OpenBao was unreachable; logging in again");
                        self.state.token_cleared();
                    } else {
                        tracing::warn!(generation = token.generation, error = %e, retry_in_ms = delay.as_millis() as u64, "token renewal failed; retrying");
                        current = Some((token, ttl, policies, tokio::time::Instant::now() + delay));
                    }
                }
            }
        }
        Tokens {
            current: current.map(|c| c.0),
            retired,
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
