//! `[backoff]`: retry delays of every loop.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::invalid;
use super::values::{duration_str, opt_duration};
use super::ConfigError;

/// Default first retry delay after a failure.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_secs(1);

/// Default longest retry delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackoff {
    initial: Option<String>,
    max: Option<String>,
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

/// `[backoff]`.
pub(super) fn validate(raw: RawBackoff) -> Result<BackoffConfig, ConfigError> {
    let backoff = BackoffConfig {
        initial: opt_duration("backoff.initial", raw.initial, DEFAULT_BACKOFF_INITIAL)?,
        max: opt_duration("backoff.max", raw.max, DEFAULT_BACKOFF_MAX)?,
    };
    if backoff.initial > backoff.max {
        return Err(invalid("backoff.initial", "must not exceed backoff.max"));
    }
    Ok(backoff)
}
