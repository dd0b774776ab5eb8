//! What the sidecar knows about itself: the status board behind `/status`,
//! `/readyz` and `/metrics`. Holds no secret values (usernames and lease ids
//! only).
//!
//! - `board.rs`: [`State`], what each task reports (SVID, token, secrets,
//!   listeners, failures), readiness and the `/status` document;
//! - `metrics.rs`: the same facts as Prometheus text.

mod board;
mod metrics;

pub use board::{ListenerStats, State};
pub(crate) use board::{
    ReleaseRequest, RotationRequest, SecretKind, SecretStatus, SvidInfo, TokenInfo,
    FORCED_ROTATION_INTERVAL,
};

#[cfg(test)]
mod tests;
