//! The sidecar's TOML, rendered from annotations (or taken from a
//! ConfigMap) and judged by zt-sidecar's own loader
//! ([`zt_sidecar::config::Config::parse`]) before any pod gets it: what
//! `zt-sidecar check` would refuse, the API server refuses at admission,
//! with the sidecar's message under the name of the annotation that caused it.
//!
//! The rendered text reaches the sidecar unchanged in its `ZT_CONFIG`
//! environment variable (see sidecar/README.md).

use std::collections::BTreeMap;
use std::path::Path;

use toml::{Table, Value};
use zt_sidecar::config::{Config, ConfigError, ListenAddr};

use crate::annotations::{
    same_trust_domain, AnnotationError, Refusal, SidecarAnnotations, ADMIN_PORT, CONFIG_MAP,
    CONFIG_MAP_KEY, DATABASE, INJECT, KV, LOG_LEVEL, MTLS_INBOUND, MTLS_OUTBOUND, OPENBAO_ROLE,
    PROXY_ALLOW, SECRETS_GROUP,
};
use crate::settings::Settings;

/// Where the app containers find what the sidecar shares: the pod's
/// memory-backed volume, mounted read-only into them.
pub const RUN_DIR: &str = "/run/zt";
/// The secret files: `<name>.json` (or `.env`) per database and KV secret.
pub const SECRETS_DIR: &str = "/run/zt/secrets";
/// The OpenBao API proxy socket.
pub const PROXY_SOCKET: &str = "/run/zt/openbao.sock";
/// Where the SPIFFE CSI driver's Workload API socket folder is mounted.
pub const WORKLOAD_API_DIR: &str = "/run/spire/sockets";
/// Mode of the secret files: the owner (the sidecar) and the secrets group read.
pub const FILE_MODE: &str = "0440";
/// Default admin port (loopback).
pub const DEFAULT_ADMIN_PORT: u16 = 15000;
/// Largest accepted `sidecar.toml` of a ConfigMap (it becomes an
/// environment variable of the pod, whose total size Linux caps).
pub const MAX_CONFIG_MAP_BYTES: usize = 64 * 1024;

/// A sidecar configuration that zt-sidecar's own loader accepted.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// The TOML text the sidecar gets in `ZT_CONFIG`.
    pub toml: String,
    /// The same, as zt-sidecar reads it.
    pub config: Config,
    /// Which annotation each part of the configuration came from.
    pub origins: Origins,
}

/// Which annotation a key of the configuration came from, so the sidecar's
/// own error for a key becomes an error about an annotation.
#[derive(Debug, Clone)]
pub struct Origins {
    /// (config key prefix such as `secrets.database[1]`, annotation name, label)
    entries: Vec<(String, String, Option<String>)>,
    /// Everything else (the annotation that asked for the sidecar).
    fallback: String,
}

impl Origins {
    fn new(fallback: &str) -> Self {
        Self {
            entries: Vec::new(),
            fallback: fallback.to_string(),
        }
    }

    fn add(&mut self, prefix: impl Into<String>, annotation: impl Into<String>) {
        self.entries.push((prefix.into(), annotation.into(), None));
    }

    fn add_labelled(&mut self, prefix: String, annotation: &str, label: String) {
        self.entries
            .push((prefix, annotation.to_string(), Some(label)));
    }

    /// The annotation (without prefix) responsible for the config key `key`.
    pub fn annotation(&self, key: &str) -> &str {
        self.lookup(key).map_or(&self.fallback, |(_, a, _)| a)
    }

    /// `zt.demo.local/<annotation>` for a key with an origin, else the key itself.
    fn annotation_or_key(&self, key: &str) -> String {
        match self.lookup(key) {
            Some((_, a, _)) => crate::annotations::key(a),
            None if self.fallback == CONFIG_MAP => key.to_string(),
            None => format!(
                "{} (the default admin port)",
                crate::annotations::key(ADMIN_PORT)
            ),
        }
    }

    fn lookup(&self, key: &str) -> Option<&(String, String, Option<String>)> {
        self.entries
            .iter()
            .filter(|(prefix, _, _)| {
                key == prefix
                    || key
                        .strip_prefix(prefix.as_str())
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
            .max_by_key(|(prefix, _, _)| prefix.len())
    }

    /// The sidecar's error, attributed to the annotation that caused it.
    pub fn explain(&self, e: &ConfigError) -> AnnotationError {
        match e {
            ConfigError::Invalid { key, problem } => match self.lookup(key) {
                Some((prefix, annotation, label)) => {
                    let field = key
                        .strip_prefix(prefix.as_str())
                        .unwrap_or_default()
                        .trim_start_matches('.');
                    let what = match (label, field) {
                        (Some(l), _) => format!("{l}: {problem}"),
                        (None, "") => problem.clone(),
                        (None, f) => format!("{f}: {problem}"),
                    };
                    AnnotationError::new(annotation, what)
                }
                None => AnnotationError::new(&self.fallback, format!("{key}: {problem}")),
            },
            other => AnnotationError::new(&self.fallback, other.to_string()),
        }
    }
}

/// The sidecar configuration a pod with these annotations gets, as the
/// webhook renders it: `None` when the pod is left alone or takes its
/// configuration from a ConfigMap. For checks of manifests (deploy/checks)
/// and tools that want to see a pod's configuration without a cluster.
pub fn for_pod(
    annotations: &BTreeMap<String, String>,
    s: &Settings,
) -> Result<Option<Rendered>, Refusal> {
    match crate::annotations::parse(annotations, &s.trust_domain)? {
        crate::annotations::Intent::Inject(i) => match &i.source {
            crate::annotations::Source::Annotations(a) => from_annotations(a, s).map(Some),
            crate::annotations::Source::ConfigMap(_) => Ok(None),
        },
        crate::annotations::Intent::Leave(_) => Ok(None),
    }
}

/// Renders the sidecar TOML the annotations describe, on top of the
/// injector's defaults, and has zt-sidecar's loader judge it.
pub fn from_annotations(a: &SidecarAnnotations, s: &Settings) -> Result<Rendered, Refusal> {
    let (text, origins) = render(a, s)?;
    let config = Config::parse(&text, &BTreeMap::<String, String>::new())
        .map_err(|e| Refusal::from(origins.explain(&e)))?;
    let rendered = Rendered {
        toml: text,
        config,
        origins,
    };
    check(&rendered, s)?;
    Ok(rendered)
}

/// The TOML text for `a` on top of the defaults, and where each part came from.
fn render(a: &SidecarAnnotations, s: &Settings) -> Result<(String, Origins), Refusal> {
    let d = &s.sidecar;
    let mut origins = Origins::new(INJECT);
    let mut doc = Table::new();

    doc.insert(
        "identity".into(),
        Value::Table(table([("workload_api", d.workload_api.clone().into())])),
    );

    if let Some(role) = &a.openbao_role {
        let Some(ob) = &d.openbao else {
            return Err(AnnotationError::new(
                OPENBAO_ROLE,
                "this injector has no OpenBao address configured (chart value defaults.openbao.address)",
            )
            .into());
        };
        let mut t = table([
            ("address", ob.address.clone().into()),
            ("role", role.clone().into()),
        ]);
        if let Some(m) = &ob.auth_mount {
            t.insert("auth_mount".into(), m.clone().into());
        }
        if let Some(aud) = &ob.audience {
            t.insert("audience".into(), aud.clone().into());
        }
        origins.add("openbao.role", OPENBAO_ROLE);
        doc.insert("openbao".into(), Value::Table(t));
    }

    let group = a.secrets_group.unwrap_or(d.secrets_group);
    let shares = !a.databases.is_empty() || !a.kvs.is_empty() || !a.proxy_allow.is_empty();
    if shares {
        let mut secrets = Table::new();
        if !a.databases.is_empty() || !a.kvs.is_empty() {
            secrets.insert("dir".into(), SECRETS_DIR.into());
        }
        secrets.insert("file_mode".into(), FILE_MODE.into());
        secrets.insert("group".into(), i64::from(group).into());
        if a.secrets_group.is_some() {
            origins.add("secrets.group", SECRETS_GROUP);
        }
        let mut dbs = Vec::new();
        for (i, db) in a.databases.iter().enumerate() {
            let mut t = table([
                ("name", db.name.clone().into()),
                ("role", db.role.clone().into()),
            ]);
            let opt = |t: &mut Table, k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    t.insert(k.into(), v);
                }
            };
            opt(&mut t, "mount", db.mount.clone().map(Value::from));
            opt(
                &mut t,
                "host",
                db.host.clone().or(d.database.host.clone()).map(Value::from),
            );
            opt(
                &mut t,
                "port",
                db.port
                    .or(d.database.port)
                    .map(|p| Value::from(i64::from(p))),
            );
            opt(
                &mut t,
                "database",
                db.database
                    .clone()
                    .or(d.database.database.clone())
                    .map(Value::from),
            );
            opt(&mut t, "format", db.format.clone().map(Value::from));
            opt(
                &mut t,
                "rotate_before",
                db.rotate_before.clone().map(Value::from),
            );
            opt(
                &mut t,
                "revoke_grace",
                db.revoke_grace.clone().map(Value::from),
            );
            opt(&mut t, "required", db.required.map(Value::from));
            opt(&mut t, "releasable", db.releasable.map(Value::from));
            origins.add(
                format!("secrets.database[{i}]"),
                format!("{DATABASE}{}", db.name),
            );
            dbs.push(Value::Table(t));
        }
        if !dbs.is_empty() {
            secrets.insert("database".into(), Value::Array(dbs));
        }
        let mut kvs = Vec::new();
        for (i, kv) in a.kvs.iter().enumerate() {
            let mut t = table([
                ("name", kv.name.clone().into()),
                ("path", kv.path.clone().into()),
            ]);
            if let Some(m) = &kv.mount {
                t.insert("mount".into(), m.clone().into());
            }
            if let Some(r) = &kv.refresh_interval {
                t.insert("refresh_interval".into(), r.clone().into());
            }
            if let Some(r) = kv.required {
                t.insert("required".into(), r.into());
            }
            origins.add(format!("secrets.kv[{i}]"), format!("{KV}{}", kv.name));
            kvs.push(Value::Table(t));
        }
        if !kvs.is_empty() {
            secrets.insert("kv".into(), Value::Array(kvs));
        }
        doc.insert("secrets".into(), Value::Table(secrets));
    }

    if !a.proxy_allow.is_empty() {
        let mut rules = Vec::new();
        for (i, r) in a.proxy_allow.iter().enumerate() {
            rules.push(Value::Table(table([
                ("path", r.path.clone().into()),
                (
                    "methods",
                    Value::Array(r.methods.iter().cloned().map(Value::from).collect()),
                ),
            ])));
            origins.add_labelled(
                format!("proxy.allow[{i}]"),
                PROXY_ALLOW,
                format!("`{} {}`", r.methods.join(","), r.path),
            );
        }
        origins.add("proxy", PROXY_ALLOW);
        doc.insert(
            "proxy".into(),
            Value::Table(table([
                (
                    "listen",
                    Value::Array(vec![format!("unix:{PROXY_SOCKET}").into()]),
                ),
                ("allow", Value::Array(rules)),
            ])),
        );
    }

    let admin_port = a.admin_port.unwrap_or(DEFAULT_ADMIN_PORT);
    if a.admin_port.is_some() {
        origins.add("admin.listen", ADMIN_PORT);
    }
    doc.insert(
        "admin".into(),
        Value::Table(table([(
            "listen",
            format!("127.0.0.1:{admin_port}").into(),
        )])),
    );

    let mut log = table([("format", d.log_format.clone().into())]);
    if let Some(level) = a.log_level.as_ref().or(d.log_level.as_ref()) {
        log.insert("level".into(), level.clone().into());
        if a.log_level.is_some() {
            origins.add("log.level", LOG_LEVEL);
        }
    }
    doc.insert("log".into(), Value::Table(log));

    let mut mtls = Table::new();
    if !a.inbound.is_empty() {
        let mut v = Vec::new();
        for (i, ib) in a.inbound.iter().enumerate() {
            let mut t = table([
                ("listen", format!("0.0.0.0:{}", ib.listen_port).into()),
                ("forward_to", format!("127.0.0.1:{}", ib.app_port).into()),
                (
                    "allow",
                    Value::Array(ib.allow.iter().cloned().map(Value::from).collect()),
                ),
            ]);
            if let Some(h) = &ib.peer_id_header {
                t.insert("peer_id_header".into(), h.clone().into());
            }
            if let Some(h) = &ib.handshake_timeout {
                t.insert("handshake_timeout".into(), h.clone().into());
            }
            origins.add(
                format!("mtls.inbound[{i}]"),
                format!("{MTLS_INBOUND}{}", ib.listen_port),
            );
            v.push(Value::Table(t));
        }
        mtls.insert("inbound".into(), Value::Array(v));
    }
    if !a.outbound.is_empty() {
        let mut v = Vec::new();
        for (i, ob) in a.outbound.iter().enumerate() {
            let mut t = table([
                ("listen", format!("127.0.0.1:{}", ob.listen_port).into()),
                ("upstream", ob.upstream.clone().into()),
                ("server_id", ob.server_id.clone().into()),
            ]);
            if let Some(h) = &ob.handshake_timeout {
                t.insert("handshake_timeout".into(), h.clone().into());
            }
            origins.add(
                format!("mtls.outbound[{i}]"),
                format!("{MTLS_OUTBOUND}{}", ob.name),
            );
            v.push(Value::Table(t));
        }
        mtls.insert("outbound".into(), Value::Array(v));
    }
    if !mtls.is_empty() {
        doc.insert("mtls".into(), Value::Table(mtls));
    }

    let text = toml::to_string(&doc).map_err(|e| {
        // Unreachable for a table of strings, integers and booleans; still a
        // refusal rather than a panic.
        AnnotationError::new(
            INJECT,
            format!("cannot render the sidecar configuration: {e}"),
        )
    })?;
    Ok((text, origins))
}

/// Takes the TOML of a ConfigMap's `sidecar.toml`, judged by zt-sidecar's
/// loader and by the same placement rules as rendered ones.
pub fn from_config_map(name: &str, text: &str, s: &Settings) -> Result<Rendered, Refusal> {
    let err = |p: String| Refusal::from(AnnotationError::new(CONFIG_MAP, p));
    if text.len() > MAX_CONFIG_MAP_BYTES {
        return Err(err(format!(
            "ConfigMap {name}: {CONFIG_MAP_KEY} is {} bytes; at most {MAX_CONFIG_MAP_BYTES}",
            text.len()
        )));
    }
    let config = Config::parse(text, &BTreeMap::<String, String>::new()).map_err(|e| {
        err(format!(
            "ConfigMap {name}: {CONFIG_MAP_KEY} is not a valid zt-sidecar configuration: {e}"
        ))
    })?;
    let rendered = Rendered {
        toml: text.to_string(),
        config,
        origins: Origins::new(CONFIG_MAP),
    };
    check(&rendered, s).map_err(|r| {
        Refusal(
            r.0.into_iter()
                .map(|e| AnnotationError {
                    annotation: e.annotation,
                    problem: format!("ConfigMap {name}: {}", e.problem),
                })
                .collect(),
        )
    })?;
    Ok(rendered)
}

/// What only the injector knows: peer IDs of this trust domain; shared
/// files and sockets in the shared volume, readable by the app's group;
/// the Workload API in the CSI driver's folder.
fn check(r: &Rendered, s: &Settings) -> Result<(), Refusal> {
    let c = &r.config;
    let o = &r.origins;
    let mut errors = Vec::new();
    let mut fail = |config_key: String, problem: String| {
        errors.push(AnnotationError::new(o.annotation(&config_key), problem));
    };
    for (i, ib) in c.mtls.inbound.iter().enumerate() {
        for p in &ib.allow {
            let id = String::from(p.clone());
            if let Err(e) = same_trust_domain("allow", &id, &s.trust_domain) {
                fail(format!("mtls.inbound[{i}].allow"), e);
            }
        }
    }
    for (i, ob) in c.mtls.outbound.iter().enumerate() {
        if let Err(e) = same_trust_domain("server_id", &ob.server_id, &s.trust_domain) {
            fail(format!("mtls.outbound[{i}].server_id"), e);
        }
    }
    // zt-sidecar compares listen addresses, so 127.0.0.1:P and 0.0.0.0:P
    // pass its check; in one pod they cannot both bind.
    let mut ports: Vec<(u16, String)> = vec![(c.admin.listen.port(), "admin.listen".into())];
    ports.extend(
        c.mtls
            .inbound
            .iter()
            .enumerate()
            .map(|(i, l)| (l.listen.port(), format!("mtls.inbound[{i}]"))),
    );
    ports.extend(
        c.mtls
            .outbound
            .iter()
            .enumerate()
            .map(|(i, l)| (l.listen.port(), format!("mtls.outbound[{i}]"))),
    );
    ports.extend(
        c.proxy
            .iter()
            .flat_map(|p| p.listen.iter())
            .enumerate()
            .filter_map(|(i, l)| match l {
                ListenAddr::Tcp(a) => Some((a.port(), format!("proxy.listen[{i}]"))),
                ListenAddr::Unix(_) => None,
            }),
    );
    for (i, (port, config_key)) in ports.iter().enumerate() {
        if let Some((_, first)) = ports[..i].iter().find(|(p, _)| p == port) {
            fail(
                config_key.clone(),
                format!("port {port} is also used by {}", o.annotation_or_key(first)),
            );
        }
    }
    // The admin listener (POST /rotate, /status) stays inside the pod: the
    // kubelet probes it with `zt-sidecar probe` (exec).
    if !c.admin.listen.ip().is_loopback() {
        fail(
            "admin.listen".into(),
            format!(
                "admin.listen {} must be a loopback address (the kubelet probes it from inside the pod)",
                c.admin.listen
            ),
        );
    }
    // trace makes libraries log request details (headers, bodies).
    if c.log.level.split(',').any(|d| d.trim().ends_with("trace")) {
        fail(
            "log.level".into(),
            format!("log.level {:?}: trace is not allowed in a pod (libraries log request details); debug is the most", c.log.level),
        );
    }
    let shared = Path::new(RUN_DIR);
    if let Some(dir) = &c.secrets.dir {
        if !dir.starts_with(shared) {
            fail(
                "secrets.dir".into(),
                format!(
                    "secrets.dir {} is outside {RUN_DIR}, the volume the app containers see",
                    dir.display()
                ),
            );
        }
    }
    if let Some(dir) = &c.identity.svid_dir {
        if !dir.starts_with(shared) {
            fail(
                "identity.svid_dir".into(),
                format!(
                    "identity.svid_dir {} is outside {RUN_DIR} (the root filesystem is read-only)",
                    dir.display()
                ),
            );
        }
    }
    let mut unix_proxy = false;
    for (i, l) in c.proxy.iter().flat_map(|p| p.listen.iter()).enumerate() {
        if let ListenAddr::Unix(path) = l {
            unix_proxy = true;
            if !path.starts_with(shared) {
                fail(
                    format!("proxy.listen[{i}]"),
                    format!(
                        "proxy.listen {} is outside {RUN_DIR}, the volume the app containers see",
                        path.display()
                    ),
                );
            }
        }
    }
    if let Some(path) = c.identity.workload_api.strip_prefix("unix:") {
        if !Path::new(path).starts_with(WORKLOAD_API_DIR) {
            fail(
                "identity.workload_api".into(),
                format!(
                    "identity.workload_api {} is outside {WORKLOAD_API_DIR}, where the SPIFFE CSI driver's socket is mounted",
                    c.identity.workload_api
                ),
            );
        }
    }
    let has_secrets = !c.secrets.database.is_empty() || !c.secrets.kv.is_empty();
    if has_secrets || unix_proxy {
        match c.secrets.group {
            None => fail(
                "secrets.group".into(),
                format!(
                    "secrets.group is not set: the app containers run as another uid and could not read the secret files or connect to the proxy socket; set group = {} and file_mode = \"{FILE_MODE}\"",
                    s.sidecar.secrets_group
                ),
            ),
            Some(0) => fail(
                "secrets.group".into(),
                "secrets.group 0 is root's group: use a group of its own".into(),
            ),
            Some(_) if has_secrets && c.secrets.file_mode & 0o040 == 0 => fail(
                "secrets.file_mode".into(),
                format!(
                    "secrets.file_mode {:04o} gives the secrets group no read access: use \"{FILE_MODE}\"",
                    c.secrets.file_mode
                ),
            ),
            Some(_) => {}
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Refusal(errors))
    }
}

/// The injector's defaults must make valid sidecar configurations, checked
/// when it starts rather than at the first pod.
pub fn check_defaults(s: &Settings) -> Result<(), String> {
    let mut a = SidecarAnnotations::default();
    let judge = |a: &SidecarAnnotations| -> Result<(), String> {
        let bad =
            |e: String| format!("the sidecar configuration these defaults make is invalid: {e}");
        let (text, origins) = render(a, s).map_err(|r| bad(r.to_string()))?;
        let config = Config::parse(&text, &BTreeMap::<String, String>::new())
            .map_err(|e| bad(e.to_string()))?;
        let rendered = Rendered {
            toml: text,
            config,
            origins,
        };
        check(&rendered, s).map_err(|r| {
            bad(r
                .0
                .into_iter()
                .map(|e| e.problem)
                .collect::<Vec<_>>()
                .join("; "))
        })
    };
    judge(&a)?;
    if s.sidecar.openbao.is_some() {
        a.openbao_role = Some("check".into());
        judge(&a)?;
    }
    Ok(())
}

fn table<const N: usize>(pairs: [(&str, Value); N]) -> Table {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

#[cfg(test)]
mod tests;
