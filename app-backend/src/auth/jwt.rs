//! HS256 access tokens signed with the key the sidecar renders from OpenBao
//! KV (`jwt-signing-key.json`). `data.key` signs; `data.previous_key`, when
//! present, still verifies for a bounded grace after the key change (the KV
//! version's `created_time` + `BACKEND_JWT_PREVIOUS_KEY_GRACE`), so a key is
//! retired for good soon after it is replaced, not whenever the next change
//! comes.
//!
//! Every token carries a random `jti`, so one session can be ended before
//! `exp` (logout; the deny-list lives in PostgreSQL, see `handlers::auth`).
//!
//! Only HS256 is accepted: `alg: none`, other algorithms, a tampered header
//! or payload, a foreign key, an expired token or missing claims all fail.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::secrets::SigningKeyFile;

/// Lifetime of an access token (the seed: 1 hour).
pub const TOKEN_TTL_SECS: i64 = 3600;
/// Clock skew tolerated on `exp`.
pub const LEEWAY_SECS: u64 = 5;
/// Longest token accepted for parsing.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest `jti` accepted (ours are 22 characters).
pub const MAX_JTI_LEN: usize = 64;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// `users.id`
    pub user_id: i32,
    /// `users.username`
    pub username: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Token ID: 128 random bits, base64url (a logout revokes it).
    pub jti: String,
}

/// Why a token was refused, or could not be issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// No signing key has been loaded yet.
    #[error("no signing key loaded")]
    NoKey,
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token too long")]
    TooLong,
    /// Expired.
    #[error("token expired")]
    Expired,
    /// Signature does not match the current or previous key.
    #[error("bad signature")]
    BadSignature,
    /// Signed with the previous key after its grace ended.
    #[error("signed with a retired key")]
    RetiredKey,
    /// Not HS256 (including `none`).
    #[error("algorithm not allowed")]
    Algorithm,
    /// Not a well-formed token with the expected claims.
    #[error("malformed token ({0})")]
    Malformed(&'static str),
    /// Signing failed.
    #[error("signing failed")]
    Signing,
}

struct KeySet {
    version: u64,
    fingerprint: [u8; 32],
    encoding: EncodingKey,
    decoding: DecodingKey,
    previous: Option<DecodingKey>,
    /// Unix seconds after which `previous` no longer verifies.
    previous_until: i64,
}

/// The signing keys in use; swapped when the file changes.
pub struct JwtKeys {
    current: ArcSwapOption<KeySet>,
    previous_key_grace: Duration,
}

impl Default for JwtKeys {
    fn default() -> Self {
        Self::new(Duration::from_secs(DEFAULT_PREVIOUS_KEY_GRACE_SECS))
    }
}

/// Default grace of the previous key after a key change (10 minutes).
pub const DEFAULT_PREVIOUS_KEY_GRACE_SECS: u64 = 600;

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn new_jti() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("version", &self.version())
            .finish()
    }
}

fn fingerprint(f: &SigningKeyFile) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(&f.key);
    h.update([0u8]);
    if let Some(p) = &f.previous_key {
        h.update(p);
    }
    h.finalize().into()
}

fn validation() -> Validation {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = LEEWAY_SECS;
    v.set_required_spec_claims(&["exp", "jti"]);
    v.validate_aud = false;
    v
}

fn map_err(e: &jsonwebtoken::errors::Error) -> JwtError {
    match e.kind() {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => JwtError::Algorithm,
        ErrorKind::MissingRequiredClaim(_) => JwtError::Malformed("missing claim"),
        ErrorKind::InvalidClaimFormat(_) | ErrorKind::Json(_) => JwtError::Malformed("claims"),
        ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
            JwtError::Malformed("encoding")
        }
        _ => JwtError::Malformed("other"),
    }
}

impl JwtKeys {
    /// Keys whose previous key verifies for `previous_key_grace` after a change.
    pub fn new(previous_key_grace: Duration) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            previous_key_grace,
        }
    }

    /// Installs the keys of `file` if they differ from those in use; `true`
    /// when they changed. The previous key's grace runs from the file's
    /// `created_at` (when the key changed in OpenBao, the same for every
    /// replica and across restarts), or from now if the file has none.
    pub fn apply(&self, file: &SigningKeyFile) -> bool {
        let fp = fingerprint(file);
        if let Some(cur) = self.current.load().as_ref() {
            if cur.fingerprint == fp && cur.version == file.version {
                return false;
            }
        }
        self.current.store(Some(Arc::new(KeySet {
            version: file.version,
            fingerprint: fp,
            encoding: EncodingKey::from_secret(&file.key),
            decoding: DecodingKey::from_secret(&file.key),
            previous: file.previous_key.as_deref().map(DecodingKey::from_secret),
            previous_until: file
                .created_at
                .unwrap_or_else(unix_now)
                .saturating_add(self.previous_key_grace.as_secs() as i64),
        })));
        true
    }

    /// KV version of the key in use.
    pub fn version(&self) -> Option<u64> {
        self.current.load().as_ref().map(|k| k.version)
    }

    /// Whether a key is loaded.
    pub fn loaded(&self) -> bool {
        self.current.load().is_some()
    }

    /// Signs a token for the user, valid [`TOKEN_TTL_SECS`] from `now`.
    pub fn issue(&self, user_id: i32, username: &str, now: i64) -> Result<String, JwtError> {
        let keys = self.current.load_full().ok_or(JwtError::NoKey)?;
        let claims = Claims {
            user_id,
            username: username.to_string(),
            iat: now,
            exp: now + TOKEN_TTL_SECS,
            jti: new_jti(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
            .map_err(|_| JwtError::Signing)
    }

    /// Verifies a token with the current key, then (within its grace) the
    /// previous one.
    pub fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        self.verify_at(token, unix_now())
    }

    /// [`JwtKeys::verify`] with the grace judged at `now` (Unix seconds;
    /// `exp` is checked against the clock).
    pub fn verify_at(&self, token: &str, now: i64) -> Result<Claims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::TooLong);
        }
        let keys = self.current.load_full().ok_or(JwtError::NoKey)?;
        let v = validation();
        let claims = match jsonwebtoken::decode::<Claims>(token, &keys.decoding, &v) {
            Ok(d) => d.claims,
            Err(e) => match (map_err(&e), &keys.previous) {
                (JwtError::BadSignature, Some(prev)) => {
                    let claims = jsonwebtoken::decode::<Claims>(token, prev, &v)
                        .map_err(|e| map_err(&e))?
                        .claims;
                    if now > keys.previous_until {
                        return Err(JwtError::RetiredKey);
                    }
                    claims
                }
                (err, _) => return Err(err),
            },
        };
        if claims.user_id <= 0 {
            return Err(JwtError::Malformed("user_id"));
        }
        if claims.jti.is_empty() || claims.jti.len() > MAX_JTI_LEN {
            return Err(JwtError::Malformed("jti"));
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

    fn keys(key: u8, prev: Option<u8>, version: u64) -> JwtKeys {
        let k = JwtKeys::default();
        k.apply(&SigningKeyFile {
            version,
            key: vec![key; 64],
            previous_key: prev.map(|p| vec![p; 64]),
            created_at: Some(now()),
        });
        k
    }

    fn now() -> i64 {
        time::OffsetDateTime::now_utc().unix_timestamp()
    }

    fn forge(header: &str, claims: &str, sig: &str) -> String {
        format!(
            "{}.{}.{sig}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        )
    }

    #[test]
    fn issued_tokens_verify_with_their_claims() {
        let k = keys(1, None, 1);
        let t = k.issue(7, "jake", now()).unwrap();
        let c = k.verify(&t).unwrap();
        assert_eq!((c.user_id, c.username.as_str()), (7, "jake"));
        assert_eq!(c.exp - c.iat, 3600);
    }

    #[test]
    fn expired_other_key_alg_none_other_alg_and_tampered_tokens_are_refused() {
        let k = keys(1, None, 1);
        assert_eq!(
            k.verify(&k.issue(7, "jake", now() - 3700).unwrap()),
            Err(JwtError::Expired)
        );
        assert_eq!(
            k.verify(&keys(2, None, 1).issue(7, "jake", now()).unwrap()),
            Err(JwtError::BadSignature)
        );
        let claims = format!(
            r#"{{"user_id":7,"username":"jake","iat":{},"exp":{},"jti":"abc"}}"#,
            now(),
            now() + 3600
        );
        for alg in ["none", "None", "NONE"] {
            let t = forge(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), &claims, "");
            assert!(k.verify(&t).is_err(), "{alg}");
        }
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::from_str::<serde_json::Value>(&claims).unwrap(),
            &EncodingKey::from_secret(&[1u8; 64]),
        )
        .unwrap();
        assert_eq!(k.verify(&hs512), Err(JwtError::Algorithm));
        // Tampered payload: user 7 becomes user 8, signature kept.
        let good = k.issue(7, "jake", now()).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        let evil = claims.replace("\"user_id\":7", "\"user_id\":8");
        let tampered = format!("{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(evil), parts[2]);
        assert_eq!(k.verify(&tampered), Err(JwtError::BadSignature));
        // Garbage of every sort.
        for junk in ["", "a.b", "a.b.c", "....", "' OR 1=1 --", &"x".repeat(5000)] {
            assert!(k.verify(junk).is_err(), "{junk:.20}");
        }
        // Missing exp, wrong claim types, non-positive ids.
        let sign = |c: &str| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &serde_json::from_str::<serde_json::Value>(c).unwrap(),
                &EncodingKey::from_secret(&[1u8; 64]),
            )
            .unwrap()
        };
        assert!(k
            .verify(&sign(r#"{"user_id":7,"username":"jake","iat":1}"#))
            .is_err());
        assert!(k
            .verify(&sign(&format!(
                r#"{{"user_id":"7","username":"jake","iat":1,"exp":{}}}"#,
                now() + 60
            )))
            .is_err());
        assert!(k
            .verify(&sign(&format!(
                r#"{{"user_id":0,"username":"x","iat":1,"exp":{},"jti":"a"}}"#,
                now() + 60
            )))
            .is_err());
        // No jti (tokens from before logout existed), or an absurd one.
        assert!(matches!(
            k.verify(&sign(&format!(
                r#"{{"user_id":7,"username":"jake","iat":1,"exp":{}}}"#,
                now() + 60
            ))),
            Err(JwtError::Malformed(_))
        ));
        assert_eq!(
            k.verify(&sign(&format!(
                r#"{{"user_id":7,"username":"jake","iat":1,"exp":{},"jti":"{}"}}"#,
                now() + 60,
                "j".repeat(65)
            ))),
            Err(JwtError::Malformed("jti"))
        );
        assert_eq!(
            k.verify(&sign(&format!(
                r#"{{"user_id":7,"username":"jake","iat":1,"exp":{},"jti":""}}"#,
                now() + 60
            ))),
            Err(JwtError::Malformed("jti"))
        );
    }

    #[test]
    fn every_token_has_its_own_jti() {
        let k = keys(1, None, 1);
        let a = k.verify(&k.issue(7, "jake", now()).unwrap()).unwrap();
        let b = k.verify(&k.issue(7, "jake", now()).unwrap()).unwrap();
        assert_eq!(a.jti.len(), 22);
        assert_ne!(a.jti, b.jti);
    }

    /// Regression (issue 16, 7): the previous key verified for as long as
    /// the file named it, i.e. until the next key change, however late.
    #[test]
    fn the_previous_key_verifies_only_within_its_grace() {
        let t_old = keys(1, None, 1).issue(7, "jake", now()).unwrap();
        let k = JwtKeys::new(Duration::from_secs(600));
        let changed = now() - 60;
        k.apply(&SigningKeyFile {
            version: 2,
            key: vec![2; 64],
            previous_key: Some(vec![1; 64]),
            created_at: Some(changed),
        });
        assert!(
            k.verify_at(&t_old, changed + 600).is_ok(),
            "within the grace"
        );
        assert_eq!(
            k.verify_at(&t_old, changed + 601),
            Err(JwtError::RetiredKey),
            "after the grace"
        );
        // Tokens of the current key are not affected.
        let t_new = k.issue(8, "amy", now()).unwrap();
        assert!(k.verify_at(&t_new, changed + 10_000).is_ok());
        // A file without created_time: the grace runs from when it was loaded.
        let k = JwtKeys::new(Duration::from_secs(600));
        k.apply(&SigningKeyFile {
            version: 2,
            key: vec![2; 64],
            previous_key: Some(vec![1; 64]),
            created_at: None,
        });
        assert!(k.verify(&t_old).is_ok());
        assert_eq!(k.verify_at(&t_old, now() + 601), Err(JwtError::RetiredKey));
    }

    #[test]
    fn previous_key_still_verifies_after_a_key_change() {
        let old = keys(1, None, 1);
        let t_old = old.issue(7, "jake", now()).unwrap();
        let k = keys(1, None, 1);
        assert!(k.apply(&SigningKeyFile {
            version: 2,
            key: vec![2; 64],
            previous_key: Some(vec![1; 64]),
            created_at: Some(now()),
        }));
        assert_eq!(k.version(), Some(2));
        assert_eq!(k.verify(&t_old).unwrap().user_id, 7);
        let t_new = k.issue(8, "amy", now()).unwrap();
        assert!(old.verify(&t_new).is_err(), "new tokens use the new key");
        // Once the previous key is gone, old tokens are refused.
        k.apply(&SigningKeyFile {
            version: 3,
            key: vec![3; 64],
            previous_key: Some(vec![2; 64]),
            created_at: Some(now()),
        });
        assert_eq!(k.verify(&t_old), Err(JwtError::BadSignature));
        assert!(k.verify(&t_new).is_ok());
    }

    #[test]
    fn applying_the_same_file_twice_is_not_a_change() {
        let k = keys(1, None, 1);
        let f = SigningKeyFile {
            version: 1,
            key: vec![1; 64],
            previous_key: None,
            created_at: Some(now()),
        };
        assert!(!k.apply(&f));
        assert!(JwtKeys::default().verify("a.b.c") == Err(JwtError::NoKey));
    }
}
