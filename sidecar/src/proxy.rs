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
use crate::openbao::{TokenCheck, Tokens};
use crate::status::State;

/// Headers that would carry a client's own credentials; refused outright.
pub(crate) const TOKEN_HEADERS: [&str; 3] = ["x-vault-token", "x-openbao-token", "authorization"];

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
    /// The OpenBao operation: the method, or `LIST`/`SCAN`/`HELP` when a
    /// reserved query key says so (OpenBao would treat it that way).
    pub operation: String,
    /// The decoded query pairs that are not operations, in order. Each must
    /// be allowed by the matching rule before anything is forwarded.
    pub query: Vec<(String, String)>,
}

impl Checked {
    /// The query string to forward (re-encoded from the checked pairs), if any.
    pub fn encoded_query(&self) -> Option<String> {
        (!self.query.is_empty()).then(|| {
            self.query
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{}={}",
                        utf8_percent_encode(k, SEGMENT),
                        utf8_percent_encode(v, SEGMENT)
                    )
                })
                .collect::<Vec<_>>()
                .join("&")
        })
    }
}

/// Go's `strconv.ParseBool`, which OpenBao uses for `list` and `scan`.
fn go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Decodes one query component the way Go's `url.QueryUnescape` does (`+`
/// is a space); a bad escape or non-UTF-8 is an error, not a guess.
fn query_component(raw: &str) -> Result<String, String> {
    let bytes = raw.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && !(i + 2 < bytes.len()
                && bytes[i + 1].is_ascii_hexdigit()
                && bytes[i + 2].is_ascii_hexdigit())
        {
            return Err("bad percent-encoding in the query".into());
        }
        i += 1;
    }
    percent_decode_str(&raw.replace('+', " "))
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| "query is not valid UTF-8".to_string())
}

/// Normalises `path` (a URI path) and `query`; `Err` carries the reason.
///
/// Query keys OpenBao treats as operations
/// ([`RESERVED_QUERY_KEYS`](crate::config::RESERVED_QUERY_KEYS)) become
/// the operation that is checked (`GET ?list=true` is `LIST`, `?scan=true`
/// is `SCAN`, a non-empty `help` is `HELP`) and are never forwarded; the
/// operation travels as the upstream method. Anything OpenBao would read
/// differently from us — a repeated key, `;`, a bad escape, a `list` that is
/// not a boolean — is refused.
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
    let method = method.to_ascii_uppercase();
    let mut operation = method.clone();
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let (mut list, mut scan) = (false, false);
    for pair in query.unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        if pair.contains(';') {
            return Err("`;` in the query".into());
        }
        let (raw_key, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = query_component(raw_key)?;
        let value = query_component(raw_value)?;
        if key.chars().any(char::is_control) || value.chars().any(char::is_control) {
            return Err("control character in the query".into());
        }
        let folded = key.to_ascii_lowercase();
        if seen.contains(&folded) {
            return Err(format!("query key `{}` given twice", shorten(&key)));
        }
        seen.push(folded.clone());
        match folded.as_str() {
            "list" | "scan" => {
                if method != "GET" {
                    return Err(format!("query key `{folded}` is only meaningful on GET"));
                }
                match (value.is_empty(), go_bool(&value)) {
                    (true, _) | (false, Some(false)) => {}
                    (false, Some(true)) if folded == "list" => list = true,
                    (false, Some(true)) => scan = true,
                    (false, None) => {
                        return Err(format!("query key `{folded}` must be true or false"))
                    }
                }
            }
            "help" => {
                if !value.is_empty() {
                    operation = "HELP".into();
                }
            }
            _ => pairs.push((key, value)),
        }
    }
    if list && scan {
        return Err("`list` and `scan` together".into());
    }
    if operation != "HELP" {
        if list {
            operation = "LIST".into();
        } else if scan {
            operation = "SCAN".into();
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
        query: pairs,
    })
}

fn shorten(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The query keys `rule` does not allow, or `Ok` when every one is allowed.
pub(crate) fn authorise_query(rule: &AllowRule, checked: &Checked) -> Result<(), String> {
    match checked
        .query
        .iter()
        .find(|(k, _)| !rule.query.iter().any(|q| q == k))
    {
        None => Ok(()),
        Some((k, _)) if rule.query.is_empty() => Err(format!(
            "rule `{}` allows no query keys (got `{}`)",
            rule.path,
            shorten(k)
        )),
        Some((k, _)) => Err(format!(
            "rule `{}` allows only the query keys {} (got `{}`)",
            rule.path,
            rule.query.join(", "),
            shorten(k)
        )),
    }
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
    http: reqwest13::Client,
    tokens: watch::Receiver<Tokens>,
    check: TokenCheck,
    state: State,
    /// A TCP listener, which a browser on the host can reach: requests from
    /// a browser context are refused ([`crate::admin::foreign`]). A Unix
    /// socket is out of a browser's reach.
    tcp: bool,
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
        // Never follows a redirect: the 3xx goes back to the app as is.
        let http = crate::openbao::token_carrying_client(cfg.timeout)?;
        Ok(Self {
            cfg: Arc::new(cfg),
            upstream: upstream.trim_end_matches('/').to_string(),
            http,
            tokens,
            check,
            state,
            tcp: false,
        })
    }

    /// The same proxy for a TCP listener (see [`Proxy::tcp`]).
    pub fn on_tcp(mut self) -> Self {
        self.tcp = true;
        self
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
        if let Some(why) = self
            .tcp
            .then(|| crate::admin::foreign(req.headers()))
            .flatten()
        {
            return (
                refuse(req.uri().path().trim_start_matches("/v1/"), why.into()),
                None,
            );
        }
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
        let allowed = authorise(&self.cfg.allow, &checked.path, &checked.operation)
            .and_then(|rule| authorise_query(rule, &checked));
        if let Err(why) = allowed {
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
        // Only the checked, allowed pairs, re-encoded: OpenBao sees what was checked.
        let query = checked.encoded_query();
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
                query: vec!["version".into()],
            },
            AllowRule {
                path: "secret/metadata/github/users/*".into(),
                methods: vec!["DELETE".into(), "LIST".into()],
                query: vec![],
            },
        ]
    }

    fn check(method: &str, path: &str, query: Option<&str>) -> Result<String, String> {
        let c = normalise(method, path, query)?;
        let rules = rules();
        let rule = authorise(&rules, &c.path, &c.operation)?;
        authorise_query(rule, &c)?;
        Ok(c.encoded)
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
        assert!(e.contains("allows only DELETE, LIST"), "{e}");
        let e = check("PATCH", "/v1/secret/data/github/users/7", None).unwrap_err();
        assert!(e.contains("rule `secret/data/github/users/*`"), "{e}");
        assert!(check("GET", "/v1/database/creds/backend-role", None).is_err());
    }

    #[test]
    fn list_via_query_string_counts_as_list() {
        for q in [
            "list=true",
            "LIST=1",
            "li%73t=true",
            "x=1&list=t",
            "list=True",
        ] {
            let c = normalise("GET", "/v1/secret/data/github/users/7", Some(q)).unwrap();
            assert_eq!(c.operation, "LIST", "{q}");
            assert!(c.query.iter().all(|(k, _)| k != "list"), "never forwarded");
        }
        let e = check("GET", "/v1/secret/data/github/users/7", Some("list=true")).unwrap_err();
        assert!(e.contains("allows only"), "{e}");
        // A rule that allows LIST gets it, as the LIST method, without the key.
        let c = normalise("GET", "/v1/secret/metadata/github/users/7", Some("list=1")).unwrap();
        assert_eq!((c.operation.as_str(), c.encoded_query()), ("LIST", None));
        assert!(check("GET", "/v1/secret/metadata/github/users/7", Some("list=1")).is_ok());
        // false, 0 or empty: a plain read, as OpenBao reads it.
        for q in ["list=false", "list=0", "list=", "list"] {
            let c = normalise("GET", "/v1/secret/data/github/users/7", Some(q)).unwrap();
            assert_eq!(c.operation, "GET", "{q}");
            assert_eq!(c.encoded_query(), None, "{q}");
        }
    }

    /// Regression (issue 16, 4): only `list` was mapped; OpenBao also runs
    /// `?scan=true` as SCAN and any non-empty `?help=` as HELP.
    #[test]
    fn every_reserved_query_key_is_mapped_to_its_operation() {
        for (q, op) in [
            ("scan=true", "SCAN"),
            ("SCAN=1", "SCAN"),
            ("help=1", "HELP"),
            ("help=false", "HELP"),
            ("help=0", "HELP"),
            ("x=1&help=yes", "HELP"),
            ("he%6Cp=1", "HELP"),
        ] {
            let c = normalise("GET", "/v1/secret/data/github/users/7", Some(q)).unwrap();
            assert_eq!(c.operation, op, "{q}");
            let e = check("GET", "/v1/secret/data/github/users/7", Some(q)).unwrap_err();
            assert!(e.contains("allows only"), "{q}: {e}");
        }
        // HELP on any method.
        for m in ["PUT", "POST", "DELETE"] {
            let c = normalise(m, "/v1/secret/data/github/users/7", Some("help=1")).unwrap();
            assert_eq!(c.operation, "HELP", "{m}");
        }
        let c = normalise("GET", "/v1/secret/data/github/users/7", Some("help=")).unwrap();
        assert_eq!((c.operation.as_str(), c.encoded_query()), ("GET", None));
    }

    #[test]
    fn ambiguous_queries_are_refused() {
        for (m, q, why) in [
            ("GET", "list=true&scan=true", "together"),
            ("GET", "list=yes", "true or false"),
            ("GET", "scan=maybe", "true or false"),
            ("GET", "list=1&list=0", "twice"),
            ("GET", "version=1&version=2", "twice"),
            ("GET", "version=1;list=true", "`;`"),
            ("GET", "version=%zz", "percent-encoding"),
            ("GET", "version=%", "percent-encoding"),
            ("GET", "version=%ff", "UTF-8"),
            ("GET", "version=1%0a", "control"),
            ("PUT", "list=true", "only meaningful on GET"),
            ("DELETE", "scan=true", "only meaningful on GET"),
        ] {
            let e = normalise(m, "/v1/secret/data/github/users/7", Some(q)).unwrap_err();
            assert!(e.contains(why), "{m} ?{q}: {e}");
        }
    }

    #[test]
    fn only_query_keys_the_rule_allows_are_forwarded() {
        assert!(check("GET", "/v1/secret/data/github/users/7", Some("version=2")).is_ok());
        let c = normalise("GET", "/v1/secret/data/github/users/7", Some("version=2&&")).unwrap();
        assert_eq!(c.encoded_query().as_deref(), Some("version=2"));
        let e = check(
            "GET",
            "/v1/secret/data/github/users/7",
            Some("version=2&cas=1"),
        )
        .unwrap_err();
        assert!(
            e.contains("allows only the query keys version (got `cas`)"),
            "{e}"
        );
        let e = check(
            "DELETE",
            "/v1/secret/metadata/github/users/7",
            Some("versions=1"),
        )
        .unwrap_err();
        assert!(e.contains("allows no query keys"), "{e}");
        // Keys are exact: OpenBao's are case-sensitive.
        assert!(check("GET", "/v1/secret/data/github/users/7", Some("Version=2")).is_err());
        // Forwarded re-encoded from what was checked.
        let c = normalise("GET", "/v1/secret/data/github/users/7", Some("version=1+2")).unwrap();
        assert_eq!(c.encoded_query().as_deref(), Some("version=1%202"));
    }
}
