//! Configuration: TOML in, typed and validated [`Config`] out.
//!
//! Parsing happens at the edge: every key is turned into its typed value
//! here, and an invalid value is a [`ConfigError`] that names the key and
//! what is wrong. The rest of the sidecar never sees raw strings.
//!
//! The TOML comes from a file (`--config FILE`) or, when no file is named,
//! from the environment variable `ZT_CONFIG` ([`ConfigSource`]): zt-injector
//! delivers it that way, so the configuration it validated at admission is
//! exactly the one the container runs with for its whole life.
//!
//! Environment overrides (the few values deployments change) are read
//! through [`Env`], so tests pass a map instead of mutating the process:
//!
//! | Variable | Overrides |
//! |---|---|
//! | `ZT_WORKLOAD_API` | `identity.workload_api` |
//! | `SPIFFE_ENDPOINT_SOCKET` | `identity.workload_api` when neither it nor `ZT_WORKLOAD_API` is set |
//! | `ZT_OPENBAO_ADDR` | `openbao.address` |

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Env var holding the whole TOML configuration, read when `--config` is not given.
pub const ENV_CONFIG: &str = "ZT_CONFIG";
/// Env var that overrides `identity.workload_api`.
pub const ENV_WORKLOAD_API: &str = "ZT_WORKLOAD_API";
/// The SPIFFE-standard Workload API env var, used when nothing else says.
pub const ENV_SPIFFE_ENDPOINT: &str = "SPIFFE_ENDPOINT_SOCKET";
/// Env var that overrides `openbao.address`.
pub const ENV_OPENBAO_ADDR: &str = "ZT_OPENBAO_ADDR";

/// Default Workload API endpoint (the SPIFFE CSI driver's mount in pods).
pub const DEFAULT_WORKLOAD_API: &str = "unix:/run/spire/sockets/agent.sock";
/// Default OpenBao auth mount for JWT-SVID login.
pub const DEFAULT_AUTH_MOUNT: &str = "jwt";
/// Default audience requested for the JWT-SVID used to log in.
pub const DEFAULT_AUDIENCE: &str = "openbao";
/// Default timeout of one OpenBao request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Default mode of secret files.
pub const DEFAULT_FILE_MODE: u32 = 0o400;
/// Default database secrets engine mount.
pub const DEFAULT_DB_MOUNT: &str = "database";
/// Rotate credentials when less than this lifetime remains (seed: rotate at 50 of 60 minutes).
pub const DEFAULT_ROTATE_BEFORE: Duration = Duration::from_secs(600);
/// Keep the previous credentials alive this long after writing new ones.
pub const DEFAULT_REVOKE_GRACE: Duration = Duration::from_secs(30);
/// Default KV v2 mount.
pub const DEFAULT_KV_MOUNT: &str = "secret";
/// Default interval between KV reads.
pub const DEFAULT_KV_REFRESH: Duration = Duration::from_secs(30);
/// Default proxy body limit (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest accepted `proxy.max_body_bytes` (64 MiB).
pub const MAX_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;
/// Default proxy upstream timeout.
pub const DEFAULT_PROXY_TIMEOUT: Duration = Duration::from_secs(10);
/// Default admin listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:15000";
/// Default header carrying the verified peer SPIFFE ID to the app.
pub const DEFAULT_PEER_ID_HEADER: &str = "x-spiffe-peer-id";
/// Default TLS handshake timeout (slowloris protection).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default first retry delay after a failure.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);
/// Default longest retry delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Reads environment variables (a trait so tests can pass a map).
pub trait Env {
    /// The value of `key`, if set and valid UTF-8.
    fn var(&self, key: &str) -> Option<String>;
}

/// The real process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, key: &str) -> Option<String> {
        self.get(key).cloned()
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, has an unknown key or a value of the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// Neither `--config FILE` nor `ZT_CONFIG` says where the configuration is.
    #[error("no configuration: pass --config FILE or set {ENV_CONFIG} to the TOML text")]
    Missing,
    /// A key has a value that parsed but makes no sense.
    #[error("{key}: {problem}")]
    Invalid {
        /// Dotted key path, e.g. `secrets.database[0].revoke_grace`.
        key: String,
        /// What is wrong and, where possible, what would be right.
        problem: String,
    },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

// ---------------------------------------------------------------------------
// Raw (as written in TOML)
// ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    identity: RawIdentity,
    openbao: Option<RawOpenBao>,
    secrets: Option<RawSecrets>,
    proxy: Option<RawProxy>,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    backoff: RawBackoff,
    #[serde(default)]
    mtls: RawMtls,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    workload_api: Option<String>,
    svid_dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenBao {
    address: Option<String>,
    auth_mount: Option<String>,
    role: Option<String>,
    audience: Option<String>,
    request_timeout: Option<String>,
    revoke_on_shutdown: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    dir: Option<PathBuf>,
    file_mode: Option<String>,
    owner: Option<u32>,
    group: Option<u32>,
    #[serde(default)]
    database: Vec<RawDatabase>,
    #[serde(default)]
    kv: Vec<RawKv>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    name: Option<String>,
    role: Option<String>,
    mount: Option<String>,
    host: Option<String>,
    port: Option<i64>,
    database: Option<String>,
    format: Option<String>,
    rotate_before: Option<String>,
    revoke_grace: Option<String>,
    required: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKv {
    name: Option<String>,
    mount: Option<String>,
    path: Option<String>,
    refresh_interval: Option<String>,
    required: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProxy {
    #[serde(default)]
    listen: Vec<String>,
    max_body_bytes: Option<i64>,
    timeout: Option<String>,
    #[serde(default)]
    allow: Vec<RawAllow>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    path: Option<String>,
    methods: Option<Vec<String>>,
    #[serde(default)]
    query: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    initial: Option<String>,
    max: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMtls {
    #[serde(default)]
    inbound: Vec<RawInbound>,
    #[serde(default)]
    outbound: Vec<RawOutbound>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    listen: Option<String>,
    forward_to: Option<String>,
    allow: Option<Vec<String>>,
    peer_id_header: Option<String>,
    handshake_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbound {
    listen: Option<String>,
    upstream: Option<String>,
    server_id: Option<String>,
    handshake_timeout: Option<String>,
}

// ---------------------------------------------------------------------------
// Typed
// ---------------------------------------------------------------------------

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// `[identity]`
    pub identity: IdentityConfig,
    /// `[openbao]`, absent for identity-only sidecars.
    pub openbao: Option<OpenBaoConfig>,
    /// `[secrets]`
    pub secrets: SecretsConfig,
    /// `[proxy]`
    pub proxy: Option<ProxyConfig>,
    /// `[admin]`
    pub admin: AdminConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[backoff]`
    pub backoff: BackoffConfig,
    /// `[mtls]`
    pub mtls: MtlsConfig,
}

/// `[identity]`
#[derive(Debug, Clone, Serialize)]
pub struct IdentityConfig {
    /// Workload API endpoint, `unix:/path` or `tcp://ip:port`.
    pub workload_api: String,
    /// Where to write `svid.pem`, `svid_key.pem`, `bundle.pem` (optional).
    pub svid_dir: Option<PathBuf>,
}

/// `[openbao]`
#[derive(Debug, Clone, Serialize)]
pub struct OpenBaoConfig {
    /// `http(s)://host:port`, no path.
    pub address: String,
    /// JWT auth mount.
    pub auth_mount: String,
    /// Role to log in with.
    pub role: String,
    /// Audience of the JWT-SVID.
    pub audience: String,
    /// Timeout of one request.
    #[serde(with = "duration_str")]
    pub request_timeout: Duration,
    /// Revoke leases and token on SIGTERM.
    pub revoke_on_shutdown: bool,
}

/// `[secrets]`
#[derive(Debug, Clone, Serialize)]
pub struct SecretsConfig {
    /// Folder for secret files (a tmpfs in pods).
    pub dir: Option<PathBuf>,
    /// File mode, e.g. 0o400.
    #[serde(serialize_with = "mode_str")]
    pub file_mode: u32,
    /// Owner uid of written files.
    pub owner: Option<u32>,
    /// Group gid of written files.
    pub group: Option<u32>,
    /// `[[secrets.database]]`
    pub database: Vec<DatabaseSecret>,
    /// `[[secrets.kv]]`
    pub kv: Vec<KvSecret>,
}

/// Output format of a database credentials file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// `<name>.json`
    Json,
    /// `<name>.env` (KEY=VALUE)
    Env,
}

/// `[[secrets.database]]`
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseSecret {
    /// File stem and name in status/metrics.
    pub name: String,
    /// `database/creds/<role>`
    pub role: String,
    /// Database engine mount.
    pub mount: String,
    /// Host written into the file for the app.
    pub host: String,
    /// Port written into the file.
    pub port: u16,
    /// Database name written into the file.
    pub database: String,
    /// json or env.
    pub format: FileFormat,
    /// Rotate when less lifetime than this remains.
    #[serde(with = "duration_str")]
    pub rotate_before: Duration,
    /// Delay between writing new credentials and revoking the old lease.
    #[serde(with = "duration_str")]
    pub revoke_grace: Duration,
    /// Readiness depends on this secret.
    pub required: bool,
}

/// `[[secrets.kv]]`
#[derive(Debug, Clone, Serialize)]
pub struct KvSecret {
    /// File stem.
    pub name: String,
    /// KV v2 mount.
    pub mount: String,
    /// Path below the mount.
    pub path: String,
    /// How often to re-read.
    #[serde(with = "duration_str")]
    pub refresh_interval: Duration,
    /// Readiness depends on this secret.
    pub required: bool,
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

/// Query keys OpenBao's HTTP layer turns into an operation (`?list=true` is
/// LIST, `?scan=true` SCAN, `?help=1` HELP: `http/logical.go` and
/// `http/help.go` in OpenBao 2.x). The proxy maps them to the operation it
/// checks and never forwards them.
pub const RESERVED_QUERY_KEYS: [&str; 3] = ["list", "scan", "help"];

/// `[admin]`
#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    /// Listen address.
    pub listen: SocketAddr,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`
#[derive(Debug, Clone, Serialize)]
pub struct LogConfig {
    /// text or json.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `zt_sidecar=debug`.
    pub level: String,
}

/// `[backoff]`
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BackoffConfig {
    /// First retry delay.
    #[serde(with = "duration_str")]
    pub initial: Duration,
    /// Longest retry delay.
    #[serde(with = "duration_str")]
    pub max: Duration,
}

/// `[mtls]`
#[derive(Debug, Clone, Default, Serialize)]
pub struct MtlsConfig {
    /// `[[mtls.inbound]]`
    pub inbound: Vec<InboundConfig>,
    /// `[[mtls.outbound]]`
    pub outbound: Vec<OutboundConfig>,
}

/// A peer SPIFFE ID pattern.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum PeerPattern {
    /// Exactly this ID.
    Exact(String),
    /// Any ID of this trust domain whose path starts with this prefix
    /// (written `spiffe://td/prefix/*`; stored with the trailing `/`).
    Prefix(String),
}

impl From<PeerPattern> for String {
    fn from(p: PeerPattern) -> String {
        match p {
            PeerPattern::Exact(s) => s,
            PeerPattern::Prefix(s) => format!("{s}*"),
        }
    }
}

impl PeerPattern {
    /// Whether `id` matches.
    pub fn matches(&self, id: &str) -> bool {
        match self {
            PeerPattern::Exact(e) => e == id,
            PeerPattern::Prefix(p) => id.starts_with(p.as_str()) && id.len() > p.len(),
        }
    }
}

/// `[[mtls.inbound]]`
#[derive(Debug, Clone, Serialize)]
pub struct InboundConfig {
    /// TLS listen address.
    pub listen: SocketAddr,
    /// The app's plain-HTTP address (loopback).
    pub forward_to: SocketAddr,
    /// Who may connect.
    pub allow: Vec<PeerPattern>,
    /// Header that carries the verified peer ID to the app.
    pub peer_id_header: String,
    /// Handshake (and first request) deadline.
    #[serde(with = "duration_str")]
    pub handshake_timeout: Duration,
}

/// `[[mtls.outbound]]`
#[derive(Debug, Clone, Serialize)]
pub struct OutboundConfig {
    /// Plain-HTTP listen address (loopback).
    pub listen: SocketAddr,
    /// `host:port` of the peer's inbound listener.
    pub upstream: String,
    /// The SPIFFE ID the upstream must present.
    pub server_id: String,
    /// Handshake deadline.
    #[serde(with = "duration_str")]
    pub handshake_timeout: Duration,
}

/// Where the TOML configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A file (`--config FILE`).
    File(PathBuf),
    /// The text of the environment variable [`ENV_CONFIG`].
    Env,
}

impl ConfigSource {
    /// `--config FILE` when given (an explicit flag beats the ambient
    /// environment), else [`ENV_CONFIG`] when it is set and not empty, else
    /// [`ConfigError::Missing`].
    pub fn choose(file: Option<PathBuf>, env: &dyn Env) -> Result<Self, ConfigError> {
        match file {
            Some(path) => Ok(Self::File(path)),
            None if env.var(ENV_CONFIG).is_some_and(|v| !v.is_empty()) => Ok(Self::Env),
            None => Err(ConfigError::Missing),
        }
    }
}

impl std::fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "file: {}", path.display()),
            Self::Env => write!(f, "from {ENV_CONFIG}"),
        }
    }
}

impl Config {
    /// Reads and validates the configuration from `source`.
    pub fn load_from(source: &ConfigSource, env: &dyn Env) -> Result<Self, ConfigError> {
        match source {
            ConfigSource::File(path) => Self::load(path, env),
            ConfigSource::Env => {
                let text = env
                    .var(ENV_CONFIG)
                    .filter(|v| !v.is_empty())
                    .ok_or(ConfigError::Missing)?;
                Self::parse(&text, env).map_err(|e| match e {
                    ConfigError::Syntax(msg) => ConfigError::Syntax(format!("{ENV_CONFIG}: {msg}")),
                    other => other,
                })
            }
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, env)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        raw.validate(env)
    }

    /// The effective configuration as TOML (nothing in it is secret; tokens
    /// and credentials never live in the config).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    /// The secrets dir, which validation guarantees when secrets are configured.
    pub fn secrets_dir(&self) -> Option<&Path> {
        self.secrets.dir.as_deref()
    }
}

impl RawConfig {
    fn validate(self, env: &dyn Env) -> Result<Config, ConfigError> {
        let identity = IdentityConfig {
            workload_api: {
                let (key, value) = match (
                    env.var(ENV_WORKLOAD_API),
                    self.identity.workload_api,
                    env.var(ENV_SPIFFE_ENDPOINT),
                ) {
                    (Some(v), _, _) => (ENV_WORKLOAD_API.to_string(), v),
                    (None, Some(v), _) => ("identity.workload_api".to_string(), v),
                    (None, None, Some(v)) => (ENV_SPIFFE_ENDPOINT.to_string(), v),
                    (None, None, None) => (
                        "identity.workload_api".to_string(),
                        DEFAULT_WORKLOAD_API.to_string(),
                    ),
                };
                workload_endpoint(&key, &value)?
            },
            svid_dir: self
                .identity
                .svid_dir
                .map(|p| absolute("identity.svid_dir", p))
                .transpose()?,
        };

        let backoff = BackoffConfig {
            initial: opt_duration(
                "backoff.initial",
                self.backoff.initial,
                DEFAULT_BACKOFF_INITIAL,
            )?,
            max: opt_duration("backoff.max", self.backoff.max, DEFAULT_BACKOFF_MAX)?,
        };
        if backoff.initial > backoff.max {
            return Err(invalid("backoff.initial", "must not exceed backoff.max"));
        }

        let openbao = self
            .openbao
            .map(|o| -> Result<OpenBaoConfig, ConfigError> {
                let address = env
                    .var(ENV_OPENBAO_ADDR)
                    .map(|v| (ENV_OPENBAO_ADDR, v))
                    .or(o.address.map(|v| ("openbao.address", v)))
                    .ok_or_else(|| {
                        invalid("openbao.address", "is required (or set ZT_OPENBAO_ADDR)")
                    })?;
                Ok(OpenBaoConfig {
                    address: http_base_url(address.0, &address.1)?,
                    auth_mount: mount_name("openbao.auth_mount", o.auth_mount, DEFAULT_AUTH_MOUNT)?,
                    role: required_name("openbao.role", o.role)?,
                    audience: nonempty("openbao.audience", o.audience, DEFAULT_AUDIENCE)?,
                    request_timeout: opt_duration(
                        "openbao.request_timeout",
                        o.request_timeout,
                        DEFAULT_REQUEST_TIMEOUT,
                    )?,
                    revoke_on_shutdown: o.revoke_on_shutdown.unwrap_or(true),
                })
            })
            .transpose()?;

        let secrets = self
            .secrets
            .map(validate_secrets)
            .transpose()?
            .unwrap_or(SecretsConfig {
                dir: None,
                file_mode: DEFAULT_FILE_MODE,
                owner: None,
                group: None,
                database: Vec::new(),
                kv: Vec::new(),
            });
        if (!secrets.database.is_empty() || !secrets.kv.is_empty()) && openbao.is_none() {
            return Err(invalid(
                "secrets",
                "database and kv secrets need an [openbao] section",
            ));
        }

        let proxy = self.proxy.map(validate_proxy).transpose()?;
        if proxy.is_some() && openbao.is_none() {
            return Err(invalid(
                "proxy",
                "the OpenBao proxy needs an [openbao] section",
            ));
        }

        let admin = AdminConfig {
            listen: socket_addr(
                "admin.listen",
                self.admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN),
            )?,
        };
        let log = LogConfig {
            format: match self.log.format.as_deref() {
                None | Some("text") => LogFormat::Text,
                Some("json") => LogFormat::Json,
                Some(other) => {
                    return Err(invalid(
                        "log.format",
                        format!("`{other}` is not one of: text, json"),
                    ))
                }
            },
            level: {
                let level = self.log.level.unwrap_or_else(|| "info".into());
                if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
                    return Err(invalid(
                        "log.level",
                        format!("`{level}` is not a log filter (e.g. info, debug)"),
                    ));
                }
                level
            },
        };
        let mtls = validate_mtls(self.mtls)?;

        let mut listeners = HashSet::new();
        let tcp_listeners = std::iter::once(("admin.listen".to_string(), admin.listen))
            .chain(
                mtls.inbound
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (format!("mtls.inbound[{i}].listen"), l.listen)),
            )
            .chain(
                mtls.outbound
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (format!("mtls.outbound[{i}].listen"), l.listen)),
            )
            .chain(proxy.iter().flat_map(|p| {
                p.listen.iter().enumerate().filter_map(|(i, l)| match l {
                    ListenAddr::Tcp(a) => Some((format!("proxy.listen[{i}]"), *a)),
                    ListenAddr::Unix(_) => None,
                })
            }));
        for (key, addr) in tcp_listeners {
            if addr.port() != 0 && !listeners.insert(addr) {
                return Err(invalid(
                    key,
                    format!("{addr} is already used by another listener"),
                ));
            }
        }

        Ok(Config {
            identity,
            openbao,
            secrets,
            proxy,
            admin,
            log,
            backoff,
            mtls,
        })
    }
}

fn validate_secrets(s: RawSecrets) -> Result<SecretsConfig, ConfigError> {
    let file_mode = match s.file_mode.as_deref() {
        None => DEFAULT_FILE_MODE,
        Some(m) => {
            let digits = m.trim_start_matches("0o");
            let mode = u32::from_str_radix(digits, 8).map_err(|_| {
                invalid(
                    "secrets.file_mode",
                    format!("`{m}` is not an octal mode like \"0400\""),
                )
            })?;
            if mode > 0o777 {
                return Err(invalid(
                    "secrets.file_mode",
                    "only permission bits (at most 0777) are allowed",
                ));
            }
            if mode & 0o400 == 0 {
                return Err(invalid(
                    "secrets.file_mode",
                    "the owner must be able to read (e.g. 0400, 0440)",
                ));
            }
            if mode & 0o007 != 0 {
                return Err(invalid(
                    "secrets.file_mode",
                    format!("{m} lets every user read or write the secrets; use 0400 or 0440 with secrets.group"),
                ));
            }
            mode
        }
    };
    let any = !s.database.is_empty() || !s.kv.is_empty();
    let dir = match s.dir {
        Some(d) => Some(absolute("secrets.dir", d)?),
        None if any => {
            return Err(invalid(
                "secrets.dir",
                "is required when secrets are configured",
            ))
        }
        None => None,
    };
    let mut names = HashSet::new();
    let mut database = Vec::new();
    for (i, d) in s.database.into_iter().enumerate() {
        let k = |f: &str| format!("secrets.database[{i}].{f}");
        let name = file_stem(&k("name"), d.name)?;
        if !names.insert(name.clone()) {
            return Err(invalid(
                k("name"),
                format!("`{name}` is used by another secret"),
            ));
        }
        let port = match d.port {
            Some(p @ 1..=65535) => p as u16,
            Some(p) => {
                return Err(invalid(
                    k("port"),
                    format!("{p} is not a TCP port (1-65535)"),
                ))
            }
            None => return Err(invalid(k("port"), "is required")),
        };
        let rotate_before =
            opt_duration(&k("rotate_before"), d.rotate_before, DEFAULT_ROTATE_BEFORE)?;
        let revoke_grace = opt_duration(&k("revoke_grace"), d.revoke_grace, DEFAULT_REVOKE_GRACE)?;
        database.push(DatabaseSecret {
            name,
            role: required_name(&k("role"), d.role)?,
            mount: mount_name(&k("mount"), d.mount, DEFAULT_DB_MOUNT)?,
            host: required(&k("host"), d.host)?,
            port,
            database: required(&k("database"), d.database)?,
            format: match d.format.as_deref() {
                None | Some("json") => FileFormat::Json,
                Some("env") => FileFormat::Env,
                Some(other) => {
                    return Err(invalid(
                        k("format"),
                        format!("`{other}` is not one of: json, env"),
                    ))
                }
            },
            rotate_before,
            revoke_grace,
            required: d.required.unwrap_or(true),
        });
    }
    let mut kv = Vec::new();
    for (i, s) in s.kv.into_iter().enumerate() {
        let k = |f: &str| format!("secrets.kv[{i}].{f}");
        let name = file_stem(&k("name"), s.name)?;
        if !names.insert(name.clone()) {
            return Err(invalid(
                k("name"),
                format!("`{name}` is used by another secret"),
            ));
        }
        let path = required(&k("path"), s.path)?;
        if path.starts_with('/')
            || path
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(invalid(
                k("path"),
                format!("`{path}` must be a relative path like backend/jwt-signing-key"),
            ));
        }
        kv.push(KvSecret {
            name,
            mount: mount_name(&k("mount"), s.mount, DEFAULT_KV_MOUNT)?,
            path,
            refresh_interval: opt_duration(
                &k("refresh_interval"),
                s.refresh_interval,
                DEFAULT_KV_REFRESH,
            )?,
            required: s.required.unwrap_or(true),
        });
    }
    Ok(SecretsConfig {
        dir,
        file_mode,
        owner: s.owner,
        group: s.group,
        database,
        kv,
    })
}

/// Methods the proxy can forward.
pub const PROXY_METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "LIST"];

fn validate_proxy(p: RawProxy) -> Result<ProxyConfig, ConfigError> {
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

fn validate_mtls(m: RawMtls) -> Result<MtlsConfig, ConfigError> {
    let mut inbound = Vec::new();
    for (i, r) in m.inbound.into_iter().enumerate() {
        let k = |f: &str| format!("mtls.inbound[{i}].{f}");
        let allow = r
            .allow
            .ok_or_else(|| invalid(k("allow"), "is required: the SPIFFE IDs that may connect"))?;
        if allow.is_empty() {
            return Err(invalid(k("allow"), "must list at least one SPIFFE ID"));
        }
        let allow = allow
            .iter()
            .map(|a| peer_pattern(&k("allow"), a))
            .collect::<Result<Vec<_>, _>>()?;
        let header = r
            .peer_id_header
            .unwrap_or_else(|| DEFAULT_PEER_ID_HEADER.into())
            .to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            return Err(invalid(
                k("peer_id_header"),
                format!("`{header}` is not a valid header name"),
            ));
        }
        let forward_to = socket_addr(&k("forward_to"), &required(&k("forward_to"), r.forward_to)?)?;
        inbound.push(InboundConfig {
            listen: socket_addr(&k("listen"), &required(&k("listen"), r.listen)?)?,
            forward_to,
            allow,
            peer_id_header: header,
            handshake_timeout: opt_duration(
                &k("handshake_timeout"),
                r.handshake_timeout,
                DEFAULT_HANDSHAKE_TIMEOUT,
            )?,
        });
    }
    let mut outbound = Vec::new();
    for (i, r) in m.outbound.into_iter().enumerate() {
        let k = |f: &str| format!("mtls.outbound[{i}].{f}");
        let listen = socket_addr(&k("listen"), &required(&k("listen"), r.listen)?)?;
        if !listen.ip().is_loopback() {
            return Err(invalid(
                k("listen"),
                format!("{listen} is not loopback: the outbound listener accepts plain HTTP and must stay on 127.0.0.1"),
            ));
        }
        let upstream = required(&k("upstream"), r.upstream)?;
        match upstream.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => {
                return Err(invalid(
                    k("upstream"),
                    format!("`{upstream}` must be host:port"),
                ))
            }
        }
        let server_id = required(&k("server_id"), r.server_id)?;
        match peer_pattern(&k("server_id"), &server_id)? {
            PeerPattern::Exact(_) => {}
            PeerPattern::Prefix(_) => {
                return Err(invalid(k("server_id"), "must be one exact SPIFFE ID"))
            }
        }
        outbound.push(OutboundConfig {
            listen,
            upstream,
            server_id,
            handshake_timeout: opt_duration(
                &k("handshake_timeout"),
                r.handshake_timeout,
                DEFAULT_HANDSHAKE_TIMEOUT,
            )?,
        });
    }
    Ok(MtlsConfig { inbound, outbound })
}

fn peer_pattern(key: &str, s: &str) -> Result<PeerPattern, ConfigError> {
    let (id, prefix) = match s.strip_suffix("/*") {
        Some(base) => (base, true),
        None => (s, false),
    };
    let parsed = spiffe::SpiffeId::new(id).map_err(|e| {
        invalid(
            key,
            format!("`{s}` is not a SPIFFE ID ({e}); write spiffe://<trust-domain>/<path>"),
        )
    })?;
    if prefix {
        if parsed.path().is_empty() {
            return Err(invalid(
                key,
                format!("`{s}`: a prefix needs a path, e.g. spiffe://demo.local/ns/99-apps/*"),
            ));
        }
        Ok(PeerPattern::Prefix(format!("{id}/")))
    } else {
        if id.contains('*') {
            return Err(invalid(
                key,
                format!("`{s}`: `*` is only allowed as a final `/*`"),
            ));
        }
        Ok(PeerPattern::Exact(id.to_string()))
    }
}

fn workload_endpoint(key: &str, v: &str) -> Result<String, ConfigError> {
    if let Some(path) = v
        .strip_prefix("unix://")
        .or_else(|| v.strip_prefix("unix:"))
    {
        if path.is_empty() || !path.starts_with('/') {
            return Err(invalid(key, format!("`{v}` must name an absolute socket path, e.g. unix:/run/spire/sockets/agent.sock")));
        }
        return Ok(format!("unix:{path}"));
    }
    if let Some(addr) = v.strip_prefix("tcp://") {
        if addr.parse::<SocketAddr>().is_err() {
            return Err(invalid(key, format!("`{v}` must be tcp://<ip>:<port>")));
        }
        return Ok(v.to_string());
    }
    Err(invalid(
        key,
        format!(
            "`{v}` is not a Workload API address: use unix:/path/to/agent.sock or tcp://ip:port"
        ),
    ))
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

fn socket_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|_| invalid(key, format!("`{v}` is not an address like 127.0.0.1:15000")))
}

fn http_base_url(key: &str, v: &str) -> Result<String, ConfigError> {
    let rest = v
        .strip_prefix("http://")
        .or_else(|| v.strip_prefix("https://"))
        .ok_or_else(|| invalid(key, format!("`{v}` must start with http:// or https://")))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty()
        || host.contains('/')
        || host.contains('@')
        || host.contains(char::is_whitespace)
    {
        return Err(invalid(
            key,
            format!("`{v}` must be scheme://host[:port] with no path"),
        ));
    }
    Ok(v.trim_end_matches('/').to_string())
}

fn absolute(key: &str, p: PathBuf) -> Result<PathBuf, ConfigError> {
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(invalid(
            key,
            format!("`{}` must be an absolute path", p.display()),
        ))
    }
}

fn required(key: &str, v: Option<String>) -> Result<String, ConfigError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(invalid(key, "must not be empty")),
        None => Err(invalid(key, "is required")),
    }
}

fn nonempty(key: &str, v: Option<String>, default: &str) -> Result<String, ConfigError> {
    required(key, Some(v.unwrap_or_else(|| default.to_string())))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !s.starts_with('.')
}

fn required_name(key: &str, v: Option<String>) -> Result<String, ConfigError> {
    let s = required(key, v)?;
    if is_name(&s) {
        Ok(s)
    } else {
        Err(invalid(
            key,
            format!("`{s}` may only use letters, digits, `-`, `_`, `.`"),
        ))
    }
}

fn mount_name(key: &str, v: Option<String>, default: &str) -> Result<String, ConfigError> {
    required_name(key, Some(v.unwrap_or_else(|| default.to_string())))
}

fn file_stem(key: &str, v: Option<String>) -> Result<String, ConfigError> {
    required_name(key, v)
}

fn opt_duration(key: &str, v: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    let Some(s) = v else { return Ok(default) };
    let d = humantime::parse_duration(s.trim()).map_err(|_| {
        invalid(
            key,
            format!("`{s}` is not a duration; write e.g. \"30s\", \"10m\", \"1h\""),
        )
    })?;
    if d.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(d)
}

fn mode_str<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}

mod duration_str {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}
