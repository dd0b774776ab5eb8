//! Secrets written to files: database leases (`database.rs`, decided by the
//! pure functions of `lease_schedule.rs`), KV v2 secrets (`kv.rs`), the
//! atomic writes (`files.rs`) and what they share (`shared.rs`).
mod database;
mod files;
mod kv;
mod lease_schedule;
pub(crate) mod release;
mod shared;

pub(crate) use database::{revoke_leftovers, LeaseRotator, Leftovers};
pub(crate) use files::{remove, write_atomic, FilePolicy};
pub(crate) use kv::KvRenderer;
pub(crate) use shared::SecretsEnv;
