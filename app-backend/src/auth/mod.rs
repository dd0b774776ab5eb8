//! Authentication: argon2id passwords, HS256 tokens, the bearer-token
//! extractor and the failed-login rate limiter.

pub mod jwt;
pub mod password;
pub mod ratelimit;

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};

use crate::errors::AppError;
use crate::state::AppState;

/// The authenticated caller of a request (from a valid bearer token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// `users.id`
    pub user_id: i32,
    /// `users.username`
    pub username: String,
}

impl FromRequest for AuthUser {
    type Error = AppError;
    type Future = Ready<Result<Self, AppError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<AuthUser, AppError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| AppError::Internal("application state missing".into()))?;
    let value = req
        .headers()
        .get(header::AUTHORIZATION)
        .ok_or(AppError::Unauthorized("no Authorization header"))?
        .to_str()
        .map_err(|_| AppError::Unauthorized("Authorization header is not text"))?;
    let (scheme, token) = value.split_once(' ').ok_or(AppError::Unauthorized(
        "Authorization is not `Bearer <token>`",
    ))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AppError::Unauthorized("Authorization scheme is not Bearer"));
    }
    let claims = state.keys.verify(token.trim()).map_err(|e| {
        AppError::Unauthorized(match e {
            jwt::JwtError::Expired => "token expired",
            jwt::JwtError::BadSignature => "token signature does not match",
            jwt::JwtError::Algorithm => "token algorithm not allowed",
            jwt::JwtError::NoKey => "no signing key loaded",
            _ => "token malformed",
        })
    })?;
    Ok(AuthUser {
        user_id: claims.user_id,
        username: claims.username,
    })
}

/// Header the sidecar sets to the verified SPIFFE ID of the peer (it removes
/// any copy a client sends).
pub const PEER_ID_HEADER: &str = "x-spiffe-peer-id";

/// Who is asking, for rate limiting: the address the frontend saw (last
/// `X-Forwarded-For` entry) when the request came through the sidecar from a
/// verified workload, else the TCP peer's IP.
pub fn client_key(req: &HttpRequest) -> String {
    if req.headers().contains_key(PEER_ID_HEADER) {
        if let Some(fwd) = req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            return format!("fwd:{}", fwd.chars().take(64).collect::<String>());
        }
    }
    match req.peer_addr() {
        Some(a) => format!("ip:{}", a.ip()),
        None => "unknown".into(),
    }
}
