//! The OpenBao API proxy: the app speaks OpenBao's HTTP API to a Unix socket
//! (or loopback port); the sidecar checks each request against the
//! allow-list and forwards it with its own token. The app never holds a
//! token, and can reach nothing the allow-list does not name.
//!
//! Normalisation comes first and is what gets forwarded: the path is split on
//! `/`, each segment percent-decoded, and any empty (`//`), `.`/`..`, or
//! decoded segment containing `/`, `\` or control characters refuses the
//! request. So what OpenBao sees is exactly what was checked.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::json;
use tokio::sync::watch;

use crate::config::{AllowRule, ProxyConfig};
use crate::state::State;
use crate::token::{TokenCheck, Tokens};

/// Headers that would carry a client's own credentials; refused outright.
pub const TOKEN_HEADERS: [&str; 3] = ["x-vault-token", "x-openbao-token", "authorization"];

/// Bytes kept as-is when re-encoding a segment for forwarding.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A request the proxy may forward.
#[derive(Debug, PartialEq, Eq)]
pub struct Checked {
    /// Decoded, normalised path below `/v1/`.
    pub path: String,
    /// The path re-encoded for the upstream request.
    pub encoded: String,
    /// The OpenBao operation (`LIST` for GET with `list=true`).
    pub operation: String,
}

/// Normalises `path` (a URI path) and `query`; `Err` carries the reason.
pub fn normalise(method: &str, path: &str, query: Option<&str>) -> Result<Checked, String> {
    let rest = path
        .strip_prefix("/v1/")
        .ok_or_else(|| "only /v1/... paths are proxied".to_string())?;
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        if raw.is_empty() {
            return Err("empty path segment (`//` or trailing `/`)".into());
        }
        let seg = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| "path is not valid UTF-8".to_string())?;
        if seg == "." || seg == ".." {
            return Err("`.` or `..` in path".into());
        }
        if seg.contains(['/', '\\']) || seg.chars().any(char::is_control) {
            return Err("encoded `/`, `\\` or control character in path".into());
        }
        segments.push(seg.into_owned());
    }
    let mut operation = method.to_ascii_uppercase();
    if let Some(q) = query {
        for pair in q.split('&') {
            let key = pair.split('=').next().unwrap_or_default().replace('+', " ");
            let key = percent_decode_str(&key)
                .decode_utf8_lossy()
                .to_ascii_lowercase();
            if key == "list" && operation == "GET" {
                operation = "LIST".into();
            }
        }
    }
    Ok(Checked {
        encoded: segments
            .iter()
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/"),
        path: segments.join("/"),
        operation,
    })
}

/// The rule that allows `path` and `operation`, or why none does.
pub fn authorise<'a>(
    rules: &'a [AllowRule],
    path: &str,
    operation: &str,
) -> Result<&'a AllowRule, String> {
    let segs: Vec<&str> = path.split('/').collect();
    let mut path_matched: Option<&AllowRule> = None;
    for rule in rules {
        let matches = match rule.path.strip_suffix("/*") {
            Some(prefix) => {
                let p: Vec<&str> = prefix.split('/').collect();
                segs.len() > p.len() && segs[..p.len()] == p[..]
            }
            None => rule.path == path,
        };
        if matches {
            if rule.methods.iter().any(|m| m == operation) {
                return Ok(rule);
            }
            path_matched.get_or_insert(rule);
        }
    }
    Err(match path_matched {
        Some(rule) => format!(
            "rule `{}` allows only {}",
            rule.path,
            rule.methods.join(", ")
        ),
        None => "no allow-list rule matches this path".into(),
    })
}

/// Shared per-listener context.
#[derive(Clone)]
pub struct Proxy {
    cfg: Arc<ProxyConfig>,
    upstream: String,
    http: reqwest::Client,
    tokens: watch::Receiver<Tokens>,
    check: TokenCheck,
    state: State,
}

type Resp = Response<Full<Bytes>>;

fn error(status: StatusCode, msg: String) -> Resp {
    let body = json!({ "errors": [msg] }).to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

impl Proxy {
    /// A proxy forwarding to OpenBao at `upstream`.
    pub fn new(
        cfg: ProxyConfig,
        upstream: &str,
        tokens: watch::Receiver<Tokens>,
        check: TokenCheck,
        state: State,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(std::time::Duration::from_secs(5)))
            .build()?;
        Ok(Self {
            cfg: Arc::new(cfg),
            upstream: upstream.trim_end_matches('/').to_string(),
            http,
            tokens,
            check,
            state,
        })
    }

    /// Handles one request (logs one line, never bodies or tokens).
    pub async fn handle(self, req: Request<Incoming>) -> Result<Resp, Infallible> {
        let started = Instant::now();
        let method = req.method().as_str().to_string();
        let raw_path = req.uri().path().to_string();
        let (resp, shown_path) = self.forward(req).await;
        let status = resp.status().as_u16();
        self.state.proxy_request(status);
        tracing::info!(
            method = %method,
            path = %shown_path.unwrap_or(raw_path),
            status,
            latency_ms = started.elapsed().as_millis() as u64,
            "openbao proxy"
        );
        Ok(resp)
    }

    async fn forward(&self, req: Request<Incoming>) -> (Resp, Option<String>) {
        let method = req.method().clone();
        let refuse = |path: &str, why: String| {
            error(
                StatusCode::FORBIDDEN,
                format!("zt-sidecar: {method} /v1/{path} refused: {why}"),
            )
        };
        if let Some(h) = TOKEN_HEADERS
            .iter()
            .find(|h| req.headers().contains_key(**h))
        {
            return (
                refuse(
                    req.uri().path().trim_start_matches("/v1/"),
                    format!("client-supplied `{h}` header (the sidecar injects its own token)"),
                ),
                None,
            );
        }
        let checked = match normalise(method.as_str(), req.uri().path(), req.uri().query()) {
            Ok(c) => c,
            Err(why) => {
                return (
                    refuse(req.uri().path().trim_start_matches("/v1/"), why),
                    None,
                )
            }
        };
        if let Err(why) = authorise(&self.cfg.allow, &checked.path, &checked.operation) {
            return (
                refuse(&checked.path, why),
                Some(format!("/v1/{}", checked.path)),
            );
        }
        let shown = Some(format!("/v1/{}", checked.path));
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.cfg.max_body_bytes as u64) {
            return (self.too_large(), shown);
        }
        let content_type = req.headers().get(header::CONTENT_TYPE).cloned();
        let query = req.uri().query().map(str::to_string);
        let body = match Limited::new(req.into_body(), self.cfg.max_body_bytes)
            .collect()
            .await
        {
            Ok(b) => b.to_bytes(),
            Err(e)
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                return (self.too_large(), shown)
            }
            Err(_) => {
                return (
                    error(
                        StatusCode::BAD_REQUEST,
                        "zt-sidecar: could not read the request body".into(),
                    ),
                    shown,
                )
            }
        };
        let Some(token) = self.tokens.borrow().current.clone() else {
            return (
                error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "zt-sidecar: not logged in to OpenBao yet; retry shortly".into(),
                ),
                shown,
            );
        };
        let mut url = format!("{}/v1/{}", self.upstream, checked.encoded);
        if let Some(q) = query {
            url.push('?');
            url.push_str(&q);
        }
        let up_method = Method::from_bytes(checked.operation.as_bytes()).unwrap_or(method);
        let mut up = self
            .http
            .request(up_method, url)
            .header("X-Vault-Token", token.secret.expose())
            .body(body);
        if let Some(ct) = content_type {
            up = up.header(header::CONTENT_TYPE, ct);
        }
        let resp = match up.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return (
                    error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "zt-sidecar: OpenBao did not answer in time".into(),
                    ),
                    shown,
                )
            }
            Err(_) => {
                return (
                    error(
                        StatusCode::BAD_GATEWAY,
                        "zt-sidecar: OpenBao is unreachable".into(),
                    ),
                    shown,
                )
            }
        };
        let status = resp.status();
        if status == StatusCode::FORBIDDEN {
            // Allowed by us but refused by OpenBao: maybe our token was revoked.
            self.check.suspect();
        }
        let ct = resp.headers().get(header::CONTENT_TYPE).cloned();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if e.is_timeout() => {
                return (
                    error(
                        StatusCode::GATEWAY_TIMEOUT,
                        "zt-sidecar: OpenBao did not answer in time".into(),
                    ),
                    shown,
                )
            }
            Err(_) => {
                return (
                    error(
                        StatusCode::BAD_GATEWAY,
                        "zt-sidecar: OpenBao response was cut off".into(),
                    ),
                    shown,
                )
            }
        };
        let mut out = Response::builder().status(status);
        if let Some(ct) = ct {
            out = out.header(header::CONTENT_TYPE, ct);
        }
        (
            out.body(Full::new(bytes)).unwrap_or_else(|_| {
                error(
                    StatusCode::BAD_GATEWAY,
                    "zt-sidecar: bad upstream response".into(),
                )
            }),
            shown,
        )
    }

    fn too_large(&self) -> Resp {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "zt-sidecar: request body over {} bytes",
                self.cfg.max_body_bytes
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<AllowRule> {
        vec![
            AllowRule {
                path: "secret/data/github/users/*".into(),
                methods: vec!["GET".into(), "PUT".into(), "POST".into(), "DELETE".into()],
            },
            AllowRule {
                path: "secret/metadata/github/users/*".into(),
                methods: vec!["DELETE".into()],
            },
        ]
    }

    fn check(method: &str, path: &str, query: Option<&str>) -> Result<String, String> {
        let c = normalise(method, path, query)?;
        authorise(&rules(), &c.path, &c.operation).map(|_| c.encoded)
    }

    #[test]
    fn allowed_paths_pass_and_are_forwarded_as_checked() {
        assert_eq!(
            check("GET", "/v1/secret/data/github/users/7", None).unwrap(),
            "secret/data/github/users/7"
        );
        assert_eq!(
            check("PUT", "/v1/secret/data/github/users/7", None).unwrap(),
            "secret/data/github/users/7"
        );
        assert_eq!(
            check("DELETE", "/v1/secret/metadata/github/users/7", None).unwrap(),
            "secret/metadata/github/users/7"
        );
        // Harmless encoding is decoded, checked, and re-encoded the same way.
        assert_eq!(
            check("GET", "/v1/secret/data/github/users/%37", None).unwrap(),
            "secret/data/github/users/7"
        );
    }

    #[test]
    fn traversal_and_encoding_tricks_are_refused() {
        for p in [
            "/v1/secret/data/github/users/../../../sys/mounts",
            "/v1/secret/data/github/users/..%2f..%2fsys",
            "/v1/secret/data/github/users/%2e%2e/x",
            "/v1/secret/data/github/users/%2E%2E",
            "/v1/secret/data/github/users/1%2F2",
            "/v1/secret/data/github/users/1%5c2",
            "/v1/secret/data/github/users/1%00",
            "/v1/secret/data/github/users//1",
            "/v1/secret/data/github/users/",
            "/v1//secret/data/github/users/1",
            "/v1/secret/data/github/users/./1",
            "/v2/secret/data/github/users/1",
            "/secret/data/github/users/1",
        ] {
            assert!(check("GET", p, None).is_err(), "{p} should be refused");
        }
    }

    #[test]
    fn other_paths_methods_and_sys_are_refused_with_the_reason() {
        let e = check("GET", "/v1/sys/mounts", None).unwrap_err();
        assert_eq!(e, "no allow-list rule matches this path");
        let e = check("GET", "/v1/secret/data/github/users", None).unwrap_err();
        assert_eq!(e, "no allow-list rule matches this path");
        let e = check("GET", "/v1/secret/metadata/github/users/7", None).unwrap_err();
        assert!(e.contains("allows only DELETE"), "{e}");
        let e = check("PATCH", "/v1/secret/data/github/users/7", None).unwrap_err();
        assert!(e.contains("rule `secret/data/github/users/*`"), "{e}");
        assert!(check("GET", "/v1/database/creds/backend-role", None).is_err());
    }

    #[test]
    fn list_via_query_string_counts_as_list() {
        for q in ["list=true", "LIST=1", "li%73t=true", "x=1&list=true"] {
            let c = normalise("GET", "/v1/secret/data/github/users/7", Some(q)).unwrap();
            assert_eq!(c.operation, "LIST", "{q}");
        }
        let e = check("GET", "/v1/secret/data/github/users/7", Some("list=true")).unwrap_err();
        assert!(e.contains("allows only"), "{e}");
        assert!(check("GET", "/v1/secret/data/github/users/7", Some("version=2")).is_ok());
    }
}
