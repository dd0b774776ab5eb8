//! # devstack
//!
//! Boots the **real** SPIRE, OpenBao and PostgreSQL on one machine, on
//! loopback, configured from `policies/` — the harness every integration test
//! uses and the engine of `make up`.
//!
//! ```text
//!   Devstack::start(Options)
//!     ├─ PostgreSQL      initdb (once) → postgres → policies/postgres/roles.sql
//!     ├─ SPIRE server    sqlite, join_token, jwt_issuer = OIDC provider URL
//!     │   ├─ OIDC discovery provider  → JWKS on http://127.0.0.1:<port>/keys
//!     │   └─ SPIRE agent              unix attestor (unix:path selectors)
//!     └─ OpenBao         raft storage, Shamir seal (1 share), file audit
//!          └─ setup::OpenBaoSetup::apply(policies/openbao)   jwt auth, KV v2,
//!             (zt-bootstrap, as the Kubernetes Job)  database engine, policies
//! ```
//!
//! Every process runs in its own process group and dies with the stack
//! (`Drop`), or with the parent process if that is killed (`PR_SET_PDEATHSIG`).
//! A missing binary is an error naming `make tools`; nothing is ever skipped.
//! Tests wait on the servers with [`eventually`] / [`eventually_async`], whose
//! patience `ZT_TEST_PATIENCE` stretches on slow machines.
#![deny(unsafe_code)]

pub mod eventually;
#[cfg(feature = "kube")]
pub mod kube;
pub mod openbao;
pub mod platform;
pub mod postgres;
pub mod process;
/// Configuring OpenBao from `policies/openbao/`: zt-bootstrap's, the same code
/// the Kubernetes bootstrap Job runs.
pub use zt_bootstrap::setup;
pub mod sidecar;
pub mod spire;
mod stack;
pub mod tools;

pub use eventually::{eventually, eventually_async};
pub use stack::{free_port, secret_in, Devstack, Options, Ports};
