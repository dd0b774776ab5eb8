//! Request and response bodies of the API (docs/contracts.md, contract 5),
//! and the parsing of input into validated values.

use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::PrimitiveDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::db::queries::UserRow;
use crate::errors::AppError;
use crate::secrets::Sensitive;
use zt_contracts::SidecarStatus;

/// Username length bounds and alphabet (`[a-z0-9_.-]`).
pub const USERNAME_MIN: usize = 3;
/// See [`USERNAME_MIN`].
pub const USERNAME_MAX: usize = 50;
/// Shortest password (the seed's rule).
pub const PASSWORD_MIN: usize = 6;
/// Longest password (argon2 does not need more; bounds the work per request).
pub const PASSWORD_MAX: usize = 1024;
/// Longest email (`users.email VARCHAR(100)`).
pub const EMAIL_MAX: usize = 100;
/// Longest GitHub token accepted (GitHub's are under 100 characters).
pub const GITHUB_TOKEN_MAX: usize = 255;

// The OpenAPI document states each input rule as a JSON Schema pattern, and
// validation below implements exactly that rule (issue 16: schemathesis
// found schema-valid requests the server refused, e.g. an empty username).
// `tests` checks each pattern against the validation on many strings.

/// [`RegisterRequest::username`] in the OpenAPI document.
pub const USERNAME_PATTERN: &str = "^[a-z0-9_.-]{3,50}$";
/// [`RegisterRequest::email`] in the OpenAPI document: printable ASCII
/// without `@` or spaces, `@`, then two or more dot-separated labels of
/// ASCII letters, digits and `-`; at most [`EMAIL_MAX`] characters.
pub const EMAIL_PATTERN: &str = "^[!-?A-~]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+$";
/// [`ConfigureRequest::token`] in the OpenAPI document.
pub const GITHUB_TOKEN_PATTERN: &str = "^[!-~]{1,255}$";

/// Formats a `TIMESTAMP` (UTC) as RFC 3339.
pub fn timestamp(t: PrimitiveDateTime) -> String {
    t.assume_utc().format(&Rfc3339).unwrap_or_default()
}

/// A user.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct User {
    /// Numeric id.
    pub id: i32,
    /// Username.
    pub username: String,
    /// Email, if given.
    pub email: Option<String>,
    /// RFC 3339, UTC.
    pub created_at: Option<String>,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id,
            username: r.username,
            email: r.email,
            created_at: r.created_at.map(timestamp),
        }
    }
}

/// `POST /api/auth/register`
#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterRequest {
    /// 3–50 characters of `a-z 0-9 _ . -`.
    #[schema(pattern = "^[a-z0-9_.-]{3,50}$", min_length = 3, max_length = 50)]
    pub username: String,
    /// Optional (absent or `null`); if given, an address such as
    /// `amy@99.precinct` of at most 100 characters, ASCII only. Stored lower-case.
    #[serde(default)]
    #[schema(
        pattern = "^[!-?A-~]+@[A-Za-z0-9-]+(\\.[A-Za-z0-9-]+)+$",
        max_length = 100
    )]
    pub email: Option<String>,
    /// 6–1024 characters.
    #[schema(value_type = String, format = Password, min_length = 6, max_length = 1024)]
    pub password: Sensitive,
}

/// A registration that passed validation.
#[derive(Debug)]
pub struct NewUser {
    /// Valid username.
    pub username: String,
    /// Valid, lower-cased email.
    pub email: Option<String>,
    /// The password (not yet hashed).
    pub password: Sensitive,
}

/// Whether `u` is a username registration accepts: [`USERNAME_MIN`] to
/// [`USERNAME_MAX`] characters of `a-z`, `0-9`, `_`, `.`, `-`.
pub fn is_valid_username(u: &str) -> bool {
    (USERNAME_MIN..=USERNAME_MAX).contains(&u.chars().count())
        && u.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
}

impl RegisterRequest {
    /// Parses into a [`NewUser`] or a 422 naming the field.
    pub fn validate(self) -> Result<NewUser, AppError> {
        let username = self.username;
        if !is_valid_username(&username) {
            return Err(AppError::Validation(format!(
                "username: must be {USERNAME_MIN}–{USERNAME_MAX} characters of a-z, 0-9, '_', '.', '-'"
            )));
        }
        let email = match self.email.as_deref() {
            None => None,
            Some(e) => Some(parse_email(e)?),
        };
        let p = self.password.expose().chars().count();
        if p < PASSWORD_MIN {
            return Err(AppError::Validation(format!(
                "password: must be at least {PASSWORD_MIN} characters"
            )));
        }
        if p > PASSWORD_MAX {
            return Err(AppError::Validation(format!(
                "password: must be at most {PASSWORD_MAX} characters"
            )));
        }
        Ok(NewUser {
            username,
            email,
            password: self.password,
        })
    }
}

/// [`EMAIL_PATTERN`], lower-cased.
fn parse_email(e: &str) -> Result<String, AppError> {
    let bad = || {
        AppError::Validation(format!(
            "email: must look like name@example.org (ASCII) and be at most {EMAIL_MAX} characters"
        ))
    };
    if e.len() > EMAIL_MAX {
        return Err(bad());
    }
    let (local, domain) = e.split_once('@').ok_or_else(bad)?;
    let local_ok = !local.is_empty() && local.bytes().all(|b| b.is_ascii_graphic() && b != b'@');
    let label_ok =
        |l: &str| !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let labels: Vec<&str> = domain.split('.').collect();
    if !local_ok || labels.len() < 2 || !labels.iter().all(|l| label_ok(l)) {
        return Err(bad());
    }
    Ok(e.to_ascii_lowercase())
}

/// `POST /api/auth/login`
#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    /// Username.
    pub username: String,
    /// Password.
    #[schema(value_type = String, format = Password)]
    pub password: Sensitive,
}

/// `201` of `POST /api/auth/register`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterResponse {
    /// The new user.
    pub user: User,
}

/// `200` of `POST /api/auth/login`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginResponse {
    /// HS256 JWT; send as `Authorization: Bearer <token>`.
    pub access_token: String,
    /// Always `bearer`.
    pub token_type: String,
    /// Seconds until the token expires (3600).
    pub expires_in: i64,
    /// Who logged in.
    pub user: User,
}

/// `POST /api/github/configure`
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfigureRequest {
    /// A GitHub personal access token: 1–255 printable ASCII characters, no
    /// spaces. Checked against GitHub, stored in OpenBao, never returned,
    /// logged or written to PostgreSQL.
    #[schema(value_type = String, format = Password, pattern = "^[!-~]{1,255}$", min_length = 1, max_length = 255)]
    pub token: Sensitive,
}

impl ConfigureRequest {
    /// The token, if it is one ([`GITHUB_TOKEN_PATTERN`]: 1–255 printable
    /// ASCII characters, no spaces — the frontend trims what was pasted).
    pub fn validate(self) -> Result<Sensitive, AppError> {
        let t = self.token.expose();
        if t.is_empty() || t.len() > GITHUB_TOKEN_MAX || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(AppError::Validation(format!(
                "token: must be 1–{GITHUB_TOKEN_MAX} printable characters without spaces"
            )));
        }
        Ok(self.token)
    }
}

/// A GitHub profile (nullable strings as GitHub returns them).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct GithubUser {
    /// Login.
    pub login: String,
    /// Display name.
    pub name: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
    /// Profile URL.
    pub html_url: Option<String>,
    /// Public repositories.
    #[serde(default)]
    pub public_repos: u64,
    /// Followers.
    #[serde(default)]
    pub followers: u64,
    /// Following.
    #[serde(default)]
    pub following: u64,
    /// Bio.
    pub bio: Option<String>,
    /// Company.
    pub company: Option<String>,
    /// Location.
    pub location: Option<String>,
}

/// `200` of `POST /api/github/configure`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ConfigureResponse {
    /// Always `true`.
    pub configured: bool,
    /// Whose token it is.
    pub github_user: GithubUser,
}

/// `GET /api/github/status`
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct GithubStatus {
    /// Whether a token is stored.
    pub configured: bool,
    /// When it was stored (RFC 3339).
    pub configured_at: Option<String>,
    /// When it was last used (RFC 3339).
    pub last_accessed: Option<String>,
}

/// A repository.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq, Eq)]
pub struct Repo {
    /// Short name.
    pub name: String,
    /// `owner/name`.
    pub full_name: String,
    /// Private?
    #[serde(default)]
    pub private: bool,
    /// Web URL.
    pub html_url: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Main language.
    pub language: Option<String>,
    /// Stars.
    #[serde(default)]
    pub stargazers_count: u64,
    /// Last update, RFC 3339.
    pub updated_at: Option<String>,
}

/// `GET /api/github/repos`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReposResponse {
    /// This page, newest update first.
    pub repos: Vec<Repo>,
    /// Page number (from 1).
    pub page: u32,
    /// Page size.
    pub per_page: u32,
    /// Whether GitHub has a next page.
    pub has_next: bool,
}

/// Query of `GET /api/github/repos`. (Without `parameter_in = Query` the
/// document said both were required *path* parameters.)
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReposQuery {
    /// Page, from 1 (default 1, at most 1000).
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    pub page: Option<u32>,
    /// Page size, 1–100 (default 30).
    #[param(minimum = 1, maximum = 100, nullable = false)]
    pub per_page: Option<u32>,
}

impl ReposQuery {
    /// `(page, per_page)` with defaults, or a 400.
    pub fn validate(&self) -> Result<(u32, u32), AppError> {
        let page = self.page.unwrap_or(1);
        let per_page = self.per_page.unwrap_or(30);
        if !(1..=1000).contains(&page) {
            return Err(AppError::InvalidQuery(
                "page must be between 1 and 1000".into(),
            ));
        }
        if !(1..=100).contains(&per_page) {
            return Err(AppError::InvalidQuery(
                "per_page must be between 1 and 100".into(),
            ));
        }
        Ok((page, per_page))
    }
}

/// `database` part of `GET /api/zt/status`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DatabaseInfo {
    /// The PostgreSQL user the backend's pool uses, as PostgreSQL reports it.
    pub current_user: String,
    /// PostgreSQL's `server_version`.
    pub server_version: String,
}

/// `backend` part of `GET /api/zt/status`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BackendInfo {
    /// KV version of the JWT signing key in use.
    pub jwt_key_version: Option<u64>,
    /// Version of the database credentials file the pool was built from.
    pub db_credentials_version: Option<u64>,
    /// Pool swaps since start (one per rotation).
    pub db_pool_swaps: u64,
}

/// `GET /api/zt/status`
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ZtStatus {
    /// The sidecar's `/status` document (docs/contracts.md, contract 3).
    #[schema(value_type = Object)]
    pub sidecar: SidecarStatus,
    /// What PostgreSQL says about the backend's session.
    pub database: DatabaseInfo,
    /// The backend's own view.
    pub backend: BackendInfo,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(username: &str, email: Option<&str>, password: &str) -> RegisterRequest {
        RegisterRequest {
            username: username.into(),
            email: email.map(String::from),
            password: Sensitive::new(password),
        }
    }

    #[test]
    fn usernames_follow_the_issue_rules() {
        for ok in [
            "abc",
            "jake",
            "hitchcock_scully",
            "a.b-c_9",
            &"x".repeat(50),
        ] {
            assert!(reg(ok, None, "secret").validate().is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            &"x".repeat(51),
            "Jake",
            "jake peralta",
            "jake'; DROP TABLE users; --",
            "jäke",
            "<script>",
            "",
            "a\u{0}b",
        ] {
            let e = reg(bad, None, "secret").validate().unwrap_err();
            assert!(e.to_string().contains("username"), "{bad}: {e}");
        }
    }

    #[test]
    fn emails_are_optional_checked_and_lowercased() {
        assert_eq!(reg("abc", None, "secret").validate().unwrap().email, None);
        // Given means given: the frontend leaves an empty field out.
        for blank in ["", "  "] {
            assert!(reg("abc", Some(blank), "secret").validate().is_err());
        }
        assert_eq!(
            reg("abc", Some("Amy.Santiago@99.Precinct"), "secret")
                .validate()
                .unwrap()
                .email
                .as_deref(),
            Some("amy.santiago@99.precinct")
        );
        for bad in [
            "nope",
            "@99.precinct",
            "a@b",
            "a@.b.c",
            "a@b..c",
            "a b@c.d",
            "a@b.c'; DROP TABLE users;--",
            &format!("{}@x.org", "a".repeat(95)),
            " amy@99.precinct",
            "amy@99.precinct\n",
            "jäke@99.precinct",
            "jake@bü.de",
            "a@b@c.de",
        ] {
            let e = reg("abc", Some(bad), "secret").validate().unwrap_err();
            assert!(e.to_string().contains("email"), "{bad}: {e}");
        }
    }

    #[test]
    fn passwords_need_six_characters_and_no_more_than_1024() {
        assert!(reg("abc", None, "12345")
            .validate()
            .unwrap_err()
            .to_string()
            .contains("password"));
        assert!(reg("abc", None, "123456").validate().is_ok());
        assert!(
            reg("abc", None, "ääääää").validate().is_ok(),
            "characters, not bytes"
        );
        assert!(reg("abc", None, &"p".repeat(1025)).validate().is_err());
    }

    #[test]
    fn github_tokens_are_printable_and_bounded() {
        let v = |t: &str| {
            ConfigureRequest {
                token: Sensitive::new(t),
            }
            .validate()
        };
        assert_eq!(v("ghp_abc").unwrap().expose(), "ghp_abc");
        for bad in [
            "",
            "   ",
            " ghp_abc ",
            "ghp abc",
            "ghp\r\nX-Evil: 1",
            &"x".repeat(256),
            "tök",
        ] {
            assert!(v(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn repo_paging_has_bounds() {
        let q = |p, pp| {
            ReposQuery {
                page: p,
                per_page: pp,
            }
            .validate()
        };
        assert_eq!(q(None, None).unwrap(), (1, 30));
        assert_eq!(q(Some(2), Some(100)).unwrap(), (2, 100));
        assert!(q(Some(0), None).is_err());
        assert!(q(None, Some(0)).is_err());
        assert!(q(None, Some(101)).is_err());
        assert!(q(Some(1001), None).is_err());
    }

    /// Regression (issue 16, schemathesis): the document said `username` is
    /// any string, so an empty one was schema-valid yet refused. Each
    /// documented pattern now accepts exactly what validation accepts.
    mod document_and_validation_agree {
        use super::*;
        use proptest::prelude::*;

        fn matches(pattern: &str, s: &str, max_chars: usize) -> bool {
            regex::Regex::new(pattern).unwrap().is_match(s) && s.chars().count() <= max_chars
        }

        /// Half strings the pattern generates (so both answers are common),
        /// half strings near the rule: its alphabet, some outsiders, any length.
        fn near(pattern: &str, alphabet: &'static str) -> impl Strategy<Value = String> {
            let inner = &pattern[1..pattern.len() - 1];
            prop_oneof![
                proptest::string::string_regex(inner).unwrap(),
                prop::collection::vec(
                    prop_oneof![
                        8 => prop::sample::select(alphabet.chars().collect::<Vec<_>>()),
                        1 => any::<char>(),
                    ],
                    0..110,
                )
                .prop_map(|v| v.into_iter().collect()),
            ]
        }

        proptest! {
            #[test]
            fn username(u in near(USERNAME_PATTERN, "abcxyz0189_.-A @ä\n")) {
                let ok = reg(&u, None, "secret").validate().is_ok();
                prop_assert_eq!(ok, matches(USERNAME_PATTERN, &u, USERNAME_MAX), "{:?}", u);
            }

            #[test]
            fn email(e in near(EMAIL_PATTERN, "ab.z09-@+'(;@.AZ.-\n ä")) {
                let ok = reg("abc", Some(&e), "secret").validate().is_ok();
                prop_assert_eq!(ok, matches(EMAIL_PATTERN, &e, EMAIL_MAX), "{:?}", e);
            }

            #[test]
            fn github_token(t in near(GITHUB_TOKEN_PATTERN, "ghp_AZaz09!~ \t\u{7f}ö")) {
                let ok = ConfigureRequest { token: Sensitive::new(t.clone()) }.validate().is_ok();
                prop_assert_eq!(ok, matches(GITHUB_TOKEN_PATTERN, &t, GITHUB_TOKEN_MAX), "{:?}", t);
            }

            #[test]
            fn password(p in near("^.{6,1030}$", "aä€x")) {
                let n = p.chars().count();
                let ok = reg("abc", None, &p).validate().is_ok();
                prop_assert_eq!(ok, (PASSWORD_MIN..=PASSWORD_MAX).contains(&n));
            }
        }

        #[test]
        fn the_document_carries_these_patterns() {
            use utoipa::OpenApi as _;
            let doc = serde_json::to_value(crate::handlers::openapi::ApiDoc::openapi()).unwrap();
            let schemas = &doc["components"]["schemas"];
            let reg = &schemas["RegisterRequest"]["properties"];
            assert_eq!(reg["username"]["pattern"], USERNAME_PATTERN);
            assert_eq!(reg["username"]["minLength"], USERNAME_MIN);
            assert_eq!(reg["username"]["maxLength"], USERNAME_MAX);
            assert_eq!(reg["email"]["pattern"], EMAIL_PATTERN);
            assert_eq!(reg["email"]["maxLength"], EMAIL_MAX);
            assert_eq!(reg["password"]["minLength"], PASSWORD_MIN);
            assert_eq!(reg["password"]["maxLength"], PASSWORD_MAX);
            let token = &schemas["ConfigureRequest"]["properties"]["token"];
            assert_eq!(token["pattern"], GITHUB_TOKEN_PATTERN);
            assert_eq!(token["maxLength"], GITHUB_TOKEN_MAX);
            // Regression: `page` and `per_page` were documented as required path parameters.
            let params = &doc["paths"]["/api/github/repos"]["get"]["parameters"];
            for (i, (name, max)) in [("page", 1000), ("per_page", 100)].into_iter().enumerate() {
                let p = &params[i];
                assert_eq!(p["name"], name);
                assert_eq!(p["in"], "query", "{p}");
                assert_ne!(p["required"], true, "{p}");
                assert_eq!(p["schema"]["type"], "integer", "{p}");
                assert_eq!(
                    (&p["schema"]["minimum"], &p["schema"]["maximum"]),
                    (&1.into(), &max.into())
                );
            }
        }
    }
}
