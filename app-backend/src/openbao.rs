//! Per-user GitHub tokens in OpenBao KV v2, through the zt-sidecar's OpenBao
//! API proxy (docs/contracts.md, contract 2). The backend holds no OpenBao
//! token: the sidecar injects its own and allows only
//! `secret/data/github/users/*` and `secret/metadata/github/users/*`.
//!
//! ```text
//! PUT/POST /v1/secret/data/github/users/<id>     {"data":{"token":"…"}}
//! GET      /v1/secret/data/github/users/<id>     → data.data.token
//! GET      /v1/secret/metadata/github/users/<id> → 200 exists / 404
//! DELETE   /v1/secret/metadata/github/users/<id> (every version)
//! ```
//!
//! One HTTP/1.1 connection per request over the Unix socket (hyper 1); a
//! request is bounded in time and response size. Bodies are never logged.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;

use crate::config::ProxyAddress;
use crate::secrets::Sensitive;

/// An HTTP/1.1 client connection over `io`, driven by its own task.
async fn handshake<IO>(io: IO) -> Result<SendRequest<Full<Bytes>>, hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// How the sidecar's own error strings begin (its proxy's refusals).
const SIDECAR_PREFIX: &str = "zt-sidecar:";

/// Largest response body read from the proxy.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// Why a secret store call failed. Never contains a token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The proxy socket cannot be reached (sidecar down or restarting).
    #[error("cannot reach the OpenBao proxy at {addr}: {source}")]
    Unreachable {
        /// Where we tried.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("the OpenBao proxy did not answer within {0:?}")]
    Timeout(Duration),
    /// HTTP-level failure talking to the proxy.
    #[error("HTTP error talking to the OpenBao proxy: {0}")]
    Http(String),
    /// The sidecar refused the request (allow-list: a configuration bug), or
    /// OpenBao answered another 4xx.
    #[error("the sidecar refused {method} {path}: {status} {message}")]
    Refused {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Status.
        status: u16,
        /// OpenBao's or the sidecar's error strings.
        message: String,
    },
    /// OpenBao (or the proxy in front of it) failed: 5xx, 502 unreachable,
    /// 504, a 403 of OpenBao's (the sidecar's token was revoked or expired;
    /// it logs in again), a redirect (a standby node answered).
    #[error("OpenBao answered {status} for {method} {path}: {message}")]
    Upstream {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Status.
        status: u16,
        /// Error strings.
        message: String,
    },
    /// A 2xx whose body is not what KV v2 returns.
    #[error("unexpected response from OpenBao: {0}")]
    BadResponse(String),
}

/// The client of the sidecar's OpenBao proxy.
#[derive(Debug, Clone)]
pub struct SecretStore {
    addr: ProxyAddress,
    timeout: Duration,
}

/// The KV v2 path of a user's GitHub token (below `secret/data/`).
pub fn github_token_path(user_id: i32) -> String {
    format!("github/users/{user_id}")
}

#[derive(Deserialize)]
struct KvRead {
    data: KvReadData,
}

#[derive(Deserialize)]
struct KvReadData {
    data: KvToken,
}

#[derive(Deserialize)]
struct KvToken {
    token: Option<Sensitive>,
}

fn errors_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v["errors"].as_array().map(|a| {
                a.iter()
                    .filter_map(|e| e.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            })
        })
        .map(|s| s.chars().take(300).collect())
        .unwrap_or_default()
}

impl SecretStore {
    /// A client for `addr`.
    pub fn new(addr: ProxyAddress, timeout: Duration) -> Self {
        Self { addr, timeout }
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), StoreError> {
        match tokio::time::timeout(self.timeout, self.send_inner(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(StoreError::Timeout(self.timeout)),
        }
    }

    async fn send_inner(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), StoreError> {
        let unreachable = |source| StoreError::Unreachable {
            addr: self.addr.to_string(),
            source,
        };
        let http = |e: hyper::Error| StoreError::Http(e.to_string());
        let mut sender = match &self.addr {
            ProxyAddress::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p)
                    .await
                    .map_err(unreachable)?;
                handshake(s).await.map_err(http)?
            }
            ProxyAddress::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a)
                    .await
                    .map_err(unreachable)?;
                handshake(s).await.map_err(http)?
            }
        };
        let req = Request::builder()
            .method(method)
            .uri(path)
            // What the sidecar's proxy accepts on a TCP listener (an IP
            // literal or localhost: a DNS-rebinding page sends its own name).
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| StoreError::Http(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status();
        let bytes = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| StoreError::Http(e.to_string()))?
            .to_bytes();
        Ok((status, bytes))
    }

    fn fail(method: &Method, path: &str, status: StatusCode, body: &[u8]) -> StoreError {
        let message = errors_of(body);
        // The sidecar's own refusals (its allow-list: a configuration bug)
        // say so; any other 403 is OpenBao refusing the sidecar's token
        // (revoked or expired: the sidecar logs in again), a 429 is one of
        // OpenBao's rate-limit quotas, and a redirect is a standby node
        // answering: outages, not bugs. (A policy that lacks the path also
        // answers 403: the log says "permission denied" at every call.)
        let from_openbao = !message.starts_with(SIDECAR_PREFIX);
        if status.is_server_error()
            || status.is_redirection()
            || status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::FORBIDDEN && from_openbao)
        {
            StoreError::Upstream {
                method: method.to_string(),
                path: path.into(),
                status: status.as_u16(),
                message,
            }
        } else {
            StoreError::Refused {
                method: method.to_string(),
                path: path.into(),
                status: status.as_u16(),
                message,
            }
        }
    }

    /// Stores (a new version of) the user's token.
    pub async fn put_github_token(
        &self,
        user_id: i32,
        token: &Sensitive,
    ) -> Result<(), StoreError> {
        let path = format!("/v1/secret/data/{}", github_token_path(user_id));
        let body = serde_json::to_vec(&json!({"data": {"token": token.expose()}}))
            .map_err(|e| StoreError::BadResponse(e.to_string()))?;
        let (status, resp) = self.send(Method::POST, &path, Some(body)).await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(Self::fail(&Method::POST, &path, status, &resp))
        }
    }

    /// The user's token; `None` if none is stored (or it was deleted).
    pub async fn github_token(&self, user_id: i32) -> Result<Option<Sensitive>, StoreError> {
        let path = format!("/v1/secret/data/{}", github_token_path(user_id));
        let (status, body) = self.send(Method::GET, &path, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let kv: KvRead = serde_json::from_slice(&body).map_err(|e| {
                    // Category and position only: the body holds the token.
                    StoreError::BadResponse(format!(
                        "KV read body ({:?} at column {})",
                        e.classify(),
                        e.column()
                    ))
                })?;
                Ok(kv.data.data.token.filter(|t| !t.expose().is_empty()))
            }
            s => Err(Self::fail(&Method::GET, &path, s, &body)),
        }
    }

    /// Whether any version of the user's token exists.
    pub async fn github_token_exists(&self, user_id: i32) -> Result<bool, StoreError> {
        let path = format!("/v1/secret/metadata/{}", github_token_path(user_id));
        let (status, body) = self.send(Method::GET, &path, None).await?;
        match status {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            s => Err(Self::fail(&Method::GET, &path, s, &body)),
        }
    }

    /// Deletes every version of the user's token (idempotent).
    pub async fn delete_github_token(&self, user_id: i32) -> Result<(), StoreError> {
        let path = format!("/v1/secret/metadata/{}", github_token_path(user_id));
        let (status, body) = self.send(Method::DELETE, &path, None).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(Self::fail(&Method::DELETE, &path, status, &body))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(status: u16, body: &str) -> &'static str {
        match SecretStore::fail(
            &Method::GET,
            "/v1/secret/data/github/users/1",
            StatusCode::from_u16(status).unwrap(),
            body.as_bytes(),
        ) {
            StoreError::Refused { .. } => "refused",
            StoreError::Upstream { .. } => "upstream",
            _ => "other",
        }
    }

    #[test]
    fn only_the_sidecars_own_refusals_and_other_4xx_are_ours() {
        let sidecar =
            r#"{"errors":["zt-sidecar: GET /v1/sys/mounts refused: not in the allow-list"]}"#;
        assert_eq!(kind(403, sidecar), "refused");
        assert_eq!(kind(403, r#"{"errors":["permission denied"]}"#), "upstream");
        assert_eq!(kind(403, ""), "upstream");
        assert_eq!(kind(307, ""), "upstream");
        assert_eq!(kind(500, r#"{"errors":["internal error"]}"#), "upstream");
        assert_eq!(kind(502, sidecar), "upstream");
        assert_eq!(
            kind(
                429,
                r#"{"errors":["request path: rate limit quota exceeded"]}"#
            ),
            "upstream"
        );
        assert_eq!(kind(400, r#"{"errors":["bad"]}"#), "refused");
    }
}
