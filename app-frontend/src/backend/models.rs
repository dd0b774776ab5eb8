//! The backend API's JSON shapes (docs/contracts.md, section 5), as far as
//! the pages use them, and the sidecar's `/status` (contract 3), whose one
//! definition is `zt_contracts::status`.
//!
//! Status documents are read leniently: an absent section reads as its
//! default (the page shows "—" rather than an error).

use serde::{Deserialize, Serialize};

pub use zt_contracts::status::{
    DatabaseSecretStatus, InboundStatus, MtlsStatus, OutboundStatus, ProxyRuleStatus, ProxyStatus,
    SecretStatus, SidecarStatus, SvidStatus, TokenStatus,
};

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
