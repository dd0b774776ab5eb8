//! # zt-sidecar
//!
//! The one process in a pod that holds a SPIFFE key or an OpenBao token.
//!
//! ```text
//!   SPIRE agent ──Workload API──▶ identity ──JWT-SVID──▶ token (login, renew, re-login)
//!                                   │                        │
//!                    svid files ◀───┤                        ├──▶ database leases ──▶ <secrets>/<name>.json
//!                    mTLS in/out ◀──┘                        ├──▶ KV secrets      ──▶ <secrets>/<name>.json
//!                                                            └──▶ OpenBao proxy (allow-listed, token injected)
//!   admin: /healthz /readyz /metrics /status
//! ```
//!
//! Every background loop stops on one cancellation token; on shutdown the
//! sidecar revokes its leases and tokens (configurable). Secrets never reach
//! logs: tokens, passwords and keys live in [`secret::Sensitive`], whose
//! `Debug`/`Display` print `<redacted>`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod backoff;
mod clock;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod mtls;
pub mod openbao;
pub mod proxy;
pub mod run;
pub mod secret;
pub mod secrets;
pub mod serve;
pub mod status;
