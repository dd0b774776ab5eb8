//! Talking to OpenBao's HTTP API for the bootstrap: its seal state,
//! `sys/init` with one Shamir key share, unseal, and [`Bao`], the small
//! synchronous client [`crate::setup`] configures it through.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What `sys/init` returned. devstack keeps it at mode 0600 in its state
/// folder and the Kubernetes Job in a Secret: FOR DEMOS ONLY. A real
/// deployment never stores unseal keys next to the server.
#[derive(Clone, Serialize, Deserialize)]
pub struct InitKeys {
    /// The single Shamir unseal key share (base64).
    pub unseal_key: String,
    /// The initial root token.
    pub root_token: String,
}

impl std::fmt::Debug for InitKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitKeys")
            .field("unseal_key", &"<redacted>")
            .field("root_token", &"<redacted>")
            .finish()
    }
}

/// Submits the unseal key share; fails unless OpenBao reports itself unsealed.
pub fn unseal(addr: &str, key: &str) -> anyhow::Result<()> {
    let status: Value = post(addr, None, "sys/unseal", &json!({ "key": key }))?;
    if status["sealed"] != json!(false) {
        bail!(
            "OpenBao is still sealed after unseal (progress {})",
            status["progress"]
        );
    }
    Ok(())
}

/// The one way this crate talks to OpenBao. It follows no redirect (a 3xx is
/// an error: following it would carry the root token in `X-Vault-Token`, or an
/// unseal key, to wherever it points) and ignores `HTTP_PROXY`/`ALL_PROXY`
/// (the keys and the root token go to `addr` only). `status_as_error`:
/// whether a 4xx/5xx answer is an error or a response to read.
fn agent(status_as_error: bool) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(status_as_error)
        .max_redirects(0)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

/// `Ok` once OpenBao is initialised, unsealed and the active node.
pub fn active(addr: &str) -> Result<(), String> {
    let health: Value = agent(false)
        .get(&format!("{addr}/v1/sys/health"))
        .call()
        .map_err(|e| e.to_string())?
        .body_mut()
        .read_json()
        .map_err(|e| e.to_string())?;
    if health["initialized"] == json!(true)
        && health["sealed"] == json!(false)
        && health["standby"] == json!(false)
    {
        Ok(())
    } else {
        Err(format!("not active yet: {health}"))
    }
}

/// What `sys/seal-status` says of an OpenBao server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealState {
    /// Never initialised: no keys exist yet.
    Uninitialised,
    /// Initialised and sealed: needs its unseal key.
    Sealed,
    /// Initialised and unsealed.
    Unsealed,
}

impl std::fmt::Display for SealState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Uninitialised => "uninitialised",
            Self::Sealed => "sealed",
            Self::Unsealed => "unsealed",
        })
    }
}

/// The state of OpenBao at `addr` (an error if it does not answer).
pub fn state(addr: &str) -> anyhow::Result<SealState> {
    let body: Value = agent(true)
        .get(&format!("{addr}/v1/sys/seal-status"))
        .call()
        .with_context(|| format!("GET {addr}/v1/sys/seal-status"))?
        .body_mut()
        .read_json()?;
    Ok(match (&body["initialized"], &body["sealed"]) {
        (Value::Bool(false), _) => SealState::Uninitialised,
        (Value::Bool(true), Value::Bool(true)) => SealState::Sealed,
        (Value::Bool(true), Value::Bool(false)) => SealState::Unsealed,
        _ => bail!("unexpected answer from {addr}/v1/sys/seal-status: {body}"),
    })
}

/// Whether OpenBao at `addr` has been initialised.
pub fn is_initialised(addr: &str) -> anyhow::Result<bool> {
    let body: Value = agent(true)
        .get(&format!("{addr}/v1/sys/init"))
        .call()
        .context("GET sys/init")?
        .body_mut()
        .read_json()?;
    Ok(body["initialized"] == json!(true))
}

/// Initialises OpenBao with one Shamir key share (local demos and the
/// Kubernetes bootstrap Job, which stores the result in a Secret).
pub fn initialise(addr: &str) -> anyhow::Result<InitKeys> {
    let init: Value = post(
        addr,
        None,
        "sys/init",
        &json!({"secret_shares": 1, "secret_threshold": 1}),
    )?;
    Ok(InitKeys {
        unseal_key: init["keys_base64"][0]
            .as_str()
            .context("sys/init returned no key")?
            .to_string(),
        root_token: init["root_token"]
            .as_str()
            .context("sys/init returned no root token")?
            .to_string(),
    })
}

/// Writes a file readable by its owner only (created with mode 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// A small synchronous OpenBao HTTP client for bootstrap and tests.
/// Errors carry the status and OpenBao's error strings, never the token.
#[derive(Clone)]
pub struct Bao {
    addr: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Bao {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bao")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Bao {
    /// A client for `addr` (e.g. `http://127.0.0.1:8200`) with an optional token.
    pub fn new(addr: &str, token: Option<String>) -> Self {
        let agent = agent(false);
        Self {
            addr: addr.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    /// The same server with another token.
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    /// `GET /v1/<path>`; `Ok(None)` on 404.
    pub fn read(&self, path: &str) -> anyhow::Result<Option<Value>> {
        let mut req = self.agent.get(&format!("{}/v1/{path}", self.addr));
        if let Some(t) = &self.token {
            req = req.header("X-Vault-Token", t);
        }
        let mut resp = req.call().with_context(|| format!("GET {path}"))?;
        let status = resp.status().as_u16();
        let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(Some(body)),
            404 => Ok(None),
            _ => bail!("GET {path}: {status} {}", errors(&body)),
        }
    }

    /// `POST /v1/<path>` with a JSON body; returns the JSON response (Null on 204).
    pub fn write(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        post(&self.addr, self.token.as_deref(), path, body)
    }

    /// `DELETE /v1/<path>`.
    pub fn delete(&self, path: &str) -> anyhow::Result<()> {
        let mut req = self.agent.delete(&format!("{}/v1/{path}", self.addr));
        if let Some(t) = &self.token {
            req = req.header("X-Vault-Token", t);
        }
        let mut resp = req.call().with_context(|| format!("DELETE {path}"))?;
        let status = resp.status().as_u16();
        if !(200..=299).contains(&status) {
            let body: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
            bail!("DELETE {path}: {status} {}", errors(&body));
        }
        Ok(())
    }
}

fn post<T: serde::de::DeserializeOwned + Default>(
    addr: &str,
    token: Option<&str>,
    path: &str,
    body: &Value,
) -> anyhow::Result<T> {
    let mut req = agent(false).post(&format!("{addr}/v1/{path}"));
    if let Some(t) = token {
        req = req.header("X-Vault-Token", t);
    }
    let mut resp = req
        .send_json(body)
        .with_context(|| format!("POST {path}"))?;
    let status = resp.status().as_u16();
    if status == 204 {
        return Ok(T::default());
    }
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    if !(200..=299).contains(&status) {
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        bail!("POST {path}: {status} {}", errors(&v));
    }
    if text.trim().is_empty() {
        return Ok(T::default());
    }
    serde_json::from_str(&text).with_context(|| format!("POST {path}: unexpected response body"))
}

fn errors(body: &Value) -> String {
    match body["errors"].as_array() {
        Some(errs) => errs
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("; "),
        None => "(no error message)".into(),
    }
}
