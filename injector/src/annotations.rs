//! The annotations a pod asks for its sidecar with, parsed into typed
//! values — or refused with a message that names the annotation.
//!
//! Every annotation lives under one prefix, [`PREFIX`] (`zt.demo.local/`);
//! an unknown key under it is an error, not silently ignored, so a typo
//! never yields a pod without the secrets its author asked for. The full
//! reference with an example per annotation is in injector/README.md.
//!
//! Values that hold several settings read `FIRST[, key=value]...`: the main
//! value first, then options named exactly like the zt-sidecar keys they
//! set (sidecar/README.md), e.g.
//! `zt.demo.local/database-db: "backend-role, rotate_before=2m"`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::quantity::Quantity;

/// The one prefix of every annotation the injector reads or writes.
pub const PREFIX: &str = "zt.demo.local/";

/// `inject: "true"` attaches the sidecar; `"false"` makes the injector leave the pod alone.
pub const INJECT: &str = "inject";
/// Written by the injector (`injected`): a pod is never injected twice.
pub const STATUS: &str = "status";
/// The value of [`STATUS`] the injector writes.
pub const STATUS_INJECTED: &str = "injected";
/// A ConfigMap in the pod's namespace whose `sidecar.toml` is the whole sidecar configuration.
pub const CONFIG_MAP: &str = "config-map";
/// The key of that ConfigMap holding the TOML.
pub const CONFIG_MAP_KEY: &str = "sidecar.toml";
/// OpenBao role the sidecar logs in with (`[openbao] role`).
pub const OPENBAO_ROLE: &str = "openbao-role";
/// `database-<name>: <role>[, options]`: one `[[secrets.database]]`.
pub const DATABASE: &str = "database-";
/// `kv-<name>: <path>[, options]`: one `[[secrets.kv]]`.
pub const KV: &str = "kv-";
/// `proxy-allow: "METHODS path; ..."`: the OpenBao proxy allow-list.
pub const PROXY_ALLOW: &str = "proxy-allow";
/// `mtls-inbound-<listen port>: <app port>, allow=<SPIFFE ID> ...`: one `[[mtls.inbound]]`.
pub const MTLS_INBOUND: &str = "mtls-inbound-";
/// `mtls-outbound-<name>: <host:port>, listen=<port>, server_id=<SPIFFE ID>`: one `[[mtls.outbound]]`.
pub const MTLS_OUTBOUND: &str = "mtls-outbound-";
/// Loopback port of the sidecar's admin listener.
pub const ADMIN_PORT: &str = "admin-port";
/// Group of the secret files and the proxy socket.
pub const SECRETS_GROUP: &str = "secrets-group";
/// Sidecar image.
pub const IMAGE: &str = "image";
/// Sidecar CPU request.
pub const CPU_REQUEST: &str = "cpu-request";
/// Sidecar CPU limit.
pub const CPU_LIMIT: &str = "cpu-limit";
/// Sidecar memory request.
pub const MEMORY_REQUEST: &str = "memory-request";
/// Sidecar memory limit.
pub const MEMORY_LIMIT: &str = "memory-limit";
/// Sidecar log filter (`[log] level`).
pub const LOG_LEVEL: &str = "log-level";

/// Longest accepted value of one annotation.
pub const MAX_VALUE_BYTES: usize = 4096;
/// Most annotations under the prefix on one pod.
pub const MAX_ANNOTATIONS: usize = 64;

const KNOWN: &str = "inject, status, config-map, openbao-role, database-<name>, kv-<name>, \
proxy-allow, mtls-inbound-<port>, mtls-outbound-<name>, admin-port, secrets-group, image, \
cpu-request, cpu-limit, memory-request, memory-limit, log-level (injector/README.md)";

/// The full annotation key for `name`, e.g. `zt.demo.local/inject`.
pub fn key(name: &str) -> String {
    format!("{PREFIX}{name}")
}

/// One annotation that is wrong, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{annotation}: {problem}")]
pub struct AnnotationError {
    /// The full annotation key.
    pub annotation: String,
    /// What is wrong and, where possible, what would be right.
    pub problem: String,
}

impl AnnotationError {
    /// An error about the annotation `name` (without the prefix).
    pub fn new(name: &str, problem: impl Into<String>) -> Self {
        Self {
            annotation: key(name),
            problem: problem.into(),
        }
    }
}

/// Why a pod is refused: every wrong annotation, each with its message.
/// This text is what the API server (and so `kubectl apply`) shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub Vec<AnnotationError>);

impl std::error::Error for Refusal {}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<AnnotationError> for Refusal {
    fn from(e: AnnotationError) -> Self {
        Self(vec![e])
    }
}

/// What the pod's annotations ask for.
#[derive(Debug, Clone, PartialEq)]
pub enum Intent {
    /// Leave the pod as it is.
    Leave(Leave),
    /// Attach the sidecar.
    Inject(Box<Injection>),
}

/// Why a pod is left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// No annotation under the prefix.
    NotAnnotated,
    /// `inject: "false"`.
    OptedOut,
    /// `status: injected`: it already has its sidecar.
    AlreadyInjected,
}

/// A sidecar to attach.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection {
    /// Where its configuration comes from.
    pub source: Source,
    /// `image`
    pub image: Option<String>,
    /// `cpu-request`, `cpu-limit`, `memory-request`, `memory-limit`
    pub resources: ResourceOverrides,
}

/// Where the sidecar's configuration comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// The annotations (and the injector's defaults).
    Annotations(SidecarAnnotations),
    /// The `sidecar.toml` of this ConfigMap in the pod's namespace.
    ConfigMap(String),
}

/// The sidecar configuration the annotations describe.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SidecarAnnotations {
    /// `openbao-role`
    pub openbao_role: Option<String>,
    /// `database-<name>`, sorted by name.
    pub databases: Vec<Database>,
    /// `kv-<name>`, sorted by name.
    pub kvs: Vec<Kv>,
    /// `proxy-allow`, in the order written.
    pub proxy_allow: Vec<AllowRule>,
    /// `mtls-inbound-<port>`, sorted by port.
    pub inbound: Vec<Inbound>,
    /// `mtls-outbound-<name>`, sorted by name.
    pub outbound: Vec<Outbound>,
    /// `admin-port`
    pub admin_port: Option<u16>,
    /// `secrets-group`
    pub secrets_group: Option<u32>,
    /// `log-level`
    pub log_level: Option<String>,
}

/// `database-<name>: <role>[, options]`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Database {
    /// File stem (`<name>.json`).
    pub name: String,
    /// OpenBao database role.
    pub role: String,
    /// `mount=`
    pub mount: Option<String>,
    /// `host=`
    pub host: Option<String>,
    /// `port=`
    pub port: Option<u16>,
    /// `database=`
    pub database: Option<String>,
    /// `format=`
    pub format: Option<String>,
    /// `rotate_before=`
    pub rotate_before: Option<String>,
    /// `revoke_grace=`
    pub revoke_grace: Option<String>,
    /// `required=`
    pub required: Option<bool>,
    /// `releasable=`
    pub releasable: Option<bool>,
}

/// `kv-<name>: <path>[, options]`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Kv {
    /// File stem.
    pub name: String,
    /// Path below the mount.
    pub path: String,
    /// `mount=`
    pub mount: Option<String>,
    /// `refresh_interval=`
    pub refresh_interval: Option<String>,
    /// `required=`
    pub required: Option<bool>,
}

/// One `proxy-allow` rule: `METHOD[,METHOD...] path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    /// Methods as written.
    pub methods: Vec<String>,
    /// Path below `/v1/`.
    pub path: String,
}

/// `mtls-inbound-<listen port>: <app port>, allow=<id> [<id>...][, options]`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inbound {
    /// The TLS port the sidecar listens on (all interfaces).
    pub listen_port: u16,
    /// The app's plain-HTTP port on loopback.
    pub app_port: u16,
    /// SPIFFE IDs (or `spiffe://td/prefix/*`) allowed to connect.
    pub allow: Vec<String>,
    /// `peer_id_header=`
    pub peer_id_header: Option<String>,
    /// `handshake_timeout=`
    pub handshake_timeout: Option<String>,
}

/// `mtls-outbound-<name>: <host:port>, listen=<port>, server_id=<id>[, options]`
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outbound {
    /// The name in the annotation key.
    pub name: String,
    /// `host:port` of the peer's inbound listener.
    pub upstream: String,
    /// Loopback port the app sends plain HTTP to.
    pub listen_port: u16,
    /// The exact SPIFFE ID the upstream must present.
    pub server_id: String,
    /// `handshake_timeout=`
    pub handshake_timeout: Option<String>,
}

/// Resource overrides; `None` keeps the injector's default.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResourceOverrides {
    /// `cpu-request`
    pub cpu_request: Option<Quantity>,
    /// `cpu-limit`
    pub cpu_limit: Option<Quantity>,
    /// `memory-request`
    pub memory_request: Option<Quantity>,
    /// `memory-limit`
    pub memory_limit: Option<Quantity>,
}

/// Reads the pod's annotations. `trust_domain` is the only one SPIFFE IDs
/// in `mtls-*` annotations may belong to.
pub fn parse(
    annotations: &BTreeMap<String, String>,
    trust_domain: &str,
) -> Result<Intent, Refusal> {
    // Kubernetes accepts annotation keys in any case; ours are lower case.
    // A key that differs only in case is a typo, refused rather than left
    // to yield a pod without its sidecar.
    let cased: Vec<AnnotationError> = annotations
        .keys()
        .filter(|k| {
            !k.starts_with(PREFIX)
                && k.get(..PREFIX.len())
                    .is_some_and(|p| p.eq_ignore_ascii_case(PREFIX))
        })
        // A few are enough to see the mistake; the message stays short.
        .take(5)
        .map(|k| AnnotationError {
            annotation: shown(k),
            problem: format!(
                "annotation keys under {PREFIX} are lower case: write `{}`",
                shown(&key(&k[PREFIX.len()..]))
            ),
        })
        .collect();
    if !cased.is_empty() {
        return Err(Refusal(cased));
    }
    let ours: BTreeMap<&str, &str> = annotations
        .iter()
        .filter_map(|(k, v)| k.strip_prefix(PREFIX).map(|n| (n, v.as_str())))
        .collect();
    if ours.is_empty() {
        return Ok(Intent::Leave(Leave::NotAnnotated));
    }
    // The status decides first: an injected pod (for instance a copy of one
    // made with `kubectl get -o yaml`) already has its sidecar.
    if let Some(status) = ours.get(STATUS) {
        return if *status == STATUS_INJECTED {
            Ok(Intent::Leave(Leave::AlreadyInjected))
        } else {
            Err(AnnotationError::new(
                STATUS,
                format!(
                    "`{}` is not `{STATUS_INJECTED}`: only the injector writes this annotation",
                    shown(status)
                ),
            )
            .into())
        };
    }
    match ours.get(INJECT).copied() {
        Some("false") => return Ok(Intent::Leave(Leave::OptedOut)),
        Some("true") => {}
        Some(other) => {
            return Err(AnnotationError::new(
                INJECT,
                format!("`{}` is not \"true\" or \"false\"", shown(other)),
            )
            .into())
        }
        None => {
            let errors = ours
                .keys()
                .map(|name| {
                    AnnotationError::new(
                        name,
                        format!(
                            "is set without {}: \"true\" (add it, or \"false\" to opt out)",
                            key(INJECT)
                        ),
                    )
                })
                .collect();
            return Err(Refusal(errors));
        }
    }
    if ours.len() > MAX_ANNOTATIONS {
        return Err(AnnotationError::new(
            INJECT,
            format!(
                "the pod has {} annotations under {PREFIX}; at most {MAX_ANNOTATIONS}",
                ours.len()
            ),
        )
        .into());
    }

    let mut p = Parser {
        trust_domain,
        errors: Vec::new(),
        sidecar: SidecarAnnotations::default(),
        config_map: None,
        config_keys: Vec::new(),
        image: None,
        resources: ResourceOverrides::default(),
    };
    for (name, value) in &ours {
        p.one(name, value);
    }
    p.finish()
}

struct Parser<'a> {
    trust_domain: &'a str,
    errors: Vec<AnnotationError>,
    sidecar: SidecarAnnotations,
    config_map: Option<String>,
    /// Annotations that configure the sidecar (refused next to `config-map`).
    config_keys: Vec<String>,
    image: Option<String>,
    resources: ResourceOverrides,
}

impl Parser<'_> {
    fn one(&mut self, name: &str, value: &str) {
        if let Err(problem) = self.dispatch(name, value) {
            self.errors.push(AnnotationError::new(name, problem));
        }
    }

    fn dispatch(&mut self, name: &str, value: &str) -> Result<(), String> {
        let multiline = name == PROXY_ALLOW;
        check_value(value, multiline)?;
        let config = |p: &mut Self| p.config_keys.push(name.to_string());
        match name {
            INJECT => Ok(()),
            CONFIG_MAP => {
                if !is_dns_name(value, 253) {
                    return Err(format!(
                        "`{value}` is not a ConfigMap name (lowercase letters, digits, `-`, `.`)"
                    ));
                }
                self.config_map = Some(value.to_string());
                Ok(())
            }
            OPENBAO_ROLE => {
                config(self);
                self.sidecar.openbao_role = Some(single(value)?);
                Ok(())
            }
            PROXY_ALLOW => {
                config(self);
                self.sidecar.proxy_allow = proxy_allow(value)?;
                Ok(())
            }
            ADMIN_PORT => {
                config(self);
                self.sidecar.admin_port = Some(port(value)?);
                Ok(())
            }
            SECRETS_GROUP => {
                config(self);
                self.sidecar.secrets_group = Some(gid(value)?);
                Ok(())
            }
            LOG_LEVEL => {
                config(self);
                self.sidecar.log_level = Some(single(value)?);
                Ok(())
            }
            IMAGE => {
                check_image(value)?;
                self.image = Some(value.to_string());
                Ok(())
            }
            CPU_REQUEST => set_quantity(&mut self.resources.cpu_request, value),
            CPU_LIMIT => set_quantity(&mut self.resources.cpu_limit, value),
            MEMORY_REQUEST => set_quantity(&mut self.resources.memory_request, value),
            MEMORY_LIMIT => set_quantity(&mut self.resources.memory_limit, value),
            _ => {
                if let Some(db) = name.strip_prefix(DATABASE) {
                    config(self);
                    let d = database(named(db, DATABASE)?, value)?;
                    self.sidecar.databases.push(d);
                } else if let Some(kv) = name.strip_prefix(KV) {
                    config(self);
                    let k = kv_secret(named(kv, KV)?, value)?;
                    self.sidecar.kvs.push(k);
                } else if let Some(p) = name.strip_prefix(MTLS_INBOUND) {
                    config(self);
                    let listen_port =
                        port(p).map_err(|e| format!("the listen port in the key: {e}"))?;
                    let i = inbound(listen_port, value, self.trust_domain)?;
                    self.sidecar.inbound.push(i);
                } else if let Some(o) = name.strip_prefix(MTLS_OUTBOUND) {
                    config(self);
                    let o = outbound(named(o, MTLS_OUTBOUND)?, value, self.trust_domain)?;
                    self.sidecar.outbound.push(o);
                } else {
                    return Err(format!("unknown annotation; the known ones are {KNOWN}"));
                }
                Ok(())
            }
        }
    }

    fn finish(mut self) -> Result<Intent, Refusal> {
        let s = &self.sidecar;
        if s.openbao_role.is_none() {
            let needs: Vec<String> = s
                .databases
                .iter()
                .map(|d| format!("{DATABASE}{}", d.name))
                .chain(s.kvs.iter().map(|k| format!("{KV}{}", k.name)))
                .chain((!s.proxy_allow.is_empty()).then(|| PROXY_ALLOW.to_string()))
                .collect();
            for name in needs {
                self.errors.push(AnnotationError::new(
                    &name,
                    format!(
                        "needs {}: the OpenBao role the sidecar logs in with",
                        key(OPENBAO_ROLE)
                    ),
                ));
            }
        }
        let source = match self.config_map.take() {
            Some(cm) => {
                for name in &self.config_keys {
                    self.errors.push(AnnotationError::new(
                        name,
                        format!(
                            "cannot be combined with {}: the ConfigMap's {CONFIG_MAP_KEY} is the whole sidecar configuration",
                            key(CONFIG_MAP)
                        ),
                    ));
                }
                Source::ConfigMap(cm)
            }
            None => Source::Annotations(std::mem::take(&mut self.sidecar)),
        };
        if !self.errors.is_empty() {
            return Err(Refusal(self.errors));
        }
        Ok(Intent::Inject(Box::new(Injection {
            source,
            image: self.image,
            resources: self.resources,
        })))
    }
}

/// Printable ASCII only (and line breaks where a list may span lines),
/// at most [`MAX_VALUE_BYTES`].
fn check_value(value: &str, multiline: bool) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "the value is {} bytes; at most {MAX_VALUE_BYTES}",
            value.len()
        ));
    }
    if value.trim().is_empty() {
        return Err("the value is empty".into());
    }
    if let Some(c) = value
        .chars()
        .find(|&c| !(c == ' ' || c.is_ascii_graphic() || (multiline && matches!(c, '\n' | '\t'))))
    {
        return Err(if c == '\n' {
            "the value contains a line break (a YAML `|` block? use a plain string)".into()
        } else {
            format!(
                "the value contains {:?}: only printable ASCII is allowed",
                c
            )
        });
    }
    Ok(())
}

/// A value shortened for messages (values are checked to be printable first
/// where they are echoed in full).
fn shown(v: &str) -> String {
    let clean: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(64)
        .collect();
    if v.chars().count() > 64 {
        format!("{clean}…")
    } else {
        clean
    }
}

fn single(value: &str) -> Result<String, String> {
    let v = value.trim();
    if v.contains([',', ' ', '=']) {
        return Err(format!("`{v}` must be a single name"));
    }
    Ok(v.to_string())
}

fn named<'a>(name: &'a str, kind: &str) -> Result<&'a str, String> {
    if name.is_empty() {
        return Err(format!("needs a name after `{kind}`"));
    }
    Ok(name)
}

/// A TCP port: 1-65535, digits only.
fn port(value: &str) -> Result<u16, String> {
    let v = value.trim();
    if !v.is_empty() && v.len() <= 5 && v.chars().all(|c| c.is_ascii_digit()) {
        if let Ok(p @ 1..=65535) = v.parse::<u32>() {
            return Ok(p as u16);
        }
    }
    Err(format!("`{v}` is not a TCP port (1-65535)"))
}

fn gid(value: &str) -> Result<u32, String> {
    let v = value.trim();
    match v.parse::<u32>() {
        Ok(g @ 1..=2_147_483_647) if v.chars().all(|c| c.is_ascii_digit()) => Ok(g),
        Ok(0) => Err("0 is root's group: use the app's own group id".into()),
        _ => Err(format!("`{v}` is not a group id (1-2147483647)")),
    }
}

fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("{key}: `{value}` is not true or false")),
    }
}

fn set_quantity(slot: &mut Option<Quantity>, value: &str) -> Result<(), String> {
    *slot = Some(Quantity::parse(value.trim())?);
    Ok(())
}

/// Kubernetes object names: lowercase letters, digits, `-` and `.`, starting
/// and ending with a letter or digit, at most `max` characters.
pub fn is_dns_name(v: &str, max: usize) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !v.is_empty()
        && v.len() <= max
        && v.chars().all(|c| alnum(c) || c == '-' || c == '.')
        && v.starts_with(alnum)
        && v.ends_with(alnum)
}

/// An image reference: `[registry/]name[:tag][@digest]`, at most 512
/// characters of `[A-Za-z0-9._/:@-]`.
pub fn check_image(v: &str) -> Result<(), String> {
    let ok = !v.is_empty()
        && v.len() <= 512
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/:@-".contains(c))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && !v.ends_with([':', '@', '/']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not an image reference like registry.example/zt-sidecar:1.0",
            shown(v)
        ))
    }
}

/// `FIRST[, key=value]...` with keys from `allowed`, each at most once.
fn items<'a>(
    value: &'a str,
    allowed: &[&str],
) -> Result<(&'a str, BTreeMap<&'a str, &'a str>), String> {
    let mut parts = value.split(',').map(str::trim);
    let first = parts.next().unwrap_or_default();
    if first.is_empty() || first.contains('=') {
        return Err(format!(
            "must start with the main value, then `key=value` options (any of {})",
            allowed.join(", ")
        ));
    }
    let mut options = BTreeMap::new();
    for part in parts {
        let Some((k, v)) = part.split_once('=') else {
            return Err(if part.is_empty() {
                "has an empty item (a stray comma?)".into()
            } else {
                format!("`{part}` is not `key=value`")
            });
        };
        let (k, v) = (k.trim(), v.trim());
        if !allowed.contains(&k) {
            return Err(format!(
                "`{k}` is not an option here; the options are {}",
                allowed.join(", ")
            ));
        }
        if v.is_empty() {
            return Err(format!("{k}: has no value"));
        }
        if options.insert(k, v).is_some() {
            return Err(format!("{k}: is given twice"));
        }
    }
    Ok((first, options))
}

const DATABASE_OPTIONS: &[&str] = &[
    "mount",
    "host",
    "port",
    "database",
    "format",
    "rotate_before",
    "revoke_grace",
    "required",
    "releasable",
];

fn database(name: &str, value: &str) -> Result<Database, String> {
    let (role, o) = items(value, DATABASE_OPTIONS)?;
    let text = |k: &str| o.get(k).map(|v| v.to_string());
    Ok(Database {
        name: name.to_string(),
        role: single(role)?,
        mount: text("mount"),
        host: text("host"),
        port: o
            .get("port")
            .map(|p| port(p).map_err(|e| format!("port: {e}")))
            .transpose()?,
        database: text("database"),
        format: text("format"),
        rotate_before: text("rotate_before"),
        revoke_grace: text("revoke_grace"),
        required: o
            .get("required")
            .map(|v| boolean("required", v))
            .transpose()?,
        releasable: o
            .get("releasable")
            .map(|v| boolean("releasable", v))
            .transpose()?,
    })
}

const KV_OPTIONS: &[&str] = &["mount", "refresh_interval", "required"];

fn kv_secret(name: &str, value: &str) -> Result<Kv, String> {
    let (path, o) = items(value, KV_OPTIONS)?;
    if path.contains(' ') {
        return Err(format!(
            "`{path}` must be a path like backend/jwt-signing-key"
        ));
    }
    Ok(Kv {
        name: name.to_string(),
        path: path.to_string(),
        mount: o.get("mount").map(|v| v.to_string()),
        refresh_interval: o.get("refresh_interval").map(|v| v.to_string()),
        required: o
            .get("required")
            .map(|v| boolean("required", v))
            .transpose()?,
    })
}

/// `METHOD[,METHOD...] path`, rules separated by `;` or line breaks.
fn proxy_allow(value: &str) -> Result<Vec<AllowRule>, String> {
    let mut rules = Vec::new();
    let mut seen = BTreeSet::new();
    for rule in value
        .split([';', '\n'])
        .map(str::trim)
        .filter(|r| !r.is_empty())
    {
        let mut words = rule.split_whitespace();
        let (Some(methods), Some(path), None) = (words.next(), words.next(), words.next()) else {
            return Err(format!(
                "`{rule}` is not `METHOD[,METHOD...] path`, e.g. `GET,PUT secret/data/app/*`"
            ));
        };
        let methods: Vec<String> = methods.split(',').map(str::to_string).collect();
        if methods.iter().any(String::is_empty) {
            return Err(format!("`{rule}`: a method is empty (a stray comma?)"));
        }
        if !seen.insert(path.to_string()) {
            return Err(format!(
                "`{path}` is listed twice; put all its methods in one rule"
            ));
        }
        rules.push(AllowRule {
            methods,
            path: path.to_string(),
        });
    }
    if rules.is_empty() {
        return Err("lists no rule".into());
    }
    Ok(rules)
}

const INBOUND_OPTIONS: &[&str] = &["allow", "peer_id_header", "handshake_timeout"];

fn inbound(listen_port: u16, value: &str, trust_domain: &str) -> Result<Inbound, String> {
    let (app, o) = items(value, INBOUND_OPTIONS)?;
    let app_port = port(app).map_err(|e| format!("the app port: {e}"))?;
    let allow: Vec<String> = o
        .get("allow")
        .ok_or("allow: is required: the SPIFFE IDs that may connect, separated by spaces")?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    for id in &allow {
        same_trust_domain("allow", id, trust_domain)?;
    }
    Ok(Inbound {
        listen_port,
        app_port,
        allow,
        peer_id_header: o.get("peer_id_header").map(|v| v.to_string()),
        handshake_timeout: o.get("handshake_timeout").map(|v| v.to_string()),
    })
}

const OUTBOUND_OPTIONS: &[&str] = &["listen", "server_id", "handshake_timeout"];

fn outbound(name: &str, value: &str, trust_domain: &str) -> Result<Outbound, String> {
    let (upstream, o) = items(value, OUTBOUND_OPTIONS)?;
    let listen_port = port(
        o.get("listen")
            .ok_or("listen: is required: the loopback port the app sends plain HTTP to")?,
    )
    .map_err(|e| format!("listen: {e}"))?;
    let server_id = o
        .get("server_id")
        .ok_or("server_id: is required: the exact SPIFFE ID the upstream must present")?;
    same_trust_domain("server_id", server_id, trust_domain)?;
    Ok(Outbound {
        name: name.to_string(),
        upstream: upstream.to_string(),
        listen_port,
        server_id: server_id.to_string(),
        handshake_timeout: o.get("handshake_timeout").map(|v| v.to_string()),
    })
}

/// The trust domain of a `spiffe://` ID or pattern, if it has one.
pub fn trust_domain_of(id: &str) -> Option<&str> {
    let rest = id.strip_prefix("spiffe://")?;
    Some(rest.split('/').next().unwrap_or(rest))
}

/// Peer IDs must be of this cluster's trust domain: the sidecar trusts only
/// its own SPIRE's bundle, so another domain's ID could never connect — or,
/// worse, would be a typo that silently matches nothing.
pub fn same_trust_domain(option: &str, id: &str, trust_domain: &str) -> Result<(), String> {
    match trust_domain_of(id) {
        Some(td) if td == trust_domain => Ok(()),
        Some(td) => Err(format!(
            "{option}: `{id}` is in trust domain `{td}`, not this cluster's `{trust_domain}`"
        )),
        None => Err(format!(
            "{option}: `{id}` is not a SPIFFE ID; write spiffe://{trust_domain}/ns/<namespace>/sa/<service account>"
        )),
    }
}

#[cfg(test)]
mod tests;
