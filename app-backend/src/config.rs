//! Configuration from environment variables, each a documented constant next
//! to its default. Read through [`ConfigSource`] so tests pass a map instead
//! of mutating the process environment.
//!
//! A bad value is a [`ConfigError`] naming the variable; `main` prints it as
//! `invalid configuration: <VAR>: <what is wrong>` and exits 64.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where the backend listens (plain HTTP; the sidecar terminates mTLS in front of it).
pub const LISTEN: &str = "BACKEND_LISTEN";
/// Default of [`LISTEN`]: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8000";

/// Folder the zt-sidecar writes `db.json`, `db-migrator.json` and `jwt-signing-key.json` into.
pub const SECRETS_DIR: &str = "ZT_SECRETS_DIR";
/// Default of [`SECRETS_DIR`]: the pod's tmpfs.
pub const DEFAULT_SECRETS_DIR: &str = "/run/zt/secrets";

/// The sidecar's OpenBao API proxy: `unix:/path.sock` or `http://127.0.0.1:<port>`.
pub const OPENBAO_PROXY: &str = "ZT_OPENBAO_PROXY";
/// Default of [`OPENBAO_PROXY`].
pub const DEFAULT_OPENBAO_PROXY: &str = "unix:/run/zt/openbao.sock";

/// Time limit for one request to the OpenBao proxy.
pub const OPENBAO_TIMEOUT: &str = "ZT_OPENBAO_TIMEOUT";
/// Default of [`OPENBAO_TIMEOUT`]: a little more than the sidecar's own upstream timeout (10 s),
/// so its 504 arrives before ours.
pub const DEFAULT_OPENBAO_TIMEOUT: &str = "12s";

/// The sidecar's admin endpoint (for `GET /api/zt/status`).
pub const SIDECAR_ADMIN_URL: &str = "ZT_SIDECAR_ADMIN_URL";
/// Default of [`SIDECAR_ADMIN_URL`].
pub const DEFAULT_SIDECAR_ADMIN_URL: &str = "http://127.0.0.1:15000";

/// GitHub's REST API base URL (tests and offline demos point it at the stand-in).
pub const GITHUB_API_URL: &str = "GITHUB_API_URL";
/// Default of [`GITHUB_API_URL`].
pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// Time limit for one request to GitHub (answered with 504 `github_timeout`).
pub const GITHUB_TIMEOUT: &str = "GITHUB_TIMEOUT";
/// Default of [`GITHUB_TIMEOUT`].
pub const DEFAULT_GITHUB_TIMEOUT: &str = "10s";

/// Largest number of PostgreSQL connections per pool.
pub const DB_POOL_SIZE: &str = "BACKEND_DB_POOL_SIZE";
/// Default of [`DB_POOL_SIZE`] (the seed: 10–20).
pub const DEFAULT_DB_POOL_SIZE: usize = 16;

/// How long start-up waits for `db-migrator.json` before it starts without
/// running migrations (the schema may already be in place; readiness checks it).
pub const MIGRATOR_WAIT: &str = "BACKEND_MIGRATOR_WAIT";
/// Default of [`MIGRATOR_WAIT`].
pub const DEFAULT_MIGRATOR_WAIT: &str = "15s";

/// How often the secrets folder is re-read, in addition to inotify events.
pub const SECRETS_POLL_INTERVAL: &str = "BACKEND_SECRETS_POLL_INTERVAL";
/// Default of [`SECRETS_POLL_INTERVAL`] (contract 1: "poll e.g. every 2 s").
pub const DEFAULT_SECRETS_POLL_INTERVAL: &str = "2s";

/// Failed logins allowed per client within [`LOGIN_FAILURE_WINDOW`] before 429.
pub const LOGIN_MAX_FAILURES: &str = "BACKEND_LOGIN_MAX_FAILURES";
/// Default of [`LOGIN_MAX_FAILURES`].
pub const DEFAULT_LOGIN_MAX_FAILURES: u32 = 10;

/// Failed logins allowed per account name within [`LOGIN_FAILURE_WINDOW`],
/// from all clients together, before 429: the per-client limit alone lets a
/// caller that controls its client key (a compromised frontend choosing
/// `X-Forwarded-For`, an IPv6 network with many /64s) guess without end.
pub const LOGIN_MAX_FAILURES_PER_ACCOUNT: &str = "BACKEND_LOGIN_MAX_FAILURES_PER_ACCOUNT";
/// Default of [`LOGIN_MAX_FAILURES_PER_ACCOUNT`].
pub const DEFAULT_LOGIN_MAX_FAILURES_PER_ACCOUNT: u32 = 30;

/// The window failed logins are counted in.
pub const LOGIN_FAILURE_WINDOW: &str = "BACKEND_LOGIN_FAILURE_WINDOW";
/// Default of [`LOGIN_FAILURE_WINDOW`].
pub const DEFAULT_LOGIN_FAILURE_WINDOW: &str = "5m";

/// Login attempts one client may have in flight at once (each waits for an
/// argon2 verification); more get `429` at once. Not configurable: a browser
/// has one login in flight, a few share an address behind NAT.
pub const LOGIN_MAX_PENDING_PER_CLIENT: u32 = 4;

/// Login attempts one account name may have in flight at once, from all
/// clients together. Not configurable: a person signs in once at a time.
pub const LOGIN_MAX_PENDING_PER_ACCOUNT: u32 = 4;

/// How long a client that signed in to an account is not held back by the
/// per-account limit ([`LOGIN_MAX_FAILURES_PER_ACCOUNT`]). Not configurable.
pub const KNOWN_CLIENT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Registrations allowed per client within [`REGISTER_WINDOW`] (each costs an
/// argon2 hash, successful or not) before 429.
pub const REGISTER_MAX_PER_CLIENT: &str = "BACKEND_REGISTER_MAX_PER_CLIENT";
/// Default of [`REGISTER_MAX_PER_CLIENT`].
pub const DEFAULT_REGISTER_MAX_PER_CLIENT: u32 = 10;

/// The window registrations are counted in.
pub const REGISTER_WINDOW: &str = "BACKEND_REGISTER_WINDOW";
/// Default of [`REGISTER_WINDOW`].
pub const DEFAULT_REGISTER_WINDOW: &str = "1h";

/// Registrations one client may have in flight at once (not configurable,
/// like [`LOGIN_MAX_PENDING_PER_CLIENT`]).
pub const REGISTER_MAX_PENDING_PER_CLIENT: u32 = 2;

/// GitHub token checks (`POST /api/github/configure`, each a call to
/// GitHub) allowed per user within [`GITHUB_CHECK_WINDOW`] before 429: a
/// user stores a token now and then; a loop of checks would use the backend
/// to test guessed tokens against GitHub from the platform's address.
pub const GITHUB_CHECKS_PER_USER: &str = "BACKEND_GITHUB_CHECKS_PER_USER";
/// Default of [`GITHUB_CHECKS_PER_USER`].
pub const DEFAULT_GITHUB_CHECKS_PER_USER: u32 = 10;

/// The window GitHub token checks are counted in.
pub const GITHUB_CHECK_WINDOW: &str = "BACKEND_GITHUB_CHECK_WINDOW";
/// Default of [`GITHUB_CHECK_WINDOW`].
pub const DEFAULT_GITHUB_CHECK_WINDOW: &str = "10m";

/// GitHub reads (`GET /api/github/repos` and `/api/github/user`, each an
/// OpenBao read and a call to GitHub) allowed per user within
/// [`GITHUB_READ_WINDOW`] before 429.
pub const GITHUB_READS_PER_USER: &str = "BACKEND_GITHUB_READS_PER_USER";
/// Default of [`GITHUB_READS_PER_USER`]: five a second on average, above
/// what a person asks for (a search of the repositories page reads up to 5
/// pages of them per view).
pub const DEFAULT_GITHUB_READS_PER_USER: u32 = 300;

/// The window GitHub reads are counted in.
pub const GITHUB_READ_WINDOW: &str = "BACKEND_GITHUB_READ_WINDOW";
/// Default of [`GITHUB_READ_WINDOW`].
pub const DEFAULT_GITHUB_READ_WINDOW: &str = "1m";

/// GitHub calls one user may have in flight at once (not configurable).
pub const GITHUB_MAX_PENDING_PER_USER: u32 = 4;

/// How long after a signing-key change (the KV version's `created_time`)
/// tokens signed with the previous key still verify.
pub const JWT_PREVIOUS_KEY_GRACE: &str = "BACKEND_JWT_PREVIOUS_KEY_GRACE";
/// Default of [`JWT_PREVIOUS_KEY_GRACE`].
pub const DEFAULT_JWT_PREVIOUS_KEY_GRACE: &str = "10m";

/// Whether to create the six Brooklyn Nine-Nine demo users (known
/// passwords, operators). Only for the demo: `make up` and `make deploy` turn
/// it on; anything else leaves it off.
pub const SEED_DEMO_USERS: &str = "BACKEND_SEED_DEMO_USERS";
/// Default of [`SEED_DEMO_USERS`]: off.
pub const DEFAULT_SEED_DEMO_USERS: bool = false;

/// The frontend's SPIFFE ID: `X-Forwarded-For` is trusted only on requests
/// whose peer-ID header (set by the sidecar after mTLS) is exactly this.
pub const FRONTEND_SPIFFE_ID: &str = "BACKEND_FRONTEND_SPIFFE_ID";
/// Default of [`FRONTEND_SPIFFE_ID`].
pub const DEFAULT_FRONTEND_SPIFFE_ID: &str = "spiffe://demo.local/ns/99-apps/sa/frontend";

/// Host names (comma-separated, no port) accepted in `Host` besides IP
/// literals and `localhost`; any other name is refused (DNS rebinding).
pub const ALLOWED_HOSTS: &str = "BACKEND_ALLOWED_HOSTS";
/// Default of [`ALLOWED_HOSTS`]: none (every caller uses an IP literal).
pub const DEFAULT_ALLOWED_HOSTS: &str = "";

/// HTTP worker threads; 0 = one per CPU core.
pub const WORKERS: &str = "BACKEND_WORKERS";
/// Default of [`WORKERS`].
pub const DEFAULT_WORKERS: usize = 0;

/// Log format: `text` or `json`. (The level comes from `RUST_LOG`, default `info`.)
pub const LOG_FORMAT: &str = "BACKEND_LOG_FORMAT";
/// Default of [`LOG_FORMAT`].
pub const DEFAULT_LOG_FORMAT: &str = "text";

/// Every variable the backend reads, for the README and `--help`-like output.
pub const ALL: &[&str] = &[
    LISTEN,
    SECRETS_DIR,
    OPENBAO_PROXY,
    OPENBAO_TIMEOUT,
    SIDECAR_ADMIN_URL,
    GITHUB_API_URL,
    GITHUB_TIMEOUT,
    DB_POOL_SIZE,
    MIGRATOR_WAIT,
    SECRETS_POLL_INTERVAL,
    LOGIN_MAX_FAILURES,
    LOGIN_MAX_FAILURES_PER_ACCOUNT,
    LOGIN_FAILURE_WINDOW,
    REGISTER_MAX_PER_CLIENT,
    REGISTER_WINDOW,
    GITHUB_CHECKS_PER_USER,
    GITHUB_CHECK_WINDOW,
    GITHUB_READS_PER_USER,
    GITHUB_READ_WINDOW,
    JWT_PREVIOUS_KEY_GRACE,
    SEED_DEMO_USERS,
    FRONTEND_SPIFFE_ID,
    ALLOWED_HOSTS,
    WORKERS,
    LOG_FORMAT,
];

/// Where configuration values come from (one definition for the workspace).
pub use zt_contracts::{ConfigSource, ProcessEnv};

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct ConfigError {
    /// The variable.
    pub key: &'static str,
    /// What is wrong with it (never its value when the value could be secret;
    /// none of these values is).
    pub problem: String,
}

fn err(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        problem: problem.into(),
    }
}

/// How to reach the sidecar's OpenBao proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyAddress {
    /// A Unix socket (the default).
    Unix(PathBuf),
    /// Loopback TCP.
    Tcp(SocketAddr),
}

impl std::fmt::Display for ProxyAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProxyAddress::Unix(p) => write!(f, "unix:{}", p.display()),
            ProxyAddress::Tcp(a) => write!(f, "http://{a}"),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// [`LISTEN`]
    pub listen: SocketAddr,
    /// [`SECRETS_DIR`]
    pub secrets_dir: PathBuf,
    /// [`OPENBAO_PROXY`]
    pub openbao_proxy: ProxyAddress,
    /// [`OPENBAO_TIMEOUT`]
    pub openbao_timeout: Duration,
    /// [`SIDECAR_ADMIN_URL`], without a trailing slash.
    pub sidecar_admin_url: String,
    /// [`GITHUB_API_URL`], without a trailing slash.
    pub github_api_url: String,
    /// [`GITHUB_TIMEOUT`]
    pub github_timeout: Duration,
    /// [`DB_POOL_SIZE`]
    pub db_pool_size: usize,
    /// [`MIGRATOR_WAIT`]
    pub migrator_wait: Duration,
    /// [`SECRETS_POLL_INTERVAL`]
    pub secrets_poll_interval: Duration,
    /// [`LOGIN_MAX_FAILURES`]
    pub login_max_failures: u32,
    /// [`LOGIN_MAX_FAILURES_PER_ACCOUNT`]
    pub login_max_failures_per_account: u32,
    /// [`LOGIN_FAILURE_WINDOW`]
    pub login_failure_window: Duration,
    /// [`REGISTER_MAX_PER_CLIENT`]
    pub register_max_per_client: u32,
    /// [`REGISTER_WINDOW`]
    pub register_window: Duration,
    /// [`GITHUB_CHECKS_PER_USER`]
    pub github_checks_per_user: u32,
    /// [`GITHUB_CHECK_WINDOW`]
    pub github_check_window: Duration,
    /// [`GITHUB_READS_PER_USER`]
    pub github_reads_per_user: u32,
    /// [`GITHUB_READ_WINDOW`]
    pub github_read_window: Duration,
    /// [`JWT_PREVIOUS_KEY_GRACE`]
    pub jwt_previous_key_grace: Duration,
    /// [`SEED_DEMO_USERS`]
    pub seed_demo_users: bool,
    /// [`FRONTEND_SPIFFE_ID`]
    pub frontend_spiffe_id: String,
    /// [`ALLOWED_HOSTS`], lower-case.
    pub allowed_hosts: Vec<String>,
    /// [`WORKERS`]; 0 = one per core.
    pub workers: usize,
    /// [`LOG_FORMAT`]
    pub log_format: LogFormat,
}

impl Config {
    /// Reads and validates every variable; the first problem found is returned.
    pub fn from_source(src: &impl ConfigSource) -> Result<Self, ConfigError> {
        let raw = |key: &'static str, default: &str| -> String {
            src.get(key)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        let listen = raw(LISTEN, DEFAULT_LISTEN)
            .parse::<SocketAddr>()
            .map_err(|e| {
                err(
                    LISTEN,
                    format!("{e} (expected ip:port, e.g. 127.0.0.1:8000)"),
                )
            })?;
        if !listen.ip().is_loopback() {
            // Only the sidecar may reach the backend: in a pod, loopback is
            // shared with the sidecar alone (app-backend/README.md, "Who can reach it").
            return Err(err(
                LISTEN,
                format!("{listen} is not a loopback address: the backend is reached only through its sidecar (use 127.0.0.1:<port>)"),
            ));
        }
        let secrets_dir = PathBuf::from(raw(SECRETS_DIR, DEFAULT_SECRETS_DIR));
        let openbao_proxy = parse_proxy(&raw(OPENBAO_PROXY, DEFAULT_OPENBAO_PROXY))?;
        let openbao_timeout = duration(
            OPENBAO_TIMEOUT,
            &raw(OPENBAO_TIMEOUT, DEFAULT_OPENBAO_TIMEOUT),
        )?;
        let sidecar_admin_url = http_url(
            SIDECAR_ADMIN_URL,
            &raw(SIDECAR_ADMIN_URL, DEFAULT_SIDECAR_ADMIN_URL),
        )?;
        let github_api_url =
            http_url(GITHUB_API_URL, &raw(GITHUB_API_URL, DEFAULT_GITHUB_API_URL))?;
        let github_timeout =
            duration(GITHUB_TIMEOUT, &raw(GITHUB_TIMEOUT, DEFAULT_GITHUB_TIMEOUT))?;
        let db_pool_size = number(DB_POOL_SIZE, src, DEFAULT_DB_POOL_SIZE, 1, 1000)?;
        let migrator_wait = duration(MIGRATOR_WAIT, &raw(MIGRATOR_WAIT, DEFAULT_MIGRATOR_WAIT))?;
        let secrets_poll_interval = duration(
            SECRETS_POLL_INTERVAL,
            &raw(SECRETS_POLL_INTERVAL, DEFAULT_SECRETS_POLL_INTERVAL),
        )?;
        let login_max_failures = number(
            LOGIN_MAX_FAILURES,
            src,
            DEFAULT_LOGIN_MAX_FAILURES as usize,
            1,
            1_000_000,
        )? as u32;
        let login_max_failures_per_account = number(
            LOGIN_MAX_FAILURES_PER_ACCOUNT,
            src,
            DEFAULT_LOGIN_MAX_FAILURES_PER_ACCOUNT as usize,
            1,
            1_000_000,
        )? as u32;
        let login_failure_window = duration(
            LOGIN_FAILURE_WINDOW,
            &raw(LOGIN_FAILURE_WINDOW, DEFAULT_LOGIN_FAILURE_WINDOW),
        )?;
        let register_max_per_client = number(
            REGISTER_MAX_PER_CLIENT,
            src,
            DEFAULT_REGISTER_MAX_PER_CLIENT as usize,
            1,
            1_000_000,
        )? as u32;
        let register_window = duration(
            REGISTER_WINDOW,
            &raw(REGISTER_WINDOW, DEFAULT_REGISTER_WINDOW),
        )?;
        let github_checks_per_user = number(
            GITHUB_CHECKS_PER_USER,
            src,
            DEFAULT_GITHUB_CHECKS_PER_USER as usize,
            1,
            1_000_000,
        )? as u32;
        let github_check_window = duration(
            GITHUB_CHECK_WINDOW,
            &raw(GITHUB_CHECK_WINDOW, DEFAULT_GITHUB_CHECK_WINDOW),
        )?;
        let github_reads_per_user = number(
            GITHUB_READS_PER_USER,
            src,
            DEFAULT_GITHUB_READS_PER_USER as usize,
            1,
            1_000_000,
        )? as u32;
        let github_read_window = duration(
            GITHUB_READ_WINDOW,
            &raw(GITHUB_READ_WINDOW, DEFAULT_GITHUB_READ_WINDOW),
        )?;
        let jwt_previous_key_grace = duration(
            JWT_PREVIOUS_KEY_GRACE,
            &raw(JWT_PREVIOUS_KEY_GRACE, DEFAULT_JWT_PREVIOUS_KEY_GRACE),
        )?;
        let seed_demo_users = boolean(SEED_DEMO_USERS, src, DEFAULT_SEED_DEMO_USERS)?;
        let frontend_spiffe_id = spiffe_id(
            FRONTEND_SPIFFE_ID,
            &raw(FRONTEND_SPIFFE_ID, DEFAULT_FRONTEND_SPIFFE_ID),
        )?;
        let allowed_hosts = host_names(ALLOWED_HOSTS, &raw(ALLOWED_HOSTS, DEFAULT_ALLOWED_HOSTS))?;
        let workers = number(WORKERS, src, DEFAULT_WORKERS, 0, 256)?;
        let log_format = match raw(LOG_FORMAT, DEFAULT_LOG_FORMAT).as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(err(
                    LOG_FORMAT,
                    format!("{:?} is not text or json", truncate(other)),
                ))
            }
        };
        Ok(Self {
            listen,
            secrets_dir,
            openbao_proxy,
            openbao_timeout,
            sidecar_admin_url,
            github_api_url,
            github_timeout,
            db_pool_size,
            migrator_wait,
            secrets_poll_interval,
            login_max_failures,
            login_max_failures_per_account,
            login_failure_window,
            register_max_per_client,
            register_window,
            github_checks_per_user,
            github_check_window,
            github_reads_per_user,
            github_read_window,
            jwt_previous_key_grace,
            seed_demo_users,
            frontend_spiffe_id,
            allowed_hosts,
            workers,
            log_format,
        })
    }

    /// The defaults with test-friendly overrides applied from `pairs`.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        Self::from_source(&map)
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(60).collect()
}

fn duration(key: &'static str, v: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(v).map_err(|e| {
        err(
            key,
            format!(
                "{:?} is not a duration ({e}); use e.g. \"500ms\", \"10s\", \"5m\"",
                truncate(v)
            ),
        )
    })?;
    if d.is_zero() {
        return Err(err(key, "must be greater than zero"));
    }
    if d > Duration::from_secs(24 * 3600) {
        return Err(err(key, "must be at most 24h"));
    }
    Ok(d)
}

fn number(
    key: &'static str,
    src: &impl ConfigSource,
    default: usize,
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let Some(v) = src
        .get(key)
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
    else {
        return Ok(default);
    };
    let n: usize = v
        .parse()
        .map_err(|_| err(key, format!("{:?} is not a whole number", truncate(&v))))?;
    if n < min || n > max {
        return Err(err(key, format!("{n} is out of range {min}..={max}")));
    }
    Ok(n)
}

fn http_url(key: &'static str, v: &str) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(v)
        .map_err(|e| err(key, format!("{:?} is not a URL ({e})", truncate(v))))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(err(key, "must be an http:// or https:// URL"));
    }
    if url.host_str().is_none() {
        return Err(err(key, "has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(err(key, "must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(err(key, "must not carry credentials"));
    }
    Ok(v.trim_end_matches('/').to_string())
}

fn boolean(key: &'static str, src: &impl ConfigSource, default: bool) -> Result<bool, ConfigError> {
    let Some(v) = src
        .get(key)
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| !v.is_empty())
    else {
        return Ok(default);
    };
    match v.as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(err(key, format!("{:?} is not true or false", truncate(&v)))),
    }
}

fn spiffe_id(key: &'static str, v: &str) -> Result<String, ConfigError> {
    let Some(rest) = v.strip_prefix("spiffe://") else {
        return Err(err(
            key,
            format!(
                "{:?} is not a SPIFFE ID (spiffe://<trust domain>/<path>)",
                truncate(v)
            ),
        ));
    };
    let (domain, path) = rest.split_once('/').unwrap_or((rest, ""));
    if domain.is_empty() || path.is_empty() {
        return Err(err(key, "a SPIFFE ID needs a trust domain and a path"));
    }
    if v.len() > 2048 || !v.chars().all(|c| c.is_ascii_graphic()) {
        return Err(err(
            key,
            "a SPIFFE ID is printable ASCII without spaces, at most 2048 bytes",
        ));
    }
    Ok(v.to_string())
}

fn host_names(key: &'static str, v: &str) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    for name in v.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let ok = name.len() <= 253
            && name.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !ok {
            return Err(err(
                key,
                format!(
                    "{:?} is not a host name (letters, digits, '-' and '.', no port)",
                    truncate(name)
                ),
            ));
        }
        out.push(name.to_ascii_lowercase());
    }
    Ok(out)
}

fn parse_proxy(v: &str) -> Result<ProxyAddress, ConfigError> {
    if let Some(path) = v.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(err(
                OPENBAO_PROXY,
                "unix: needs a socket path, e.g. unix:/run/zt/openbao.sock",
            ));
        }
        return Ok(ProxyAddress::Unix(PathBuf::from(path)));
    }
    let hostport = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("tcp:"))
        .ok_or_else(|| {
            err(
                OPENBAO_PROXY,
                format!(
                    "{:?}: expected unix:/path.sock or http://127.0.0.1:<port>",
                    truncate(v)
                ),
            )
        })?;
    let addr: SocketAddr = hostport.trim_end_matches('/').parse().map_err(|_| {
        err(
            OPENBAO_PROXY,
            format!(
                "{:?}: expected unix:/path.sock or http://127.0.0.1:<port>",
                truncate(v)
            ),
        )
    })?;
    if !addr.ip().is_loopback() {
        // The proxy injects the sidecar's OpenBao token: it must never leave the host.
        return Err(err(OPENBAO_PROXY, "a TCP proxy address must be loopback"));
    }
    Ok(ProxyAddress::Tcp(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let c = Config::from_pairs(&[]).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.secrets_dir, PathBuf::from(DEFAULT_SECRETS_DIR));
        assert_eq!(
            c.openbao_proxy,
            ProxyAddress::Unix("/run/zt/openbao.sock".into())
        );
        assert_eq!(c.sidecar_admin_url, DEFAULT_SIDECAR_ADMIN_URL);
        assert_eq!(c.github_api_url, DEFAULT_GITHUB_API_URL);
        assert_eq!(c.github_timeout, Duration::from_secs(10));
        assert_eq!(c.db_pool_size, DEFAULT_DB_POOL_SIZE);
        assert_eq!(c.secrets_poll_interval, Duration::from_secs(2));
        assert_eq!(c.login_max_failures, DEFAULT_LOGIN_MAX_FAILURES);
        assert_eq!(
            c.login_max_failures_per_account,
            DEFAULT_LOGIN_MAX_FAILURES_PER_ACCOUNT
        );
        assert_eq!(c.login_failure_window, Duration::from_secs(300));
        assert_eq!(c.register_max_per_client, DEFAULT_REGISTER_MAX_PER_CLIENT);
        assert_eq!(c.register_window, Duration::from_secs(3600));
        assert_eq!(c.github_checks_per_user, DEFAULT_GITHUB_CHECKS_PER_USER);
        assert_eq!(c.github_check_window, Duration::from_secs(600));
        assert_eq!(c.github_reads_per_user, DEFAULT_GITHUB_READS_PER_USER);
        assert_eq!(c.github_read_window, Duration::from_secs(60));
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.frontend_spiffe_id, DEFAULT_FRONTEND_SPIFFE_ID);
        assert!(
            !c.seed_demo_users,
            "the demo users are off unless asked for"
        );
        for v in ["true", "1", " Yes ", "ON"] {
            assert!(
                Config::from_pairs(&[(SEED_DEMO_USERS, v)])
                    .unwrap()
                    .seed_demo_users,
                "{v}"
            );
        }
        assert!(
            !Config::from_pairs(&[(SEED_DEMO_USERS, "off")])
                .unwrap()
                .seed_demo_users
        );
        assert!(c.allowed_hosts.is_empty());
        let c = Config::from_pairs(&[(ALLOWED_HOSTS, " Backend.99-apps.svc , api ")]).unwrap();
        assert_eq!(c.allowed_hosts, ["backend.99-apps.svc", "api"]);
    }

    #[test]
    fn overrides_are_applied_and_trailing_slashes_dropped() {
        let c = Config::from_pairs(&[
            (LISTEN, "[::1]:9000"),
            (OPENBAO_PROXY, "http://127.0.0.1:8201"),
            (GITHUB_API_URL, "http://127.0.0.1:18090/"),
            (GITHUB_TIMEOUT, "750ms"),
            (DB_POOL_SIZE, " 4 "),
            (LOG_FORMAT, "json"),
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(
            c.openbao_proxy,
            ProxyAddress::Tcp("127.0.0.1:8201".parse().unwrap())
        );
        assert_eq!(c.github_api_url, "http://127.0.0.1:18090");
        assert_eq!(c.github_timeout, Duration::from_millis(750));
        assert_eq!(c.db_pool_size, 4);
        assert_eq!(c.log_format, LogFormat::Json);
        // An empty value means "use the default".
        assert_eq!(
            Config::from_pairs(&[(LISTEN, "")]).unwrap().listen.port(),
            8000
        );
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        let cases: &[(&str, &str, &str)] = &[
            (LISTEN, "localhost", "expected ip:port"),
            (LISTEN, "127.0.0.1:99999", "expected ip:port"),
            (LISTEN, "0.0.0.0:8000", "not a loopback address"),
            (LISTEN, "10.0.0.5:8000", "not a loopback address"),
            (OPENBAO_PROXY, "/run/zt/openbao.sock", "expected unix:"),
            (OPENBAO_PROXY, "unix:", "needs a socket path"),
            (OPENBAO_PROXY, "http://10.0.0.1:8200", "must be loopback"),
            (OPENBAO_PROXY, "http://openbao:8200", "expected unix:"),
            (OPENBAO_TIMEOUT, "soon", "not a duration"),
            (SIDECAR_ADMIN_URL, "127.0.0.1:15000", "not a URL"),
            (GITHUB_API_URL, "ftp://github.com", "http:// or https://"),
            (
                GITHUB_API_URL,
                "https://user:pw@api.github.com",
                "credentials",
            ),
            (GITHUB_API_URL, "https://api.github.com/?x=1", "query"),
            (GITHUB_TIMEOUT, "0s", "greater than zero"),
            (GITHUB_TIMEOUT, "1000h", "at most 24h"),
            (DB_POOL_SIZE, "0", "out of range"),
            (DB_POOL_SIZE, "lots", "not a whole number"),
            (DB_POOL_SIZE, "-3", "not a whole number"),
            (MIGRATOR_WAIT, "-1s", "not a duration"),
            (SECRETS_POLL_INTERVAL, "2", "not a duration"),
            (LOGIN_MAX_FAILURES, "0", "out of range"),
            (LOGIN_MAX_FAILURES_PER_ACCOUNT, "0", "out of range"),
            (LOGIN_MAX_FAILURES_PER_ACCOUNT, "many", "not a whole number"),
            (REGISTER_MAX_PER_CLIENT, "0", "out of range"),
            (REGISTER_WINDOW, "forever", "not a duration"),
            (GITHUB_CHECKS_PER_USER, "0", "out of range"),
            (GITHUB_CHECKS_PER_USER, "ten", "not a whole number"),
            (GITHUB_CHECK_WINDOW, "0s", "greater than zero"),
            (GITHUB_READS_PER_USER, "99999999", "out of range"),
            (GITHUB_READ_WINDOW, "a minute", "not a duration"),
            (JWT_PREVIOUS_KEY_GRACE, "0s", "greater than zero"),
            (SEED_DEMO_USERS, "sure", "not true or false"),
            (
                LOGIN_FAILURE_WINDOW,
                "'; DROP TABLE users; --",
                "not a duration",
            ),
            (WORKERS, "9999", "out of range"),
            (LOG_FORMAT, "xml", "not text or json"),
            (FRONTEND_SPIFFE_ID, "frontend", "not a SPIFFE ID"),
            (
                FRONTEND_SPIFFE_ID,
                "spiffe://demo.local",
                "trust domain and a path",
            ),
            (
                FRONTEND_SPIFFE_ID,
                "spiffe://demo.local/a b",
                "printable ASCII",
            ),
            (ALLOWED_HOSTS, "backend:8000", "not a host name"),
            (ALLOWED_HOSTS, "ok.example, *.evil", "not a host name"),
        ];
        for (key, value, needle) in cases {
            let e = Config::from_pairs(&[(key, value)]).unwrap_err();
            assert_eq!(e.key, *key, "{value}");
            let text = e.to_string();
            assert!(text.starts_with(&format!("{key}: ")), "{text}");
            assert!(text.contains(needle), "{key}={value}: {text}");
        }
    }

    #[test]
    fn oversize_values_are_not_echoed_in_full() {
        let huge = "x".repeat(100_000);
        let e = Config::from_pairs(&[(GITHUB_TIMEOUT, &huge)]).unwrap_err();
        assert!(e.to_string().len() < 300, "{}", e.to_string().len());
    }
}
