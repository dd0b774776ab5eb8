//! The injector's own configuration: a TOML file (the chart renders it into
//! a ConfigMap from its values) plus two variables the downward API sets.
//!
//! | Variable | Meaning |
//! |---|---|
//! | `POD_NAME` | this replica's name: its identity in the rotation Lease (required) |
//! | `POD_NAMESPACE` | overrides `kubernetes.namespace` |
//!
//! Every key, its default and what it is for: injector/README.md. Parsing
//! happens here, at the edge: an invalid value is a [`SettingsError`] naming
//! the key, and the rest of the injector only sees typed values.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use zt_contracts::ConfigSource;

use crate::quantity::Quantity;

/// Env var naming this replica (the chart sets it from `metadata.name`).
pub const ENV_POD_NAME: &str = "POD_NAME";
/// Env var naming the injector's namespace (the chart sets it from `metadata.namespace`).
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";

/// Default HTTPS listener for the API server's admission calls.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// Default plain-HTTP listener for the kubelet's probes (`/healthz`, `/readyz`).
pub const DEFAULT_HEALTH_LISTEN: &str = "0.0.0.0:9090";
/// Default trust domain: peer SPIFFE IDs in annotations must belong to it.
pub const DEFAULT_TRUST_DOMAIN: &str = "demo.local";
/// Default name of the Secret holding the serving CA and certificate (pre-created by the chart).
pub const DEFAULT_TLS_SECRET: &str = "zt-injector-tls";
/// Default name of the Lease that elects the one replica that rotates (pre-created by the chart).
pub const DEFAULT_LEASE: &str = "zt-injector-tls";
/// Default name of the MutatingWebhookConfiguration whose `caBundle` the injector keeps current.
pub const DEFAULT_WEBHOOK_CONFIGURATION: &str = "zt-injector";
/// Default Service name: the serving certificate is for `<service>.<namespace>.svc`.
pub const DEFAULT_SERVICE: &str = "zt-injector";
/// Namespaces never injected, whatever the webhook's selector says (the
/// injector's own namespace is always added).
pub const ALWAYS_EXCLUDED: &[&str] = &["kube-system"];
/// Default lifetime of the serving CA.
pub const DEFAULT_CA_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Default lifetime of the serving certificate.
pub const DEFAULT_CERT_VALIDITY: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default interval at which every replica re-reads the Secret and the webhook configuration.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Default time each CA rotation phase lasts, so every replica and the API server catch up.
pub const DEFAULT_ROTATION_DWELL: Duration = Duration::from_secs(60);
/// Default Lease duration: a leader silent this long is replaced.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);
/// Default time the injector gives itself to read a ConfigMap (the webhook's
/// `timeoutSeconds` is 5: answer with a clear refusal before the API server gives up).
pub const DEFAULT_CONFIGMAP_TIMEOUT: Duration = Duration::from_secs(3);

/// Default zt-sidecar image.
pub const DEFAULT_IMAGE: &str = "zt-platform/zt-sidecar:dev";
/// Default image pull policy of the sidecar.
pub const DEFAULT_PULL_POLICY: &str = "IfNotPresent";
/// Default uid of the sidecar (the image's user).
pub const DEFAULT_RUN_AS_USER: i64 = 10000;
/// Default gid of the sidecar (the image's group).
pub const DEFAULT_RUN_AS_GROUP: i64 = 10000;
/// Default size limit of the memory-backed volume holding secrets and the proxy socket.
pub const DEFAULT_SECRETS_SIZE_LIMIT: &str = "4Mi";
/// Default Workload API socket, as the SPIFFE CSI driver mounts it at `/run/spire/sockets`.
pub const DEFAULT_WORKLOAD_API: &str = "unix:/run/spire/sockets/spire-agent.sock";
/// Default sidecar log format.
pub const DEFAULT_LOG_FORMAT: &str = "json";
/// Default CPU request of the sidecar.
pub const DEFAULT_CPU_REQUEST: &str = "20m";
/// Default memory request of the sidecar.
pub const DEFAULT_MEMORY_REQUEST: &str = "32Mi";
/// Default CPU limit of the sidecar.
pub const DEFAULT_CPU_LIMIT: &str = "500m";
/// Default memory limit of the sidecar.
pub const DEFAULT_MEMORY_LIMIT: &str = "128Mi";

/// Why the injector's configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SettingsError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Malformed TOML, an unknown key or a value of the wrong type.
    #[error("{0}")]
    Syntax(String),
    /// A key's value parsed but is not acceptable.
    #[error("{key}: {problem}")]
    Invalid {
        /// The dotted key (or environment variable).
        key: String,
        /// What is wrong.
        problem: String,
    },
}

fn invalid(key: &str, problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.to_string(),
        problem: problem.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: Option<String>,
    health_listen: Option<String>,
    trust_domain: Option<String>,
    #[serde(default)]
    kubernetes: RawKube,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    sidecar: RawSidecar,
    #[serde(default)]
    log: RawLog,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    format: Option<String>,
    level: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKube {
    namespace: Option<String>,
    tls_secret: Option<String>,
    lease: Option<String>,
    webhook_configuration: Option<String>,
    service: Option<String>,
    #[serde(default)]
    extra_sans: Vec<String>,
    #[serde(default)]
    exclude_namespaces: Vec<String>,
    configmap_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca_validity: Option<String>,
    cert_validity: Option<String>,
    poll_interval: Option<String>,
    rotation_dwell: Option<String>,
    lease_duration: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSidecar {
    image: Option<String>,
    image_pull_policy: Option<String>,
    run_as_user: Option<i64>,
    run_as_group: Option<i64>,
    secrets_group: Option<i64>,
    secrets_size_limit: Option<String>,
    workload_api: Option<String>,
    workload_api_host_path: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    cpu_request: Option<String>,
    memory_request: Option<String>,
    cpu_limit: Option<String>,
    memory_limit: Option<String>,
    openbao: Option<RawOpenBao>,
    #[serde(default)]
    database: RawDatabase,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenBao {
    address: Option<String>,
    auth_mount: Option<String>,
    audience: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    host: Option<String>,
    port: Option<i64>,
    database: Option<String>,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// HTTPS listener for admission calls.
    pub listen: SocketAddr,
    /// Plain-HTTP listener for probes.
    pub health_listen: SocketAddr,
    /// This replica's name (`POD_NAME`).
    pub identity: String,
    /// Peer SPIFFE IDs must be of this trust domain.
    pub trust_domain: String,
    /// Where the injector's own objects are.
    pub kubernetes: KubeSettings,
    /// Serving CA and certificate lifetimes and rotation timing.
    pub tls: TlsSettings,
    /// What the injected sidecar gets unless an annotation says otherwise.
    pub sidecar: SidecarDefaults,
    /// The injector's own log.
    pub log: LogSettings,
}

/// `[log]`: the injector's own log lines (on stderr).
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// One JSON object per line instead of text.
    pub json: bool,
    /// A tracing filter, e.g. `info` (the `ZT_LOG` variable overrides it).
    pub level: String,
}

/// `[kubernetes]`
#[derive(Debug, Clone)]
pub struct KubeSettings {
    /// The injector's namespace (holds the Secret and the Lease).
    pub namespace: String,
    /// Secret with the serving CA and certificate.
    pub tls_secret: String,
    /// Lease electing the rotating replica.
    pub lease: String,
    /// MutatingWebhookConfiguration whose `caBundle` is kept current.
    pub webhook_configuration: String,
    /// Service name (certificate DNS names).
    pub service: String,
    /// Extra certificate names: DNS names or IP addresses.
    pub extra_sans: Vec<San>,
    /// Never injected: kube-system, the injector's namespace, and these.
    pub exclude_namespaces: Vec<String>,
    /// Time allowed to read a ConfigMap named by `config-map`.
    pub configmap_timeout: Duration,
}

/// A subject alternative name of the serving certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum San {
    /// A DNS name.
    Dns(String),
    /// An IP address (tests call the webhook on 127.0.0.1).
    Ip(IpAddr),
}

impl KubeSettings {
    /// Every name the serving certificate carries: the Service's DNS names
    /// (what the API server checks) plus the extra ones.
    pub fn sans(&self) -> Vec<San> {
        let (svc, ns) = (&self.service, &self.namespace);
        let mut out = vec![
            San::Dns(format!("{svc}.{ns}.svc")),
            San::Dns(format!("{svc}.{ns}.svc.cluster.local")),
            San::Dns(format!("{svc}.{ns}")),
            San::Dns(svc.clone()),
        ];
        for s in &self.extra_sans {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }

    /// Whether pods of `namespace` must be left alone.
    pub fn excluded(&self, namespace: &str) -> bool {
        namespace == self.namespace
            || ALWAYS_EXCLUDED.contains(&namespace)
            || self.exclude_namespaces.iter().any(|n| n == namespace)
    }
}

/// `[tls]`
#[derive(Debug, Clone, Copy)]
pub struct TlsSettings {
    /// Lifetime of a serving CA; rotation starts with a third of it left.
    pub ca_validity: Duration,
    /// Lifetime of a serving certificate; renewed with a third of it left.
    pub cert_validity: Duration,
    /// How often every replica re-reads the Secret and the webhook configuration.
    pub poll_interval: Duration,
    /// Length of each CA rotation phase.
    pub rotation_dwell: Duration,
    /// A leader that has not renewed the Lease for this long is replaced.
    pub lease_duration: Duration,
}

impl TlsSettings {
    /// A replica whose last successful read of the Secret is older than this
    /// reports not ready (it may be serving a certificate about to be distrusted).
    pub fn stale_after(&self) -> Duration {
        self.poll_interval * 3
    }
}

/// `[sidecar]`: defaults of every injected sidecar.
#[derive(Debug, Clone)]
pub struct SidecarDefaults {
    /// Image (annotation `image` overrides).
    pub image: String,
    /// `Always`, `IfNotPresent` or `Never`.
    pub image_pull_policy: String,
    /// The sidecar's uid.
    pub run_as_user: i64,
    /// The sidecar's gid.
    pub run_as_group: i64,
    /// Group of the secret files and the proxy socket, added to the pod's
    /// `supplementalGroups` (annotation `secrets-group` overrides).
    pub secrets_group: u32,
    /// `sizeLimit` of the memory-backed volume.
    pub secrets_size_limit: Quantity,
    /// `identity.workload_api` of the sidecar.
    pub workload_api: String,
    /// Where the Workload API socket's directory comes from.
    pub workload_api_volume: WorkloadApiVolume,
    /// `log.format`.
    pub log_format: String,
    /// `log.level` (annotation `log-level` overrides); `None` = the sidecar's default.
    pub log_level: Option<String>,
    /// Requests and limits (annotations override each).
    pub resources: Resources,
    /// `[openbao]` defaults; `None` = every pod with `openbao-role` is refused.
    pub openbao: Option<OpenBaoDefaults>,
    /// Defaults of `[[secrets.database]]` entries.
    pub database: DatabaseDefaults,
}

/// The source of the `zt-workload-api` volume (mounted at /run/spire/sockets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadApiVolume {
    /// The SPIFFE CSI driver (`csi.spiffe.io`): the default, and the only
    /// choice a namespace with the `restricted` Pod Security profile admits.
    Csi,
    /// A directory of the node holding the SPIRE agent's socket, for clusters
    /// without the CSI driver (the lab). Needs a namespace that allows
    /// hostPath volumes.
    HostPath(String),
}

/// CPU and memory requests and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Resources {
    /// `requests.cpu`
    pub cpu_request: Quantity,
    /// `requests.memory`
    pub memory_request: Quantity,
    /// `limits.cpu`
    pub cpu_limit: Quantity,
    /// `limits.memory`
    pub memory_limit: Quantity,
}

/// `[sidecar.openbao]`
#[derive(Debug, Clone)]
pub struct OpenBaoDefaults {
    /// `openbao.address`
    pub address: String,
    /// `openbao.auth_mount`
    pub auth_mount: Option<String>,
    /// `openbao.audience`
    pub audience: Option<String>,
}

/// `[sidecar.database]`
#[derive(Debug, Clone, Default)]
pub struct DatabaseDefaults {
    /// Default `host`.
    pub host: Option<String>,
    /// Default `port`.
    pub port: Option<u16>,
    /// Default `database`.
    pub database: Option<String>,
}

impl Settings {
    /// Reads and validates a settings file.
    pub fn load(path: &Path, env: &dyn ConfigSource) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, env)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str, env: &dyn ConfigSource) -> Result<Self, SettingsError> {
        let raw: Raw = toml::from_str(text).map_err(|e| SettingsError::Syntax(e.to_string()))?;
        raw.validate(env)
    }
}

impl Raw {
    fn validate(self, env: &dyn ConfigSource) -> Result<Settings, SettingsError> {
        let listen = addr("listen", self.listen.as_deref().unwrap_or(DEFAULT_LISTEN))?;
        let health_listen = addr(
            "health_listen",
            self.health_listen
                .as_deref()
                .unwrap_or(DEFAULT_HEALTH_LISTEN),
        )?;
        if listen == health_listen {
            return Err(invalid("health_listen", "must differ from listen"));
        }
        let identity = env
            .non_empty(ENV_POD_NAME)
            .ok_or_else(|| {
                invalid(
                    ENV_POD_NAME,
                    "is required: this replica's name in the rotation Lease (the chart sets it from the downward API)",
                )
            })
            .and_then(|v| dns_label(ENV_POD_NAME, &v, 253))?;
        let trust_domain = self
            .trust_domain
            .unwrap_or_else(|| DEFAULT_TRUST_DOMAIN.into());
        if trust_domain.is_empty()
            || trust_domain.len() > 255
            || !trust_domain
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-._".contains(c))
        {
            return Err(invalid(
                "trust_domain",
                format!("`{trust_domain}` is not a SPIFFE trust domain (lowercase letters, digits, `-`, `.`, `_`)"),
            ));
        }

        let k = self.kubernetes;
        let namespace = match (env.non_empty(ENV_POD_NAMESPACE), k.namespace) {
            (Some(v), _) => dns_label(ENV_POD_NAMESPACE, &v, 63)?,
            (None, Some(v)) => dns_label("kubernetes.namespace", &v, 63)?,
            (None, None) => {
                return Err(invalid(
                    "kubernetes.namespace",
                    "is required (or set POD_NAMESPACE)",
                ))
            }
        };
        let name = |key: &str, v: Option<String>, default: &str| {
            dns_label(key, v.as_deref().unwrap_or(default), 253)
        };
        let mut extra_sans = Vec::new();
        for (i, s) in k.extra_sans.iter().enumerate() {
            let key = format!("kubernetes.extra_sans[{i}]");
            extra_sans.push(match s.parse::<IpAddr>() {
                Ok(ip) => San::Ip(ip),
                Err(_) => San::Dns(dns_label(&key, s, 253)?),
            });
        }
        let mut exclude_namespaces = Vec::new();
        for (i, n) in k.exclude_namespaces.iter().enumerate() {
            exclude_namespaces.push(dns_label(
                &format!("kubernetes.exclude_namespaces[{i}]"),
                n,
                63,
            )?);
        }
        let kubernetes = KubeSettings {
            namespace,
            tls_secret: name("kubernetes.tls_secret", k.tls_secret, DEFAULT_TLS_SECRET)?,
            lease: name("kubernetes.lease", k.lease, DEFAULT_LEASE)?,
            webhook_configuration: name(
                "kubernetes.webhook_configuration",
                k.webhook_configuration,
                DEFAULT_WEBHOOK_CONFIGURATION,
            )?,
            service: dns_label(
                "kubernetes.service",
                k.service.as_deref().unwrap_or(DEFAULT_SERVICE),
                63,
            )?,
            extra_sans,
            exclude_namespaces,
            configmap_timeout: duration(
                "kubernetes.configmap_timeout",
                k.configmap_timeout,
                DEFAULT_CONFIGMAP_TIMEOUT,
            )?,
        };

        let t = self.tls;
        let tls = TlsSettings {
            ca_validity: duration("tls.ca_validity", t.ca_validity, DEFAULT_CA_VALIDITY)?,
            cert_validity: duration("tls.cert_validity", t.cert_validity, DEFAULT_CERT_VALIDITY)?,
            poll_interval: duration("tls.poll_interval", t.poll_interval, DEFAULT_POLL_INTERVAL)?,
            rotation_dwell: duration(
                "tls.rotation_dwell",
                t.rotation_dwell,
                DEFAULT_ROTATION_DWELL,
            )?,
            lease_duration: duration(
                "tls.lease_duration",
                t.lease_duration,
                DEFAULT_LEASE_DURATION,
            )?,
        };
        // A CA rotation starts with a third of the CA's life left and takes two
        // dwells plus a few polls: it must finish before the old CA expires.
        let rotation = tls.rotation_dwell * 2 + tls.poll_interval * 3;
        if tls.ca_validity / 3 <= rotation {
            return Err(invalid(
                "tls.ca_validity",
                format!(
                    "{} is too short: a third of it must exceed two rotation_dwell plus three poll_interval ({})",
                    humantime::format_duration(tls.ca_validity),
                    humantime::format_duration(rotation)
                ),
            ));
        }
        if tls.cert_validity / 3 <= tls.poll_interval * 3 {
            return Err(invalid(
                "tls.cert_validity",
                "is too short: a third of it must exceed three poll_interval",
            ));
        }
        if tls.cert_validity > tls.ca_validity {
            return Err(invalid(
                "tls.cert_validity",
                "must not exceed tls.ca_validity",
            ));
        }
        if tls.rotation_dwell <= tls.poll_interval * 3 {
            return Err(invalid(
                "tls.rotation_dwell",
                "must exceed three poll_interval: every ready replica reads the Secret within that time",
            ));
        }
        if tls.lease_duration <= tls.poll_interval * 2 {
            return Err(invalid(
                "tls.lease_duration",
                "must exceed two poll_interval (the leader renews it every poll)",
            ));
        }

        let s = self.sidecar;
        let image = s.image.unwrap_or_else(|| DEFAULT_IMAGE.into());
        crate::annotations::check_image(&image).map_err(|p| invalid("sidecar.image", p))?;
        let image_pull_policy = s
            .image_pull_policy
            .unwrap_or_else(|| DEFAULT_PULL_POLICY.into());
        if !["Always", "IfNotPresent", "Never"].contains(&image_pull_policy.as_str()) {
            return Err(invalid(
                "sidecar.image_pull_policy",
                format!("`{image_pull_policy}` is not one of Always, IfNotPresent, Never"),
            ));
        }
        let id = |key: &str, v: Option<i64>, default: i64| -> Result<i64, SettingsError> {
            match v.unwrap_or(default) {
                n @ 1..=2_147_483_647 => Ok(n),
                n => Err(invalid(
                    key,
                    format!("{n} is not a non-root id (1 to 2147483647)"),
                )),
            }
        };
        let run_as_user = id("sidecar.run_as_user", s.run_as_user, DEFAULT_RUN_AS_USER)?;
        let run_as_group = id("sidecar.run_as_group", s.run_as_group, DEFAULT_RUN_AS_GROUP)?;
        let secrets_group = id("sidecar.secrets_group", s.secrets_group, run_as_group)? as u32;
        let quantity = |key: &str, v: Option<String>, default: &str| {
            Quantity::parse(v.as_deref().unwrap_or(default)).map_err(|p| invalid(key, p))
        };
        let secrets_size_limit = quantity(
            "sidecar.secrets_size_limit",
            s.secrets_size_limit,
            DEFAULT_SECRETS_SIZE_LIMIT,
        )?;
        let resources = Resources {
            cpu_request: quantity("sidecar.cpu_request", s.cpu_request, DEFAULT_CPU_REQUEST)?,
            memory_request: quantity(
                "sidecar.memory_request",
                s.memory_request,
                DEFAULT_MEMORY_REQUEST,
            )?,
            cpu_limit: quantity("sidecar.cpu_limit", s.cpu_limit, DEFAULT_CPU_LIMIT)?,
            memory_limit: quantity("sidecar.memory_limit", s.memory_limit, DEFAULT_MEMORY_LIMIT)?,
        };
        for (req, lim, key) in [
            (
                &resources.cpu_request,
                &resources.cpu_limit,
                "sidecar.cpu_request",
            ),
            (
                &resources.memory_request,
                &resources.memory_limit,
                "sidecar.memory_request",
            ),
        ] {
            if req.value() > lim.value() {
                return Err(invalid(key, format!("{req} is above the limit {lim}")));
            }
        }
        let openbao = s
            .openbao
            .map(|o| -> Result<OpenBaoDefaults, SettingsError> {
                Ok(OpenBaoDefaults {
                    address: o.address.ok_or_else(|| {
                        invalid(
                            "sidecar.openbao.address",
                            "is required in [sidecar.openbao]",
                        )
                    })?,
                    auth_mount: o.auth_mount,
                    audience: o.audience,
                })
            })
            .transpose()?;
        let database = DatabaseDefaults {
            host: s.database.host,
            port: s
                .database
                .port
                .map(|p| match p {
                    1..=65535 => Ok(p as u16),
                    _ => Err(invalid(
                        "sidecar.database.port",
                        format!("{p} is not a TCP port (1-65535)"),
                    )),
                })
                .transpose()?,
            database: s.database.database,
        };
        let sidecar = SidecarDefaults {
            image,
            image_pull_policy,
            run_as_user,
            run_as_group,
            secrets_group,
            secrets_size_limit,
            workload_api: s
                .workload_api
                .unwrap_or_else(|| DEFAULT_WORKLOAD_API.into()),
            workload_api_volume: match s.workload_api_host_path.as_deref() {
                None | Some("") => WorkloadApiVolume::Csi,
                Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") && p.len() <= 256 => {
                    WorkloadApiVolume::HostPath(p.to_string())
                }
                Some(p) => {
                    return Err(invalid(
                        "sidecar.workload_api_host_path",
                        format!("`{p}` is not an absolute path without `..` (at most 256 bytes); empty = the SPIFFE CSI driver"),
                    ))
                }
            },
            log_format: s.log_format.unwrap_or_else(|| DEFAULT_LOG_FORMAT.into()),
            log_level: s.log_level,
            resources,
            openbao,
            database,
        };
        let log = LogSettings {
            json: match self.log.format.as_deref() {
                None | Some("text") => false,
                Some("json") => true,
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
        let settings = Settings {
            log,
            listen,
            health_listen,
            identity,
            trust_domain,
            kubernetes,
            tls,
            sidecar,
        };
        // The defaults must make a valid sidecar configuration: render an
        // empty annotation set (and one with every default in use) through
        // the sidecar's own validator now rather than at the first pod.
        crate::render::check_defaults(&settings).map_err(|p| invalid("sidecar", p))?;
        Ok(settings)
    }
}

fn addr(key: &str, v: &str) -> Result<SocketAddr, SettingsError> {
    v.parse()
        .map_err(|_| invalid(key, format!("`{v}` is not an address like 0.0.0.0:8443")))
}

fn duration(key: &str, v: Option<String>, default: Duration) -> Result<Duration, SettingsError> {
    let Some(s) = v else { return Ok(default) };
    let d = humantime::parse_duration(s.trim()).map_err(|_| {
        invalid(
            key,
            format!("`{s}` is not a duration; write e.g. \"10s\", \"720h\""),
        )
    })?;
    if d.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(d)
}

/// A Kubernetes object name: lowercase letters, digits, `-` and `.`,
/// starting and ending with a letter or digit.
fn dns_label(key: &str, v: &str, max: usize) -> Result<String, SettingsError> {
    if crate::annotations::is_dns_name(v, max) {
        Ok(v.to_string())
    } else {
        Err(invalid(
            key,
            format!("`{v}` is not a Kubernetes name (lowercase letters, digits, `-`, `.`; at most {max})"),
        ))
    }
}

#[cfg(test)]
mod tests;
