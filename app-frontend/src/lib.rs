//! # app-frontend
//!
//! The server-rendered web frontend of the zero-trust demo platform. Pages
//! are askama templates (compiled with the crate, HTML-escaped), styled by
//! a Tailwind stylesheet built ahead of time and embedded in the binary; a
//! small script of our own only enhances them (the zero-trust panel's
//! auto-refresh, countdowns, copy buttons, instant repository filter).
//!
//! ```text
//! browser ──HTTP──▶ app-frontend ──HTTP (BACKEND_URL)──▶ zt-sidecar (frontend, outbound mTLS)
//!    │ cookies: zt_session (backend JWT, HttpOnly, SameSite=Strict)       │ SPIFFE mTLS
//!    │          zt_csrf    (nonce for signed double-submit CSRF tokens)   ▼
//!    │                                                    zt-sidecar (backend) ─▶ app-backend /api
//!    └─ /zero-trust also reads the frontend sidecar's admin /status (FRONTEND_SIDECAR_ADMIN_URL)
//! ```
//!
//! The frontend holds no secret of its own beyond the CSRF key: the user's
//! session is the backend's JWT in a cookie, passed on as a bearer token and
//! verified by the backend on every call (a 401 means "signed out").
//!
//! [`app`] builds the application, so `main` and the tests serve exactly
//! the same routes, middleware and error pages.
#![forbid(unsafe_code)]

pub mod assets;
pub mod backend;
pub mod body_deadline;
pub mod config;
pub mod errors;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod handlers;
pub mod session;
pub mod views;
pub mod zero_trust;

use std::net::TcpListener;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Server, Service, ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};

pub use backend::{BackendClient, BackendError};
pub use config::{ConfigError, FrontendConfig};
pub use errors::AppError;

/// Largest form body accepted (the biggest legitimate form is well under 4 KiB).
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// Seconds in-flight requests get to finish on SIGTERM/SIGINT.
pub const SHUTDOWN_GRACE_SECONDS: u64 = 10;

/// Content-Security-Policy of every response: only our own script and
/// stylesheet; avatars may come from anywhere over http(s).
pub const CONTENT_SECURITY_POLICY: &str =
    "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' https: http: data:; connect-src 'self'; form-action 'self'; \
     frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Shared by every request.
#[derive(Debug)]
pub struct AppState {
    /// Configuration.
    pub config: FrontendConfig,
    /// Backend and sidecar client.
    pub backend: BackendClient,
    /// Sessions the backend accepted (for the zero-trust page's degraded view).
    pub accepted: session::AcceptedSessions,
}

/// The application state for `config`.
pub fn state(config: FrontendConfig) -> Result<web::Data<AppState>, BackendError> {
    let backend = BackendClient::new(&config)?;
    Ok(web::Data::new(AppState {
        config,
        backend,
        accepted: session::AcceptedSessions::default(),
    }))
}

/// Routes, body limits and friendly extractor errors, without middleware.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::FormConfig::default()
            .limit(MAX_FORM_BYTES)
            .error_handler(|err, _req| {
                let e = match err {
                    actix_web::error::UrlencodedError::Overflow { .. } => AppError::PayloadTooLarge,
                    actix_web::error::UrlencodedError::Payload(ref p)
                        if body_deadline::is_too_slow(p) =>
                    {
                        AppError::BodyTooSlow
                    }
                    actix_web::error::UrlencodedError::ContentType => AppError::BadRequest(
                        "This address accepts HTML form submissions only.".into(),
                    ),
                    _ => AppError::BadRequest(
                        "The form could not be read. Reload the page and try again.".into(),
                    ),
                };
                e.into()
            }),
    )
    .app_data(web::QueryConfig::default().error_handler(|_err, _req| {
        AppError::BadRequest(
            "The address has query parameters this page does not understand.".into(),
        )
        .into()
    }))
    .configure(handlers::routes);
}

/// The whole application: [`configure`] plus security headers, request
/// logging (method, path, status, time — never query strings or bodies) and
/// the body deadline ([`body_deadline`], `FRONTEND_BODY_TIMEOUT`).
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let body_timeout = state.config.body_timeout;
    App::new()
        .app_data(state)
        .wrap(
            DefaultHeaders::new()
                .add((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
                .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .add((header::X_FRAME_OPTIONS, "DENY"))
                .add((header::REFERRER_POLICY, "same-origin"))
                .add((
                    "permissions-policy",
                    "camera=(), microphone=(), geolocation=()",
                ))
                // Pages hold per-user data; static files set their own.
                .add((header::CACHE_CONTROL, "no-store")),
        )
        .wrap_fn(|req, srv| {
            let method = req.method().clone();
            let path: String = req.path().chars().take(200).collect();
            let start = Instant::now();
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                tracing::info!(
                    method = %method,
                    path = %path.escape_debug(),
                    status = res.status().as_u16(),
                    ms = start.elapsed().as_millis() as u64,
                    "request"
                );
                Ok(res)
            }
        })
        .wrap_fn(move |mut req, srv| {
            let request_body = body_deadline::limit(&mut req, body_timeout);
            let fut = srv.call(req);
            async move {
                let res = fut.await?;
                Ok(res.map_body(|_, body| body_deadline::Kept::new(body, request_body)))
            }
        })
        .configure(configure)
}

/// An HTTP server for [`app`] on `listener`, draining for
/// [`SHUTDOWN_GRACE_SECONDS`] on SIGTERM/SIGINT. Await (or spawn) the
/// returned [`Server`] to run it.
///
/// Connections are not kept alive: actix bounds the time a client takes to
/// send a connection's first request head only, so a client could hold a
/// kept-alive connection open for ever by sending the first byte of a next
/// request and nothing more ([`body_deadline`]). A connection serves the
/// requests its client sent at once (pipelined), then closes; a page costs
/// a connection per request (its stylesheet and script are cached for good
/// after the first visit).
pub fn server(state: web::Data<AppState>, listener: TcpListener) -> std::io::Result<Server> {
    Ok(HttpServer::new(move || app(state.clone()))
        .keep_alive(actix_web::http::KeepAlive::Disabled)
        .shutdown_timeout(SHUTDOWN_GRACE_SECONDS)
        .listen(listener)?
        .run())
}
