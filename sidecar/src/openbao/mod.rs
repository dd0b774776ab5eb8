//! OpenBao: the HTTP client and the token keeper.
mod client;
mod token;

pub use client::{Auth, BaoError, DbLease, KvVersion, OpenBao};
pub(crate) use token::{current_token, sleep_or_cancel, LeaseBook, TokenKeeper};
pub use token::{Token, TokenCheck, Tokens};
