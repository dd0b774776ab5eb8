//! Secrets written to files: database leases, KV v2 secrets.
mod database;
mod files;
mod kv;
mod shared;

pub(crate) use database::{revoke_leftovers, LeaseRotator, Leftovers};
pub(crate) use files::{remove, write_atomic, FilePolicy};
pub(crate) use kv::KvRenderer;
pub(crate) use shared::SecretsEnv;
