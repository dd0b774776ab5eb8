//! [`AppError`]: every way a request can fail, rendered as a friendly page
//! (or a redirect to sign in). The cause is logged once, here; the page
//! shows a safe message.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use askama::Template;

use crate::assets::assets;
use crate::backend::BackendError;
use crate::session::{clear_session_cookie, cookie_secure, login_url, safe_next};
use crate::views::{ErrorPage, Layout};
use crate::AppState;

/// Why a request could not be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// No such page (404).
    #[error("not found")]
    NotFound,
    /// Input we cannot use, with a message for the user (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A form body over the size limit (413).
    #[error("form too large")]
    PayloadTooLarge,
    /// A form body that did not arrive within `FRONTEND_BODY_TIMEOUT` (408).
    #[error("form body too slow")]
    BodyTooSlow,
    /// A POST without a valid CSRF token (403).
    #[error("csrf token missing or invalid")]
    CsrfRejected,
    /// A protected page without a usable session: 303 to `location`,
    /// deleting the session cookie when `clear_cookie`.
    #[error("sign-in required")]
    LoginRequired {
        /// `/login?next=…`.
        location: String,
        /// Delete the (unusable) session cookie.
        clear_cookie: bool,
        /// The deleting cookie gets `Secure`.
        secure: bool,
    },
    /// The backend cannot be reached (down, timeout, mesh refused) (503).
    #[error("backend unavailable: {detail}")]
    BackendUnavailable {
        /// Cause, for the log.
        detail: String,
        /// Link to try again.
        retry: Option<String>,
    },
    /// The backend answered with an error the page has no better place for
    /// (502); `message` is the backend's message for humans.
    #[error("backend error: {detail}")]
    Backend {
        /// Message for the user.
        message: String,
        /// Cause, for the log.
        detail: String,
    },
    /// A bug on our side (500).
    #[error("internal error: {0}")]
    Internal(String),
}

/// The path (and, for GET, the query) of `req`, as a `next` target.
pub fn here(req: &HttpRequest) -> String {
    if req.method() == actix_web::http::Method::GET {
        req.uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| req.path().to_string())
    } else {
        req.path().to_string()
    }
}

impl AppError {
    /// Redirect to sign in, coming back to this page afterwards; `expired`
    /// says the session cookie was there but is no longer usable.
    pub fn login_required(req: &HttpRequest, expired: bool) -> Self {
        let secure = req
            .app_data::<web::Data<AppState>>()
            .is_some_and(|s| cookie_secure(req, s.config.cookie_secure));
        let next = here(req);
        AppError::LoginRequired {
            location: login_url(Some(&next), expired.then_some("expired")),
            clear_cookie: expired,
            secure,
        }
    }

    /// Maps a failed backend call made for `req`.
    pub fn from_backend(e: BackendError, req: &HttpRequest) -> Self {
        match e {
            BackendError::Unauthorized => AppError::login_required(req, true),
            BackendError::Unreachable(_)
            | BackendError::Timeout(_)
            | BackendError::Unavailable { .. } => AppError::BackendUnavailable {
                detail: e.to_string(),
                retry: (req.method() == actix_web::http::Method::GET)
                    .then(|| here(req))
                    .and_then(|h| safe_next(&h)),
            },
            BackendError::Api { ref message, .. } => AppError::Backend {
                message: message.clone(),
                detail: e.to_string(),
            },
            BackendError::Protocol(_) => AppError::Backend {
                message: "The backend sent an answer this page could not read.".into(),
                detail: e.to_string(),
            },
        }
    }

    fn page(&self) -> (StatusCode, &'static str, String, Option<String>) {
        match self {
            AppError::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is nothing at this address. Check the link, or start again from the dashboard.".into(),
                None,
            ),
            AppError::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                "That request could not be used",
                m.clone(),
                None,
            ),
            AppError::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "That form was too large",
                "The submitted form is larger than this site accepts. Shorten the values and try again.".into(),
                None,
            ),
            AppError::BodyTooSlow => (
                StatusCode::REQUEST_TIMEOUT,
                "That form arrived too slowly",
                "The connection delivered the form too slowly, so it was not used and nothing was changed. \
                 Check your connection, then go back and submit it again."
                    .into(),
                None,
            ),
            AppError::CsrfRejected => (
                StatusCode::FORBIDDEN,
                "This form has expired",
                "For your protection every form carries a one-time check, and this one was missing or out of date \
                 (or cookies are disabled). Go back, reload the page and submit it again."
                    .into(),
                None,
            ),
            AppError::LoginRequired { .. } => (
                StatusCode::SEE_OTHER,
                "Sign-in required",
                String::new(),
                None,
            ),
            AppError::BackendUnavailable { retry, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The backend is unreachable",
                "This page talks to the backend only through the frontend's zt-sidecar and its mutual-TLS \
                 tunnel, and right now no answer came back: the backend or one of the sidecars is down or \
                 restarting. Nothing was lost — try again in a few seconds."
                    .into(),
                retry.clone(),
            ),
            AppError::Backend { message, .. } => (
                StatusCode::BAD_GATEWAY,
                "The backend reported a problem",
                if message.trim().is_empty() {
                    "The backend could not complete the request.".into()
                } else {
                    message.clone()
                },
                None,
            ),
            AppError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong on our side",
                "The page could not be shown. The problem has been logged; please try again.".into(),
                None,
            ),
        }
    }
}

/// An error page with the bare layout (no navigation: the user is not known).
pub fn error_page(
    status: StatusCode,
    heading: &str,
    message: &str,
    retry: Option<String>,
) -> HttpResponse {
    let tpl = ErrorPage {
        layout: Layout {
            title: heading.to_string(),
            css: assets().css_url.as_str(),
            js: assets().js_url.as_str(),
            user: None,
            csrf: String::new(),
            nav: Vec::new(),
            flash: None,
            noscript_refresh: None,
            account_links: false,
        },
        status: status.as_u16(),
        heading: heading.to_string(),
        message: message.to_string(),
        retry,
    };
    match tpl.render() {
        Ok(html) => HttpResponse::build(status)
            .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
            .body(html),
        Err(e) => {
            tracing::error!(error = %e, "error page template failed");
            HttpResponse::build(status)
                .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
                .body(heading.to_string())
        }
    }
}

impl ResponseError for AppError {
    fn status_code(&self) -> StatusCode {
        self.page().0
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            AppError::LoginRequired {
                location,
                clear_cookie,
                secure,
            } => {
                let mut r = HttpResponse::SeeOther();
                r.insert_header((header::LOCATION, location.as_str()));
                if *clear_cookie {
                    r.cookie(clear_session_cookie(*secure));
                }
                return r.finish();
            }
            AppError::BackendUnavailable { detail, .. } => {
                tracing::warn!(cause = %detail, "backend unavailable")
            }
            AppError::Backend { detail, .. } => tracing::warn!(cause = %detail, "backend error"),
            AppError::Internal(d) => tracing::error!(cause = %d, "internal error"),
            AppError::CsrfRejected => tracing::info!("form refused: csrf token missing or invalid"),
            AppError::BodyTooSlow => tracing::info!(
                "form refused: its body did not arrive within FRONTEND_BODY_TIMEOUT; closing the connection"
            ),
            _ => {}
        }
        let (status, heading, message, retry) = self.page();
        error_page(status, heading, &message, retry)
    }
}
