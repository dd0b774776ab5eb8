//! The zt-sidecar's admin endpoint (docs/contracts.md, contract 3): its
//! `/status` document for `GET /api/zt/status` (it holds no secret values),
//! and `POST /release/<name>` to give back credentials the backend is done
//! with.

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
                // Loopback: an HTTP(S)_PROXY from the environment must not
                // receive (and could fake answers to) these calls.
                .no_proxy()
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

    /// `POST /release/<name>`: the sidecar revokes the secret's lease,
    /// removes its file and issues it no more. Ok when released (now or
    /// before).
    pub async fn release(&self, name: &str) -> Result<(), ReleaseError> {
        let resp = self
            .http
            .post(format!("{}/release/{name}", self.base))
            .header("x-zt-admin", "1")
            .send()
            .await
            .map_err(|e| ReleaseError::Unreachable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = read_capped(resp, 4096).await.unwrap_or_default();
        let why = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default();
        let why = format!("/release/{name} answered {status}: {why}");
        Err(if status.is_server_error() {
            ReleaseError::NotYet(why)
        } else {
            ReleaseError::Refused(why)
        })
    }
}

/// Why a release did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// No answer (the sidecar may be restarting).
    #[error("the sidecar's admin endpoint did not answer: {0}")]
    Unreachable(String),
    /// The sidecar could not record it this time (its words); worth a retry.
    #[error("{0}")]
    NotYet(String),
    /// The sidecar answered, and will not release it (its words).
    #[error("{0}")]
    Refused(String),
}

impl ReleaseError {
    /// Whether asking again later may succeed.
    pub fn is_transient(&self) -> bool {
        !matches!(self, Self::Refused(_))
    }
}
