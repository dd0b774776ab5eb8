//! One error type for every handler. Clients get a stable JSON shape,
//! `{"error": {"code": "<snake_case>", "message": "<for humans>"}}`, and a
//! safe message; the real cause of a 5xx is logged once, here, never returned.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::password::HashError;
use crate::db::DbError;
use crate::github::GithubError;
use crate::openbao::StoreError;

/// The error body.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, snake_case, for programs.
    pub code: &'static str,
    /// For humans; never contains a secret or an internal cause.
    pub message: String,
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The body is not JSON (syntax, truncated, empty).
    #[error("malformed JSON: {0}")]
    MalformedJson(String),
    /// The query string cannot be parsed.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// A field is missing, has the wrong type or an unacceptable value.
    #[error("validation failed: {0}")]
    Validation(String),
    /// The body is larger than allowed.
    #[error("payload too large (limit {0} bytes)")]
    PayloadTooLarge(usize),
    /// Not `Content-Type: application/json`.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// Missing, malformed, expired or foreign bearer token (reason for logs only).
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// Authenticated, but not allowed to see this (not an operator).
    #[error("forbidden: {0}")]
    Forbidden(&'static str),
    /// Login failed; one message whatever the reason.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// Too many failed logins or registrations from this client (or too
    /// many of its attempts in flight); retry after this many seconds.
    #[error("rate limited for {0} s")]
    RateLimited(u64),
    /// Too many failed logins for this account name, from all clients (or
    /// too many of its attempts in flight); retry after this many seconds.
    #[error("sign-ins for this account limited for {0} s")]
    AccountRateLimited(u64),
    /// Too many GitHub calls by this user (or too many in flight); retry
    /// after this many seconds.
    #[error("GitHub calls limited for {0} s")]
    GithubCallsLimited(u64),
    /// The password-hashing queue is full (a flood); retry after a second.
    #[error("password hashing queue full")]
    Busy,
    /// No such route.
    #[error("not found")]
    NotFound,
    /// `Host` names someone else (DNS rebinding) or is missing.
    #[error("misdirected request: Host is not ours")]
    MisdirectedRequest,
    /// The route exists, the method does not.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The username or the email is already registered. One variant for
    /// both, so the answer does not tell which (email enumeration).
    #[error("registration conflict")]
    RegistrationConflict,
    /// The user has no GitHub token stored.
    #[error("GitHub integration not configured")]
    NotConfigured,
    /// A GitHub call failed; `configuring` = while checking a new token.
    #[error("GitHub: {error}")]
    Github {
        /// What went wrong.
        error: GithubError,
        /// During `POST /api/github/configure` (a rejected token is the
        /// client's fault: 400) or while using a stored token (502).
        configuring: bool,
    },
    /// The sidecar's admin endpoint did not answer usefully.
    #[error("sidecar unavailable: {0}")]
    SidecarUnavailable(String),
    /// PostgreSQL failed.
    #[error(transparent)]
    Database(#[from] DbError),
    /// The OpenBao proxy failed.
    #[error("secret store: {0}")]
    SecretStore(#[from] StoreError),
    /// Anything else (a bug); the cause is logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl AppError {
    /// `(status, code, message)`.
    pub fn parts(&self) -> (StatusCode, &'static str, String) {
        use AppError::*;
        match self {
            MalformedJson(m) => (
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("The request body is not valid JSON: {m}"),
            ),
            InvalidQuery(m) => (
                StatusCode::BAD_REQUEST,
                "invalid_query",
                format!("Invalid query parameters: {m}"),
            ),
            Validation(m) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation_failed",
                m.clone(),
            ),
            PayloadTooLarge(limit) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("The request body is larger than {limit} bytes"),
            ),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Send the body as JSON with Content-Type: application/json".into(),
            ),
            Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "A valid bearer token is required".into(),
            ),
            Forbidden(_) => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "Your account may not see this; it is for the platform's operators".into(),
            ),
            InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "Invalid username or password".into(),
            ),
            RateLimited(s) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("Too many attempts from this client; try again in {s} seconds"),
            ),
            AccountRateLimited(s) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("Too many failed sign-ins for this account; try again in {s} seconds"),
            ),
            GithubCallsLimited(s) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("Too many GitHub requests from this account; try again in {s} seconds"),
            ),
            Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                "The server is busy; try again in a second".into(),
            ),
            NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "No such endpoint; see /api/openapi.json".into(),
            ),
            MisdirectedRequest => (
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_request",
                "This server does not answer for that Host".into(),
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "This endpoint does not support that method".into(),
            ),
            RegistrationConflict => (
                StatusCode::CONFLICT,
                "registration_conflict",
                "That username or email address is not available; choose another username, or log in if you already have an account".into(),
            ),
            NotConfigured => (
                StatusCode::NOT_FOUND,
                "not_configured",
                "No GitHub token is configured; add one first".into(),
            ),
            Github { error, configuring } => match error {
                GithubError::Rejected(_) if *configuring => (
                    StatusCode::BAD_REQUEST,
                    "github_token_rejected",
                    "GitHub did not accept this token; check it and its scopes".into(),
                ),
                GithubError::Rejected(_) => (
                    StatusCode::BAD_GATEWAY,
                    "github_token_rejected",
                    "GitHub no longer accepts your stored token; configure a new one".into(),
                ),
                GithubError::RateLimited { .. } => (
                    StatusCode::BAD_GATEWAY,
                    "github_rate_limited",
                    "GitHub's rate limit for this token is exhausted; try again later".into(),
                ),
                GithubError::Timeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "github_timeout",
                    "GitHub did not answer in time; try again".into(),
                ),
                GithubError::Unavailable(_) => (
                    StatusCode::BAD_GATEWAY,
                    "github_unavailable",
                    "GitHub is unavailable right now; try again later".into(),
                ),
            },
            SidecarUnavailable(_) => (
                StatusCode::BAD_GATEWAY,
                "sidecar_unavailable",
                "The zero-trust sidecar's status is unavailable".into(),
            ),
            Database(e) => match e {
                DbError::Query(q) if !crate::db::is_session_lost(q) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "Something went wrong on our side".into(),
                ),
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "The database is unavailable; try again shortly".into(),
                ),
            },
            SecretStore(e) => match e {
                StoreError::Refused { .. } | StoreError::BadResponse(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "Something went wrong on our side".into(),
                ),
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "secret_store_unavailable",
                    "The secret store is unavailable; try again shortly".into(),
                ),
            },
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Something went wrong on our side".into(),
            ),
        }
    }
}

impl From<HashError> for AppError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy => AppError::Busy,
            e => AppError::Internal(e.to_string()),
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, code, message) = self.parts();
        if matches!(self, AppError::Busy) {
            // A flood: one line per refusal at error level would bury the log.
            tracing::warn!(
                status = status.as_u16(),
                code,
                "request refused: hashing queue full"
            );
        } else if status.is_server_error() {
            // The one place the cause is logged.
            tracing::error!(status = status.as_u16(), code, cause = %self, "request failed");
        } else if matches!(self, AppError::Github { .. }) {
            tracing::warn!(status = status.as_u16(), code, cause = %self, "GitHub call failed");
        } else {
            tracing::debug!(status = status.as_u16(), code, cause = %self, "request refused");
        }
        let mut resp = HttpResponse::build(status);
        match self {
            AppError::RateLimited(secs)
            | AppError::AccountRateLimited(secs)
            | AppError::GithubCallsLimited(secs) => {
                resp.insert_header((header::RETRY_AFTER, secs.to_string()));
            }
            AppError::Busy => {
                resp.insert_header((header::RETRY_AFTER, "1"));
            }
            AppError::Unauthorized(_) => {
                resp.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            _ => {}
        }
        resp.json(ErrorBody {
            error: ErrorDetail { code, message },
        })
    }
}

fn short(s: String) -> String {
    // serde's messages are short, but a crafted key name could be long.
    if s.chars().count() > 200 {
        let mut t: String = s.chars().take(200).collect();
        t.push('…');
        t
    } else {
        s
    }
}

/// `JsonConfig` error handler: our JSON shape for every body problem.
pub fn json_error(err: actix_web::error::JsonPayloadError, _req: &HttpRequest) -> actix_web::Error {
    use actix_web::error::JsonPayloadError as J;
    let e = match err {
        J::OverflowKnownLength { limit, .. } | J::Overflow { limit } => {
            AppError::PayloadTooLarge(limit)
        }
        J::ContentType => AppError::UnsupportedMediaType,
        J::Deserialize(e) => match e.classify() {
            serde_json::error::Category::Data => AppError::Validation(short(e.to_string())),
            _ => AppError::MalformedJson(short(e.to_string())),
        },
        J::Serialize(e) => AppError::Internal(e.to_string()),
        J::Payload(actix_web::error::PayloadError::Overflow) => {
            AppError::PayloadTooLarge(crate::MAX_JSON_BODY)
        }
        J::Payload(e) => AppError::MalformedJson(short(e.to_string())),
        other => AppError::MalformedJson(short(other.to_string())),
    };
    e.into()
}

/// `QueryConfig` error handler.
pub fn query_error(
    err: actix_web::error::QueryPayloadError,
    _req: &HttpRequest,
) -> actix_web::Error {
    AppError::InvalidQuery(short(err.to_string())).into()
}

/// The app's default service: unknown routes.
pub async fn not_found() -> Result<HttpResponse, AppError> {
    Err(AppError::NotFound)
}

/// Default service of each resource: known route, other method; `allow`
/// is the method the route supports (the `Allow` header).
pub async fn method_not_allowed(allow: String) -> HttpResponse {
    let mut resp = AppError::MethodNotAllowed.error_response();
    if let Ok(v) = header::HeaderValue::from_str(&allow) {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    resp
}
