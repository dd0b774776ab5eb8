//! # zt-contracts
//!
//! The seams between the pieces of the platform, each defined once. A
//! *contract* is a document one program writes and another reads
//! (docs/contracts.md): its shape lives here as a typed value, so the writer
//! and every reader agree by construction, and `tests/golden.rs` parses the
//! examples in docs/contracts.md through these types so the doc cannot drift
//! from the code either.
//!
//! ```text
//!   zt-sidecar ──writes──▶ <name>.json (DbCredentials) ──read by──▶ app-backend
//!              ──writes──▶ <name>.json (KvFile)        ──read by──▶ app-backend
//!              ──serves──▶ GET /status (SidecarStatus) ──read by──▶ app-backend
//!                                                                   (passes it on in
//!                                                                   /api/zt/status) and
//!                                                                   app-frontend
//!   zt-sidecar, app-backend ──serve──▶ GET /metrics (PrometheusText) ──▶ Prometheus
//! ```
//!
//! | Contract | Module | Written by | Read by |
//! |---|---|---|---|
//! | database credentials file | [`db_credentials`] | zt-sidecar (and re-read for leftover leases) | app-backend |
//! | KV v2 secret file | [`kv_file`] | zt-sidecar | app-backend (JWT signing key) |
//! | sidecar `/status` | [`status`] | zt-sidecar | app-backend, app-frontend |
//! | Prometheus text | [`prometheus`] | zt-sidecar, app-backend | Prometheus |
//!
//! Two helpers every side shares travel with them: [`Sensitive`], a string
//! that never prints itself (passwords, keys, tokens), and [`ConfigSource`],
//! the small trait configuration is read through so tests pass a map
//! instead of mutating the process environment.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod config_source;
pub mod db_credentials;
pub mod kv_file;
pub mod prometheus;
pub mod sensitive;
pub mod status;
mod timestamp;

pub use config_source::{colours, ConfigSource, ProcessEnv};
pub use db_credentials::DbCredentials;
pub use kv_file::{KvData, KvFile, SigningKeyData};
pub use prometheus::{MetricType, PrometheusText};
pub use sensitive::Sensitive;
pub use status::SidecarStatus;
pub use timestamp::whole_seconds;
