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
//! logs: tokens, passwords and keys live in [`zt_contracts::Sensitive`], whose
//! `Debug`/`Display` print `<redacted>`.
//!
//! ## Where things are
//!
//! | Concept | Module |
//! |---|---|
//! | configuration (one file per section) | `config/` |
//! | identity: SVIDs from the Workload API, SVID files | `identity` |
//! | OpenBao login, renewal, retired tokens | `openbao/token.rs`, decided in `openbao/token_schedule.rs` |
//! | OpenBao HTTP calls | `openbao/client.rs` |
//! | database leases (renew, rotate, revoke) | `secrets/database.rs`, decided in `secrets/lease_schedule.rs` |
//! | KV v2 secrets | `secrets/kv.rs` |
//! | atomic secret files | `secrets/files.rs` |
//! | OpenBao API proxy | `proxy` |
//! | SPIFFE mTLS | `mtls/` |
//! | status board, `/status` (a `zt_contracts::SidecarStatus`), readiness | `status/board.rs` |
//! | `/metrics` (written with `zt_contracts::PrometheusText`) | `status/metrics.rs` |
//! | the files' shapes (`DbCredentials`, `KvFile`), `Sensitive`, `ConfigSource` | `zt-contracts` |
//! | admin listener (`/healthz`, `/readyz`, `/rotate`) | `admin` |
//! | wiring and shutdown | `run` |
//! | accept loops, retry delays, timestamps | `serve`, `backoff`, `clock` |
//!
//! Only what other crates use is public: the configuration types (the
//! injector renders them), `run`, `serve`, the `fuzzing` entry points, and
//! the pieces the integration tests in `tests/` drive directly.
#![forbid(unsafe_code)]
#![warn(unreachable_pub)]

mod admin;
mod backoff;
mod clock;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
mod identity;
pub mod mtls;
pub mod openbao;
pub mod proxy;
pub mod run;
mod secrets;
pub mod serve;
pub mod status;
