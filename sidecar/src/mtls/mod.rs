//! SPIFFE mTLS: an inbound listener that authorises peers by SPIFFE ID and
//! forwards HTTP to the app with the verified ID in a header, and an outbound
//! listener that takes plain HTTP from the app and originates mTLS to a peer
//! whose SPIFFE ID is pinned.
//!
//! Rotation: every X.509 update from the Workload API builds fresh
//! `Arc<ServerConfig>`/`Arc<ClientConfig>`s and publishes them in an
//! `ArcSwap`; each new handshake loads the latest, established connections
//! keep the one they started with until they close on their own.
//! TLS 1.3 only; no session resumption (a resumed session would skip the
//! peer check and outlive the SVID it was made with).
//!
//! - `material.rs`: [`Material`] (SVID, key, bundle) → server and client configs;
//! - `verify.rs`: the SPIFFE ID checks rustls calls during handshakes;
//! - `listeners.rs`: binding, serving, and the config reload on rotation;
//! - `inbound.rs`, `outbound.rs`: one connection each way;
//! - `head.rs`: the inbound's request heads (parse, check, rewrite) and bodies;
//! - `response.rs`: where the app's responses end (to reconnect, or answer 502).

pub(crate) mod head;
mod inbound;
mod listeners;
mod material;
mod outbound;
mod response;
mod verify;

pub(crate) use listeners::{bind_all, spawn_all};
pub use material::{provider, Material};
pub use verify::SpiffeServerVerifier;
pub(crate) use verify::{presented_id, SpiffeClientVerifier};

use listeners::ActiveGuard;
