//! A small OpenBao HTTP client: exactly the calls the sidecar makes.
//!
//! Errors carry the HTTP status and OpenBao's own error strings, never a
//! token or a request body.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::secret::Sensitive;

/// Why an OpenBao call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BaoError {
    /// No HTTP response: connection refused, DNS, timeout.
    #[error("OpenBao unreachable: {0}")]
    Unreachable(String),
    /// OpenBao answered with an error status.
    #[error("OpenBao said {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// OpenBao's `errors`, joined.
        message: String,
    },
    /// The response was not what the API promises.
    #[error("unexpected OpenBao response: {0}")]
    BadResponse(String),
}

impl BaoError {
    /// The token or lease is no longer valid (re-login or re-fetch, do not retry as is).
    pub fn is_invalid_credential(&self) -> bool {
        match self {
            BaoError::Status { status: 403, .. } => true,
            BaoError::Status {
                status: 400,
                message,
            } => {
                let m = message.to_ascii_lowercase();
                m.contains("invalid lease")
                    || m.contains("lease not found")
                    || m.contains("lease expired")
                    || m.contains("invalid token")
                    || m.contains("permission denied")
            }
            _ => false,
        }
    }
}

/// Result of a login or token renewal.
#[derive(Debug, Clone)]
pub struct Auth {
    /// The client token.
    pub token: Sensitive,
    /// Granted TTL.
    pub ttl: Duration,
    /// Whether it can be renewed.
    pub renewable: bool,
    /// Attached policies.
    pub policies: Vec<String>,
}

/// Database credentials with their lease.
#[derive(Debug, Clone)]
pub struct DbLease {
    /// Lease id (needed to renew and revoke).
    pub lease_id: String,
    /// Granted lease duration.
    pub ttl: Duration,
    /// Whether the lease can be renewed.
    pub renewable: bool,
    /// PostgreSQL user.
    pub username: String,
    /// Its password.
    pub password: Sensitive,
}

/// A KV v2 secret version.
#[derive(Debug, Clone)]
pub struct KvVersion {
    /// KV version number.
    pub version: u64,
    /// When this version was written (RFC 3339, as OpenBao says).
    pub created_time: String,
    /// The data, serialized JSON (secret).
    pub data_json: Sensitive,
}

/// The client.
#[derive(Debug, Clone)]
pub struct OpenBao {
    http: reqwest::Client,
    base: String,
}

#[derive(Deserialize)]
struct AuthResp {
    auth: Option<AuthBody>,
}
#[derive(Deserialize)]
struct AuthBody {
    client_token: Sensitive,
    lease_duration: u64,
    renewable: bool,
    #[serde(default)]
    policies: Vec<String>,
}

impl OpenBao {
    /// A client for `base` (`http(s)://host:port`) with a per-request timeout.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, BaoError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_idle_timeout(Duration::from_secs(30))
            // Never follow a redirect: it would carry X-Vault-Token (and a
            // JWT-SVID in a login body) to wherever it points. A 3xx is an
            // error status like any other.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BaoError::Unreachable(e.to_string()))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// The base address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The underlying HTTP client (the proxy forwards through it).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&Sensitive>,
        body: Option<Value>,
    ) -> Result<Option<Value>, BaoError> {
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.base));
        if let Some(t) = token {
            req = req.header("X-Vault-Token", t.expose());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| BaoError::Unreachable(without_url(&e)))?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| BaoError::Unreachable(without_url(&e)))?;
        if status == 204 {
            return Ok(None);
        }
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|_| BaoError::BadResponse(format!("status {status}, body is not JSON")))?
        };
        if !(200..300).contains(&status) {
            let message = value["errors"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| "(no message)".into());
            return Err(BaoError::Status { status, message });
        }
        Ok(Some(value))
    }

    fn auth_from(v: Option<Value>) -> Result<Auth, BaoError> {
        let v = v.ok_or_else(|| BaoError::BadResponse("empty auth response".into()))?;
        let r: AuthResp =
            serde_json::from_value(v).map_err(|_| BaoError::BadResponse("no auth block".into()))?;
        let a = r
            .auth
            .ok_or_else(|| BaoError::BadResponse("no auth block".into()))?;
        Ok(Auth {
            token: a.client_token,
            ttl: Duration::from_secs(a.lease_duration),
            renewable: a.renewable,
            policies: a.policies,
        })
    }

    /// `auth/<mount>/login` with a JWT-SVID.
    pub async fn login_jwt(
        &self,
        mount: &str,
        role: &str,
        jwt: &Sensitive,
    ) -> Result<Auth, BaoError> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("auth/{mount}/login"),
                None,
                Some(json!({ "role": role, "jwt": jwt.expose() })),
            )
            .await?;
        Self::auth_from(v)
    }

    /// `auth/token/renew-self`.
    pub async fn renew_self(
        &self,
        token: &Sensitive,
        increment: Duration,
    ) -> Result<Auth, BaoError> {
        let v = self
            .call(
                reqwest::Method::POST,
                "auth/token/renew-self",
                Some(token),
                Some(json!({ "increment": increment.as_secs() })),
            )
            .await?;
        Self::auth_from(v)
    }

    /// `auth/token/revoke-self` (also revokes the token's leases).
    pub async fn revoke_self(&self, token: &Sensitive) -> Result<(), BaoError> {
        self.call(
            reqwest::Method::POST,
            "auth/token/revoke-self",
            Some(token),
            None,
        )
        .await
        .map(|_| ())
    }

    /// `<mount>/creds/<role>`: new database credentials.
    pub async fn db_creds(
        &self,
        token: &Sensitive,
        mount: &str,
        role: &str,
    ) -> Result<DbLease, BaoError> {
        let v = self
            .call(
                reqwest::Method::GET,
                &format!("{mount}/creds/{role}"),
                Some(token),
                None,
            )
            .await?
            .ok_or_else(|| BaoError::BadResponse("empty creds response".into()))?;
        let field = |k: &str| {
            v["data"][k]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| BaoError::BadResponse(format!("creds without data.{k}")))
        };
        Ok(DbLease {
            lease_id: v["lease_id"]
                .as_str()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| BaoError::BadResponse("creds without lease_id".into()))?
                .to_string(),
            ttl: Duration::from_secs(v["lease_duration"].as_u64().unwrap_or(0)),
            renewable: v["renewable"].as_bool().unwrap_or(false),
            username: field("username")?,
            password: Sensitive::new(field("password")?),
        })
    }

    /// `sys/leases/renew/<lease_id>`; returns the granted duration.
    pub async fn renew_lease(
        &self,
        token: &Sensitive,
        lease_id: &str,
        increment: Duration,
    ) -> Result<Duration, BaoError> {
        let v = self
            .call(
                reqwest::Method::PUT,
                &format!("sys/leases/renew/{lease_id}"),
                Some(token),
                Some(json!({ "increment": increment.as_secs() })),
            )
            .await?
            .ok_or_else(|| BaoError::BadResponse("empty renew response".into()))?;
        v["lease_duration"]
            .as_u64()
            .map(Duration::from_secs)
            .ok_or_else(|| BaoError::BadResponse("renew without lease_duration".into()))
    }

    /// `sys/leases/revoke/<lease_id>`.
    pub async fn revoke_lease(&self, token: &Sensitive, lease_id: &str) -> Result<(), BaoError> {
        self.call(
            reqwest::Method::PUT,
            &format!("sys/leases/revoke/{lease_id}"),
            Some(token),
            Some(json!({})),
        )
        .await
        .map(|_| ())
    }

    /// `<mount>/data/<path>` (KV v2); `None` when absent.
    pub async fn kv_read(
        &self,
        token: &Sensitive,
        mount: &str,
        path: &str,
    ) -> Result<Option<KvVersion>, BaoError> {
        let v = match self
            .call(
                reqwest::Method::GET,
                &format!("{mount}/data/{path}"),
                Some(token),
                None,
            )
            .await
        {
            Err(BaoError::Status { status: 404, .. }) => return Ok(None),
            other => other?,
        };
        let Some(v) = v else { return Ok(None) };
        let data = &v["data"]["data"];
        if !data.is_object() {
            return Err(BaoError::BadResponse("KV read without data.data".into()));
        }
        Ok(Some(KvVersion {
            version: v["data"]["metadata"]["version"].as_u64().unwrap_or(0),
            created_time: v["data"]["metadata"]["created_time"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            data_json: Sensitive::new(data.to_string()),
        }))
    }
}

/// reqwest errors print the URL; ours never carry secrets in URLs, but keep
/// messages short and stable.
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg = format!("{msg}: {s}");
        src = s.source();
    }
    msg
}
