//! Where configuration comes from besides the TOML: the environment, read
//! through [`ConfigSource`] so tests pass a map instead of mutating the
//! process, and the few overrides deployments use. An empty variable counts
//! as unset ([`ConfigSource::non_empty`]).

use zt_contracts::ConfigSource;

/// Env var holding the whole TOML configuration, read when `--config` is not given.
pub const ENV_CONFIG: &str = "ZT_CONFIG";
/// Env var that overrides `identity.workload_api`.
pub const ENV_WORKLOAD_API: &str = "ZT_WORKLOAD_API";
/// The SPIFFE-standard Workload API env var, used when nothing else says.
pub const ENV_SPIFFE_ENDPOINT: &str = "SPIFFE_ENDPOINT_SOCKET";
/// Env var that overrides `openbao.address`.
pub const ENV_OPENBAO_ADDR: &str = "ZT_OPENBAO_ADDR";

/// `identity.workload_api` with the environment applied, and the name of
/// where it came from (for errors): `ZT_WORKLOAD_API`, else the key, else
/// `SPIFFE_ENDPOINT_SOCKET`; `None` when none says (the default applies).
pub(super) fn workload_api(
    configured: Option<String>,
    env: &dyn ConfigSource,
) -> Option<(&'static str, String)> {
    match (
        env.non_empty(ENV_WORKLOAD_API),
        configured,
        env.non_empty(ENV_SPIFFE_ENDPOINT),
    ) {
        (Some(v), _, _) => Some((ENV_WORKLOAD_API, v)),
        (None, Some(v), _) => Some(("identity.workload_api", v)),
        (None, None, Some(v)) => Some((ENV_SPIFFE_ENDPOINT, v)),
        (None, None, None) => None,
    }
}

/// `openbao.address` with the environment applied (`ZT_OPENBAO_ADDR` wins),
/// and the name of where it came from.
pub(super) fn openbao_address(
    configured: Option<String>,
    env: &dyn ConfigSource,
) -> Option<(&'static str, String)> {
    env.non_empty(ENV_OPENBAO_ADDR)
        .map(|v| (ENV_OPENBAO_ADDR, v))
        .or(configured.map(|v| ("openbao.address", v)))
}
