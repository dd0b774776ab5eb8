//! [`BackendClient`]: every call the frontend makes, to the backend API and
//! to its own sidecar's admin endpoint.

use std::time::Duration;

use reqwest::{header, Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::models::*;
use crate::config::FrontendConfig;

/// Largest response body read from the backend or the sidecar; more is
/// treated as a protocol error rather than buffered.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Why a backend call failed. Messages never contain a token or password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// No connection could be made (refused, reset): the backend, or the
    /// sidecar in front of it, is down.
    #[error("the backend is unreachable: {0}")]
    Unreachable(String),
    /// No answer within the configured timeout.
    #[error("the backend did not answer within {0:?}")]
    Timeout(Duration),
    /// The mesh answered 502/503/504 without an API error of the backend's
    /// own (e.g. the sidecar's `upstream_unavailable`).
    #[error("the backend is unavailable (HTTP {status}{})", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Unavailable {
        /// HTTP status.
        status: u16,
        /// Error code, if the body had one.
        code: Option<String>,
    },
    /// 401: the session token is missing, expired or forged.
    #[error("the backend refused the session (401)")]
    Unauthorized,
    /// A structured API error (`{"error": {"code", "message"}}`).
    #[error("backend error {status} {code}: {message}")]
    Api {
        /// HTTP status.
        status: u16,
        /// Stable snake_case code.
        code: String,
        /// Message for humans.
        message: String,
        /// `Retry-After` seconds, when sent.
        retry_after: Option<u64>,
    },
    /// An answer that does not follow the contract.
    #[error("unexpected answer from the backend: {0}")]
    Protocol(String),
}

impl BackendError {
    /// The API error code, if this is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            BackendError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// How long an idle connection to the backend is kept for reuse: well
/// below the 9–10 s after which the backend's sidecar closes an idle
/// connection (and under actix-web's 5 s keep-alive, should the sidecars
/// ever carry connections end to end again).
pub const IDLE_CONNECTION_TIMEOUT: Duration = Duration::from_secs(4);

/// HTTP client for the backend API (through the frontend sidecar's outbound
/// listener) and the frontend sidecar's admin endpoint.
#[derive(Debug, Clone)]
pub struct BackendClient {
    http: reqwest::Client,
    /// For a read sent once more: never an idle connection of `http`'s
    /// (see [`BackendClient::call_for`]).
    fresh: reqwest::Client,
    base: String,
    admin: String,
    timeout: Duration,
}

/// The HTTP client for the backend: keeping idle connections for reuse
/// (`pooled`), or opening a new connection for every request.
fn http_client(config: &FrontendConfig, pooled: bool) -> Result<reqwest::Client, BackendError> {
    let builder = reqwest::Client::builder()
        .timeout(config.backend_timeout)
        .connect_timeout(config.backend_timeout.min(Duration::from_secs(5)))
        .redirect(reqwest::redirect::Policy::none())
        // The backend is reached on loopback through our sidecar; an
        // HTTP_PROXY in the environment must not reroute it.
        .no_proxy()
        // The backend's sidecar closes an idle connection after 9–10 s
        // (the backend's own 5 s keep-alive close is absorbed by it):
        // giving connections up sooner means a request never goes out
        // on one that is being closed.
        .pool_idle_timeout(IDLE_CONNECTION_TIMEOUT);
    let builder = if pooled {
        builder
    } else {
        builder.pool_max_idle_per_host(0)
    };
    builder
        .build()
        .map_err(|e| BackendError::Protocol(format!("cannot build the HTTP client: {e}")))
}

fn trimmed(url: &reqwest::Url) -> String {
    url.as_str().trim_end_matches('/').to_string()
}

impl BackendClient {
    /// A client for the configured URLs.
    pub fn new(config: &FrontendConfig) -> Result<Self, BackendError> {
        Ok(Self {
            http: http_client(config, true)?,
            fresh: http_client(config, false)?,
            base: trimmed(&config.backend_url),
            admin: trimmed(&config.sidecar_admin_url),
            timeout: config.backend_timeout,
        })
    }

    /// `POST /api/auth/login` on behalf of the browser at `client` (sent as
    /// `X-Forwarded-For`, so the backend's failed-login limit counts per
    /// browser rather than one bucket for the whole frontend; the backend
    /// trusts it only on mTLS-verified requests).
    pub async fn login(
        &self,
        username: &str,
        password: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<LoginResponse, BackendError> {
        self.call_for(
            Method::POST,
            "/api/auth/login",
            None,
            Some(&LoginRequest { username, password }),
            client,
        )
        .await
    }

    /// `POST /api/auth/register`; `client` (the browser's address) is sent as
    /// `X-Forwarded-For`: the backend limits registrations per client.
    pub async fn register(
        &self,
        username: &str,
        email: Option<&str>,
        password: &str,
        client: Option<std::net::IpAddr>,
    ) -> Result<User, BackendError> {
        #[derive(serde::Deserialize)]
        struct Created {
            user: User,
        }
        let c: Created = self
            .call_for(
                Method::POST,
                "/api/auth/register",
                None,
                Some(&RegisterRequest {
                    username,
                    email,
                    password,
                }),
                client,
            )
            .await?;
        Ok(c.user)
    }

    /// `POST /api/auth/logout`: the backend revokes this token.
    pub async fn logout(&self, token: &str) -> Result<(), BackendError> {
        let _: Option<serde_json::Value> = self
            .call::<(), _>(Method::POST, "/api/auth/logout", Some(token), None)
            .await?;
        Ok(())
    }

    /// `GET /api/auth/me`.
    pub async fn me(&self, token: &str) -> Result<User, BackendError> {
        self.call::<(), _>(Method::GET, "/api/auth/me", Some(token), None)
            .await
    }

    /// `GET /api/github/status`.
    pub async fn github_status(&self, token: &str) -> Result<GithubStatus, BackendError> {
        self.call::<(), _>(Method::GET, "/api/github/status", Some(token), None)
            .await
    }

    /// `POST /api/github/configure`.
    pub async fn github_configure(
        &self,
        token: &str,
        github_token: &str,
    ) -> Result<ConfigureResponse, BackendError> {
        self.call(
            Method::POST,
            "/api/github/configure",
            Some(token),
            Some(&ConfigureRequest {
                token: github_token,
            }),
        )
        .await
    }

    /// `DELETE /api/github/token`.
    pub async fn github_remove(&self, token: &str) -> Result<(), BackendError> {
        let _: Option<serde_json::Value> = self
            .call::<(), _>(Method::DELETE, "/api/github/token", Some(token), None)
            .await?;
        Ok(())
    }

    /// `GET /api/github/repos?page=&per_page=`.
    pub async fn github_repos(
        &self,
        token: &str,
        page: u32,
        per_page: u32,
    ) -> Result<RepoPage, BackendError> {
        let path = format!("/api/github/repos?page={page}&per_page={per_page}");
        self.call::<(), _>(Method::GET, &path, Some(token), None)
            .await
    }

    /// `GET /api/github/user`.
    pub async fn github_user(&self, token: &str) -> Result<GithubUser, BackendError> {
        self.call::<(), _>(Method::GET, "/api/github/user", Some(token), None)
            .await
    }

    /// `GET /api/zt/status`.
    pub async fn zt_status(&self, token: &str) -> Result<ZtStatus, BackendError> {
        self.call::<(), _>(Method::GET, "/api/zt/status", Some(token), None)
            .await
    }

    /// The frontend sidecar's `GET /status` (contract 3).
    pub async fn own_sidecar_status(&self) -> Result<SidecarStatus, BackendError> {
        let url = format!("{}/status", self.admin);
        let resp = self.send(self.http.get(url)).await?;
        let status = resp.status();
        let body = read_limited(resp).await?;
        if !status.is_success() {
            return Err(BackendError::Unavailable {
                status: status.as_u16(),
                code: None,
            });
        }
        decode(&body)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Response, BackendError> {
        req.send().await.map_err(|e| {
            if e.is_timeout() {
                BackendError::Timeout(self.timeout)
            } else {
                // reqwest's message names the URL and the cause; it never
                // contains headers or bodies (where tokens live).
                BackendError::Unreachable(error_chain(&e))
            }
        })
    }

    async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&B>,
    ) -> Result<T, BackendError> {
        self.call_for(method, path, token, body, None).await
    }

    async fn call_for<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&B>,
        client: Option<std::net::IpAddr>,
    ) -> Result<T, BackendError> {
        let is_read = method == Method::GET;
        let url = format!("{}{path}", self.base);
        let request = |http: &reqwest::Client| {
            let mut req = http
                .request(method.clone(), &url)
                .header(header::ACCEPT, "application/json");
            if let Some(ip) = client {
                req = req.header("X-Forwarded-For", ip.to_string());
            }
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            req
        };
        // A read whose connection broke before an answer came (the backend's
        // sidecar restarting cuts what is in flight through it) is sent once
        // more, on a new connection; our sidecar waits for the peer to come
        // back within its handshake timeout. Writes are never repeated.
        //
        // New, not another idle one from the pool: the restart closes every
        // connection through the sidecar at once, and an idle one whose
        // close has not been noticed yet would take the read and break too
        // (the fault suite's failure in about 1 kill of the backend's sidecar
        // in 100).
        let resp = match self.send(request(&self.http)).await {
            Err(BackendError::Unreachable(first)) if is_read => {
                tracing::info!(path, error = %first, "backend connection broke before an answer; sending the read once more on a new connection");
                self.send(request(&self.fresh)).await?
            }
            r => r?,
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = read_limited(resp).await?;
        if status.is_success() {
            if status == StatusCode::NO_CONTENT || bytes.is_empty() {
                return decode(b"null");
            }
            return decode(&bytes);
        }
        if status == StatusCode::UNAUTHORIZED {
            return Err(BackendError::Unauthorized);
        }
        let detail = serde_json::from_slice::<ErrorBody>(&bytes)
            .ok()
            .map(|b| b.error);
        let gateway = matches!(status.as_u16(), 502..=504);
        match detail {
            // The sidecar's own refusal when it cannot reach the backend.
            Some(d) if gateway && d.code == "upstream_unavailable" => {
                Err(BackendError::Unavailable {
                    status: status.as_u16(),
                    code: Some(d.code),
                })
            }
            Some(d) if !d.code.is_empty() => Err(BackendError::Api {
                status: status.as_u16(),
                code: d.code,
                message: d.message,
                retry_after,
            }),
            _ if gateway || status == StatusCode::SERVICE_UNAVAILABLE => {
                Err(BackendError::Unavailable {
                    status: status.as_u16(),
                    code: None,
                })
            }
            _ => Err(BackendError::Protocol(format!(
                "HTTP {} without an error body",
                status.as_u16()
            ))),
        }
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

async fn read_limited(mut resp: reqwest::Response) -> Result<Vec<u8>, BackendError> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(BackendError::Protocol(format!(
            "response larger than {MAX_RESPONSE_BYTES} bytes"
        )));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| BackendError::Unreachable(error_chain(&e)))?
    {
        if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(BackendError::Protocol(format!(
                "response larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BackendError> {
    // serde's own message can quote the offending value (a token, say):
    // report only the kind and position.
    serde_json::from_slice(bytes).map_err(|e| {
        BackendError::Protocol(format!(
            "invalid JSON ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::config::{FrontendConfig, BACKEND_URL_ENV};

    /// Reads one request head (the test requests have no body); false if
    /// the connection ended first.
    fn read_head(s: &mut std::net::TcpStream) -> bool {
        let mut buf = Vec::new();
        let mut b = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) != 1 {
                return false;
            }
            buf.push(b[0]);
        }
        true
    }

    /// A peer that cuts the first connection after reading the request (the
    /// backend's sidecar killed mid-request) and answers `GET /api/auth/me`
    /// on the next; the requests it saw.
    fn cutting_peer(cuts: usize) -> (String, std::thread::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let peer = std::thread::spawn(move || {
            let mut seen = 0;
            for conn in listener.incoming() {
                let mut s = conn.unwrap();
                read_head(&mut s);
                seen += 1;
                if seen <= cuts {
                    drop(s);
                    continue;
                }
                let body = r#"{"id":1,"username":"jake"}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                return seen;
            }
            seen
        });
        (url, peer)
    }

    fn client(url: &str) -> BackendClient {
        let mut env = HashMap::new();
        env.insert(BACKEND_URL_ENV, url);
        BackendClient::new(&FrontendConfig::from_source(&env).unwrap()).unwrap()
    }

    /// Regression (issue 16, fault suite): killing the backend's sidecar cut
    /// the requests in flight through it, and each one became a "backend is
    /// unreachable" page although the sidecar was back a second later.
    #[tokio::test]
    async fn a_read_cut_mid_request_is_sent_once_more() {
        let (url, peer) = cutting_peer(1);
        let me = client(&url).me("token").await;
        assert_eq!(me.map(|u| u.username).ok(), Some("jake".to_string()));
        assert_eq!(peer.join().unwrap(), 2);
    }

    /// What [`restarting_peer`] saw: connections accepted, requests cut.
    #[derive(Default)]
    struct Seen {
        accepted: AtomicUsize,
        cut: AtomicUsize,
    }

    /// A peer that keeps connections alive: it answers the first two
    /// requests only once both have come (so they take two connections,
    /// which the client's pool then keeps), then cuts both of those
    /// connections when a request comes on them (the backend's sidecar
    /// killed: every connection through it closes, and the client has not
    /// noticed yet) and answers on any new one. It serves until the test
    /// process ends.
    fn restarting_peer() -> (String, std::sync::Arc<Seen>) {
        use std::sync::atomic::Ordering;
        use std::sync::{Arc, Barrier};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Seen::default());
        let peer_seen = seen.clone();
        std::thread::spawn(move || {
            let both = Arc::new(Barrier::new(2));
            let answered = Arc::new(AtomicUsize::new(0));
            for (i, conn) in listener.incoming().enumerate() {
                let Ok(mut s) = conn else { continue };
                peer_seen.accepted.fetch_add(1, Ordering::SeqCst);
                let (both, answered, seen) = (both.clone(), answered.clone(), peer_seen.clone());
                std::thread::spawn(move || loop {
                    if !read_head(&mut s) {
                        return;
                    }
                    if i < 2 && answered.load(Ordering::SeqCst) < 2 {
                        both.wait();
                        answered.fetch_add(1, Ordering::SeqCst);
                    } else if i < 2 {
                        seen.cut.fetch_add(1, Ordering::SeqCst);
                        return; // dropped unanswered
                    }
                    let body = r#"{"id":1,"username":"jake"}"#;
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                });
            }
        });
        (url, seen)
    }

    /// Regression (fault suite, about 1 backend sidecar kill in 100): the
    /// kill closes every connection through the sidecar at once. The read
    /// cut on one was sent once more on another idle connection from the
    /// pool, closed too but not yet noticed, and failed again. It goes on a
    /// new one.
    #[tokio::test]
    async fn the_read_sent_once_more_takes_a_new_connection() {
        use std::sync::atomic::Ordering;
        let (url, seen) = restarting_peer();
        let backend = client(&url);
        let (a, b) = tokio::join!(backend.me("token"), backend.me("token"));
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        assert_eq!(
            seen.accepted.load(Ordering::SeqCst),
            2,
            "two kept-alive connections"
        );
        let me = backend.me("token").await;
        assert_eq!(me.map(|u| u.username).ok(), Some("jake".to_string()));
        // Cut once on a kept-alive connection, answered on a new one.
        assert_eq!(seen.cut.load(Ordering::SeqCst), 1, "requests cut");
        assert_eq!(
            seen.accepted.load(Ordering::SeqCst),
            3,
            "connections accepted"
        );
    }

    #[tokio::test]
    async fn only_once() {
        let (url, peer) = cutting_peer(2);
        let me = client(&url).me("token").await;
        assert!(matches!(me, Err(BackendError::Unreachable(_))), "{me:?}");
        drop(peer); // still waiting for a third request that never comes
    }
}
