//! OpenBao: the HTTP client and the token keeper.
mod client;
mod token;

pub use client::*;
pub use token::*;
