//! `[identity]`: where the Workload API is, where SVID files go.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use zt_contracts::ConfigSource;

use super::env;
use super::error::invalid;
use super::values::absolute;
use super::ConfigError;

/// Default Workload API endpoint (the SPIFFE CSI driver's mount in pods).
pub const DEFAULT_WORKLOAD_API: &str = "unix:/run/spire/sockets/agent.sock";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIdentity {
    workload_api: Option<String>,
    svid_dir: Option<PathBuf>,
}

/// `[identity]`
#[derive(Debug, Clone, Serialize)]
pub struct IdentityConfig {
    /// Workload API endpoint, `unix:/path` or `tcp://ip:port`.
    pub workload_api: String,
    /// Where to write `svid.pem`, `svid_key.pem`, `bundle.pem` (optional).
    pub svid_dir: Option<PathBuf>,
}

/// `[identity]` with the environment applied.
pub(super) fn validate(
    raw: RawIdentity,
    env: &dyn ConfigSource,
) -> Result<IdentityConfig, ConfigError> {
    let (key, value) = env::workload_api(raw.workload_api, env)
        .unwrap_or(("identity.workload_api", DEFAULT_WORKLOAD_API.to_string()));
    Ok(IdentityConfig {
        workload_api: workload_endpoint(key, &value)?,
        svid_dir: raw
            .svid_dir
            .map(|p| absolute("identity.svid_dir", p))
            .transpose()?,
    })
}

fn workload_endpoint(key: &str, v: &str) -> Result<String, ConfigError> {
    if let Some(path) = v
        .strip_prefix("unix://")
        .or_else(|| v.strip_prefix("unix:"))
    {
        if path.is_empty() || !path.starts_with('/') {
            return Err(invalid(key, format!("`{v}` must name an absolute socket path, e.g. unix:/run/spire/sockets/agent.sock")));
        }
        return Ok(format!("unix:{path}"));
    }
    if let Some(addr) = v.strip_prefix("tcp://") {
        if addr.parse::<SocketAddr>().is_err() {
            return Err(invalid(key, format!("`{v}` must be tcp://<ip>:<port>")));
        }
        return Ok(v.to_string());
    }
    Err(invalid(
        key,
        format!(
            "`{v}` is not a Workload API address: use unix:/path/to/agent.sock or tcp://ip:port"
        ),
    ))
}
