//! OpenBao: the HTTP client (`client.rs`) and the token keeper
//! (`token.rs`), whose decisions are the pure functions of
//! `token_schedule.rs`.
mod client;
mod token;
mod token_schedule;

pub(crate) use client::{is_lease_id, token_carrying_client};
pub use client::{Auth, BaoError, DbLease, KvVersion, OpenBao};
pub(crate) use token::{current_token, sleep_or_cancel, LeaseBook, TokenKeeper};
pub use token::{Token, TokenCheck, Tokens};
