//! Page templates (askama: compiled with the crate, HTML-escaped by
//! default) and the [`Layout`] every page shares.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpRequest, HttpResponse};
use askama::Template;

use crate::assets::assets;
use crate::errors::AppError;
use crate::session::{cookie_secure, CsrfNonce, FormFor, Session};
use crate::zero_trust::ZtView;
use crate::AppState;

/// A one-line message at the top of a page.
#[derive(Debug, Clone)]
pub struct Flash {
    /// `success`, `info` or `error` (picks the colours and the ARIA role).
    pub kind: &'static str,
    /// The text.
    pub text: String,
}

/// Messages a redirect may ask for with `?msg=<code>`: the code picks a
/// fixed text, so nothing from the URL is ever shown.
pub fn flash_for(code: Option<&str>) -> Option<Flash> {
    let (kind, text) = match code? {
        "logged_out" => ("success", "You have signed out."),
        "logged_out_here" => (
            "error",
            "You have signed out of this browser, but the backend could not revoke the \
             session: whoever copied its token could use it until it expires (at most an \
             hour after you signed in).",
        ),
        "expired" => (
            "info",
            "Your session has expired or is no longer valid. Please sign in again.",
        ),
        "registered" => ("success", "Your account is ready. Please sign in."),
        "welcome" => ("success", "Welcome! Your account is ready."),
        "token_saved" => ("success", "GitHub token saved and verified with GitHub."),
        "token_removed" => ("success", "GitHub token removed."),
        _ => return None,
    };
    Some(Flash {
        kind,
        text: text.to_string(),
    })
}

/// A link of the main navigation.
#[derive(Debug, Clone)]
pub struct NavItem {
    /// Target.
    pub href: &'static str,
    /// Text.
    pub label: &'static str,
    /// The page being shown (gets `aria-current="page"`).
    pub current: bool,
}

const NAV: [(&str, &str); 5] = [
    ("/", "Dashboard"),
    ("/github", "GitHub token"),
    ("/github/repos", "Repositories"),
    ("/github/profile", "Profile"),
    ("/zero-trust", "Zero trust"),
];

/// What `base.html` needs.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `<title>` and heading context.
    pub title: String,
    /// Stylesheet URL.
    pub css: &'static str,
    /// Script URL.
    pub js: &'static str,
    /// Signed-in user (shows the navigation and the sign-out button).
    pub user: Option<String>,
    /// CSRF token for the forms of this page.
    pub csrf: String,
    /// Main navigation.
    pub nav: Vec<NavItem>,
    /// Message on top.
    pub flash: Option<Flash>,
    /// Without JavaScript, reload the page every this many seconds.
    pub noscript_refresh: Option<u32>,
    /// Signed out: offer "Sign in" / "Create account" (error pages, which
    /// do not know who is asking, show neither).
    pub account_links: bool,
}

/// Per-request page context: builds [`Layout`]s and the response (setting
/// the CSRF cookie when it is new).
pub struct Page<'a> {
    req: &'a HttpRequest,
    nonce: CsrfNonce,
    csrf: String,
    secure: bool,
    user: Option<String>,
}

impl<'a> Page<'a> {
    /// For `req`, signed in as `session` (if any); its forms are bound to
    /// the request's session cookie ([`FormFor::Session`]).
    pub fn new(req: &'a HttpRequest, state: &AppState, session: Option<&Session>) -> Self {
        Self::with_forms(req, state, session, FormFor::Session)
    }

    /// The sign-in and registration pages: their forms are bound to no
    /// session ([`FormFor::SigningIn`]).
    pub fn signing_in(req: &'a HttpRequest, state: &AppState) -> Self {
        Self::with_forms(req, state, None, FormFor::SigningIn)
    }

    fn with_forms(
        req: &'a HttpRequest,
        state: &AppState,
        session: Option<&Session>,
        forms: FormFor,
    ) -> Self {
        let nonce = CsrfNonce::of(req);
        let csrf = nonce.token(&state.config.csrf_key, req, forms);
        Self {
            req,
            nonce,
            csrf,
            secure: cookie_secure(req, state.config.cookie_secure),
            user: session.map(|s| s.username.clone()),
        }
    }

    /// A layout titled `title` with `active` (a nav href) highlighted.
    pub fn layout(&self, title: &str, active: &str) -> Layout {
        Layout {
            title: title.to_string(),
            css: assets().css_url.as_str(),
            js: assets().js_url.as_str(),
            user: self.user.clone(),
            csrf: self.csrf.clone(),
            nav: NAV
                .iter()
                .map(|(href, label)| NavItem {
                    href,
                    label,
                    current: *href == active,
                })
                .collect(),
            flash: None,
            noscript_refresh: None,
            account_links: true,
        }
    }

    /// The CSRF token for forms.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// Renders `tpl` with `status`.
    pub fn render(
        &self,
        status: StatusCode,
        tpl: &impl Template,
    ) -> Result<HttpResponse, AppError> {
        let html = tpl
            .render()
            .map_err(|e| AppError::Internal(format!("template: {e}")))?;
        let mut resp = HttpResponse::build(status);
        resp.insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"));
        if let Some(c) = self.nonce.cookie(self.secure) {
            resp.cookie(c);
        }
        Ok(resp.body(html))
    }

    /// The request.
    pub fn req(&self) -> &HttpRequest {
        self.req
    }
}

/// `/login`.
#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    /// Layout.
    pub layout: Layout,
    /// Validated `next` ("" = dashboard).
    pub next: String,
    /// The user name typed (never the password).
    pub username: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
}

/// `/register`.
#[derive(Template)]
#[template(path = "register.html")]
pub struct RegisterPage {
    /// Layout.
    pub layout: Layout,
    /// Typed user name.
    pub username: String,
    /// Typed e-mail.
    pub email: String,
    /// Why the last attempt failed.
    pub error: Option<String>,
    /// Which field the error is about (`username`, `email`, `password`).
    pub error_field: &'static str,
}

/// `/logout` (GET: confirmation).
#[derive(Template)]
#[template(path = "logout.html")]
pub struct LogoutPage {
    /// Layout.
    pub layout: Layout,
    /// Whether a session cookie is present.
    pub signed_in: bool,
}

/// A GitHub status as shown.
#[derive(Debug, Clone)]
pub struct GithubStatusView {
    /// Token stored.
    pub configured: bool,
    /// When stored.
    pub configured_at: Option<crate::format::When>,
    /// When last used.
    pub last_accessed: Option<crate::format::When>,
}

/// `/` (dashboard).
#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    /// Layout.
    pub layout: Layout,
    /// User name.
    pub username: String,
    /// E-mail.
    pub email: Option<String>,
    /// Member since.
    pub member_since: Option<crate::format::When>,
    /// GitHub status, or why it is unknown.
    pub github: Result<GithubStatusView, String>,
}

/// `/github`.
#[derive(Template)]
#[template(path = "github.html")]
pub struct GithubPage {
    /// Layout.
    pub layout: Layout,
    /// Current status.
    pub status: GithubStatusView,
    /// Why the last save/remove failed.
    pub error: Option<String>,
}

/// One repository row.
#[derive(Debug, Clone)]
pub struct RepoRow {
    /// Name.
    pub name: String,
    /// `owner/name`.
    pub full_name: String,
    /// Safe http(s) link.
    pub url: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Language.
    pub language: Option<String>,
    /// Private repository.
    pub private: bool,
    /// Stars, formatted.
    pub stars: String,
    /// Last update.
    pub updated: Option<crate::format::When>,
    /// Lower-case text the instant filter matches against.
    pub search: String,
}

/// `/github/repos`.
#[derive(Template)]
#[template(path = "repos.html")]
pub struct ReposPage {
    /// Layout.
    pub layout: Layout,
    /// Rows of this page.
    pub repos: Vec<RepoRow>,
    /// Filter text.
    pub q: String,
    /// Page number.
    pub page: u32,
    /// Link to the previous page.
    pub prev_url: Option<String>,
    /// Link to the next page.
    pub next_url: Option<String>,
    /// Not configured: show the link to `/github` instead.
    pub not_configured: bool,
    /// A GitHub problem reported by the backend.
    pub error: Option<String>,
    /// Text under the heading (counts, search scope).
    pub summary: String,
}

impl ReposPage {
    /// Where "Try again" leads after a GitHub error: this page, or the
    /// list's start when a filter is active.
    pub fn retry_url(&self) -> String {
        if self.q.is_empty() {
            format!("/github/repos?page={}", self.page)
        } else {
            "/github/repos".into()
        }
    }
}

/// `/github/profile`.
#[derive(Template)]
#[template(path = "profile.html")]
pub struct ProfilePage {
    /// Layout.
    pub layout: Layout,
    /// The profile, when available.
    pub profile: Option<ProfileView>,
    /// Not configured.
    pub not_configured: bool,
    /// A GitHub problem reported by the backend.
    pub error: Option<String>,
}

/// A GitHub profile as shown.
#[derive(Debug, Clone)]
pub struct ProfileView {
    /// Login.
    pub login: String,
    /// First letter of the login (placeholder avatar).
    pub initial: String,
    /// Display name.
    pub name: Option<String>,
    /// Safe avatar URL.
    pub avatar: Option<String>,
    /// Safe profile link.
    pub url: Option<String>,
    /// Bio.
    pub bio: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Location.
    pub location: Option<String>,
    /// Public repositories.
    pub public_repos: String,
    /// Followers.
    pub followers: String,
    /// Following.
    pub following: String,
}

/// `/zero-trust`.
#[derive(Template)]
#[template(path = "zero_trust.html")]
pub struct ZeroTrustPage {
    /// Layout.
    pub layout: Layout,
    /// The live panel.
    pub zt: ZtView,
}

/// `/zero-trust/panel`: the panel alone, for the auto-refresh script.
#[derive(Template)]
#[template(path = "zt_panel.html")]
pub struct ZtPanel {
    /// The panel.
    pub zt: ZtView,
}

/// Friendly error page (404, 403, 500, 503 …).
#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    /// Layout.
    pub layout: Layout,
    /// HTTP status code.
    pub status: u16,
    /// Heading.
    pub heading: String,
    /// Explanation.
    pub message: String,
    /// A local link to try again.
    pub retry: Option<String>,
}
