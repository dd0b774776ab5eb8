//! `[admin]`: the admin listener (`/healthz`, `/readyz`, `/metrics`, `/status`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use super::values::socket_addr;
use super::ConfigError;

/// Default admin listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:15000";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    listen: Option<String>,
}

/// `[admin]`
#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    /// Listen address.
    pub listen: SocketAddr,
}

/// `[admin]`.
pub(super) fn validate(raw: RawAdmin) -> Result<AdminConfig, ConfigError> {
    Ok(AdminConfig {
        listen: socket_addr(
            "admin.listen",
            raw.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN),
        )?,
    })
}
