//! The backend API's JSON shapes (docs/contracts.md, section 5) and the
//! sidecar's `/status` (contract 3), as far as the pages use them.
//!
//! Status documents are read leniently (every field optional): a sidecar
//! that lacks a section shows "—" on the page rather than an error.

use serde::{Deserialize, Serialize};

/// `User`.
#[derive(Debug, Clone, Deserialize)]
pub struct User {
    /// Database id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// E-mail, when given at registration.
    #[serde(default)]
    pub email: Option<String>,
    /// RFC 3339 creation time.
    #[serde(default)]
    pub created_at: Option<String>,
}

/// `POST /api/auth/login` success.
#[derive(Debug, Clone, Deserialize)]
pub struct LoginResponse {
    /// The session JWT.
    pub access_token: String,
    /// Seconds the token lives.
    #[serde(default)]
    pub expires_in: Option<i64>,
    /// Who logged in.
    pub user: User,
}

/// `POST /api/auth/login` body.
#[derive(Serialize)]
pub(crate) struct LoginRequest<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

/// `POST /api/auth/register` body.
#[derive(Serialize)]
pub(crate) struct RegisterRequest<'a> {
    pub username: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    pub password: &'a str,
}

/// `POST /api/github/configure` body.
#[derive(Serialize)]
pub(crate) struct ConfigureRequest<'a> {
    pub token: &'a str,
}

/// `GET /api/github/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct GithubStatus {
    /// Whether the user has a token stored.
    pub configured: bool,
    /// When it was stored.
    #[serde(default)]
    pub configured_at: Option<String>,
    /// When it was last used.
    #[serde(default)]
    pub last_accessed: Option<String>,
}

/// `GithubUser`.
#[derive(Debug, Clone, Deserialize)]
pub struct GithubUser {
    /// GitHub login.
    pub login: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Avatar image URL.
    #[serde(default)]
    pub avatar_url: Option<String>,
    /// Profile page URL.
    #[serde(default)]
    pub html_url: Option<String>,
    /// Public repositories.
    #[serde(default)]
    pub public_repos: Option<i64>,
    /// Followers.
    #[serde(default)]
    pub followers: Option<i64>,
    /// Following.
    #[serde(default)]
    pub following: Option<i64>,
    /// Bio.
    #[serde(default)]
    pub bio: Option<String>,
    /// Company.
    #[serde(default)]
    pub company: Option<String>,
    /// Location.
    #[serde(default)]
    pub location: Option<String>,
}

/// `POST /api/github/configure` success.
#[derive(Debug, Clone, Deserialize)]
pub struct ConfigureResponse {
    /// Always true on success.
    #[serde(default)]
    pub configured: bool,
    /// The GitHub account the token belongs to.
    #[serde(default)]
    pub github_user: Option<GithubUser>,
}

/// `Repo`.
#[derive(Debug, Clone, Deserialize)]
pub struct Repo {
    /// Short name.
    pub name: String,
    /// `owner/name`.
    #[serde(default)]
    pub full_name: Option<String>,
    /// Private repository.
    #[serde(default)]
    pub private: bool,
    /// Web page.
    #[serde(default)]
    pub html_url: Option<String>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Main language.
    #[serde(default)]
    pub language: Option<String>,
    /// Stars.
    #[serde(default)]
    pub stargazers_count: i64,
    /// RFC 3339 last update.
    #[serde(default)]
    pub updated_at: Option<String>,
}

/// `GET /api/github/repos`.
#[derive(Debug, Clone, Deserialize)]
pub struct RepoPage {
    /// This page's repositories, newest update first.
    pub repos: Vec<Repo>,
    /// Page number (1-based).
    #[serde(default)]
    pub page: Option<u32>,
    /// Page size.
    #[serde(default)]
    pub per_page: Option<u32>,
    /// Whether a next page exists.
    #[serde(default)]
    pub has_next: bool,
}

/// `GET /api/zt/status`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ZtStatus {
    /// The backend sidecar's `/status`.
    #[serde(default)]
    pub sidecar: Option<SidecarStatus>,
    /// What the backend sees of its database connection.
    #[serde(default)]
    pub database: Option<DatabaseStatus>,
    /// Backend internals.
    #[serde(default)]
    pub backend: Option<BackendInternals>,
}

/// `database` of [`ZtStatus`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DatabaseStatus {
    /// `current_user` of the backend's pool.
    #[serde(default)]
    pub current_user: Option<String>,
    /// PostgreSQL version.
    #[serde(default)]
    pub server_version: Option<String>,
}

/// `backend` of [`ZtStatus`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct BackendInternals {
    /// KV version of the JWT signing key in use.
    #[serde(default)]
    pub jwt_key_version: Option<i64>,
}

/// A sidecar's `/status` (contract 3).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SidecarStatus {
    /// The workload's SPIFFE ID.
    #[serde(default)]
    pub spiffe_id: Option<String>,
    /// Readiness.
    #[serde(default)]
    pub ready: Option<bool>,
    /// Current X.509-SVID.
    #[serde(default)]
    pub svid: Option<SvidStatus>,
    /// OpenBao token.
    #[serde(default)]
    pub token: Option<TokenStatus>,
    /// Rendered secrets.
    #[serde(default)]
    pub secrets: Vec<SecretStatus>,
    /// OpenBao API proxy.
    #[serde(default)]
    pub proxy: Option<ProxyStatus>,
    /// mTLS listeners.
    #[serde(default)]
    pub mtls: Option<MtlsStatus>,
}

/// `svid` of [`SidecarStatus`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SvidStatus {
    /// RFC 3339 expiry.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Certificate serial.
    #[serde(default)]
    pub serial: Option<String>,
    /// SVID rotations so far.
    #[serde(default)]
    pub rotations: Option<i64>,
}

/// `token` of [`SidecarStatus`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct TokenStatus {
    /// RFC 3339 expiry.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Seconds left.
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    /// OpenBao policies attached.
    #[serde(default)]
    pub policies: Vec<String>,
    /// Renewals so far.
    #[serde(default)]
    pub renewals: Option<i64>,
    /// Logins so far.
    #[serde(default)]
    pub logins: Option<i64>,
}

/// One entry of `secrets`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SecretStatus {
    /// File stem.
    #[serde(default)]
    pub name: String,
    /// `database` or `kv`.
    #[serde(default)]
    pub kind: Option<String>,
    /// Database role.
    #[serde(default)]
    pub role: Option<String>,
    /// KV path.
    #[serde(default)]
    pub path: Option<String>,
    /// Database user name of the current lease.
    #[serde(default)]
    pub username: Option<String>,
    /// RFC 3339 lease expiry.
    #[serde(default)]
    pub expires_at: Option<String>,
    /// File version.
    #[serde(default)]
    pub version: Option<i64>,
    /// Rotations so far.
    #[serde(default)]
    pub rotations: Option<i64>,
    /// Renewals so far.
    #[serde(default)]
    pub renewals: Option<i64>,
    /// On disk and unexpired.
    #[serde(default)]
    pub ready: Option<bool>,
}

/// `proxy` of [`SidecarStatus`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProxyStatus {
    /// Allow-list.
    #[serde(default)]
    pub allow: Vec<AllowRule>,
}

/// One proxy allow rule.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AllowRule {
    /// Path pattern.
    #[serde(default)]
    pub path: String,
    /// Methods.
    #[serde(default)]
    pub methods: Vec<String>,
}

/// `mtls` of [`SidecarStatus`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MtlsStatus {
    /// Inbound listeners.
    #[serde(default)]
    pub inbound: Vec<InboundStatus>,
    /// Outbound listeners.
    #[serde(default)]
    pub outbound: Vec<OutboundStatus>,
}

/// An inbound mTLS listener.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct InboundStatus {
    /// Listen address.
    #[serde(default)]
    pub listen: Option<String>,
    /// Where requests go.
    #[serde(default)]
    pub forward_to: Option<String>,
    /// SPIFFE IDs allowed to connect.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Accepted connections.
    #[serde(default)]
    pub accepted: Option<i64>,
    /// Refused peers.
    #[serde(default)]
    pub refused: Option<i64>,
    /// Requests forwarded.
    #[serde(default)]
    pub requests: Option<i64>,
}

/// An outbound mTLS listener.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct OutboundStatus {
    /// Listen address.
    #[serde(default)]
    pub listen: Option<String>,
    /// Upstream address.
    #[serde(default)]
    pub upstream: Option<String>,
    /// The SPIFFE ID the upstream must present.
    #[serde(default)]
    pub server_id: Option<String>,
    /// Connections so far (contract name).
    #[serde(default)]
    pub connections: Option<i64>,
    /// Connections accepted from the app (the sidecar's counter name).
    #[serde(default)]
    pub accepted: Option<i64>,
    /// Requests forwarded.
    #[serde(default)]
    pub requests: Option<i64>,
}

/// The API's error body: `{"error": {"code", "message"}}`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

/// Inside [`ErrorBody`].
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ErrorDetail {
    #[serde(default)]
    pub code: String,
    #[serde(default)]
    pub message: String,
}
