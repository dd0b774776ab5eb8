//! Talking to the backend API (contract 5) and to the frontend's own
//! sidecar admin endpoint (contract 3).

mod client;
pub mod models;

pub use client::{BackendClient, BackendError, MAX_RESPONSE_BYTES};
