//! An in-process stand-in for OUR backend's HTTP API (docs/contracts.md,
//! section 5) and for the frontend sidecar's admin `/status` (contract 3).
//! Phase-1 tests only: it lets a test script the backend's answers
//! (errors, hostile strings, outages). SPIRE, OpenBao and PostgreSQL are
//! never involved here; the phase-2 tests run the real stack.

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use serde_json::{json, Value};

/// Tokens the stand-in accepts as valid GitHub tokens start with this.
pub const GOOD_GITHUB_TOKEN_PREFIX: &str = "ghp_good";

/// One recorded request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub bearer: Option<String>,
    pub body: String,
    pub forwarded_for: Option<String>,
}

/// Scriptable state.
#[derive(Debug)]
pub struct FakeState {
    /// username → (id, password, email)
    pub users: HashMap<String, (i64, String, Option<String>)>,
    pub issued: HashSet<String>,
    /// username → GitHub token
    pub github_tokens: HashMap<String, String>,
    pub repos: Vec<Value>,
    pub github_user: Value,
    /// Forced error for repos/user: (status, code, message).
    pub github_error: Option<(u16, String, String)>,
    /// Every /api call answers like the sidecar when the backend is down.
    pub mesh_down: bool,
    /// Authenticated calls answer 503 `database_unavailable` before the
    /// token is looked at, like the backend when it cannot read the
    /// revocation list.
    pub db_down: bool,
    /// Login answers 429.
    pub rate_limited: bool,
    /// The frontend sidecar's /status answers 503.
    pub sidecar_down: bool,
    /// Users who are not operators: `/api/zt/status` answers them 403.
    pub not_operators: HashSet<String>,
    pub db_user: String,
    pub db_rotations: i64,
    pub seen: Vec<Seen>,
}

impl Default for FakeState {
    fn default() -> Self {
        let mut users = HashMap::new();
        users.insert(
            "jake".to_string(),
            (
                1,
                "jake99".to_string(),
                Some("jake.peralta@99.precinct".to_string()),
            ),
        );
        users.insert(
            "amy".to_string(),
            (
                2,
                "amy99".to_string(),
                Some("amy.santiago@99.precinct".to_string()),
            ),
        );
        Self {
            users,
            issued: HashSet::new(),
            github_tokens: HashMap::new(),
            repos: sample_repos(65),
            github_user: json!({
                "login": "octocat", "name": "The Octocat", "avatar_url": null,
                "html_url": "https://github.com/octocat", "public_repos": 65, "followers": 4242,
                "following": 9, "bio": "A stand-in GitHub user.", "company": "@github", "location": "San Francisco"
            }),
            github_error: None,
            mesh_down: false,
            db_down: false,
            rate_limited: false,
            sidecar_down: false,
            not_operators: HashSet::new(),
            db_user: "v-backend-role-x1y2z3a4b5-1795874910".to_string(),
            db_rotations: 0,
            seen: Vec::new(),
        }
    }
}

/// `n` repositories, newest update first.
pub fn sample_repos(n: usize) -> Vec<Value> {
    let langs = ["Rust", "Go", "TypeScript", "Python", "HCL"];
    (0..n)
        .map(|i| {
            json!({
                "name": format!("repo-{i:02}"),
                "full_name": format!("octocat/repo-{i:02}"),
                "private": i % 4 == 0,
                "html_url": format!("https://github.com/octocat/repo-{i:02}"),
                "description": if i % 3 == 0 { Value::Null } else { json!(format!("Demo repository number {i}")) },
                "language": langs[i % langs.len()],
                "stargazers_count": (n - i) * 37,
                "updated_at": format!("2026-{:02}-{:02}T10:00:00Z", 11 - (i / 28).min(10), 28 - (i % 28)),
            })
        })
        .collect()
}

/// The running stand-in.
pub struct FakeBackend {
    pub url: String,
    state: Arc<Mutex<FakeState>>,
    handle: actix_web::dev::ServerHandle,
}

impl FakeBackend {
    /// Starts on a free loopback port (call inside an actix runtime).
    pub fn start() -> FakeBackend {
        let state = Arc::new(Mutex::new(FakeState::default()));
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let data = web::Data::from(state.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::PayloadConfig::new(1 << 20))
                .default_service(web::to(handle))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        actix_web::rt::spawn(server);
        FakeBackend { url, state, handle }
    }

    /// Script or inspect the state.
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap()
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state().seen.clone()
    }

    /// Number of `/api` requests seen.
    pub fn api_calls(&self) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path.starts_with("/api"))
            .count()
    }

    /// Stops it.
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// The answer `github_error` asks for (a 429 with `Retry-After: 42`, as the
/// backend's per-user limit answers).
fn github_failure(s: &FakeState) -> Option<HttpResponse> {
    let (st, code, msg) = s.github_error.clone()?;
    let mut resp = err(st, &code, &msg);
    if st == 429 {
        resp.headers_mut().insert(
            actix_web::http::header::RETRY_AFTER,
            actix_web::http::header::HeaderValue::from_static("42"),
        );
    }
    Some(resp)
}

fn err(status: u16, code: &str, message: &str) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .json(json!({"error": {"code": code, "message": message}}))
}

fn mint(id: i64, username: &str) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut sig = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut sig);
    format!(
        "{}.{}.{}",
        e.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        e.encode(
            json!({"user_id": id, "username": username, "iat": now, "exp": now + 3600}).to_string()
        ),
        e.encode(sig)
    )
}

fn user_json(name: &str, (id, _, email): &(i64, String, Option<String>)) -> Value {
    json!({"id": id, "username": name, "email": email, "created_at": "2026-11-01T09:00:00Z"})
}

fn in_secs(secs: i64) -> String {
    (time::OffsetDateTime::now_utc() + time::Duration::seconds(secs))
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn zt_status(s: &FakeState) -> Value {
    json!({
        "sidecar": {
            "spiffe_id": "spiffe://demo.local/ns/99-apps/sa/backend",
            "ready": true,
            "svid": {"expires_at": in_secs(2950), "serial": "5f3a9c", "rotations": 1},
            "token": {"expires_at": in_secs(3300), "ttl_seconds": 3300, "policies": ["backend"], "renewals": 3, "logins": 1},
            "secrets": [
                {"name": "db", "kind": "database", "role": "backend-role", "username": s.db_user,
                 "lease_id": "database/creds/backend-role/abc", "expires_at": in_secs(1800),
                 "version": s.db_rotations + 1, "rotations": s.db_rotations, "renewals": 2, "ready": true},
                {"name": "jwt-signing-key", "kind": "kv", "path": "secret/backend/jwt-signing-key", "version": 1, "ready": true}
            ],
            "proxy": {"listen": ["unix:/run/zt/openbao.sock"], "allow": [
                {"path": "secret/data/github/users/*", "methods": ["GET", "PUT", "POST", "DELETE"]},
                {"path": "secret/metadata/github/users/*", "methods": ["GET", "DELETE"]}
            ]},
            "mtls": {"inbound": [{"listen": "127.0.0.1:8443", "forward_to": "127.0.0.1:8000",
                                  "allow": ["spiffe://demo.local/ns/99-apps/sa/frontend"],
                                  "accepted": 12, "refused": 1, "handshake_failures": 0, "active_connections": 1}],
                     "outbound": []}
        },
        "database": {"current_user": s.db_user, "server_version": "15.10"},
        "backend": {"jwt_key_version": 1}
    })
}

fn frontend_sidecar_status() -> Value {
    json!({
        "spiffe_id": "spiffe://demo.local/ns/99-apps/sa/frontend",
        "ready": true,
        "svid": {"expires_at": in_secs(3100), "serial": "77aa01", "rotations": 0},
        "token": null, "secrets": [], "proxy": null,
        "mtls": {"inbound": [], "outbound": [{"listen": "127.0.0.1:15001", "upstream": "127.0.0.1:8443",
                 "server_id": "spiffe://demo.local/ns/99-apps/sa/backend", "accepted": 12}]}
    })
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    st: web::Data<Mutex<FakeState>>,
) -> HttpResponse {
    let mut s = st.lock().unwrap();
    let path = req.path().to_string();
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    s.seen.push(Seen {
        method: req.method().to_string(),
        path: req.uri().to_string(),
        bearer: bearer.clone(),
        body: String::from_utf8_lossy(&body).into_owned(),
        forwarded_for: req
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    if path == "/status" {
        if s.sidecar_down {
            return HttpResponse::ServiceUnavailable().finish();
        }
        return HttpResponse::Ok().json(frontend_sidecar_status());
    }
    if s.mesh_down && path.starts_with("/api") {
        return err(
            502,
            "upstream_unavailable",
            "zt-sidecar: cannot reach 127.0.0.1:8443",
        );
    }
    let body_json: Option<Value> = serde_json::from_slice(&body).ok();
    let method = req.method().as_str().to_string();

    // Unauthenticated routes.
    match (method.as_str(), path.as_str()) {
        ("POST", "/api/auth/login") => {
            let Some(b) = body_json else {
                return err(400, "bad_request", "malformed JSON");
            };
            if s.rate_limited {
                return HttpResponse::TooManyRequests()
                    .insert_header(("Retry-After", "30"))
                    .json(
                        json!({"error": {"code": "rate_limited", "message": "Too many attempts"}}),
                    );
            }
            let u = b["username"].as_str().unwrap_or("");
            let p = b["password"].as_str().unwrap_or("");
            return match s.users.get(u).cloned() {
                Some(rec) if rec.1 == p => {
                    let t = mint(rec.0, u);
                    s.issued.insert(t.clone());
                    HttpResponse::Ok().json(json!({
                        "access_token": t, "token_type": "bearer", "expires_in": 3600,
                        "user": user_json(u, &rec)
                    }))
                }
                _ => err(401, "invalid_credentials", "Invalid username or password"),
            };
        }
        ("POST", "/api/auth/register") => {
            const CONFLICT: &str = "That username or email address is not available; choose another username, or log in if you already have an account";
            let Some(b) = body_json else {
                return err(400, "bad_request", "malformed JSON");
            };
            let u = b["username"].as_str().unwrap_or("").to_string();
            let p = b["password"].as_str().unwrap_or("").to_string();
            let e = b["email"].as_str().map(str::to_string);
            if !u
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
            {
                return err(
                    422,
                    "validation_failed",
                    "username: use letters, digits, '.', '-' or '_'",
                );
            }
            if s.users.contains_key(&u) {
                return err(409, "registration_conflict", CONFLICT);
            }
            if e.is_some() && s.users.values().any(|r| r.2 == e) {
                return err(409, "registration_conflict", CONFLICT);
            }
            let id = s.users.len() as i64 + 1;
            let rec = (id, p, e);
            let out = user_json(&u, &rec);
            s.users.insert(u, rec);
            return HttpResponse::Created().json(json!({"user": out}));
        }
        _ => {}
    }

    if s.db_down {
        return err(
            503,
            "database_unavailable",
            "The database is unavailable; try again shortly",
        );
    }
    // Everything else needs a token we issued.
    let Some(token) = bearer.filter(|t| s.issued.contains(t)) else {
        return err(401, "unauthorized", "missing or invalid token");
    };
    let username = {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload: Value =
            serde_json::from_slice(&e.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        payload["username"].as_str().unwrap().to_string()
    };
    let configured = s.github_tokens.contains_key(&username);
    match (method.as_str(), path.as_str()) {
        ("GET", "/api/auth/me") => {
            let rec = s.users[&username].clone();
            HttpResponse::Ok().json(user_json(&username, &rec))
        }
        ("GET", "/api/github/status") => HttpResponse::Ok().json(if configured {
            json!({"configured": true, "configured_at": "2026-11-28T10:00:00Z", "last_accessed": null})
        } else {
            json!({"configured": false})
        }),
        ("POST", "/api/github/configure") => {
            // Only the backend's own limit refuses a check before GitHub.
            if let Some(resp) = github_failure(&s).filter(|r| r.status() == 429) {
                return resp;
            }
            let t = body_json
                .as_ref()
                .and_then(|b| b["token"].as_str())
                .unwrap_or("")
                .to_string();
            if !t.starts_with(GOOD_GITHUB_TOKEN_PREFIX) {
                return err(400, "github_token_rejected", "GitHub rejected this token (401 Bad credentials)");
            }
            s.github_tokens.insert(username, t);
            HttpResponse::Ok().json(json!({"configured": true, "github_user": s.github_user.clone()}))
        }
        ("DELETE", "/api/github/token") => {
            if s.github_tokens.remove(&username).is_some() {
                HttpResponse::NoContent().finish()
            } else {
                err(404, "not_configured", "No GitHub token is configured")
            }
        }
        ("GET", "/api/github/repos") | ("GET", "/api/github/user") => {
            if !configured {
                return err(404, "not_configured", "No GitHub token is configured");
            }
            if let Some(resp) = github_failure(&s) {
                return resp;
            }
            if path == "/api/github/user" {
                return HttpResponse::Ok().json(s.github_user.clone());
            }
            let q: HashMap<String, String> =
                web::Query::<HashMap<String, String>>::from_query(req.query_string())
                    .map(|q| q.into_inner())
                    .unwrap_or_default();
            let page: usize = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1).max(1);
            let per: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(30).clamp(1, 100);
            let start = (page - 1) * per;
            let slice: Vec<Value> = s.repos.iter().skip(start).take(per).cloned().collect();
            HttpResponse::Ok().json(json!({
                "repos": slice, "page": page, "per_page": per,
                "has_next": start + per < s.repos.len()
            }))
        }
        ("GET", "/api/zt/status") if s.not_operators.contains(&username) => err(
            403,
            "forbidden",
            "the zero-trust status is only for the platform's operators",
        ),
        ("GET", "/api/zt/status") => HttpResponse::Ok().json(zt_status(&s)),
        ("POST", "/api/auth/logout") => {
            // Like the backend: this token is refused from now on.
            s.issued.remove(&token);
            HttpResponse::NoContent().finish()
        }
        _ => err(404, "not_found", "no such endpoint"),
    }
}
