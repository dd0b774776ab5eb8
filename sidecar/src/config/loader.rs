//! The loader: where the TOML comes from ([`ConfigOrigin`]), parsing it,
//! and validating it section by section (each section's `validate` lives
//! next to its types), then the checks that span sections.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use zt_contracts::ConfigSource;

use super::env::ENV_CONFIG;
use super::error::invalid;
use super::{admin, backoff, identity, log, mtls, openbao, proxy, secrets};
use super::{
    AdminConfig, BackoffConfig, ConfigError, IdentityConfig, ListenAddr, LogConfig, MtlsConfig,
    OpenBaoConfig, ProxyConfig, SecretsConfig,
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    identity: identity::RawIdentity,
    openbao: Option<openbao::RawOpenBao>,
    secrets: Option<secrets::RawSecrets>,
    proxy: Option<proxy::RawProxy>,
    #[serde(default)]
    admin: admin::RawAdmin,
    #[serde(default)]
    log: log::RawLog,
    #[serde(default)]
    backoff: backoff::RawBackoff,
    #[serde(default)]
    mtls: mtls::RawMtls,
}

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

/// Where the TOML configuration comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOrigin {
    /// A file (`--config FILE`).
    File(PathBuf),
    /// The text of the environment variable [`ENV_CONFIG`].
    Env,
}

impl ConfigOrigin {
    /// `--config FILE` when given (an explicit flag beats the ambient
    /// environment), else [`ENV_CONFIG`] when it is set and not empty, else
    /// [`ConfigError::Missing`].
    pub fn choose(file: Option<PathBuf>, env: &dyn ConfigSource) -> Result<Self, ConfigError> {
        match file {
            Some(path) => Ok(Self::File(path)),
            None if env.non_empty(ENV_CONFIG).is_some() => Ok(Self::Env),
            None => Err(ConfigError::Missing),
        }
    }
}

impl std::fmt::Display for ConfigOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "file: {}", path.display()),
            Self::Env => write!(f, "from {ENV_CONFIG}"),
        }
    }
}

impl Config {
    /// Reads and validates the configuration from `source`.
    pub fn load_from(source: &ConfigOrigin, env: &dyn ConfigSource) -> Result<Self, ConfigError> {
        match source {
            ConfigOrigin::File(path) => Self::load(path, env),
            ConfigOrigin::Env => {
                let text = env.non_empty(ENV_CONFIG).ok_or(ConfigError::Missing)?;
                Self::parse(&text, env).map_err(|e| match e {
                    ConfigError::Syntax(msg) => ConfigError::Syntax(format!("{ENV_CONFIG}: {msg}")),
                    other => other,
                })
            }
        }
    }

    /// Reads and validates a config file.
    pub fn load(path: &Path, env: &dyn ConfigSource) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, env)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str, env: &dyn ConfigSource) -> Result<Self, ConfigError> {
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
    fn validate(self, env: &dyn ConfigSource) -> Result<Config, ConfigError> {
        let identity = identity::validate(self.identity, env)?;
        let backoff = backoff::validate(self.backoff)?;
        let openbao = self
            .openbao
            .map(|o| openbao::validate(o, env))
            .transpose()?;
        let secrets = secrets::validate(self.secrets)?;
        if (!secrets.database.is_empty() || !secrets.kv.is_empty()) && openbao.is_none() {
            return Err(invalid(
                "secrets",
                "database and kv secrets need an [openbao] section",
            ));
        }

        let proxy = self.proxy.map(proxy::validate).transpose()?;
        if proxy.is_some() && openbao.is_none() {
            return Err(invalid(
                "proxy",
                "the OpenBao proxy needs an [openbao] section",
            ));
        }

        let admin = admin::validate(self.admin)?;
        let log = log::validate(self.log)?;
        let mtls = mtls::validate(self.mtls)?;

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
