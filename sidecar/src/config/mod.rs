//! Configuration: TOML in, typed and validated [`Config`] out.
//!
//! Parsing happens at the edge: every key is turned into its typed value
//! here, and an invalid value is a [`ConfigError`] that names the key and
//! what is wrong. The rest of the sidecar never sees raw strings.
//!
//! The TOML comes from a file (`--config FILE`) or, when no file is named,
//! from the environment variable `ZT_CONFIG` ([`ConfigOrigin`]): zt-injector
//! delivers it that way, so the configuration it validated at admission is
//! exactly the one the container runs with for its whole life.
//!
//! Environment overrides (the few values deployments change) are read
//! through [`zt_contracts::ConfigSource`] (an empty variable counts as
//! unset), so tests pass a map instead of mutating the process:
//!
//! | Variable | Overrides |
//! |---|---|
//! | `ZT_WORKLOAD_API` | `identity.workload_api` |
//! | `SPIFFE_ENDPOINT_SOCKET` | `identity.workload_api` when neither it nor `ZT_WORKLOAD_API` is set |
//! | `ZT_OPENBAO_ADDR` | `openbao.address` |
//!
//! | File | What |
//! |---|---|
//! | `loader.rs` | [`Config`], [`ConfigOrigin`], parsing, cross-section checks |
//! | `env.rs` | the environment overrides |
//! | `error.rs` | [`ConfigError`] |
//! | `values.rs` | names, durations, paths, addresses shared by sections |
//! | `identity.rs`, `openbao.rs`, `secrets.rs`, `proxy.rs`, `admin.rs`, `log.rs`, `backoff.rs`, `mtls.rs` | one section each: defaults, raw and typed forms, `validate` |

mod admin;
mod backoff;
mod env;
mod error;
mod identity;
mod loader;
mod log;
mod mtls;
mod openbao;
mod proxy;
mod secrets;
mod values;

pub use admin::{AdminConfig, DEFAULT_ADMIN_LISTEN};
pub use backoff::{BackoffConfig, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX};
pub use env::{ENV_CONFIG, ENV_OPENBAO_ADDR, ENV_SPIFFE_ENDPOINT, ENV_WORKLOAD_API};
pub use error::ConfigError;
pub use identity::{IdentityConfig, DEFAULT_WORKLOAD_API};
pub use loader::{Config, ConfigOrigin};
pub use log::{LogConfig, LogFormat};
pub use mtls::{
    InboundConfig, MtlsConfig, OutboundConfig, PeerPattern, DEFAULT_HANDSHAKE_TIMEOUT,
    DEFAULT_PEER_ID_HEADER,
};
pub use openbao::{OpenBaoConfig, DEFAULT_AUDIENCE, DEFAULT_AUTH_MOUNT, DEFAULT_REQUEST_TIMEOUT};
pub use proxy::{
    AllowRule, ListenAddr, ProxyConfig, DEFAULT_MAX_BODY_BYTES, DEFAULT_PROXY_TIMEOUT,
    MAX_MAX_BODY_BYTES, PROXY_METHODS, RESERVED_QUERY_KEYS,
};
pub use secrets::{
    DatabaseSecret, FileFormat, KvSecret, SecretsConfig, DEFAULT_DB_MOUNT, DEFAULT_FILE_MODE,
    DEFAULT_KV_MOUNT, DEFAULT_KV_REFRESH, DEFAULT_REVOKE_GRACE, DEFAULT_ROTATE_BEFORE,
};

#[cfg(test)]
mod tests;
