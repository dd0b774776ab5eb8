//! `[secrets]`, `[[secrets.database]]`, `[[secrets.kv]]`: which secrets to
//! keep, and how their files are written.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::invalid;
use super::values::{
    absolute, duration_str, file_stem, mount_name, opt_duration, required, required_name,
};
use super::ConfigError;

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecrets {
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
pub(super) struct RawDatabase {
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
    releasable: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKv {
    name: Option<String>,
    mount: Option<String>,
    path: Option<String>,
    refresh_interval: Option<String>,
    required: Option<bool>,
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
    /// The app may release it (`POST /release/<name>` on the admin
    /// listener) once it no longer needs it: its lease is revoked, its file
    /// removed, and it is not issued again while the secrets folder holds
    /// the marker `<name>.released`.
    pub releasable: bool,
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

/// `[secrets]`; without the section, no secrets and the default file mode.
pub(super) fn validate(raw: Option<RawSecrets>) -> Result<SecretsConfig, ConfigError> {
    Ok(raw
        .map(validate_present)
        .transpose()?
        .unwrap_or(SecretsConfig {
            dir: None,
            file_mode: DEFAULT_FILE_MODE,
            owner: None,
            group: None,
            database: Vec::new(),
            kv: Vec::new(),
        }))
}

fn validate_present(s: RawSecrets) -> Result<SecretsConfig, ConfigError> {
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
            releasable: d.releasable.unwrap_or(false),
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

fn mode_str<S: serde::Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{mode:04o}"))
}
