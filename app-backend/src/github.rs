//! The GitHub REST API client (`GET /user`, `GET /user/repos`). Its base URL
//! comes from configuration: GitHub itself, or the local stand-in in tests.
//!
//! Failures are classified for the API's error mapping:
//! 401 / non-rate-limit 403 → [`GithubError::Rejected`], 403 with
//! `x-ratelimit-remaining: 0` or 429 → [`GithubError::RateLimited`], no
//! answer in time → [`GithubError::Timeout`], anything else →
//! [`GithubError::Unavailable`]. The token is sent only to the configured
//! base URL (no redirects are followed) and never logged.

use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, LINK};
use reqwest::StatusCode;

use crate::body::{read_capped, BodyError};
use crate::models::{GithubUser, Repo};
use crate::secrets::Sensitive;

/// `User-Agent` sent to GitHub (it requires one).
pub const USER_AGENT: &str = concat!("zt-platform-app-backend/", env!("CARGO_PKG_VERSION"));
/// The API version header GitHub recommends pinning.
pub const API_VERSION: &str = "2022-11-28";
/// Largest response body accepted (100 repositories are about 600 KiB).
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A failed GitHub call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GithubError {
    /// 401, or 403 without rate limiting: the token is not (or no longer) usable.
    #[error("GitHub rejected the token ({0})")]
    Rejected(u16),
    /// The rate limit is exhausted; `reset` is GitHub's Unix time, if sent.
    #[error("GitHub rate limit exhausted")]
    RateLimited {
        /// `x-ratelimit-reset`.
        reset: Option<i64>,
    },
    /// No answer within the timeout.
    #[error("GitHub did not answer in time")]
    Timeout,
    /// Unreachable, 5xx, unexpected status or body.
    #[error("GitHub unavailable: {0}")]
    Unavailable(String),
}

/// The client; cheap to clone.
#[derive(Debug, Clone)]
pub struct GithubClient {
    http: reqwest::Client,
    base: String,
}

fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> GithubError {
    let remaining_zero = headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    let reset = headers
        .get("x-ratelimit-reset")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    match status {
        StatusCode::UNAUTHORIZED => GithubError::Rejected(401),
        StatusCode::TOO_MANY_REQUESTS => GithubError::RateLimited { reset },
        StatusCode::FORBIDDEN => {
            // Secondary rate limits come without the header but say so.
            let says_rate_limit = String::from_utf8_lossy(&body[..body.len().min(2048)])
                .to_ascii_lowercase()
                .contains("rate limit");
            if remaining_zero || says_rate_limit {
                GithubError::RateLimited { reset }
            } else {
                GithubError::Rejected(403)
            }
        }
        s => GithubError::Unavailable(format!("status {}", s.as_u16())),
    }
}

/// Whether a `Link` header has `rel="next"`.
pub fn has_next(link: Option<&str>) -> bool {
    link.is_some_and(|l| {
        l.split(',').any(|part| {
            part.split(';')
                .skip(1)
                .any(|p| p.trim().replace(' ', "") == "rel=\"next\"")
        })
    })
}

impl GithubClient {
    /// A client for `base` (no trailing slash) with a per-request `timeout`.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    async fn get(
        &self,
        path: &str,
        token: &Sensitive,
    ) -> Result<(HeaderMap, Vec<u8>), GithubError> {
        let url = format!("{}{path}", self.base);
        let resp = self
            .http
            .get(&url)
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    GithubError::Timeout
                } else {
                    // `without_url`: the error text then names no URL at all.
                    GithubError::Unavailable(e.without_url().to_string())
                }
            })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = read_capped(resp, MAX_BODY).await.map_err(|e| match e {
            BodyError::TooLarge => GithubError::Unavailable("response too large".into()),
            BodyError::Transport(e) if e.is_timeout() => GithubError::Timeout,
            BodyError::Transport(e) => GithubError::Unavailable(e.without_url().to_string()),
        })?;
        if !status.is_success() {
            return Err(classify(status, &headers, &body));
        }
        Ok((headers, body))
    }

    /// `GET /user`: whose token this is.
    pub async fn user(&self, token: &Sensitive) -> Result<GithubUser, GithubError> {
        let (_, body) = self.get("/user", token).await?;
        parse_user(&body)
    }

    /// `GET /user/repos?sort=updated`: one page, newest update first, and
    /// whether there is a next page.
    pub async fn repos(
        &self,
        token: &Sensitive,
        page: u32,
        per_page: u32,
    ) -> Result<(Vec<Repo>, bool), GithubError> {
        let path =
            format!("/user/repos?sort=updated&direction=desc&page={page}&per_page={per_page}");
        let (headers, body) = self.get(&path, token).await?;
        let repos = parse_repos(&body, per_page)?;
        let next = has_next(headers.get(LINK).and_then(|v| v.to_str().ok()));
        Ok((repos, next))
    }
}

/// Longest login accepted from GitHub (its own logins have at most 39
/// characters; Enterprise Managed Users add `_<shortcode>`).
const MAX_LOGIN: usize = 100;

/// The `/user` body. Its login is logged and written to the audit log, so
/// one that GitHub would never give (empty, too long, or with characters
/// other than letters, digits, `-` and `_`: a newline would forge a log
/// line) is refused like any other unexpected body.
fn parse_user(body: &[u8]) -> Result<GithubUser, GithubError> {
    let user: GithubUser = serde_json::from_slice(body)
        .map_err(|e| GithubError::Unavailable(format!("unexpected /user body: {e}")))?;
    let login_ok = !user.login.is_empty()
        && user.login.len() <= MAX_LOGIN
        && user
            .login
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !login_ok {
        return Err(GithubError::Unavailable(
            "unexpected /user body: its login is not a GitHub login".into(),
        ));
    }
    Ok(user)
}

/// The `/user/repos` body: at most `per_page` repositories (a server that
/// sends more is not passed on whole), newest update first.
fn parse_repos(body: &[u8], per_page: u32) -> Result<Vec<Repo>, GithubError> {
    let mut repos: Vec<Repo> = serde_json::from_slice(body)
        .map_err(|e| GithubError::Unavailable(format!("unexpected /user/repos body: {e}")))?;
    // GitHub's timestamps are RFC 3339 UTC ("…Z"): text order is time order.
    repos.sort_by(|a, b| b.updated_at.cmp(&a.updated_at));
    repos.truncate(per_page as usize);
    Ok(repos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_github_would_never_give_is_refused() {
        let user =
            |login: &str| parse_user(serde_json::json!({ "login": login }).to_string().as_bytes());
        for good in [
            "octocat",
            "jake-peralta",
            "amy_acme",
            &"a".repeat(MAX_LOGIN),
        ] {
            assert_eq!(user(good).unwrap().login, good);
        }
        for bad in [
            "",
            "two\nlines",
            "evil\u{1b}[31m",
            "a b",
            "ünï",
            &"a".repeat(MAX_LOGIN + 1),
        ] {
            assert!(
                matches!(user(bad), Err(GithubError::Unavailable(ref m)) if m.contains("not a GitHub login")),
                "{bad:?}"
            );
        }
        assert!(parse_user(b"[]").is_err());
    }

    #[test]
    fn more_repositories_than_asked_for_are_cut_to_the_page_newest_first() {
        let repos: Vec<serde_json::Value> = (0..50)
            .map(|i| {
                serde_json::json!({
                    "name": format!("r{i}"), "full_name": format!("o/r{i}"), "private": false,
                    "html_url": "https://github.com/o/r", "updated_at": format!("2026-01-{:02}T00:00:00Z", i % 28 + 1)
                })
            })
            .collect();
        let got = parse_repos(serde_json::to_string(&repos).unwrap().as_bytes(), 30).unwrap();
        assert_eq!(got.len(), 30);
        assert!(got.windows(2).all(|w| w[0].updated_at >= w[1].updated_at));
        assert_eq!(got[0].updated_at.as_deref(), Some("2026-01-28T00:00:00Z"));
    }

    #[test]
    fn link_headers_are_read_like_githubs() {
        assert!(has_next(Some(
            r#"<https://api.github.com/user/repos?page=2>; rel="next", <https://api.github.com/user/repos?page=5>; rel="last""#
        )));
        assert!(!has_next(Some(
            r#"<https://api.github.com/user/repos?page=1>; rel="prev", <https://api.github.com/user/repos?page=1>; rel="first""#
        )));
        assert!(!has_next(None));
        assert!(!has_next(Some("garbage")));
    }

    #[test]
    fn statuses_are_classified() {
        let mut rl = HeaderMap::new();
        rl.insert("x-ratelimit-remaining", "0".parse().unwrap());
        rl.insert("x-ratelimit-reset", "1790000000".parse().unwrap());
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, &HeaderMap::new(), b""),
            GithubError::Rejected(401)
        );
        assert_eq!(
            classify(StatusCode::FORBIDDEN, &rl, b""),
            GithubError::RateLimited {
                reset: Some(1_790_000_000)
            }
        );
        assert_eq!(
            classify(
                StatusCode::FORBIDDEN,
                &HeaderMap::new(),
                br#"{"message":"You have exceeded a secondary rate limit"}"#
            ),
            GithubError::RateLimited { reset: None }
        );
        assert_eq!(
            classify(StatusCode::FORBIDDEN, &HeaderMap::new(), b"{}"),
            GithubError::Rejected(403)
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), b""),
            GithubError::RateLimited { reset: None }
        );
        assert!(matches!(
            classify(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new(), b""),
            GithubError::Unavailable(_)
        ));
        assert!(matches!(
            classify(StatusCode::NOT_FOUND, &HeaderMap::new(), b""),
            GithubError::Unavailable(_)
        ));
    }
}
