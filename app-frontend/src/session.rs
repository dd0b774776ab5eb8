//! The browser session: the backend's JWT in an HttpOnly, SameSite=Strict
//! cookie, CSRF tokens for every form, and validation of `?next=`.
//!
//! CSRF uses a signed double-submit token: a random nonce lives in its own
//! HttpOnly cookie; forms carry `HMAC(key, nonce ‖ SHA-256(session))`. A
//! cross-site attacker can neither read the nonce nor compute the MAC, and a
//! token issued for one session is useless in another.

use std::future::{ready, Ready};

use actix_web::cookie::{time::Duration as CookieDuration, Cookie, SameSite};
use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::config::{CookieSecure, CsrfKey};
use crate::errors::AppError;
use crate::AppState;

/// Cookie holding the backend's JWT.
pub const SESSION_COOKIE: &str = "zt_session";
/// Cookie holding the CSRF nonce.
pub const CSRF_COOKIE: &str = "zt_csrf";
/// Form field carrying the CSRF token.
pub const CSRF_FIELD: &str = "csrf_token";
/// Longest session cookie accepted; a JWT of ours is a few hundred bytes.
pub const MAX_SESSION_TOKEN_LEN: usize = 4096;
/// Longest accepted `next` target.
pub const MAX_NEXT_LEN: usize = 512;
/// Session cookie lifetime when the backend does not say (`expires_in`).
pub const DEFAULT_SESSION_SECONDS: i64 = 3600;

type HmacSha256 = Hmac<Sha256>;

/// A request's session: the JWT from the cookie and the claims read from it
/// (unverified, for display only — the backend verifies it on every call).
#[derive(Debug, Clone)]
pub struct Session {
    token: String,
    /// `username` claim.
    pub username: String,
}

impl Session {
    /// The JWT, for the `Authorization` header of backend calls.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Reads the session cookie of `req`.
    pub fn read(req: &HttpRequest) -> SessionCookie {
        let Some(c) = req.cookie(SESSION_COOKIE) else {
            return SessionCookie::Absent;
        };
        let token = c.value();
        if token.is_empty() {
            return SessionCookie::Absent;
        }
        match parse_claims(token) {
            Some(claims) if claims.exp.is_none_or(|exp| exp > now_unix()) => {
                SessionCookie::Valid(Session {
                    token: token.to_string(),
                    username: claims.username,
                })
            }
            _ => SessionCookie::Unusable,
        }
    }
}

/// What a request's session cookie holds.
#[derive(Debug, Clone)]
pub enum SessionCookie {
    /// No (or an empty) session cookie.
    Absent,
    /// A session to try with the backend.
    Valid(Session),
    /// A cookie that cannot be one of ours (malformed, oversize) or whose
    /// `exp` has passed.
    Unusable,
}

impl SessionCookie {
    /// The session, if valid.
    pub fn valid(self) -> Option<Session> {
        match self {
            SessionCookie::Valid(s) => Some(s),
            _ => None,
        }
    }
}

/// Protected pages take a `Session`; without one the request is redirected
/// to `/login?next=<this page>` (with an "expired" message when a cookie was
/// there but is unusable).
impl FromRequest for Session {
    type Error = AppError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(match Session::read(req) {
            SessionCookie::Valid(s) => Ok(s),
            SessionCookie::Absent => Err(AppError::login_required(req, false)),
            SessionCookie::Unusable => Err(AppError::login_required(req, true)),
        })
    }
}

struct Claims {
    username: String,
    exp: Option<i64>,
}

/// Reads `username` and `exp` from a JWT's payload without verifying it.
fn parse_claims(token: &str) -> Option<Claims> {
    if token.len() > MAX_SESSION_TOKEN_LEN
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return None;
    }
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let username = v.get("username")?.as_str()?;
    if username.is_empty() || username.len() > 100 {
        return None;
    }
    Some(Claims {
        username: username.to_string(),
        exp: v.get("exp").and_then(serde_json::Value::as_i64),
    })
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Whether cookies set in answer to `req` get the `Secure` attribute.
pub fn cookie_secure(req: &HttpRequest, mode: CookieSecure) -> bool {
    match mode {
        CookieSecure::Always => true,
        CookieSecure::Never => false,
        CookieSecure::Auto => req.connection_info().scheme() == "https",
    }
}

fn base_cookie(name: &'static str, value: String, secure: bool) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(secure)
        .finish()
}

/// The session cookie for a fresh login.
pub fn session_cookie(token: &str, expires_in: Option<i64>, secure: bool) -> Cookie<'static> {
    let mut c = base_cookie(SESSION_COOKIE, token.to_string(), secure);
    let secs = expires_in
        .unwrap_or(DEFAULT_SESSION_SECONDS)
        .clamp(60, 24 * 3600);
    c.set_max_age(CookieDuration::seconds(secs));
    c
}

/// A cookie that deletes the session cookie.
pub fn clear_session_cookie(secure: bool) -> Cookie<'static> {
    let mut c = base_cookie(SESSION_COOKIE, String::new(), secure);
    c.make_removal();
    c
}

/// The CSRF nonce of a request: the cookie's, or a new one to be set.
#[derive(Debug, Clone)]
pub struct CsrfNonce {
    nonce: String,
    fresh: bool,
}

impl CsrfNonce {
    /// From the request's cookie, or freshly drawn when absent or malformed.
    pub fn of(req: &HttpRequest) -> Self {
        match req.cookie(CSRF_COOKIE) {
            Some(c) if valid_nonce(c.value()) => Self {
                nonce: c.value().to_string(),
                fresh: false,
            },
            _ => {
                let mut b = [0u8; 16];
                rand::Rng::fill(&mut rand::thread_rng(), &mut b);
                Self {
                    nonce: hex::encode(b),
                    fresh: true,
                }
            }
        }
    }

    /// The token forms must carry, bound to this nonce and `session`.
    pub fn token(&self, key: &CsrfKey, session: Option<&str>) -> String {
        hex::encode(mac(key, &self.nonce, session).finalize().into_bytes())
    }

    /// The cookie to set, if the nonce is new.
    pub fn cookie(&self, secure: bool) -> Option<Cookie<'static>> {
        self.fresh
            .then(|| base_cookie(CSRF_COOKIE, self.nonce.clone(), secure))
    }
}

fn valid_nonce(v: &str) -> bool {
    v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit())
}

fn mac(key: &CsrfKey, nonce: &str, session: Option<&str>) -> HmacSha256 {
    // Invariant: HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key.bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(b"zt-frontend-csrf-v1\0");
    m.update(nonce.as_bytes());
    m.update(b"\0");
    m.update(&Sha256::digest(session.unwrap_or("").as_bytes()));
    m
}

/// Checks a submitted form token against the request's CSRF cookie and
/// session cookie (constant-time comparison).
pub fn verify_csrf(req: &HttpRequest, key: &CsrfKey, submitted: &str) -> Result<(), AppError> {
    let Some(cookie) = req.cookie(CSRF_COOKIE) else {
        return Err(AppError::CsrfRejected);
    };
    if !valid_nonce(cookie.value()) || submitted.len() != 64 {
        return Err(AppError::CsrfRejected);
    }
    let Ok(given) = hex::decode(submitted) else {
        return Err(AppError::CsrfRejected);
    };
    let session = req.cookie(SESSION_COOKIE);
    let session = session
        .as_ref()
        .map(|c| c.value())
        .filter(|v| !v.is_empty());
    mac(key, cookie.value(), session)
        .verify_slice(&given)
        .map_err(|_| AppError::CsrfRejected)
}

/// Convenience for handlers: verify with the app's key.
pub fn check_csrf(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    submitted: &str,
) -> Result<(), AppError> {
    verify_csrf(req, &state.config.csrf_key, submitted)
}

/// `raw` if it is a safe local redirect target: a path on this site (starts
/// with one `/`), printable ASCII without spaces or backslashes, not too
/// long, and not one of the sign-in pages (which would loop).
pub fn safe_next(raw: &str) -> Option<String> {
    if raw.is_empty() || raw.len() > MAX_NEXT_LEN {
        return None;
    }
    let b = raw.as_bytes();
    // "//host" and "/\host" are protocol-relative (browsers treat "\" as "/").
    if b[0] != b'/' || b.get(1).is_some_and(|c| *c == b'/' || *c == b'\\') {
        return None;
    }
    // Browsers drop tabs/newlines inside URLs ("/\t/evil" becomes "//evil").
    if !b.iter().all(|c| c.is_ascii_graphic()) || raw.contains('\\') {
        return None;
    }
    let path = raw.split(['?', '#']).next().unwrap_or(raw);
    if matches!(path, "/login" | "/register" | "/logout") {
        return None;
    }
    Some(raw.to_string())
}

/// Percent-encodes a query parameter value (everything but unreserved).
pub fn encode_query_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/login`, with `next` (when safe and not `/`) and a message code.
pub fn login_url(next: Option<&str>, msg: Option<&str>) -> String {
    let mut params = Vec::new();
    if let Some(n) = next.and_then(safe_next).filter(|n| n != "/") {
        params.push(format!("next={}", encode_query_value(&n)));
    }
    if let Some(m) = msg {
        params.push(format!("msg={m}"));
    }
    if params.is_empty() {
        "/login".to_string()
    } else {
        format!("/login?{}", params.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn jwt(payload: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(r#"{"alg":"HS256"}"#),
            e.encode(payload)
        )
    }

    #[test]
    fn next_accepts_local_paths_only() {
        for ok in [
            "/",
            "/github/repos?page=2&q=zero",
            "/zero-trust#ids",
            "/github%2Fx",
        ] {
            assert_eq!(safe_next(ok).as_deref(), Some(ok), "{ok}");
        }
        for bad in [
            "",
            "//evil.example",
            "/\\evil.example",
            "https://evil.example/",
            "http:/evil",
            "javascript:alert(1)",
            "evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/ok\\..\\x",
            "/ space",
            "/ünïcode",
            "/login",
            "/login?next=/x",
            "/logout",
            "/register",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
        assert_eq!(safe_next(&format!("/{}", "a".repeat(MAX_NEXT_LEN))), None);
    }

    #[test]
    fn login_url_encodes_next_and_skips_root() {
        assert_eq!(login_url(Some("/"), None), "/login");
        assert_eq!(
            login_url(Some("/github/repos?page=2&q=a b"), Some("expired")),
            "/login?msg=expired"
        );
        assert_eq!(
            login_url(Some("/github/repos?page=2&q=x"), Some("expired")),
            "/login?next=/github/repos%3Fpage%3D2%26q%3Dx&msg=expired"
        );
        assert_eq!(login_url(Some("//evil"), None), "/login");
    }

    #[test]
    fn csrf_token_binds_nonce_and_session() {
        let key = CsrfKey::from_bytes([7; 32]);
        let n = CsrfNonce {
            nonce: "0".repeat(32),
            fresh: false,
        };
        let t = n.token(&key, Some("session-a"));
        assert_eq!(t.len(), 64);
        assert_ne!(t, n.token(&key, Some("session-b")));
        assert_ne!(t, n.token(&key, None));
        assert_ne!(t, n.token(&CsrfKey::from_bytes([8; 32]), Some("session-a")));

        let ok = TestRequest::default()
            .cookie(Cookie::new(CSRF_COOKIE, "0".repeat(32)))
            .cookie(Cookie::new(SESSION_COOKIE, "session-a"))
            .to_http_request();
        assert!(verify_csrf(&ok, &key, &t).is_ok());
        let other_session = TestRequest::default()
            .cookie(Cookie::new(CSRF_COOKIE, "0".repeat(32)))
            .cookie(Cookie::new(SESSION_COOKIE, "session-b"))
            .to_http_request();
        assert!(verify_csrf(&other_session, &key, &t).is_err());
        let no_cookie = TestRequest::default()
            .cookie(Cookie::new(SESSION_COOKIE, "session-a"))
            .to_http_request();
        assert!(verify_csrf(&no_cookie, &key, &t).is_err());
        for garbage in [
            "",
            "zz",
            &"g".repeat(64),
            &"0".repeat(64),
            &"a".repeat(10_000),
        ] {
            assert!(verify_csrf(&ok, &key, garbage).is_err(), "{garbage:.20}");
        }
    }

    #[test]
    fn fresh_nonce_only_when_cookie_missing_or_malformed() {
        let r = TestRequest::default().to_http_request();
        assert!(CsrfNonce::of(&r).cookie(false).is_some());
        let r = TestRequest::default()
            .cookie(Cookie::new(CSRF_COOKIE, "not-hex"))
            .to_http_request();
        assert!(CsrfNonce::of(&r).fresh);
        let r = TestRequest::default()
            .cookie(Cookie::new(CSRF_COOKIE, "a".repeat(32)))
            .to_http_request();
        assert!(CsrfNonce::of(&r).cookie(false).is_none());
    }

    #[test]
    fn session_claims_are_read_and_garbage_refused() {
        let far = now_unix() + 3600;
        let r = TestRequest::default()
            .cookie(Cookie::new(
                SESSION_COOKIE,
                jwt(&format!(r#"{{"username":"jake","exp":{far}}}"#)),
            ))
            .to_http_request();
        assert_eq!(Session::read(&r).valid().unwrap().username, "jake");

        let expired = jwt(&format!(
            r#"{{"username":"jake","exp":{}}}"#,
            now_unix() - 1
        ));
        for bad in [
            expired.as_str(),
            "not-a-jwt",
            "a.b.c",
            "a.b.c.d",
            "<script>.x.y",
            &jwt(r#"{"user":"jake"}"#),
            &jwt(r#"{"username":""}"#),
            &"a".repeat(MAX_SESSION_TOKEN_LEN + 1),
        ] {
            let r = TestRequest::default()
                .cookie(Cookie::new(SESSION_COOKIE, bad.to_string()))
                .to_http_request();
            assert!(
                matches!(Session::read(&r), SessionCookie::Unusable),
                "{bad:.40}"
            );
        }
        let r = TestRequest::default().to_http_request();
        assert!(matches!(Session::read(&r), SessionCookie::Absent));
    }

    #[test]
    fn session_cookie_attributes() {
        let c = session_cookie("t", Some(3600), false);
        assert!(c.http_only().unwrap_or(false));
        assert_eq!(c.same_site(), Some(SameSite::Strict));
        assert_eq!(c.path(), Some("/"));
        assert_eq!(c.max_age(), Some(CookieDuration::seconds(3600)));
        assert!(!c.secure().unwrap_or(false));
        assert!(session_cookie("t", None, true).secure().unwrap_or(false));
        let gone = clear_session_cookie(false);
        assert_eq!(gone.value(), "");
        assert_eq!(gone.max_age(), Some(CookieDuration::ZERO));
    }
}
