//! Why a configuration was refused.

use std::path::PathBuf;

use super::ENV_CONFIG;

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

pub(super) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}
