//! Password hashing: argon2id with OWASP's recommended parameters
//! (m = 19 456 KiB, t = 2, p = 1), on the blocking thread pool, at most a few
//! at a time (each hash holds 19 MiB: a login flood must not exhaust memory).

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

/// Memory cost in KiB (OWASP Password Storage Cheat Sheet: 19 MiB).
pub const MEMORY_KIB: u32 = 19_456;
/// Iterations (OWASP: 2).
pub const ITERATIONS: u32 = 2;
/// Lanes (OWASP: 1).
pub const PARALLELISM: u32 = 1;

/// Hashing or verifying could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HashError {
    /// argon2 refused (parameters, output size).
    #[error("argon2: {0}")]
    Argon2(String),
    /// The blocking task died.
    #[error("hashing task failed: {0}")]
    Task(String),
}

/// Hashes and verifies passwords; cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    /// The hash unknown users are checked against, so a failed login takes
    /// as long whether or not the user exists.
    dummy: Arc<String>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("algorithm", &"argon2id")
            .field("m_kib", &MEMORY_KIB)
            .field("t", &ITERATIONS)
            .field("p", &PARALLELISM)
            .finish()
    }
}

fn argon() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
        .map_err(|e| HashError::Argon2(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn hash_with(argon: &Argon2<'static>, password: &[u8]) -> Result<String, HashError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon
        .hash_password(password, &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError::Argon2(e.to_string()))
}

impl PasswordHasher {
    /// Builds the hasher and its dummy hash (one hash: tens of milliseconds).
    /// `max_concurrent` hashes run at once; more wait.
    pub fn new(max_concurrent: usize) -> Result<Self, HashError> {
        use rand::RngCore as _;
        let argon = argon()?;
        let mut random = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut random);
        let dummy = hash_with(&argon, &random)?;
        Ok(Self {
            argon,
            dummy: Arc::new(dummy),
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
        })
    }

    /// One of the hashing slots (hashes beyond the limit wait their turn).
    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, HashError> {
        self.permits
            .acquire()
            .await
            .map_err(|e| HashError::Task(e.to_string()))
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) for `password`.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let _permit = self.permit().await?;
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || hash_with(&argon, password.as_bytes()))
            .await
            .map_err(|e| HashError::Task(e.to_string()))?
    }

    /// Whether `password` matches `stored`; with `None` (no such user) the
    /// dummy hash is verified instead and the answer is `false`. An
    /// unparsable stored hash is `false` (and logged, without the hash).
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let _permit = self.permit().await?;
        let argon = self.argon.clone();
        let exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.as_ref().clone());
        let ok = tokio::task::spawn_blocking(move || match PasswordHash::new(&hash) {
            Ok(parsed) => argon.verify_password(password.as_bytes(), &parsed).is_ok(),
            Err(e) => {
                tracing::error!(error = %e, "a stored password hash cannot be parsed");
                false
            }
        })
        .await
        .map_err(|e| HashError::Task(e.to_string()))?;
        Ok(ok && exists)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_with_owasp_parameters_and_verify() {
        let h = PasswordHasher::new(2).unwrap();
        let hash = h.hash("jake99".into()).await.unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(h.verify("jake99".into(), Some(hash.clone())).await.unwrap());
        assert!(!h.verify("jake98".into(), Some(hash.clone())).await.unwrap());
        assert!(!h.verify("".into(), Some(hash.clone())).await.unwrap());
        // Same password, new salt.
        assert_ne!(hash, h.hash("jake99".into()).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_users_and_broken_hashes_never_verify() {
        let h = PasswordHasher::new(1).unwrap();
        assert!(!h.verify("anything".into(), None).await.unwrap());
        assert!(!h
            .verify("x".into(), Some("not a hash".into()))
            .await
            .unwrap());
        assert!(!h
            .verify("x".into(), Some("$2b$12$bcrypthashfromtheseed".into()))
            .await
            .unwrap());
    }
}
