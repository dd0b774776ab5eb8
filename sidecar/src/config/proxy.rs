//! `[proxy]`: the OpenBao API proxy's listeners, limits and allow-list.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::invalid;
use super::values::{duration_str, opt_duration, required, socket_addr};
use super::ConfigError;

/// Default proxy body limit (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Largest accepted `proxy.max_body_bytes` (64 MiB).
pub const MAX_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Default proxy upstream timeout.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(10);

/// Methods the proxy can forward.
pub const PROXY_METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "LIST"];

/// Query keys OpenBao's HTTP layer turns into an operation (`?list=true` is
/// LIST, `?scan=true` SCAN, `?help=1` HELP: `http/logical.go` and
/// `http/help.go` in OpenBao 2.x). The proxy maps them to the operation it
/// checks and never forwards them.
pub const RESERVED_QUERY_KEYS: [&str; 3] = ["list", "scan", "help"];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxy {
    #[serde(default)]
    listen: Vec<String>,
    max_body_bytes: Option<i64>,
    timeout: Option<String>,
    #[serde(default)]
    allow: Vec<RawAllow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAllow {
    path: Option<String>,
    methods: Option<Vec<String>>,
    #[serde(default)]
    query: Vec<String>,
}

/// Where a listener listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum ListenAddr {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A loopback TCP address.
    Tcp(SocketAddr),
}

impl From<ListenAddr> for String {
    fn from(l: ListenAddr) -> String {
        l.to_string()
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// `[proxy]`
#[derive(Debug, Clone, Serialize)]
pub struct ProxyConfig {
    /// Listeners.
    pub listen: Vec<ListenAddr>,
    /// Request body limit.
    pub max_body_bytes: usize,
    /// Upstream timeout.
    #[serde(with = "duration_str")]
    pub timeout: Duration,
    /// Allow-list.
    pub allow: Vec<AllowRule>,
}

/// One allow-list rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AllowRule {
    /// Path below `/v1/`, optionally ending in `/*` (one or more further segments).
    pub path: String,
    /// Upper-case methods.
    pub methods: Vec<String>,
    /// Query keys forwarded to OpenBao (e.g. `version` for KV reads); any
    /// other key is refused. Never one of [`RESERVED_QUERY_KEYS`].
    pub query: Vec<String>,
}

/// `[proxy]`.
pub(super) fn validate(p: RawProxy) -> Result<ProxyConfig, ConfigError> {
    if p.listen.is_empty() {
        return Err(invalid(
            "proxy.listen",
            "needs at least one address, e.g. [\"unix:/run/zt/openbao.sock\"]",
        ));
    }
    let listen = p
        .listen
        .iter()
        .enumerate()
        .map(|(i, l)| listen_addr(&format!("proxy.listen[{i}]"), l))
        .collect::<Result<Vec<_>, _>>()?;
    let max_body_bytes = match p.max_body_bytes {
        None => DEFAULT_MAX_BODY_BYTES,
        Some(n) if n >= 1 && (n as u64) <= MAX_MAX_BODY_BYTES as u64 => n as usize,
        Some(n) => {
            return Err(invalid(
                "proxy.max_body_bytes",
                format!("{n} is out of range (1 to {MAX_MAX_BODY_BYTES})"),
            ))
        }
    };
    let mut allow = Vec::new();
    for (i, r) in p.allow.into_iter().enumerate() {
        let k = |f: &str| format!("proxy.allow[{i}].{f}");
        let path = required(&k("path"), r.path)?;
        let body = path.strip_suffix("/*").unwrap_or(&path);
        if body.starts_with('/')
            || body.contains('*')
            || body
                .split('/')
                .any(|s| s.is_empty() || s == "." || s == ".." || s.contains('%'))
        {
            return Err(invalid(
                k("path"),
                format!("`{path}` must be a path below /v1/ such as secret/data/app/*; `*` only as the last segment"),
            ));
        }
        let first = body.split('/').next().unwrap_or_default();
        if matches!(first, "sys" | "auth" | "identity" | "cubbyhole") {
            return Err(invalid(
                k("path"),
                format!(
                    "`{first}/` paths cannot be proxied: the sidecar owns its token and leases"
                ),
            ));
        }
        let methods = r
            .methods
            .ok_or_else(|| invalid(k("methods"), "is required, e.g. [\"GET\"]"))?;
        if methods.is_empty() {
            return Err(invalid(k("methods"), "must list at least one method"));
        }
        let mut upper = Vec::new();
        for m in methods {
            let u = m.to_ascii_uppercase();
            if !PROXY_METHODS.contains(&u.as_str()) {
                return Err(invalid(
                    k("methods"),
                    format!("`{m}` is not one of {PROXY_METHODS:?}"),
                ));
            }
            upper.push(u);
        }
        let mut query = Vec::new();
        for key in r.query {
            if key.is_empty()
                || key.len() > 64
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            {
                return Err(invalid(
                    k("query"),
                    format!("`{key}` is not a query key (letters, digits, `_`, `-`, `.`)"),
                ));
            }
            if RESERVED_QUERY_KEYS.contains(&key.to_ascii_lowercase().as_str()) {
                return Err(invalid(
                    k("query"),
                    format!("`{key}` is an operation for OpenBao, not data: allow the method instead (e.g. LIST)"),
                ));
            }
            query.push(key);
        }
        allow.push(AllowRule {
            path,
            methods: upper,
            query,
        });
    }
    Ok(ProxyConfig {
        listen,
        max_body_bytes,
        timeout: opt_duration("proxy.timeout", p.timeout, DEFAULT_PROXY_TIMEOUT)?,
        allow,
    })
}

fn listen_addr(key: &str, v: &str) -> Result<ListenAddr, ConfigError> {
    if let Some(path) = v.strip_prefix("unix:") {
        let path = path.trim_start_matches("//");
        let p = PathBuf::from(path);
        if !p.is_absolute() {
            return Err(invalid(
                key,
                format!("`{v}` must be unix:/absolute/path.sock"),
            ));
        }
        return Ok(ListenAddr::Unix(p));
    }
    if let Some(addr) = v.strip_prefix("tcp:") {
        let a = socket_addr(key, addr.trim_start_matches("//"))?;
        if !a.ip().is_loopback() {
            return Err(invalid(
                key,
                format!("`{v}`: the proxy may only listen on loopback"),
            ));
        }
        return Ok(ListenAddr::Tcp(a));
    }
    Err(invalid(
        key,
        format!("`{v}` must be unix:/path.sock or tcp:127.0.0.1:<port>"),
    ))
}
