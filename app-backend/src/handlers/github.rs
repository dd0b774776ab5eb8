//! `/api/github/*`: a user's GitHub token lives in OpenBao at
//! `secret/data/github/users/<user id>` (the id comes from the caller's
//! token, never from the request), reached through the sidecar's proxy;
//! PostgreSQL only records whether one is configured.

use actix_web::{web, HttpResponse};
use serde_json::json;

use std::time::Instant;

use crate::auth::ratelimit::{Attempt, AttemptLimiter};
use crate::auth::AuthUser;
use crate::db::queries::{self, AuditEntry};
use crate::errors::{AppError, ErrorBody};
use crate::extract::ValidJson;
use crate::github::GithubError;
use crate::handlers::audit;
use crate::models::{
    timestamp, ConfigureRequest, ConfigureResponse, GithubStatus, GithubUser, ReposQuery,
    ReposResponse,
};
use crate::openbao::github_token_path;
use crate::secrets::Sensitive;
use crate::state::AppState;

fn github_err(state: &AppState, error: GithubError, configuring: bool) -> AppError {
    state.metrics.outcome(
        "github",
        match error {
            GithubError::Rejected(_) => "rejected",
            GithubError::RateLimited { .. } => "rate_limited",
            GithubError::Timeout => "timeout",
            GithubError::Unavailable(_) => "unavailable",
        },
    );
    AppError::Github { error, configuring }
}

/// Reserves one GitHub call of `user` in `limiter` (settled with
/// `count()` once the call is made; dropped unsettled, it counts too), or
/// 429 `rate_limited`.
fn github_call<'a>(
    state: &AppState,
    limiter: &'a AttemptLimiter,
    user: &AuthUser,
) -> Result<Attempt<'a>, AppError> {
    limiter
        .begin(&format!("user:{}", user.user_id), Instant::now())
        .map_err(|r| {
            state.metrics.outcome("github", "limited_per_user");
            AppError::GithubCallsLimited(r.retry_after())
        })
}

/// The stored token of `user`, or 404 `not_configured`.
async fn stored_token(state: &AppState, user: &AuthUser) -> Result<Sensitive, AppError> {
    let configured = queries::integration(&state.db, user.user_id)
        .await?
        .is_some_and(|r| r.is_configured);
    if !configured {
        return Err(AppError::NotConfigured);
    }
    state
        .store
        .github_token(user.user_id)
        .await?
        .ok_or(AppError::NotConfigured)
}

/// Best-effort: a failed update of `last_accessed` must not fail the request.
async fn touch(state: &AppState, user_id: i32) {
    if let Err(e) = queries::touch_last_accessed(&state.db, user_id).await {
        tracing::warn!(user_id, error = %e, "cannot update github_integrations.last_accessed");
    }
}

/// Check a GitHub token with GitHub, then store it in OpenBao.
#[utoipa::path(
    post, path = "/api/github/configure", tag = "github",
    security(("bearer" = [])),
    request_body = ConfigureRequest,
    responses(
        (status = 200, description = "Stored", body = ConfigureResponse),
        (status = 400, description = "`github_token_rejected` (GitHub said 401) or malformed JSON", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: body over 16 KiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not `Content-Type: application/json`", body = ErrorBody),
        (status = 422, description = "`validation_failed`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many token checks by this user (`BACKEND_GITHUB_CHECKS_PER_USER`); see `Retry-After`", body = ErrorBody),
        (status = 502, description = "`github_unavailable`, `github_rate_limited`", body = ErrorBody),
        (status = 503, description = "`secret_store_unavailable`", body = ErrorBody),
        (status = 504, description = "`github_timeout`", body = ErrorBody),
    )
)]
pub async fn configure(
    user: AuthUser,
    state: web::Data<AppState>,
    body: ValidJson<ConfigureRequest>,
) -> Result<HttpResponse, AppError> {
    let token = body.into_inner().validate()?;
    // Every check counts, accepted or not: a user stores a token now and
    // then, and a loop of checks would test guessed tokens against GitHub.
    let attempt = github_call(&state, &state.github_check_limiter, &user)?;
    let checked = state.github.user(&token).await;
    attempt.count();
    let github_user = checked.map_err(|e| github_err(&state, e, true))?;
    state.store.put_github_token(user.user_id, &token).await?;
    queries::mark_configured(&state.db, user.user_id).await?;
    state.metrics.outcome("github", "configured");
    tracing::info!(user_id = user.user_id, github_login = %github_user.login, "GitHub token stored in OpenBao");
    audit(
        &state,
        AuditEntry {
            user_id: Some(user.user_id),
            action: "github.configure",
            resource: format!("secret/{}", github_token_path(user.user_id)),
            details: json!({ "github_login": github_user.login }),
        },
    )
    .await;
    Ok(HttpResponse::Ok().json(ConfigureResponse {
        configured: true,
        github_user,
    }))
}

/// Whether the caller has a GitHub token stored.
#[utoipa::path(
    get, path = "/api/github/status", tag = "github",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Status", body = GithubStatus),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    )
)]
pub async fn status(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<web::Json<GithubStatus>, AppError> {
    let row = queries::integration(&state.db, user.user_id).await?;
    Ok(web::Json(match row {
        Some(r) if r.is_configured => GithubStatus {
            configured: true,
            configured_at: r.configured_at.map(timestamp),
            last_accessed: r.last_accessed.map(timestamp),
        },
        _ => GithubStatus {
            configured: false,
            configured_at: None,
            last_accessed: None,
        },
    }))
}

/// Remove the caller's GitHub token (every version) from OpenBao.
#[utoipa::path(
    delete, path = "/api/github/token", tag = "github",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_configured`", body = ErrorBody),
        (status = 503, description = "`secret_store_unavailable`", body = ErrorBody),
    )
)]
pub async fn delete_token(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let in_db = queries::integration(&state.db, user.user_id)
        .await?
        .is_some_and(|r| r.is_configured);
    // Also look in OpenBao: a token stored just before a database failure
    // must still be removable.
    let in_kv = state.store.github_token_exists(user.user_id).await?;
    if !in_db && !in_kv {
        return Err(AppError::NotConfigured);
    }
    state.store.delete_github_token(user.user_id).await?;
    queries::mark_removed(&state.db, user.user_id).await?;
    state.metrics.outcome("github", "removed");
    tracing::info!(user_id = user.user_id, "GitHub token removed from OpenBao");
    audit(
        &state,
        AuditEntry {
            user_id: Some(user.user_id),
            action: "github.remove",
            resource: format!("secret/{}", github_token_path(user.user_id)),
            details: json!({}),
        },
    )
    .await;
    Ok(HttpResponse::NoContent().finish())
}

/// The caller's repositories, newest update first.
#[utoipa::path(
    get, path = "/api/github/repos", tag = "github",
    security(("bearer" = [])),
    params(ReposQuery),
    responses(
        (status = 200, description = "One page", body = ReposResponse),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_configured`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many GitHub reads by this user (`BACKEND_GITHUB_READS_PER_USER`); see `Retry-After`", body = ErrorBody),
        (status = 502, description = "`github_unavailable`, `github_rate_limited`, `github_token_rejected`", body = ErrorBody),
        (status = 503, description = "`secret_store_unavailable`", body = ErrorBody),
        (status = 504, description = "`github_timeout`", body = ErrorBody),
    )
)]
pub async fn repos(
    user: AuthUser,
    state: web::Data<AppState>,
    query: web::Query<ReposQuery>,
) -> Result<web::Json<ReposResponse>, AppError> {
    let (page, per_page) = query.validate()?;
    // Counted however it ends (an attempt dropped unsettled counts).
    let attempt = github_call(&state, &state.github_read_limiter, &user)?;
    let token = stored_token(&state, &user).await?;
    let listed = state.github.repos(&token, page, per_page).await;
    attempt.count();
    let (repos, has_next) = listed.map_err(|e| github_err(&state, e, false))?;
    drop(token);
    touch(&state, user.user_id).await;
    audit(
        &state,
        AuditEntry {
            user_id: Some(user.user_id),
            action: "github.repos",
            resource: "github:/user/repos".into(),
            details: json!({ "page": page, "per_page": per_page, "count": repos.len() }),
        },
    )
    .await;
    Ok(web::Json(ReposResponse {
        repos,
        page,
        per_page,
        has_next,
    }))
}

/// The caller's GitHub profile.
#[utoipa::path(
    get, path = "/api/github/user", tag = "github",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Profile", body = GithubUser),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_configured`", body = ErrorBody),
        (status = 429, description = "`rate_limited`: too many GitHub reads by this user (`BACKEND_GITHUB_READS_PER_USER`); see `Retry-After`", body = ErrorBody),
        (status = 502, description = "`github_unavailable`, `github_rate_limited`, `github_token_rejected`", body = ErrorBody),
        (status = 503, description = "`secret_store_unavailable`", body = ErrorBody),
        (status = 504, description = "`github_timeout`", body = ErrorBody),
    )
)]
pub async fn user(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<web::Json<GithubUser>, AppError> {
    // Counted however it ends (an attempt dropped unsettled counts).
    let attempt = github_call(&state, &state.github_read_limiter, &user)?;
    let token = stored_token(&state, &user).await?;
    let fetched = state.github.user(&token).await;
    attempt.count();
    let profile = fetched.map_err(|e| github_err(&state, e, false))?;
    touch(&state, user.user_id).await;
    Ok(web::Json(profile))
}
