//! Secrets written to files: database leases, KV v2 secrets.
mod database;
mod files;
mod kv;
mod shared;

pub use database::*;
pub use files::*;
pub use kv::*;
pub use shared::*;
