//! `[openbao]`: where OpenBao is and how to log in.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use zt_contracts::ConfigSource;

use super::env;
use super::error::invalid;
use super::values::{duration_str, mount_name, nonempty, opt_duration, required_name};
use super::ConfigError;

/// Default OpenBao auth mount for JWT-SVID login.
pub const DEFAULT_AUTH_MOUNT: &str = "jwt";

/// Default audience requested for the JWT-SVID used to log in.
pub const DEFAULT_AUDIENCE: &str = "openbao";

/// Default timeout of one OpenBao request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOpenBao {
    address: Option<String>,
    auth_mount: Option<String>,
    role: Option<String>,
    audience: Option<String>,
    request_timeout: Option<String>,
    revoke_on_shutdown: Option<bool>,
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

/// `[openbao]` with the environment applied.
pub(super) fn validate(
    o: RawOpenBao,
    env: &dyn ConfigSource,
) -> Result<OpenBaoConfig, ConfigError> {
    let address = env::openbao_address(o.address, env)
        .ok_or_else(|| invalid("openbao.address", "is required (or set ZT_OPENBAO_ADDR)"))?;
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
