//! The HTTP routes, shaped like GitHub's (status codes, headers, bodies).

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{AuthScheme, Mode, RecordedRequest, SeedUser, StandInState};

const DOCS: &str = "https://docs.github.com/rest";
/// GitHub's page size default and maximum.
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;
/// Longest token the stand-in considers (GitHub's are < 100 chars).
const MAX_TOKEN_LEN: usize = 255;

pub(crate) fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/user", web::get().to(user))
        .route("/user/repos", web::get().to(repos))
        .route("/rate_limit", web::get().to(rate_limit))
        .route("/_standin/mode", web::get().to(get_mode))
        .route("/_standin/mode", web::put().to(put_mode))
        .default_service(web::to(not_found));
}

fn github_json(status: StatusCode, body: Value) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "application/json; charset=utf-8"))
        .insert_header(("x-github-media-type", "github.v3; format=json"))
        .insert_header(("x-ratelimit-limit", "5000"))
        .json(body)
}

async fn not_found() -> HttpResponse {
    github_json(
        StatusCode::NOT_FOUND,
        json!({"message": "Not Found", "documentation_url": DOCS, "status": "404"}),
    )
}

/// `(scheme, token)` from `Authorization: token|Bearer <tok>`.
fn credentials(req: &HttpRequest) -> (AuthScheme, Option<String>) {
    let Some(value) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return (AuthScheme::None, None);
    };
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "token" => AuthScheme::Token,
        "bearer" => AuthScheme::Bearer,
        _ => return (AuthScheme::None, None),
    };
    let token = rest.trim();
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return (scheme, None);
    }
    (scheme, Some(token.to_string()))
}

/// A refused request: the response and the login the token matched, if any.
struct Refused {
    resp: HttpResponse,
    login: Option<String>,
}

/// Applies the mode and authentication; the user on success, else the
/// response to send.
async fn authenticate(state: &StandInState, req: &HttpRequest) -> Result<SeedUser, Box<Refused>> {
    let (_, token) = credentials(req);
    let user = token.as_deref().and_then(|t| state.user(t));
    let login = user.as_ref().map(|u| u.login.clone());
    let fail = |resp| {
        Err(Box::new(Refused {
            resp,
            login: login.clone(),
        }))
    };
    match state.mode() {
        Mode::Normal => {}
        Mode::Slow(d) => actix_web::rt::time::sleep(d).await,
        Mode::Unauthorized => return fail(bad_credentials()),
        Mode::ServerError => {
            return fail(github_json(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"message": "Server Error"}),
            ))
        }
        Mode::RateLimited => {
            let reset = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
            let mut resp = github_json(
                StatusCode::FORBIDDEN,
                json!({
                    "message": "API rate limit exceeded for user ID 9901. If you reach out to GitHub Support for help, please include the request ID.",
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api",
                    "status": "403"
                }),
            );
            let h = resp.headers_mut();
            h.insert(
                header::HeaderName::from_static("x-ratelimit-remaining"),
                HeaderValue::from_static("0"),
            );
            h.insert(
                header::HeaderName::from_static("x-ratelimit-used"),
                HeaderValue::from_static("5000"),
            );
            if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
                h.insert(header::HeaderName::from_static("x-ratelimit-reset"), v);
            }
            return fail(resp);
        }
    }
    match (token, user) {
        (None, _) => fail(github_json(
            StatusCode::UNAUTHORIZED,
            json!({"message": "Requires authentication", "documentation_url": DOCS, "status": "401"}),
        )),
        (Some(_), None) => fail(bad_credentials()),
        (Some(_), Some(u)) => Ok(u),
    }
}

fn bad_credentials() -> HttpResponse {
    github_json(
        StatusCode::UNAUTHORIZED,
        json!({"message": "Bad credentials", "documentation_url": DOCS, "status": "401"}),
    )
}

fn record(
    state: &StandInState,
    req: &HttpRequest,
    auth: AuthScheme,
    login: Option<String>,
    status: StatusCode,
) {
    state.record(RecordedRequest {
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        auth,
        login,
        status: status.as_u16(),
    });
}

fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

async fn user(state: web::Data<StandInState>, req: HttpRequest) -> HttpResponse {
    let (scheme, _) = credentials(&req);
    match authenticate(&state, &req).await {
        Ok(u) => {
            record(&state, &req, scheme, Some(u.login.clone()), StatusCode::OK);
            github_json(StatusCode::OK, u.to_json(&base_url(&req)))
        }
        Err(r) => {
            record(&state, &req, scheme, r.login, r.resp.status());
            r.resp
        }
    }
}

#[derive(Debug, Deserialize)]
struct RepoQuery {
    page: Option<String>,
    per_page: Option<String>,
    sort: Option<String>,
    direction: Option<String>,
}

async fn repos(state: web::Data<StandInState>, req: HttpRequest) -> HttpResponse {
    let (scheme, _) = credentials(&req);
    let u = match authenticate(&state, &req).await {
        Ok(u) => u,
        Err(r) => {
            record(&state, &req, scheme, r.login, r.resp.status());
            return r.resp;
        }
    };
    let q = web::Query::<RepoQuery>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .unwrap_or(RepoQuery {
            page: None,
            per_page: None,
            sort: None,
            direction: None,
        });
    // GitHub ignores unusable values and falls back to the defaults.
    let page = q
        .page
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .unwrap_or(1);
    let per_page = q
        .per_page
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|p| *p >= 1)
        .map(|p| p.min(MAX_PER_PAGE))
        .unwrap_or(DEFAULT_PER_PAGE);
    let sort = q.sort.unwrap_or_else(|| "full_name".into());
    let mut list = u.repos.clone();
    match sort.as_str() {
        "created" => list.sort_by_key(|r| r.created_at),
        "updated" => list.sort_by_key(|r| r.updated_at),
        "pushed" => list.sort_by_key(|r| r.pushed_at),
        _ => list.sort_by(|a, b| a.name.cmp(&b.name)),
    }
    // Default direction: asc for full_name, desc otherwise (GitHub's rule).
    let default_desc = sort != "full_name";
    let desc = match q.direction.as_deref() {
        Some("asc") => false,
        Some("desc") => true,
        _ => default_desc,
    };
    if desc {
        list.reverse();
    }
    let last = list.len().div_ceil(per_page).max(1);
    let base = base_url(&req);
    let items: Vec<Value> = list
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|r| u.repo_json(r, &base))
        .collect();
    let link = |p: usize, rel: &str| {
        format!("<{base}/user/repos?page={p}&per_page={per_page}&sort={sort}>; rel=\"{rel}\"")
    };
    let mut links = Vec::new();
    if page > 1 {
        links.push(link(page - 1, "prev"));
    }
    if page < last {
        links.push(link(page + 1, "next"));
        links.push(link(last, "last"));
    }
    if page > 1 {
        links.push(link(1, "first"));
    }
    let mut resp = github_json(StatusCode::OK, Value::Array(items));
    if !links.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&links.join(", ")) {
            resp.headers_mut().insert(header::LINK, v);
        }
    }
    record(&state, &req, scheme, Some(u.login.clone()), StatusCode::OK);
    resp
}

async fn rate_limit() -> HttpResponse {
    github_json(
        StatusCode::OK,
        json!({"resources": {"core": {"limit": 5000, "remaining": 5000, "used": 0}}, "rate": {"limit": 5000, "remaining": 5000, "used": 0}}),
    )
}

async fn get_mode(state: web::Data<StandInState>) -> HttpResponse {
    mode_json(state.mode())
}

fn mode_json(mode: Mode) -> HttpResponse {
    let delay_ms = match mode {
        Mode::Slow(d) => Some(d.as_millis() as u64),
        _ => None,
    };
    HttpResponse::Ok().json(json!({"mode": mode.name(), "delay_ms": delay_ms}))
}

#[derive(Debug, Deserialize)]
struct ModeBody {
    mode: String,
    delay_ms: Option<u64>,
}

async fn put_mode(
    state: web::Data<StandInState>,
    body: Result<web::Json<ModeBody>, actix_web::Error>,
) -> HttpResponse {
    let body =
        match body {
            Ok(b) => b.into_inner(),
            Err(e) => return HttpResponse::BadRequest().json(
                json!({"message": format!("expected {{\"mode\": \"…\", \"delay_ms\": n}}: {e}")}),
            ),
        };
    match Mode::parse(&body.mode, body.delay_ms.map(Duration::from_millis)) {
        Ok(m) => {
            state.set_mode(m);
            mode_json(m)
        }
        Err(e) => HttpResponse::BadRequest().json(json!({"message": e.to_string()})),
    }
}
