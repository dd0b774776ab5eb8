//! `POST /api/auth/register`, `POST /api/auth/login`, `GET /api/auth/me`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;
use tokio_postgres::error::SqlState;

use crate::auth::jwt::{JwtError, TOKEN_TTL_SECS};
use crate::auth::ratelimit::Refused;
use crate::auth::{client_key, AuthUser};
use crate::db::queries::{self, AuditEntry};
use crate::errors::{AppError, ErrorBody};
use crate::extract::ValidJson;
use crate::handlers::audit;
use crate::models::{
    is_valid_username, LoginRequest, LoginResponse, RegisterRequest, RegisterResponse, User,
    USERNAME_MAX,
};
use crate::state::AppState;

/// Longest username looked up at login (longer ones cannot exist).
const LOGIN_USERNAME_MAX: usize = USERNAME_MAX * 4;

/// When [`warn_account_refused`] last logged (seconds since the epoch).
static ACCOUNT_WARNED_AT: AtomicU64 = AtomicU64::new(0);

/// Logs a login refused for its account name, at most once per 10 s (a
/// refusal costs the client nothing, so a loop of them must not flood the
/// log; `account_rate_limited` in the metrics counts them all).
fn warn_account_refused(account: &str, why: Refused) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = ACCOUNT_WARNED_AT.load(Ordering::Relaxed);
    if now < last + 10
        || ACCOUNT_WARNED_AT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let account = for_audit(account);
    match why {
        Refused::Limited(_) => tracing::warn!(
            account = %account.escape_debug(),
            "login refused: too many failures for this account name from all clients (at most one such line per 10 s)"
        ),
        Refused::Busy(_) => tracing::warn!(
            account = %account.escape_debug(),
            "login refused: too many logins in flight for this account name (at most one such line per 10 s)"
        ),
    }
}

/// A bounded, NUL-free copy of client input for the audit log.
fn for_audit(s: &str) -> String {
    s.chars().filter(|c| *c != '\0').take(64).collect()
}

/// Create an account.
#[utoipa::path(
    post, path = "/api/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 201, description = "Registered", body = RegisterResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 409, description = "`registration_conflict`: the username or the email is not available (one answer for both, so it does not tell which)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over 16 KiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: the message names the field", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many registrations from this client; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`busy`: the password-hashing queue is full; see `Retry-After`", body = ErrorBody),
    )
)]
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: ValidJson<RegisterRequest>,
) -> Result<HttpResponse, AppError> {
    let new = body.into_inner().validate()?;
    let client = client_key(&req, &state.config);
    // Every registration costs a hash, taken or not: count them all.
    let attempt = state
        .register_limiter
        .begin(&client, Instant::now())
        .map_err(|r| {
            state.metrics.outcome("register", "rate_limited");
            AppError::RateLimited(r.retry_after())
        })?;
    // The hash comes first on every path, so a taken name or email answers
    // after the same work as a new one.
    let hash = state.hasher.hash(new.password.expose().to_string()).await?;
    attempt.count();
    let details = json!({ "username": new.username, "email_given": new.email.is_some() });
    match queries::insert_user(
        &state.db,
        &new.username,
        new.email.as_deref(),
        &hash,
        &details,
    )
    .await
    {
        Ok(u) => {
            state.metrics.outcome("register", "created");
            tracing::info!(user_id = u.id, username = %u.username, "user registered");
            Ok(HttpResponse::Created().json(RegisterResponse { user: u.into() }))
        }
        Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            state.metrics.outcome("register", "conflict");
            Err(AppError::RegistrationConflict)
        }
        Err(e) => Err(e.into()),
    }
}

/// Log in; returns a bearer token valid for an hour.
#[utoipa::path(
    post, path = "/api/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = LoginResponse),
        (status = 400, description = "Malformed JSON", body = ErrorBody),
        (status = 401, description = "`invalid_credentials` (one message whether or not the user exists)", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over 16 KiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "`validation_failed`: a field is missing or not a string", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many failures (or attempts in flight) from this client, or for this account name from all clients; see `Retry-After`", body = ErrorBody),
        (status = 503, description = "`busy`: the password-hashing queue is full; see `Retry-After`", body = ErrorBody),
    )
)]
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: ValidJson<LoginRequest>,
) -> Result<HttpResponse, AppError> {
    let client = client_key(&req, &state.config);
    // Reserved before the password is checked: attempts in flight count
    // against the limit, so concurrent guesses cannot all pass a check that
    // is only counted after the (slow) verification.
    let attempt = state
        .login_limiter
        .begin(&client, Instant::now())
        .map_err(|r| {
            state.metrics.outcome("login", "rate_limited");
            AppError::RateLimited(r.retry_after())
        })?;
    let LoginRequest { username, password } = body.into_inner();
    // Names that cannot exist (too long, NUL: PostgreSQL refuses it in text)
    // still cost one argon2 verification, like unknown names.
    let lookup = username.chars().count() <= LOGIN_USERNAME_MAX && !username.contains('\0');
    // And per account name, whether or not it exists (a limit only real
    // names had would tell which are): a caller that can choose its client
    // key still gets only so many guesses at one password. Names that
    // registration would refuse share one key (a flood of them cannot grow
    // the limiter). A client that signed in to the account recently is not
    // held back by it (someone failing on purpose elsewhere cannot lock the
    // account's own user out).
    let account = if is_valid_username(&username) {
        username.as_str()
    } else {
        "\0not-a-username"
    };
    let account_attempt = if state.known_clients.knows(account, &client, Instant::now()) {
        None
    } else {
        match state.account_login_limiter.begin(account, Instant::now()) {
            Ok(a) => Some(a),
            Err(r) => {
                // Not this client's failure: its reservation does not count.
                attempt.release();
                state.metrics.outcome("login", "account_rate_limited");
                warn_account_refused(account, r);
                return Err(AppError::AccountRateLimited(r.retry_after()));
            }
        }
    };
    let found = if lookup {
        match queries::user_for_login(&state.db, &username).await {
            Ok(found) => found,
            Err(e) => {
                // Our failure, not a guess: it does not count.
                attempt.release();
                if let Some(a) = account_attempt {
                    a.release();
                }
                return Err(e.into());
            }
        }
    } else {
        None
    };
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    let ok = match state
        .hasher
        .verify(password.expose().to_string(), hash)
        .await
    {
        Ok(ok) => ok,
        Err(e) => {
            attempt.release();
            if let Some(a) = account_attempt {
                a.release();
            }
            return Err(e.into());
        }
    };
    let user = match (ok, user) {
        (true, Some(u)) => {
            attempt.release();
            if let Some(a) = account_attempt {
                a.release();
            }
            state
                .known_clients
                .remember(&username, &client, Instant::now());
            u
        }
        (_, user) => {
            attempt.count();
            if let Some(a) = account_attempt {
                a.count();
            }
            state.metrics.outcome("login", "failure");
            audit(
                &state,
                AuditEntry {
                    user_id: user.as_ref().map(|u| u.id),
                    action: "auth.login.failure",
                    resource: "auth".into(),
                    details: json!({
                        "username": for_audit(&username),
                        "reason": if user.is_some() { "wrong_password" } else { "unknown_user" },
                        "client": for_audit(&client),
                    }),
                },
            )
            .await;
            return Err(AppError::InvalidCredentials);
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let token = state
        .keys
        .issue(user.id, &user.username, now)
        .map_err(|e| match e {
            JwtError::NoKey => AppError::Internal("no JWT signing key loaded".into()),
            e => AppError::Internal(e.to_string()),
        })?;
    state.metrics.outcome("login", "success");
    audit(
        &state,
        AuditEntry {
            user_id: Some(user.id),
            action: "auth.login.success",
            resource: format!("user:{}", user.id),
            details: json!({ "client": for_audit(&client) }),
        },
    )
    .await;
    Ok(HttpResponse::Ok().json(LoginResponse {
        access_token: token,
        token_type: "bearer".into(),
        expires_in: TOKEN_TTL_SECS,
        user: user.into(),
    }))
}

/// End this session: the token is refused from now on (until its `exp`,
/// when it would have been anyway), by every replica.
#[utoipa::path(
    post, path = "/api/auth/logout", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out: this token no longer works"),
        (status = 401, description = "`unauthorized` (also for a token already logged out)", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn logout(user: AuthUser, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    queries::revoke_token(&state.db, &user.jti, user.user_id, user.exp).await?;
    state.metrics.outcome("logout", "revoked");
    audit(
        &state,
        AuditEntry {
            user_id: Some(user.user_id),
            action: "auth.logout",
            resource: format!("user:{}", user.user_id),
            details: json!({}),
        },
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// The logged-in user.
#[utoipa::path(
    get, path = "/api/auth/me", tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = User),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub async fn me(user: AuthUser, state: web::Data<AppState>) -> Result<web::Json<User>, AppError> {
    match queries::user_by_id(&state.db, user.user_id).await? {
        Some(u) => Ok(web::Json(u.into())),
        None => Err(AppError::Unauthorized("the token's user no longer exists")),
    }
}
