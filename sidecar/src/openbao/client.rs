//! The sidecar's OpenBao client: exactly the calls the sidecar makes.
//!
//! Login and the token's own renew/revoke go through `vaultrs`, and so does
//! the KV v2 read; the database credentials and the lease calls are thin calls
//! of our own because vaultrs 0.8 drops the lease of the former and has no
//! `sys/leases` endpoints (sidecar/README.md, "OpenBao calls"). Both kinds
//! run on one reqwest client that we build: it never follows a redirect and
//! trusts what the sidecar's other client trusts.
//!
//! Errors carry the HTTP status and OpenBao's own error strings, never a
//! token, a request body or a response body.

use std::sync::Arc;
use std::time::Duration;

use reqwest13 as reqwest;
use serde_json::{json, Value};
use tracing::instrument::WithSubscriber;
use vaultrs::api::kv2::requests::ReadSecretRequest;
use vaultrs::api::{AuthInfo, EndpointMiddleware};
use vaultrs::client::{VaultClientSettings, VaultClientSettingsBuilder};
use vaultrs::error::ClientError as VaultError;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use zt_contracts::{KvData, Sensitive};

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
    /// A lease id that is not a plain lease path (refused before any call:
    /// `..` or an encoded character would send the request, with our token,
    /// to another OpenBao path).
    #[error("not a lease id: {0:?}")]
    NotALeaseId(String),
}

/// Whether `id` is a plain lease path, as OpenBao hands them out
/// (`database/creds/<role>/<id>`): `/`-separated segments of ASCII letters,
/// digits, `.`, `_` and `-`, none empty, `.` or `..`.
pub(crate) fn is_lease_id(id: &str) -> bool {
    id.len() <= 1024
        && id.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        })
}

fn lease_path(op: &str, lease_id: &str) -> Result<String, BaoError> {
    if is_lease_id(lease_id) {
        Ok(format!("sys/leases/{op}/{lease_id}"))
    } else {
        Err(BaoError::NotALeaseId(lease_id.chars().take(200).collect()))
    }
}

impl BaoError {
    /// The token or lease is no longer valid (re-login or re-fetch, do not retry as is).
    pub fn is_invalid_credential(&self) -> bool {
        match self {
            BaoError::Status { status: 403, .. } | BaoError::NotALeaseId(_) => true,
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

/// A KV v2 secret version. `Debug` shows the data's keys, never its values.
#[derive(Debug, Clone)]
pub struct KvVersion {
    /// KV version number.
    pub version: u64,
    /// When this version was written (OpenBao's metadata); `None` when
    /// OpenBao's is absent or not RFC 3339.
    pub created_time: Option<OffsetDateTime>,
    /// The data (secret).
    pub data: KvData,
}

/// The client.
#[derive(Debug, Clone)]
pub struct OpenBao {
    http: reqwest::Client,
    base: String,
    vaultrs: Arc<VaultrsParts>,
}

/// What vaultrs's functions need besides the token: rustify's wrapper of
/// our `http` client, and settings that vaultrs never reads (the trait
/// wants them).
struct VaultrsParts {
    rest: rustify::clients::reqwest::Client,
    settings: VaultClientSettings,
}

impl std::fmt::Debug for VaultrsParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultrsParts")
            .field("base", &self.rest.base)
            .finish_non_exhaustive()
    }
}

/// vaultrs's view of one call: the shared client and this call's token (or
/// none). A new one per call, so a retired token and the current one never
/// share state.
struct VaultrsCall<'a> {
    parts: &'a VaultrsParts,
    middle: EndpointMiddleware,
}

impl vaultrs::client::Client for VaultrsCall<'_> {
    fn http(&self) -> &rustify::clients::reqwest::Client {
        &self.parts.rest
    }

    fn middle(&self) -> &EndpointMiddleware {
        &self.middle
    }

    fn settings(&self) -> &VaultClientSettings {
        &self.parts.settings
    }

    fn set_token(&mut self, token: &str) {
        self.middle.token = token.to_string();
    }
}

impl OpenBao {
    /// A client for `base` (`http(s)://host:port`) with a per-request timeout.
    pub fn new(base: &str, timeout: Duration) -> Result<Self, BaoError> {
        let base = base.trim_end_matches('/').to_string();
        let address = reqwest::Url::parse(&base)
            .map_err(|e| BaoError::Unreachable(format!("invalid OpenBao address: {e}")))?;
        let http = token_carrying_client(timeout)?;
        // Every field set, so the builder reads no VAULT_* variable (vaultrs
        // reads these settings only in `VaultClient::new`, which we do not call).
        let settings = VaultClientSettingsBuilder::default()
            .address(address.as_str())
            .token("")
            .ca_certs(Vec::new())
            .identity(None)
            .verify(true)
            .timeout(Some(timeout))
            .version(1)
            .wrapping(false)
            .namespace(None)
            .build()
            .map_err(|e| BaoError::Unreachable(format!("invalid OpenBao address: {e}")))?;
        let vaultrs = Arc::new(VaultrsParts {
            rest: rustify::clients::reqwest::Client::new(address.as_str(), http.clone()),
            settings,
        });
        Ok(Self {
            http,
            base,
            vaultrs,
        })
    }

    /// The base address.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// A vaultrs client sending `token` (`None`: no token header).
    fn vaultrs(&self, token: Option<&Sensitive>) -> Result<VaultrsCall<'_>, BaoError> {
        let token = match token {
            // vaultrs's middleware unwraps the header value; check it first
            // so a malformed token is an error, not a panic.
            Some(t) => {
                http::HeaderValue::from_str(t.expose()).map_err(|_| {
                    BaoError::Unreachable("request failed: token is not a valid header".into())
                })?;
                t.expose().to_string()
            }
            None => String::new(),
        };
        Ok(VaultrsCall {
            parts: &self.vaultrs,
            middle: EndpointMiddleware {
                token,
                version: "v1".into(),
                wrap: None,
                namespace: None,
            },
        })
    }

    /// One of our own thin calls (see the module doc for which and why).
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
            let message = errors_of(&value);
            return Err(BaoError::Status { status, message });
        }
        Ok(Some(value))
    }

    fn auth_from(a: AuthInfo) -> Auth {
        Auth {
            token: Sensitive::new(a.client_token),
            ttl: Duration::from_secs(a.lease_duration),
            renewable: a.renewable,
            policies: a.policies,
        }
    }

    /// `auth/<mount>/login` with a JWT-SVID.
    pub async fn login_jwt(
        &self,
        mount: &str,
        role: &str,
        jwt: &Sensitive,
    ) -> Result<Auth, BaoError> {
        let client = self.vaultrs(None)?;
        quiet(vaultrs::auth::oidc::login(
            &client,
            mount,
            jwt.expose(),
            Some(role.to_string()),
        ))
        .await
        .map(Self::auth_from)
        .map_err(|e| from_vaultrs(e, "no auth block"))
    }

    /// `auth/token/renew-self`.
    pub async fn renew_self(
        &self,
        token: &Sensitive,
        increment: Duration,
    ) -> Result<Auth, BaoError> {
        let client = self.vaultrs(Some(token))?;
        let increment = format!("{}s", increment.as_secs());
        quiet(vaultrs::token::renew_self(&client, Some(&increment)))
            .await
            .map(Self::auth_from)
            .map_err(|e| from_vaultrs(e, "no auth block"))
    }

    /// `auth/token/revoke-self` (also revokes the token's leases).
    pub async fn revoke_self(&self, token: &Sensitive) -> Result<(), BaoError> {
        let client = self.vaultrs(Some(token))?;
        quiet(vaultrs::token::revoke_self(&client))
            .await
            .map_err(|e| from_vaultrs(e, "unexpected revoke response"))
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
                .filter(|s| is_lease_id(s))
                .ok_or_else(|| BaoError::BadResponse("creds without a lease_id".into()))?
                .to_string(),
            ttl: v["lease_duration"]
                .as_u64()
                .map(Duration::from_secs)
                .ok_or_else(|| BaoError::BadResponse("creds without lease_duration".into()))?,
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
                &lease_path("renew", lease_id)?,
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
            &lease_path("revoke", lease_id)?,
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
        let client = self.vaultrs(Some(token))?;
        // `vaultrs::kv2::read` returns only `data`; the file also needs the
        // version and its time, so run vaultrs's request for the whole answer.
        let request = ReadSecretRequest::builder()
            .mount(mount)
            .path(path)
            .build()
            .map_err(|_| BaoError::BadResponse("cannot build the KV read".into()))?;
        let secret = match quiet(vaultrs::api::exec_with_result(&client, request)).await {
            Ok(s) => s,
            Err(e) => {
                return match from_vaultrs(e, "KV read without data.data") {
                    BaoError::Status { status: 404, .. } => Ok(None),
                    e => Err(e),
                }
            }
        };
        let Value::Object(data) = secret.data else {
            return Err(BaoError::BadResponse("KV read without data.data".into()));
        };
        Ok(Some(KvVersion {
            version: secret.metadata.version,
            created_time: OffsetDateTime::parse(&secret.metadata.created_time, &Rfc3339).ok(),
            data: KvData::new(data),
        }))
    }
}

/// Runs a vaultrs call without its own log events: vaultrs and rustify log
/// every failure at ERROR (and OpenBao's warnings) on top of the one line
/// our callers write, which says what failed.
async fn quiet<F: std::future::Future>(call: F) -> F::Output {
    call.with_subscriber(tracing::subscriber::NoSubscriber::default())
        .await
}

/// The TLS the sidecar's other client (reqwest 0.12 with `rustls-tls`)
/// uses: ring, TLS 1.2 and 1.3, the webpki (Mozilla) roots, HTTP/1.1.
fn tls_config() -> Result<rustls::ClientConfig, BaoError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| BaoError::Unreachable(format!("TLS setup: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// The one way the sidecar builds an HTTP client that carries an OpenBao
/// token or a JWT-SVID (this client and the proxy): it never follows a
/// redirect — one would carry `X-Vault-Token`, or the JWT-SVID in a login
/// body, to wherever it points; a 3xx is a status like any other — it ignores
/// `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` (OpenBao is often plain `http://`
/// inside a cluster, and a proxy set for the pod would see every token), and
/// it trusts what [`tls_config`] trusts.
pub(crate) fn token_carrying_client(timeout: Duration) -> Result<reqwest::Client, BaoError> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .pool_idle_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .tls_backend_preconfigured(tls_config()?)
        .build()
        .map_err(|e| BaoError::Unreachable(e.to_string()))
}

/// Our error from vaultrs's. vaultrs's own errors can hold a whole response
/// body (rustify's `ServerResponseError`, `ResponseParseError`), which for a
/// login or creds answer holds a token or a password: only the status and
/// OpenBao's `errors` strings are kept. `shape` says what a 2xx answer that
/// does not parse lacked.
fn from_vaultrs(e: VaultError, shape: &str) -> BaoError {
    use rustify::errors::ClientError as Rest;
    match e {
        VaultError::APIError { code, errors } => BaoError::Status {
            status: code,
            message: joined(errors.iter().map(String::as_str)),
        },
        VaultError::RestClientError { source } => match source {
            Rest::ServerResponseError { code, content } => {
                let content = content.unwrap_or_default();
                if content.is_empty() {
                    return BaoError::Status {
                        status: code,
                        message: joined(std::iter::empty()),
                    };
                }
                match serde_json::from_str::<Value>(&content) {
                    Ok(v) => BaoError::Status {
                        status: code,
                        message: errors_of(&v),
                    },
                    Err(_) => BaoError::BadResponse(format!("status {code}, body is not JSON")),
                }
            }
            Rest::RequestError { source, .. } | Rest::ResponseError { source } => {
                match source.downcast_ref::<reqwest::Error>() {
                    Some(e) => BaoError::Unreachable(without_url(e)),
                    None => BaoError::Unreachable("request failed".into()),
                }
            }
            Rest::ResponseParseError { .. } | Rest::ResponseConversionError { .. } => {
                BaoError::BadResponse(shape.into())
            }
            _ => BaoError::Unreachable("request failed: cannot build the request".into()),
        },
        VaultError::ResponseEmptyError
        | VaultError::ResponseDataEmptyError
        | VaultError::JsonParseError { .. } => BaoError::BadResponse(shape.into()),
        _ => BaoError::BadResponse("unexpected client error".into()),
    }
}

/// OpenBao's `errors`, joined.
fn errors_of(v: &Value) -> String {
    joined(
        v["errors"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str),
    )
}

fn joined<'a>(errors: impl Iterator<Item = &'a str>) -> String {
    let m = errors.collect::<Vec<_>>().join("; ");
    if m.is_empty() {
        "(no message)".into()
    } else {
        m
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_lease_paths_are_lease_ids() {
        for ok in [
            "database/creds/backend-role/6Kq4XbT1sQ2a",
            "db.v2/creds/report_reader/AbC-123.x",
        ] {
            assert!(is_lease_id(ok), "{ok}");
        }
        for bad in [
            "",
            "database/creds/backend-role/../../../../../auth/token/revoke-self",
            "database/creds/backend-role/%2e%2e/%2e%2e/sys/seal",
            "database/creds/backend-role/./x",
            "database//creds",
            "/database/creds/r/x",
            "database/creds/r/x?y=1",
            "database/creds/r/x#y",
            "database/creds/r/x y",
            "database/creds/r/é",
        ] {
            assert!(!is_lease_id(bad), "{bad}");
            let err = lease_path("revoke", bad).unwrap_err();
            assert!(matches!(err, BaoError::NotALeaseId(_)), "{bad}: {err}");
            assert!(
                err.is_invalid_credential(),
                "{bad}: a bad id is replaced, not retried"
            );
        }
        assert!(!is_lease_id(&"a".repeat(1025)));
    }
}
