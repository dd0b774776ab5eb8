//! The sidecar's secret files (contract 1): parsing and watching.
//!
//! The backend never talks to OpenBao for these: the zt-sidecar renders them
//! atomically into a tmpfs folder; [`watch::watch_dir`] re-reads on inotify
//! events and every poll interval, and acts only on a new version.

pub mod files;
pub mod watch;

pub use files::{
    DbCredentials, DbCredentialsFile, FileError, Sensitive, SigningKeyFile, DB_FILE, MIGRATOR_FILE,
    MIGRATOR_RELEASED_FILE, MIGRATOR_SECRET, SIGNING_KEY_FILE,
};
