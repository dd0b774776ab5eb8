//! `[log]`: log format and filter.

use serde::{Deserialize, Serialize};

use super::error::invalid;
use super::ConfigError;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    format: Option<String>,
    level: Option<String>,
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

/// Default `log.level`.
const DEFAULT_LOG_LEVEL: &str = "info";

/// `[log]`.
pub(super) fn validate(raw: RawLog) -> Result<LogConfig, ConfigError> {
    Ok(LogConfig {
        format: match raw.format.as_deref() {
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
            let level = raw.level.unwrap_or_else(|| DEFAULT_LOG_LEVEL.into());
            if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
                return Err(invalid(
                    "log.level",
                    format!("`{level}` is not a log filter (e.g. info, debug)"),
                ));
            }
            level
        },
    })
}
