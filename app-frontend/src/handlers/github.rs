//! `/` (dashboard), `/github`, `/github/repos`, `/github/profile`.

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::backend::models::{GithubStatus, Repo};
use crate::backend::BackendError;
use crate::errors::AppError;
use crate::format::{count, safe_link, when, Relative};
use crate::session::{check_csrf, encode_query_value, FormFor, Session};
use crate::views::{
    flash_for, DashboardPage, GithubPage, GithubStatusView, Page, ProfilePage, ProfileView,
    RepoRow, ReposPage,
};
use crate::AppState;

/// Repositories per page.
pub const PER_PAGE: u32 = 30;
/// Highest page number accepted.
pub const MAX_PAGE: u32 = 1000;
/// Longest filter text.
pub const MAX_FILTER_CHARS: usize = 100;
/// A filter searches this many backend pages of [`SCAN_PER_PAGE`] (the
/// most recently updated repositories first).
pub const MAX_SCAN_PAGES: u32 = 5;
/// Page size used while filtering (GitHub's maximum).
pub const SCAN_PER_PAGE: u32 = 100;
/// Longest GitHub token accepted (fine-grained tokens are 93 characters).
pub const MAX_TOKEN_CHARS: usize = 512;

/// `?msg=`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct MsgQuery {
    msg: String,
}

fn status_view(s: GithubStatus, now: OffsetDateTime) -> GithubStatusView {
    GithubStatusView {
        configured: s.configured,
        configured_at: when(s.configured_at.as_deref(), now, Relative::Ago),
        last_accessed: when(s.last_accessed.as_deref(), now, Relative::Ago),
    }
}

/// `GET /`.
pub async fn dashboard(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    q: web::Query<MsgQuery>,
) -> Result<HttpResponse, AppError> {
    let (me, gh) = tokio::join!(
        state.backend.me(session.token()),
        state.backend.github_status(session.token())
    );
    let me = me.map_err(|e| AppError::from_backend(e, &req))?;
    let now = OffsetDateTime::now_utc();
    let github = match gh {
        Ok(s) => Ok(status_view(s, now)),
        Err(BackendError::Unauthorized) => return Err(AppError::login_required(&req, true)),
        Err(e) => {
            tracing::warn!(error = %e, "github status unavailable");
            Err(github_problem(&e))
        }
    };
    let page = Page::new(&req, &state, Some(&session));
    let mut layout = page.layout("Dashboard", "/");
    layout.flash = flash_for(Some(&q.msg));
    page.render(
        StatusCode::OK,
        &DashboardPage {
            layout,
            username: me.username,
            email: me.email.filter(|e| !e.is_empty()),
            member_since: when(me.created_at.as_deref(), now, Relative::Ago),
            github,
        },
    )
}

/// How a page shows the backend refusing a GitHub read: its `429` (too
/// many GitHub requests by this user, `BACKEND_GITHUB_READS_PER_USER`)
/// stays a 429 with its `Retry-After`; anything else is a 502 (GitHub or
/// the secret store failed behind the backend).
fn refused_read(e: &BackendError) -> (StatusCode, Option<u64>) {
    match e {
        BackendError::Api {
            status: 429,
            retry_after,
            ..
        } => (StatusCode::TOO_MANY_REQUESTS, *retry_after),
        _ => (StatusCode::BAD_GATEWAY, None),
    }
}

/// `page` rendered with `status`, and `Retry-After` when there is one.
fn render_with_retry(
    page: &Page<'_>,
    (status, retry_after): (StatusCode, Option<u64>),
    tpl: &impl askama::Template,
) -> Result<HttpResponse, AppError> {
    with_retry_after(page.render(status, tpl), retry_after)
}

/// `resp` with `Retry-After: secs` when there is a value.
fn with_retry_after(
    resp: Result<HttpResponse, AppError>,
    retry_after: Option<u64>,
) -> Result<HttpResponse, AppError> {
    let mut resp = resp?;
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
    }
    Ok(resp)
}

/// A readable sentence for a failed GitHub-related call.
fn github_problem(e: &BackendError) -> String {
    match e {
        BackendError::Api { message, .. } if !message.trim().is_empty() => message.clone(),
        BackendError::Unreachable(_)
        | BackendError::Timeout(_)
        | BackendError::Unavailable { .. } => {
            "The backend is unreachable right now; please try again in a few seconds.".into()
        }
        _ => "The backend could not answer this request.".into(),
    }
}

async fn github_page(
    req: &HttpRequest,
    state: &AppState,
    session: &Session,
    status: StatusCode,
    error: Option<String>,
    msg: Option<&str>,
) -> Result<HttpResponse, AppError> {
    let s = state
        .backend
        .github_status(session.token())
        .await
        .map_err(|e| AppError::from_backend(e, req))?;
    let page = Page::new(req, state, Some(session));
    let mut layout = page.layout("GitHub token", "/github");
    layout.flash = flash_for(msg);
    page.render(
        status,
        &GithubPage {
            layout,
            status: status_view(s, OffsetDateTime::now_utc()),
            error,
        },
    )
}

/// `GET /github`.
pub async fn github(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    q: web::Query<MsgQuery>,
) -> Result<HttpResponse, AppError> {
    github_page(&req, &state, &session, StatusCode::OK, None, Some(&q.msg)).await
}

/// The token form. No `Debug`: it holds a token.
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TokenForm {
    action: String,
    token: String,
    csrf_token: String,
}

fn redirect(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// Why a token cannot be sent to GitHub, if so. Never quotes the token.
fn token_problem(token: &str) -> Option<String> {
    if token.is_empty() {
        Some("Paste a GitHub personal access token.".into())
    } else if token.chars().count() > MAX_TOKEN_CHARS {
        Some(format!(
            "That is too long for a GitHub token (at most {MAX_TOKEN_CHARS} characters)."
        ))
    } else if !token.chars().all(|c| c.is_ascii_graphic()) {
        Some("A GitHub token has no spaces or special characters; check what was pasted.".into())
    } else {
        None
    }
}

/// `POST /github`: `action=save` (configure or replace) or `action=remove`.
pub async fn github_post(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    form: web::Form<TokenForm>,
) -> Result<HttpResponse, AppError> {
    let f = form.into_inner();
    check_csrf(&req, &state, &f.csrf_token, FormFor::Session)?;
    match f.action.as_str() {
        "remove" => match state.backend.github_remove(session.token()).await {
            Ok(()) => Ok(redirect("/github?msg=token_removed")),
            Err(e) if e.code() == Some("not_configured") => {
                github_page(
                    &req,
                    &state,
                    &session,
                    StatusCode::NOT_FOUND,
                    Some("There was no token to remove.".into()),
                    None,
                )
                .await
            }
            Err(e) => Err(AppError::from_backend(e, &req)),
        },
        "save" | "" => {
            let token = f.token.trim();
            if let Some(problem) = token_problem(token) {
                return github_page(
                    &req,
                    &state,
                    &session,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some(problem),
                    None,
                )
                .await;
            }
            match state.backend.github_configure(session.token(), token).await {
                Ok(_) => Ok(redirect("/github?msg=token_saved")),
                Err(e @ BackendError::Api { .. }) => {
                    tracing::info!(error = %e, "github token refused");
                    let (status, retry_after) = match e {
                        BackendError::Api {
                            status,
                            retry_after,
                            ..
                        } => (
                            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                            retry_after,
                        ),
                        _ => (StatusCode::BAD_GATEWAY, None),
                    };
                    let page = github_page(
                        &req,
                        &state,
                        &session,
                        status,
                        Some(github_problem(&e)),
                        None,
                    )
                    .await;
                    with_retry_after(page, retry_after)
                }
                Err(e) => Err(AppError::from_backend(e, &req)),
            }
        }
        _ => Err(AppError::BadRequest(
            "Unknown action: the form offers \"save\" and \"remove\".".into(),
        )),
    }
}

/// `?page=&q=` of the repositories page (raw: validated by hand for
/// friendly messages).
#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ReposQuery {
    page: Option<String>,
    q: Option<String>,
}

fn parse_page(raw: Option<&str>) -> Result<u32, AppError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(1),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|p| (1..=MAX_PAGE).contains(p))
            .ok_or_else(|| {
                AppError::BadRequest(format!(
                    "The page number must be a whole number from 1 to {MAX_PAGE}."
                ))
            }),
    }
}

fn parse_filter(raw: Option<&str>) -> Result<String, AppError> {
    let q = raw.unwrap_or("").trim();
    if q.chars().count() > MAX_FILTER_CHARS {
        return Err(AppError::BadRequest(format!(
            "The filter is limited to {MAX_FILTER_CHARS} characters."
        )));
    }
    if q.chars().any(char::is_control) {
        return Err(AppError::BadRequest(
            "The filter contains control characters.".into(),
        ));
    }
    Ok(q.to_string())
}

fn row(r: Repo, now: OffsetDateTime) -> RepoRow {
    let search = format!(
        "{} {} {}",
        r.full_name.as_deref().unwrap_or(&r.name),
        r.description.as_deref().unwrap_or(""),
        r.language.as_deref().unwrap_or("")
    )
    .to_lowercase();
    RepoRow {
        full_name: r.full_name.clone().unwrap_or_else(|| r.name.clone()),
        url: safe_link(r.html_url.as_deref()),
        description: r.description.filter(|d| !d.trim().is_empty()),
        language: r.language.filter(|l| !l.trim().is_empty()),
        private: r.private,
        stars: count(r.stargazers_count),
        updated: when(r.updated_at.as_deref(), now, Relative::Ago),
        search,
        name: r.name,
    }
}

fn repos_url(page: u32, q: &str) -> String {
    if q.is_empty() {
        format!("/github/repos?page={page}")
    } else {
        format!("/github/repos?q={}&page={page}", encode_query_value(q))
    }
}

/// `GET /github/repos`.
pub async fn repos(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
    query: web::Query<ReposQuery>,
) -> Result<HttpResponse, AppError> {
    let page_no = parse_page(query.page.as_deref())?;
    let q = parse_filter(query.q.as_deref())?;
    let now = OffsetDateTime::now_utc();
    let token = session.token();

    // (rows of this page, has_next, summary) or the backend's complaint.
    let result: Result<(Vec<RepoRow>, bool, String), BackendError> = if q.is_empty() {
        state
            .backend
            .github_repos(token, page_no, PER_PAGE)
            .await
            .map(|p| {
                let n = p.repos.len();
                let rows: Vec<RepoRow> = p.repos.into_iter().map(|r| row(r, now)).collect();
                let summary = if n == 0 && page_no == 1 {
                    "No repositories yet.".to_string()
                } else {
                    format!("Page {page_no}, {n} repositories, most recently updated first.")
                };
                (rows, p.has_next, summary)
            })
    } else {
        let needle = q.to_lowercase();
        let mut matches = Vec::new();
        let mut scanned = 0usize;
        let mut truncated = false;
        let mut outcome = Ok(());
        for p in 1..=MAX_SCAN_PAGES {
            match state.backend.github_repos(token, p, SCAN_PER_PAGE).await {
                Ok(page) => {
                    scanned += page.repos.len();
                    matches.extend(
                        page.repos
                            .into_iter()
                            .map(|r| row(r, now))
                            .filter(|r| r.search.contains(&needle)),
                    );
                    if !page.has_next {
                        break;
                    }
                    truncated = p == MAX_SCAN_PAGES;
                }
                Err(e) => {
                    outcome = Err(e);
                    break;
                }
            }
        }
        outcome.map(|()| {
            let total = matches.len();
            let start = ((page_no - 1) * PER_PAGE) as usize;
            let rows: Vec<RepoRow> = matches
                .into_iter()
                .skip(start)
                .take(PER_PAGE as usize)
                .collect();
            let has_next = start + rows.len() < total;
            let scope = if truncated {
                format!("the {scanned} most recently updated repositories")
            } else {
                format!("all {scanned} repositories")
            };
            let summary = match total {
                0 => format!("No repository matches “{q}” among {scope}."),
                1 => format!("1 repository matches “{q}” among {scope}."),
                t => format!("{t} repositories match “{q}” among {scope}."),
            };
            (rows, has_next, summary)
        })
    };

    let page = Page::new(&req, &state, Some(&session));
    let mut tpl = ReposPage {
        layout: page.layout("Repositories", "/github/repos"),
        repos: Vec::new(),
        q: q.clone(),
        page: page_no,
        prev_url: None,
        next_url: None,
        not_configured: false,
        error: None,
        summary: String::new(),
    };
    let status = match result {
        Ok((rows, has_next, summary)) => {
            tpl.repos = rows;
            tpl.summary = summary;
            tpl.prev_url = (page_no > 1).then(|| repos_url(page_no - 1, &q));
            tpl.next_url = (has_next && page_no < MAX_PAGE).then(|| repos_url(page_no + 1, &q));
            (StatusCode::OK, None)
        }
        Err(e) if e.code() == Some("not_configured") => {
            tpl.not_configured = true;
            (StatusCode::OK, None)
        }
        Err(e @ BackendError::Api { .. }) => {
            tracing::warn!(error = %e, "repositories unavailable");
            tpl.error = Some(github_problem(&e));
            refused_read(&e)
        }
        Err(e) => return Err(AppError::from_backend(e, &req)),
    };
    render_with_retry(&page, status, &tpl)
}

/// `GET /github/profile`.
pub async fn profile(
    req: HttpRequest,
    state: web::Data<AppState>,
    session: Session,
) -> Result<HttpResponse, AppError> {
    let page = Page::new(&req, &state, Some(&session));
    let mut tpl = ProfilePage {
        layout: page.layout("GitHub profile", "/github/profile"),
        profile: None,
        not_configured: false,
        error: None,
    };
    let status = match state.backend.github_user(session.token()).await {
        Ok(u) => {
            tpl.profile = Some(ProfileView {
                avatar: safe_link(u.avatar_url.as_deref()),
                url: safe_link(u.html_url.as_deref()),
                name: u.name.filter(|s| !s.trim().is_empty()),
                bio: u.bio.filter(|s| !s.trim().is_empty()),
                company: u.company.filter(|s| !s.trim().is_empty()),
                location: u.location.filter(|s| !s.trim().is_empty()),
                public_repos: u.public_repos.map(count).unwrap_or_else(|| "—".into()),
                followers: u.followers.map(count).unwrap_or_else(|| "—".into()),
                following: u.following.map(count).unwrap_or_else(|| "—".into()),
                initial: u
                    .login
                    .chars()
                    .next()
                    .map(|c| c.to_uppercase().to_string())
                    .unwrap_or_default(),
                login: u.login,
            });
            (StatusCode::OK, None)
        }
        Err(e) if e.code() == Some("not_configured") => {
            tpl.not_configured = true;
            (StatusCode::OK, None)
        }
        Err(e @ BackendError::Api { .. }) => {
            tracing::warn!(error = %e, "github profile unavailable");
            tpl.error = Some(github_problem(&e));
            refused_read(&e)
        }
        Err(e) => return Err(AppError::from_backend(e, &req)),
    };
    render_with_retry(&page, status, &tpl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_numbers_are_checked() {
        assert_eq!(parse_page(None).unwrap(), 1);
        assert_eq!(parse_page(Some("")).unwrap(), 1);
        assert_eq!(parse_page(Some(" 7 ")).unwrap(), 7);
        for bad in ["0", "-1", "1001", "two", "1e3", "99999999999999999999"] {
            assert!(parse_page(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn filters_are_checked() {
        assert_eq!(parse_filter(Some("  zero ")).unwrap(), "zero");
        assert!(parse_filter(Some(&"x".repeat(MAX_FILTER_CHARS + 1))).is_err());
        assert!(parse_filter(Some("a\u{0}b")).is_err());
    }

    #[test]
    fn tokens_are_checked_without_quoting_them() {
        assert!(token_problem("ghp_abcdef0123456789").is_none());
        for bad in ["", "ghp_ abc", "ghp_\u{7f}", "tøken"] {
            let p = token_problem(bad).unwrap();
            assert!(bad.is_empty() || !p.contains(bad), "{p}");
        }
        assert!(token_problem(&"a".repeat(MAX_TOKEN_CHARS + 1)).is_some());
    }

    #[test]
    fn repos_url_encodes_the_filter() {
        assert_eq!(repos_url(2, ""), "/github/repos?page=2");
        assert_eq!(repos_url(3, "a&b c"), "/github/repos?q=a%26b%20c&page=3");
    }
}
