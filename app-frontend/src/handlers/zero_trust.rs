//! `/zero-trust` and `/zero-trust/panel` (the part the script refreshes).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use time::OffsetDateTime;

use crate::backend::BackendError;
use crate::errors::AppError;
use crate::session::{cookie_secure, login_url, Session, SessionCookie};
use crate::views::{Page, ZeroTrustPage, ZtPanel};
use crate::zero_trust::ZtView;
use crate::AppState;

/// Without JavaScript the page reloads itself this often (seconds); the
/// script refreshes the panel every `data-refresh-ms` instead.
pub const NOSCRIPT_REFRESH_SECONDS: u32 = 10;

async fn view(req: &HttpRequest, state: &AppState, session: &Session) -> Result<ZtView, AppError> {
    let (backend, frontend) = tokio::join!(
        state.backend.zt_status(session.token()),
        state.backend.own_sidecar_status()
    );
    let backend = match backend {
        Ok(status) => {
            state.accepted.record(session.token());
            Ok(status)
        }
        // 403 `forbidden`: a verified session that is not an operator's
        // (the backend checks the token before the role; nothing else on
        // the way answers that).
        Err(e) if matches!(&e, BackendError::Api { status: 403, code, .. } if code == "forbidden") =>
        {
            state.accepted.record(session.token());
            Err(e)
        }
        Err(BackendError::Unauthorized) => {
            state.accepted.forget(session.token());
            return Err(AppError::login_required(req, true));
        }
        Err(e) => {
            tracing::warn!(error = %e, "backend zero-trust status unavailable");
            // Only the backend can verify the token, and an error answer
            // does not say it did (a 503 may come from the revocation check
            // itself): the degraded view is for sessions it accepted before.
            if !state.accepted.contains(session.token()) {
                return Err(match e {
                    BackendError::Api { .. } => AppError::from_backend(e, req),
                    e => AppError::BackendUnavailable {
                        detail: e.to_string(),
                        retry: Some("/zero-trust".into()),
                    },
                });
            }
            Err(e)
        }
    };
    if let Err(e) = &frontend {
        tracing::warn!(error = %e, "frontend sidecar status unavailable");
    }
    Ok(ZtView::build(
        backend.as_ref().map(Clone::clone),
        frontend.as_ref().map(Clone::clone),
        OffsetDateTime::now_utc(),
    ))
}

/// `GET /zero-trust`.
pub async fn page(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, AppError> {
    let zt = view(&req, &state, &session).await?;
    let page = Page::new(&req, &state, Some(&session));
    let mut layout = page.layout("Zero trust, live", "/zero-trust");
    layout.noscript_refresh = Some(NOSCRIPT_REFRESH_SECONDS);
    page.render(StatusCode::OK, &ZeroTrustPage { layout, zt })
}

/// `GET /zero-trust/panel`: the panel alone (HTML fragment). Without a
/// session it redirects to sign in, coming back to `/zero-trust` (the
/// script follows the redirect).
pub async fn panel(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, AppError> {
    let back_to_page = |expired: bool| AppError::LoginRequired {
        location: login_url(Some("/zero-trust"), expired.then_some("expired")),
        clear_cookie: expired,
        secure: cookie_secure(&req, state.config.cookie_secure),
    };
    let session = match Session::read(&req) {
        SessionCookie::Valid(s) => s,
        SessionCookie::Absent => return Err(back_to_page(false)),
        SessionCookie::Unusable => return Err(back_to_page(true)),
    };
    let zt = match view(&req, &state, &session).await {
        Err(AppError::LoginRequired { .. }) => return Err(back_to_page(true)),
        other => other?,
    };
    Page::new(&req, &state, Some(&session)).render(StatusCode::OK, &ZtPanel { zt })
}
