//! The zt-sidecar's admin endpoint (docs/contracts.md, contract 3): its
//! `/status` document for `GET /api/zt/status`. It holds no secret values.

use std::time::Duration;

use zt_contracts::SidecarStatus;

use crate::body::{read_capped, BodyError};

/// How long `/status` may take.
pub const STATUS_TIMEOUT: Duration = Duration::from_secs(3);
/// Largest `/status` body accepted.
const MAX_BODY: usize = 1024 * 1024;

/// Client of the sidecar's admin endpoint.
#[derive(Debug, Clone)]
pub struct SidecarAdmin {
    http: reqwest::Client,
    base: String,
}

impl SidecarAdmin {
    /// A client for `base` (e.g. `http://127.0.0.1:15000`).
    pub fn new(base: &str) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(STATUS_TIMEOUT)
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// `GET /status`, read through its contract; the error says why not.
    pub async fn status(&self) -> Result<SidecarStatus, String> {
        let resp = self
            .http
            .get(format!("{}/status", self.base))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("/status answered {}", resp.status()));
        }
        let body = read_capped(resp, MAX_BODY).await.map_err(|e| match e {
            BodyError::TooLarge => "/status body too large".to_string(),
            BodyError::Transport(e) => e.to_string(),
        })?;
        // A JSON value that is not an object fails here too ("expected struct").
        serde_json::from_slice(&body).map_err(|e| format!("/status is not a sidecar status: {e}"))
    }
}
