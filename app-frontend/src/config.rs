//! Configuration: environment variables, each a documented constant next to
//! its default, read through [`ConfigSource`] so tests pass a map instead of
//! mutating the process environment.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Url;

/// Address the web server listens on.
pub const LISTEN_ENV: &str = "FRONTEND_LISTEN";
/// Default of [`LISTEN_ENV`]: loopback, port 3000.
pub const LISTEN_DEFAULT: &str = "127.0.0.1:3000";

/// Base URL of the backend API. In the platform this is the frontend
/// sidecar's outbound mTLS listener (plain HTTP on loopback).
pub const BACKEND_URL_ENV: &str = "BACKEND_URL";
/// Default of [`BACKEND_URL_ENV`].
pub const BACKEND_URL_DEFAULT: &str = "http://127.0.0.1:15001";

/// Base URL of the frontend's own zt-sidecar admin endpoint (its `/status`
/// names the frontend's SPIFFE ID on the zero-trust page).
pub const SIDECAR_ADMIN_URL_ENV: &str = "FRONTEND_SIDECAR_ADMIN_URL";
/// Default of [`SIDECAR_ADMIN_URL_ENV`].
pub const SIDECAR_ADMIN_URL_DEFAULT: &str = "http://127.0.0.1:15100";

/// Whether cookies carry the `Secure` attribute: `auto` (when the request
/// arrived over TLS, as seen directly or through `Forwarded` /
/// `X-Forwarded-Proto`), `true` or `false`.
pub const COOKIE_SECURE_ENV: &str = "FRONTEND_COOKIE_SECURE";
/// Default of [`COOKIE_SECURE_ENV`].
pub const COOKIE_SECURE_DEFAULT: &str = "auto";

/// Time limit of one backend call (humantime: `10s`, `500ms`).
pub const BACKEND_TIMEOUT_ENV: &str = "FRONTEND_BACKEND_TIMEOUT";
/// Default of [`BACKEND_TIMEOUT_ENV`].
pub const BACKEND_TIMEOUT_DEFAULT: &str = "10s";

/// Time a client gets to send a whole request body, counted from the end
/// of its head (humantime); a form still incomplete then gets a 408 page
/// and the connection closes.
pub const BODY_TIMEOUT_ENV: &str = "FRONTEND_BODY_TIMEOUT";
/// Default of [`BODY_TIMEOUT_ENV`]: ample for a form of at most
/// [`MAX_FORM_BYTES`](crate::MAX_FORM_BYTES) on any link a page loads over.
pub const BODY_TIMEOUT_DEFAULT: &str = "15s";

/// Key that signs CSRF tokens: 64 hex characters (32 bytes). Optional; by
/// default each process draws a random key, which is right for one
/// instance (a restart only expires open forms). Set it when several
/// instances serve the same users.
pub const CSRF_KEY_ENV: &str = "FRONTEND_CSRF_KEY";

/// Longest accepted backend or body timeout; more would hold browser
/// requests open for longer than any proxy in front of us waits.
const MAX_TIMEOUT: Duration = Duration::from_secs(120);

/// Where configuration values come from (one definition for the workspace).
pub use zt_contracts::{ConfigSource, ProcessEnv};

/// When cookies get the `Secure` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieSecure {
    /// When the request arrived over TLS.
    Auto,
    /// Always.
    Always,
    /// Never (plain-HTTP demos on loopback).
    Never,
}

/// The 32-byte key signing CSRF tokens. Its `Debug` never shows the bytes.
#[derive(Clone)]
pub struct CsrfKey([u8; 32]);

impl CsrfKey {
    /// A fresh random key.
    pub fn random() -> Self {
        let mut k = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut k);
        Self(k)
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The key bytes.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for CsrfKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CsrfKey(<redacted>)")
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// [`LISTEN_ENV`].
    pub listen: SocketAddr,
    /// [`BACKEND_URL_ENV`], without a trailing slash.
    pub backend_url: Url,
    /// [`SIDECAR_ADMIN_URL_ENV`], without a trailing slash.
    pub sidecar_admin_url: Url,
    /// [`COOKIE_SECURE_ENV`].
    pub cookie_secure: CookieSecure,
    /// [`BACKEND_TIMEOUT_ENV`].
    pub backend_timeout: Duration,
    /// [`BODY_TIMEOUT_ENV`].
    pub body_timeout: Duration,
    /// [`CSRF_KEY_ENV`] or a random key.
    pub csrf_key: CsrfKey,
}

/// A configuration value that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The environment variable.
    pub key: &'static str,
    /// What is wrong, for humans (never contains a secret value).
    pub problem: String,
}

fn bad(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        problem: problem.into(),
    }
}

/// Shows a user-supplied (non-secret) value in an error, shortened and with
/// control characters escaped.
fn shown(value: &str) -> String {
    let short: String = value.chars().take(80).collect();
    let mut s = format!("{short:?}");
    if value.chars().count() > 80 {
        s.push('…');
    }
    s
}

impl FrontendConfig {
    /// Reads and validates every key; the first bad one is the error.
    pub fn from_source(src: &impl ConfigSource) -> Result<Self, ConfigError> {
        let get = |key: &'static str, default: &str| -> String {
            src.get(key).unwrap_or_else(|| default.to_string())
        };

        let raw = get(LISTEN_ENV, LISTEN_DEFAULT);
        let listen: SocketAddr = raw.trim().parse().map_err(|_| {
            bad(
                LISTEN_ENV,
                format!(
                    "not an IP address with a port (like {LISTEN_DEFAULT}): {}",
                    shown(&raw)
                ),
            )
        })?;

        let backend_url = base_url(BACKEND_URL_ENV, &get(BACKEND_URL_ENV, BACKEND_URL_DEFAULT))?;
        let sidecar_admin_url = base_url(
            SIDECAR_ADMIN_URL_ENV,
            &get(SIDECAR_ADMIN_URL_ENV, SIDECAR_ADMIN_URL_DEFAULT),
        )?;

        let raw = get(COOKIE_SECURE_ENV, COOKIE_SECURE_DEFAULT);
        let cookie_secure = match raw.trim().to_ascii_lowercase().as_str() {
            "auto" => CookieSecure::Auto,
            "true" | "1" | "yes" => CookieSecure::Always,
            "false" | "0" | "no" => CookieSecure::Never,
            _ => {
                return Err(bad(
                    COOKIE_SECURE_ENV,
                    format!("expected auto, true or false, got {}", shown(&raw)),
                ))
            }
        };

        let backend_timeout = timeout(
            BACKEND_TIMEOUT_ENV,
            &get(BACKEND_TIMEOUT_ENV, BACKEND_TIMEOUT_DEFAULT),
        )?;
        let body_timeout = timeout(
            BODY_TIMEOUT_ENV,
            &get(BODY_TIMEOUT_ENV, BODY_TIMEOUT_DEFAULT),
        )?;

        // The key is a secret: the error says what is wrong, never what was given.
        let csrf_key = match src.get(CSRF_KEY_ENV) {
            None => CsrfKey::random(),
            Some(raw) => {
                let bytes = hex::decode(raw.trim()).map_err(|_| {
                    bad(
                        CSRF_KEY_ENV,
                        "must be 64 hexadecimal characters (32 bytes); the value is not hexadecimal",
                    )
                })?;
                let arr: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
                    bad(
                        CSRF_KEY_ENV,
                        format!(
                            "must be 64 hexadecimal characters (32 bytes), got {} bytes",
                            b.len()
                        ),
                    )
                })?;
                CsrfKey::from_bytes(arr)
            }
        };

        Ok(Self {
            listen,
            backend_url,
            sidecar_admin_url,
            cookie_secure,
            backend_timeout,
            body_timeout,
            csrf_key,
        })
    }

    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_source(&ProcessEnv)
    }
}

/// A humantime duration above 0 and at most [`MAX_TIMEOUT`].
fn timeout(key: &'static str, raw: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(raw.trim()).map_err(|_| {
        bad(
            key,
            format!("not a duration (like 10s or 500ms): {}", shown(raw)),
        )
    })?;
    if d.is_zero() || d > MAX_TIMEOUT {
        return Err(bad(
            key,
            format!("must be above 0 and at most 120s, got {}", shown(raw)),
        ));
    }
    Ok(d)
}

/// An `http`/`https` base URL without credentials, query or fragment.
fn base_url(key: &'static str, raw: &str) -> Result<Url, ConfigError> {
    let url =
        Url::parse(raw.trim()).map_err(|e| bad(key, format!("not a URL ({e}): {}", shown(raw))))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(
            key,
            format!("must be an http:// or https:// URL, got {}", shown(raw)),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad(key, format!("has no host: {}", shown(raw))));
    }
    // A password in a URL would end up in logs; do not echo the value.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad(key, "must not contain a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad(
            key,
            format!("must not have a query or fragment: {}", shown(raw)),
        ));
    }
    let mut url = url;
    let trimmed = url.path().trim_end_matches('/').to_string();
    url.set_path(&trimmed);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&'static str, &'static str)]) -> Result<FrontendConfig, ConfigError> {
        let map: HashMap<&str, &str> = pairs.iter().copied().collect();
        FrontendConfig::from_source(&map)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        assert_eq!(c.backend_url.as_str(), "http://127.0.0.1:15001/");
        assert_eq!(c.sidecar_admin_url.as_str(), "http://127.0.0.1:15100/");
        assert_eq!(c.cookie_secure, CookieSecure::Auto);
        assert_eq!(c.backend_timeout, Duration::from_secs(10));
        assert_eq!(c.body_timeout, Duration::from_secs(15));
    }

    #[test]
    fn values_are_read_and_trailing_slashes_dropped() {
        let c = cfg(&[
            (LISTEN_ENV, "0.0.0.0:8080"),
            (BACKEND_URL_ENV, "https://backend.example/api-root/"),
            (COOKIE_SECURE_ENV, "TRUE"),
            (BACKEND_TIMEOUT_ENV, "750ms"),
            (BODY_TIMEOUT_ENV, " 2m "),
            (
                CSRF_KEY_ENV,
                "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
            ),
        ])
        .unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert_eq!(c.backend_url.path(), "/api-root");
        assert_eq!(c.cookie_secure, CookieSecure::Always);
        assert_eq!(c.backend_timeout, Duration::from_millis(750));
        assert_eq!(c.body_timeout, Duration::from_secs(120));
        assert_eq!(c.csrf_key.bytes()[1], 0x11);
    }

    #[test]
    fn each_bad_value_names_its_key() {
        let cases: &[(&str, &str, &str)] = &[
            (LISTEN_ENV, "localhost", "not an IP address"),
            (LISTEN_ENV, "127.0.0.1:99999", "not an IP address"),
            (BACKEND_URL_ENV, "127.0.0.1:15001", "not a URL"),
            (BACKEND_URL_ENV, "ftp://x", "http:// or https://"),
            (BACKEND_URL_ENV, "http://x/?a=b", "query or fragment"),
            (SIDECAR_ADMIN_URL_ENV, "", "not a URL"),
            (COOKIE_SECURE_ENV, "sometimes", "auto, true or false"),
            (BACKEND_TIMEOUT_ENV, "soon", "not a duration"),
            (BACKEND_TIMEOUT_ENV, "0s", "above 0"),
            (BACKEND_TIMEOUT_ENV, "1h", "at most 120s"),
            (BODY_TIMEOUT_ENV, "", "not a duration"),
            (BODY_TIMEOUT_ENV, "-5s", "not a duration"),
            (BODY_TIMEOUT_ENV, "0ms", "above 0"),
            (BODY_TIMEOUT_ENV, "121s", "at most 120s"),
            (CSRF_KEY_ENV, "abcd", "got 2 bytes"),
        ];
        for (key, value, expect) in cases {
            let map: HashMap<&str, &str> = [(*key, *value)].into_iter().collect();
            let err = FrontendConfig::from_source(&map).unwrap_err();
            assert_eq!(err.key, *key, "{value:?}");
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("{key}: ")), "{msg}");
            assert!(msg.contains(expect), "{key}={value:?}: {msg}");
        }
    }

    #[test]
    fn secret_values_never_appear_in_errors() {
        let secret = "zz-this-is-the-secret-key-material-zz";
        let err = cfg(&[(CSRF_KEY_ENV, secret)]).unwrap_err();
        assert!(!err.to_string().contains(secret), "{err}");
        let err = cfg(&[(BACKEND_URL_ENV, "http://user:hunter2@backend:1")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let key = cfg(&[(CSRF_KEY_ENV, "ab".repeat(32).leak())])
            .unwrap()
            .csrf_key;
        assert!(!format!("{key:?}").contains("abab"));
    }

    #[test]
    fn oversize_and_control_characters_are_shortened_and_escaped() {
        let long: &'static str = "x".repeat(10_000).leak();
        let err = cfg(&[(LISTEN_ENV, long)]).unwrap_err().to_string();
        assert!(err.len() < 300, "{}", err.len());
        let err = cfg(&[(COOKIE_SECURE_ENV, "a\nb\x1b[31m")])
            .unwrap_err()
            .to_string();
        assert!(!err.contains('\n') && !err.contains('\x1b'), "{err}");
    }
}
