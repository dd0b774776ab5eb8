//! `/login`, `/register`, `/logout`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use crate::backend::BackendError;
use crate::errors::AppError;
use crate::session::{
    check_csrf, clear_session_cookie, cookie_secure, safe_next, session_cookie, FormFor, Session,
    SESSION_COOKIE,
};
use crate::views::{flash_for, LoginPage, LogoutPage, Page, RegisterPage};
use crate::AppState;

/// Longest user name accepted (the database column is 50 characters).
pub const MAX_USERNAME_CHARS: usize = 50;
/// Longest e-mail accepted (the database column is 100 characters).
pub const MAX_EMAIL_CHARS: usize = 100;
/// Shortest password (the platform's rule).
pub const MIN_PASSWORD_CHARS: usize = 6;
/// Longest password accepted (hashing very long inputs only costs time).
pub const MAX_PASSWORD_CHARS: usize = 1024;

/// `?next=&msg=` of the login page.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginQuery {
    next: String,
    msg: String,
}

/// The sign-in form. No `Debug`: it holds a password.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    username: String,
    password: String,
    next: String,
    csrf_token: String,
}

/// The registration form. No `Debug`: it holds a password.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RegisterForm {
    username: String,
    email: String,
    password: String,
    password_confirm: String,
    csrf_token: String,
}

/// The sign-out form.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LogoutForm {
    csrf_token: String,
}

fn login_page(
    req: &HttpRequest,
    state: &AppState,
    status: StatusCode,
    next: &str,
    username: &str,
    error: Option<String>,
    msg: Option<&str>,
) -> Result<HttpResponse, AppError> {
    let page = Page::signing_in(req, state);
    let mut layout = page.layout("Sign in", "");
    layout.flash = flash_for(msg);
    page.render(
        status,
        &LoginPage {
            layout,
            next: safe_next(next).unwrap_or_default(),
            username: username.to_string(),
            error,
        },
    )
}

/// `GET /login`.
pub async fn login_form(
    req: HttpRequest,
    state: web::Data<AppState>,
    q: web::Query<LoginQuery>,
) -> Result<HttpResponse, AppError> {
    login_page(
        &req,
        &state,
        StatusCode::OK,
        &q.next,
        "",
        None,
        Some(&q.msg),
    )
}

/// A message for a failed backend call on a sign-in/registration form, and
/// the status to answer with.
fn form_failure(e: &BackendError) -> (StatusCode, String) {
    match e {
        BackendError::Api {
            status,
            code,
            message,
            retry_after,
        } => {
            let status = StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY);
            let text = match (code.as_str(), retry_after) {
                ("rate_limited", Some(s)) => {
                    format!("Too many attempts. Please wait {s} seconds and try again.")
                }
                ("rate_limited", None) => "Too many attempts. Please wait a minute and try again.".into(),
                _ if message.trim().is_empty() => "The backend refused the request.".into(),
                _ => message.clone(),
            };
            (status, text)
        }
        BackendError::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            "Invalid username or password".into(),
        ),
        BackendError::Unreachable(_) | BackendError::Timeout(_) | BackendError::Unavailable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The backend is unreachable right now (it or one of the zt-sidecars is down). Nothing was saved; please try again in a few seconds.".into(),
        ),
        BackendError::Protocol(_) => (
            StatusCode::BAD_GATEWAY,
            "The backend sent an answer this page could not read. Please try again.".into(),
        ),
    }
}

fn log_failure(what: &str, e: &BackendError) {
    match e {
        BackendError::Api { .. } | BackendError::Unauthorized => {
            tracing::info!(error = %e, "{what} refused")
        }
        _ => tracing::warn!(error = %e, "{what} failed"),
    }
}

fn check_len(value: &str, max: usize, what: &str) -> Result<(), String> {
    if value.chars().count() > max {
        Err(format!("{what} is too long (at most {max} characters)."))
    } else if value.chars().any(char::is_control) {
        Err(format!("{what} contains control characters."))
    } else {
        Ok(())
    }
}

/// `POST /login`.
pub async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, AppError> {
    let f = form.into_inner();
    let username = f.username.trim();
    let fail =
        |status, msg: String| login_page(&req, &state, status, &f.next, username, Some(msg), None);
    if check_csrf(&req, &state, &f.csrf_token, FormFor::SigningIn).is_err() {
        return fail(
            StatusCode::FORBIDDEN,
            "This form had expired (or cookies are disabled). Please sign in again.".into(),
        );
    }
    if username.is_empty() || f.password.is_empty() {
        return fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Enter your username and password.".into(),
        );
    }
    if let Err(m) = check_len(username, MAX_USERNAME_CHARS, "The username").and(check_len(
        &f.password,
        MAX_PASSWORD_CHARS,
        "The password",
    )) {
        return fail(StatusCode::UNPROCESSABLE_ENTITY, m);
    }
    match state
        .backend
        .login(username, &f.password, req.peer_addr().map(|a| a.ip()))
        .await
    {
        Ok(r) => {
            let secure = cookie_secure(&req, state.config.cookie_secure);
            let target = safe_next(&f.next).unwrap_or_else(|| "/".to_string());
            tracing::info!(user = %r.user.username, "signed in");
            state.accepted.record(&r.access_token);
            Ok(HttpResponse::SeeOther()
                .cookie(session_cookie(&r.access_token, r.expires_in, secure))
                .insert_header((header::LOCATION, target))
                .finish())
        }
        Err(e) => {
            log_failure("sign-in", &e);
            let (status, msg) = form_failure(&e);
            fail(status, msg)
        }
    }
}

fn register_page(
    req: &HttpRequest,
    state: &AppState,
    status: StatusCode,
    username: &str,
    email: &str,
    error: Option<(&'static str, String)>,
) -> Result<HttpResponse, AppError> {
    let page = Page::signing_in(req, state);
    let (error_field, error) = match error {
        Some((f, e)) => (f, Some(e)),
        None => ("", None),
    };
    page.render(
        status,
        &RegisterPage {
            layout: page.layout("Create an account", ""),
            username: username.to_string(),
            email: email.to_string(),
            error,
            error_field,
        },
    )
}

/// `GET /register`.
pub async fn register_form(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    register_page(&req, &state, StatusCode::OK, "", "", None)
}

/// `POST /register`: creates the account, then signs in.
pub async fn register(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<RegisterForm>,
) -> Result<HttpResponse, AppError> {
    let f = form.into_inner();
    let username = f.username.trim();
    let email = f.email.trim();
    let fail = |status, field: &'static str, msg: String| {
        register_page(&req, &state, status, username, email, Some((field, msg)))
    };
    let invalid = StatusCode::UNPROCESSABLE_ENTITY;
    if check_csrf(&req, &state, &f.csrf_token, FormFor::SigningIn).is_err() {
        return fail(
            StatusCode::FORBIDDEN,
            "",
            "This form had expired (or cookies are disabled). Please submit it again.".into(),
        );
    }
    if username.is_empty() {
        return fail(invalid, "username", "Choose a username.".into());
    }
    if let Err(m) = check_len(username, MAX_USERNAME_CHARS, "The username") {
        return fail(invalid, "username", m);
    }
    if let Err(m) = check_len(email, MAX_EMAIL_CHARS, "The e-mail address") {
        return fail(invalid, "email", m);
    }
    if !email.is_empty() && !email.contains('@') {
        return fail(invalid, "email", "The e-mail address needs an @.".into());
    }
    if f.password.chars().count() < MIN_PASSWORD_CHARS {
        return fail(
            invalid,
            "password",
            format!("The password needs at least {MIN_PASSWORD_CHARS} characters."),
        );
    }
    if let Err(m) = check_len(&f.password, MAX_PASSWORD_CHARS, "The password") {
        return fail(invalid, "password", m);
    }
    if f.password != f.password_confirm {
        return fail(
            invalid,
            "password",
            "The two passwords do not match.".into(),
        );
    }
    let email_opt = (!email.is_empty()).then_some(email);
    if let Err(e) = state
        .backend
        .register(
            username,
            email_opt,
            &f.password,
            req.peer_addr().map(|a| a.ip()),
        )
        .await
    {
        log_failure("registration", &e);
        let field = match e.code() {
            // One code for a taken username or email (the backend does not
            // say which); the username is the usual cause.
            Some("registration_conflict") => "username",
            _ => "",
        };
        let (status, msg) = form_failure(&e);
        return fail(status, field, msg);
    }
    tracing::info!(user = %username, "registered");
    let secure = cookie_secure(&req, state.config.cookie_secure);
    match state
        .backend
        .login(username, &f.password, req.peer_addr().map(|a| a.ip()))
        .await
    {
        Ok(r) => {
            state.accepted.record(&r.access_token);
            Ok(HttpResponse::SeeOther()
                .cookie(session_cookie(&r.access_token, r.expires_in, secure))
                .insert_header((header::LOCATION, "/?msg=welcome"))
                .finish())
        }
        Err(e) => {
            // The account exists; only the automatic sign-in failed.
            log_failure("sign-in after registration", &e);
            Ok(HttpResponse::SeeOther()
                .insert_header((header::LOCATION, "/login?msg=registered"))
                .finish())
        }
    }
}

/// `GET /logout`: a confirmation button (signing out is a POST).
pub async fn logout_form(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, AppError> {
    let session = Session::read(&req).valid();
    let signed_in = req
        .cookie(SESSION_COOKIE)
        .is_some_and(|c| !c.value().is_empty());
    let page = Page::new(&req, &state, session.as_ref());
    page.render(
        StatusCode::OK,
        &LogoutPage {
            layout: page.layout("Sign out", ""),
            signed_in,
        },
    )
}

/// `POST /logout`: asks the backend to revoke the session's token, then
/// deletes the cookie. The cookie goes even if the backend cannot be reached
/// (the user asked to sign out of this browser); the failure is logged and
/// the sign-in page says the session could not be ended at the backend.
pub async fn logout(
    req: HttpRequest,
    state: web::Data<AppState>,
    form: web::Form<LogoutForm>,
) -> Result<HttpResponse, AppError> {
    if req
        .cookie(SESSION_COOKIE)
        .is_none_or(|c| c.value().is_empty())
    {
        // No session to end (it expired while the page was open): nothing
        // changes, so there is nothing to protect with the form's token.
        return Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/login?msg=logged_out"))
            .finish());
    }
    check_csrf(&req, &state, &form.csrf_token, FormFor::Session)?;
    let mut revoked = true;
    if let Some(session) = Session::read(&req).valid() {
        state.accepted.forget(session.token());
        match state.backend.logout(session.token()).await {
            // Already expired or revoked: nothing left to end.
            Ok(()) | Err(BackendError::Unauthorized) => {}
            Err(e) => {
                log_failure("logout", &e);
                revoked = false;
            }
        }
    }
    let secure = cookie_secure(&req, state.config.cookie_secure);
    let to = if revoked {
        "/login?msg=logged_out"
    } else {
        "/login?msg=logged_out_here"
    };
    Ok(HttpResponse::SeeOther()
        .cookie(clear_session_cookie(secure))
        .insert_header((header::LOCATION, to))
        .finish())
}
