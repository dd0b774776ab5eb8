//! The browser session: the backend's JWT in an HttpOnly, SameSite=Strict
//! cookie, CSRF tokens for every form, and validation of `?next=`.
//!
//! CSRF uses a signed double-submit token: a random nonce lives in its own
//! HttpOnly cookie; forms carry `HMAC(key, nonce ‖ SHA-256(session))`. A
//! cross-site attacker can neither read the nonce nor compute the MAC, and a
//! token issued for one session is useless in another.
//!
//! What "session" means depends on the form ([`FormFor`]): the sign-in and
//! registration forms are bound to no session, whatever session cookie the
//! browser still sends; every other form to the session cookie the request
//! carries, as it is (the page and the check read the same cookie). The
//! nonce cookie is `SameSite=Lax`, so arriving from another site keeps it
//! (a fresh one would void the forms open in other tabs); the HMAC, not the
//! cookie's SameSite, is what protects the form.

use std::collections::HashMap;
use std::future::{ready, Ready};
use std::sync::{Mutex, MutexGuard, PoisonError};

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

/// Most sessions [`AcceptedSessions`] keeps (32 bytes and an expiry each).
pub const MAX_ACCEPTED_SESSIONS: usize = 10_000;

/// Sessions the backend accepted while this process ran, by the SHA-256 of
/// the token, until the token's `exp`. The frontend cannot verify a token
/// itself; when the backend cannot be asked, the zero-trust page shows its
/// degraded view only to a session in here (a forged cookie gets the 503
/// page). Bounded: when full, expired entries go, and if none has expired
/// the set starts over (those users then get the 503 page during an
/// outage, as after a restart).
#[derive(Debug, Default)]
pub struct AcceptedSessions(Mutex<HashMap<[u8; 32], i64>>);

impl AcceptedSessions {
    fn map(&self) -> MutexGuard<'_, HashMap<[u8; 32], i64>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The backend accepted (or issued) `token`.
    pub fn record(&self, token: &str) {
        let now = now_unix();
        let exp = parse_claims(token)
            .and_then(|c| c.exp)
            .unwrap_or(now + DEFAULT_SESSION_SECONDS);
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut map = self.map();
        if map.len() >= MAX_ACCEPTED_SESSIONS {
            map.retain(|_, e| *e > now);
            if map.len() >= MAX_ACCEPTED_SESSIONS {
                map.clear();
            }
        }
        map.insert(key, exp);
    }

    /// Whether the backend accepted `token` and it has not expired.
    pub fn contains(&self, token: &str) -> bool {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.map().get(&key).is_some_and(|e| *e > now_unix())
    }

    /// The token was signed out or refused by the backend.
    pub fn forget(&self, token: &str) {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.map().remove(&key);
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

fn base_cookie(
    name: &'static str,
    value: String,
    same_site: SameSite,
    secure: bool,
) -> Cookie<'static> {
    Cookie::build(name, value)
        .path("/")
        .http_only(true)
        .same_site(same_site)
        .secure(secure)
        .finish()
}

/// The session cookie for a fresh login.
pub fn session_cookie(token: &str, expires_in: Option<i64>, secure: bool) -> Cookie<'static> {
    let mut c = base_cookie(SESSION_COOKIE, token.to_string(), SameSite::Strict, secure);
    let secs = expires_in
        .unwrap_or(DEFAULT_SESSION_SECONDS)
        .clamp(60, 24 * 3600);
    c.set_max_age(CookieDuration::seconds(secs));
    c
}

/// A cookie that deletes the session cookie.
pub fn clear_session_cookie(secure: bool) -> Cookie<'static> {
    let mut c = base_cookie(SESSION_COOKIE, String::new(), SameSite::Strict, secure);
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

    /// The token a form for `req` must carry, bound to this nonce and to
    /// what `form` binds it to.
    pub fn token(&self, key: &CsrfKey, req: &HttpRequest, form: FormFor) -> String {
        self.token_for(key, form.session(req).as_deref())
    }

    fn token_for(&self, key: &CsrfKey, session: Option<&str>) -> String {
        hex::encode(mac(key, &self.nonce, session).finalize().into_bytes())
    }

    /// The cookie to set, if the nonce is new.
    pub fn cookie(&self, secure: bool) -> Option<Cookie<'static>> {
        self.fresh
            .then(|| base_cookie(CSRF_COOKIE, self.nonce.clone(), SameSite::Lax, secure))
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

/// Which session a form's CSRF token is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormFor {
    /// Sign-in and registration: forms for someone not signed in, bound to
    /// no session. The browser may still send a session cookie: a stale one,
    /// or a live one that `SameSite=Strict` held back when the page was
    /// opened from another site but sends with the form. Binding these forms
    /// to it made them fail on every try.
    SigningIn,
    /// Every other form: bound to the session cookie the request carries.
    Session,
}

impl FormFor {
    /// The session cookie's value this form is bound to, if any.
    fn session(self, req: &HttpRequest) -> Option<String> {
        match self {
            FormFor::SigningIn => None,
            FormFor::Session => req
                .cookie(SESSION_COOKIE)
                .map(|c| c.value().to_string())
                .filter(|v| !v.is_empty()),
        }
    }
}

/// Checks a submitted form token against the request's CSRF cookie and what
/// `form` binds it to (constant-time comparison).
pub fn verify_csrf(
    req: &HttpRequest,
    key: &CsrfKey,
    submitted: &str,
    form: FormFor,
) -> Result<(), AppError> {
    let Some(cookie) = req.cookie(CSRF_COOKIE) else {
        return Err(AppError::CsrfRejected);
    };
    if !valid_nonce(cookie.value()) || submitted.len() != 64 {
        return Err(AppError::CsrfRejected);
    }
    let Ok(given) = hex::decode(submitted) else {
        return Err(AppError::CsrfRejected);
    };
    mac(key, cookie.value(), form.session(req).as_deref())
        .verify_slice(&given)
        .map_err(|_| AppError::CsrfRejected)
}

/// Convenience for handlers: verify with the app's key.
pub fn check_csrf(
    req: &HttpRequest,
    state: &web::Data<AppState>,
    submitted: &str,
    form: FormFor,
) -> Result<(), AppError> {
    verify_csrf(req, &state.config.csrf_key, submitted, form)
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
        let t = n.token_for(&key, Some("session-a"));
        assert_eq!(t.len(), 64);
        assert_ne!(t, n.token_for(&key, Some("session-b")));
        assert_ne!(t, n.token_for(&key, None));
        assert_ne!(
            t,
            CsrfNonce::token_for(
                &CsrfNonce {
                    nonce: "1".repeat(32),
                    fresh: false
                },
                &key,
                Some("session-a")
            )
        );
        assert_ne!(
            t,
            n.token_for(&CsrfKey::from_bytes([8; 32]), Some("session-a"))
        );

        let request = |session: Option<&str>| {
            let r = TestRequest::default().cookie(Cookie::new(CSRF_COOKIE, "0".repeat(32)));
            match session {
                Some(s) => r.cookie(Cookie::new(SESSION_COOKIE, s.to_string())),
                None => r,
            }
            .to_http_request()
        };
        let ok = request(Some("session-a"));
        // The page and the check agree: a token made for a request passes
        // with that request.
        assert_eq!(n.token(&key, &ok, FormFor::Session), t);
        assert!(verify_csrf(&ok, &key, &t, FormFor::Session).is_ok());
        assert!(verify_csrf(&request(Some("session-b")), &key, &t, FormFor::Session).is_err());
        assert!(verify_csrf(&request(None), &key, &t, FormFor::Session).is_err());
        let no_nonce = TestRequest::default()
            .cookie(Cookie::new(SESSION_COOKIE, "session-a"))
            .to_http_request();
        assert!(verify_csrf(&no_nonce, &key, &t, FormFor::Session).is_err());
        for garbage in [
            "",
            "zz",
            &"g".repeat(64),
            &"0".repeat(64),
            &"a".repeat(10_000),
        ] {
            for form in [FormFor::Session, FormFor::SigningIn] {
                assert!(
                    verify_csrf(&ok, &key, garbage, form).is_err(),
                    "{garbage:.20}"
                );
            }
        }

        // Sign-in forms are bound to no session, whatever session cookie
        // comes with the page or the form (a stale one, or one SameSite
        // held back from the page but sent with the form).
        let signing_in = n.token(&key, &request(None), FormFor::SigningIn);
        assert_eq!(signing_in, n.token(&key, &ok, FormFor::SigningIn));
        for session in [None, Some("session-a"), Some("garbage")] {
            assert!(
                verify_csrf(&request(session), &key, &signing_in, FormFor::SigningIn).is_ok(),
                "{session:?}"
            );
        }
        // ... and such a token is no good for the other forms of a session.
        assert!(verify_csrf(&ok, &key, &signing_in, FormFor::Session).is_err());
        assert!(verify_csrf(&ok, &key, &t, FormFor::SigningIn).is_err());
        assert!(verify_csrf(&no_nonce, &key, &signing_in, FormFor::SigningIn).is_err());
    }

    #[test]
    fn accepted_sessions_until_they_expire_or_are_forgotten() {
        let a = AcceptedSessions::default();
        let live = jwt(&format!(
            r#"{{"username":"jake","exp":{}}}"#,
            now_unix() + 600
        ));
        let expired = jwt(&format!(
            r#"{{"username":"jake","exp":{}}}"#,
            now_unix() - 1
        ));
        let no_exp = jwt(r#"{"username":"amy"}"#);
        assert!(!a.contains(&live));
        a.record(&live);
        a.record(&expired);
        a.record(&no_exp);
        assert!(a.contains(&live));
        assert!(!a.contains(&expired), "past its exp");
        assert!(a.contains(&no_exp), "no exp: the default lifetime");
        assert!(!a.contains("forged.eyJ1c2VybmFtZSI6Impha2UifQ.x"));
        a.forget(&live);
        assert!(!a.contains(&live));
        // Bounded: full of live entries, it starts over.
        for i in 0..MAX_ACCEPTED_SESSIONS + 5 {
            a.record(&format!("token-{i}"));
        }
        assert!(a.map().len() <= MAX_ACCEPTED_SESSIONS);
        assert!(!a.contains("token-0"));
        assert!(a.contains(&format!("token-{}", MAX_ACCEPTED_SESSIONS + 4)));
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
