//! # app-backend
//!
//! The platform's "real application": users with argon2id passwords and
//! HS256 JWTs on PostgreSQL, and per-user GitHub tokens in OpenBao. It never
//! talks to SPIRE or OpenBao itself: its zt-sidecar writes credentials files
//! and proxies the allow-listed OpenBao calls.
//!
//! ```text
//!   zt-sidecar ──writes──▶ <secrets>/db.json, db-migrator.json, jwt-signing-key.json
//!       ▲                        │ inotify + 2 s poll
//!       │ unix:openbao.sock      ▼
//!   app-backend ── KV (GitHub tokens)    ArcSwap<deadpool Pool>  ──▶ PostgreSQL (runtime user)
//!       │                                 migrations at start-up  ──▶ PostgreSQL (app_owner)
//!       └──▶ GitHub API (or the local stand-in)
//! ```
//!
//! `configure` registers every route, so `main` and tests build the same
//! app; [`run::run`] wires state, background tasks and the HTTP server.
//! Contracts: docs/contracts.md (1: files, 2: proxy, 3: sidecar admin, 5: this API).
#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod config;
pub mod db;
pub mod errors;
pub mod extract;
#[doc(hidden)]
pub mod fuzzing;
pub mod github;
pub mod handlers;
pub mod metrics;
pub mod models;
pub mod openbao;
pub mod run;
pub mod secrets;
pub mod sidecar;
pub mod state;

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::web;

use crate::errors::method_not_allowed;
use crate::handlers::{auth as auth_h, github as github_h, health, openapi, zt};
use crate::state::AppState;

/// Largest JSON request body (every valid body is far smaller).
pub const MAX_JSON_BODY: usize = 16 * 1024;

/// Registers every route, the JSON/query error handlers and the 404/405
/// JSON answers. The caller adds `web::Data<AppState>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(MAX_JSON_BODY)
            .error_handler(errors::json_error),
    )
    .app_data(web::QueryConfig::default().error_handler(errors::query_error))
    .service(route("/healthz", Method::GET, health::healthz))
    .service(route("/readyz", Method::GET, health::readyz))
    .service(route("/metrics", Method::GET, health::metrics))
    .service(route("/api/openapi.json", Method::GET, openapi::document))
    .service(route("/api/auth/register", Method::POST, auth_h::register))
    .service(route("/api/auth/login", Method::POST, auth_h::login))
    .service(route("/api/auth/logout", Method::POST, auth_h::logout))
    .service(route("/api/auth/me", Method::GET, auth_h::me))
    .service(route(
        "/api/github/configure",
        Method::POST,
        github_h::configure,
    ))
    .service(route("/api/github/status", Method::GET, github_h::status))
    .service(route(
        "/api/github/token",
        Method::DELETE,
        github_h::delete_token,
    ))
    .service(route("/api/github/repos", Method::GET, github_h::repos))
    .service(route("/api/github/user", Method::GET, github_h::user))
    .service(route("/api/zt/status", Method::GET, zt::status))
    .default_service(web::to(errors::not_found));
}

/// One path, one method; any other method gets `405` with `Allow` naming
/// the one it supports (RFC 9110 requires it; schemathesis checks it).
fn route<F, Args>(path: &str, method: Method, handler: F) -> actix_web::Resource
where
    F: actix_web::Handler<Args>,
    Args: actix_web::FromRequest + 'static,
    F::Output: actix_web::Responder + 'static,
{
    let allow = method.to_string();
    web::resource(path)
        .route(web::route().method(method).to(handler))
        .default_service(web::to(move || method_not_allowed(allow.clone())))
}

/// Middleware: refuses a request whose `Host` is not ours (see
/// [`auth::is_our_host`]) with `421 misdirected_request`, before any handler
/// runs: a page that reaches the loopback port by DNS rebinding must not be
/// able to read any answer, not even the OpenAPI document.
pub async fn require_our_host(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::EitherBody<impl MessageBody>>, actix_web::Error> {
    let ours = match (
        req.headers().get(actix_web::http::header::HOST),
        req.app_data::<web::Data<AppState>>(),
    ) {
        (Some(h), Some(state)) => h
            .to_str()
            .is_ok_and(|h| auth::is_our_host(h, &state.config.allowed_hosts)),
        _ => false,
    };
    if !ours {
        let (http_req, _) = req.into_parts();
        let resp = actix_web::ResponseError::error_response(&errors::AppError::MisdirectedRequest);
        return Ok(ServiceResponse::new(http_req, resp).map_into_right_body());
    }
    Ok(next.call(req).await?.map_into_left_body())
}

/// Middleware: metrics per route and one debug line per request (method,
/// route, status, time — never headers or bodies).
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().clone();
    let res = next.call(req).await?;
    let took = start.elapsed();
    let route = res.request().match_pattern();
    if let Some(state) = res.request().app_data::<web::Data<AppState>>() {
        state.metrics.observe_http(
            method.as_str(),
            route.as_deref(),
            res.status().as_u16(),
            took,
        );
    }
    tracing::debug!(
        method = %method,
        route = route.as_deref().unwrap_or("unmatched"),
        status = res.status().as_u16(),
        micros = took.as_micros() as u64,
        "request"
    );
    Ok(res)
}
