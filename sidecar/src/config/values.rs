//! Values every section uses, parsed from their TOML strings: names,
//! durations, paths, addresses. Each error names its key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::error::invalid;
use super::ConfigError;

pub(super) fn socket_addr(key: &str, v: &str) -> Result<SocketAddr, ConfigError> {
    v.parse()
        .map_err(|_| invalid(key, format!("`{v}` is not an address like 127.0.0.1:15000")))
}

pub(super) fn absolute(key: &str, p: PathBuf) -> Result<PathBuf, ConfigError> {
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(invalid(
            key,
            format!("`{}` must be an absolute path", p.display()),
        ))
    }
}

pub(super) fn required(key: &str, v: Option<String>) -> Result<String, ConfigError> {
    match v {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(invalid(key, "must not be empty")),
        None => Err(invalid(key, "is required")),
    }
}

pub(super) fn nonempty(key: &str, v: Option<String>, default: &str) -> Result<String, ConfigError> {
    required(key, Some(v.unwrap_or_else(|| default.to_string())))
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !s.starts_with('.')
}

pub(super) fn required_name(key: &str, v: Option<String>) -> Result<String, ConfigError> {
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

pub(super) fn mount_name(
    key: &str,
    v: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    required_name(key, Some(v.unwrap_or_else(|| default.to_string())))
}

pub(super) fn file_stem(key: &str, v: Option<String>) -> Result<String, ConfigError> {
    required_name(key, v)
}

pub(super) fn opt_duration(
    key: &str,
    v: Option<String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
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

/// Serializes a `Duration` the way the TOML writes it (`"30s"`).
pub(super) mod duration_str {
    use std::time::Duration;

    pub(in crate::config) fn serialize<S: serde::Serializer>(
        d: &Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}
