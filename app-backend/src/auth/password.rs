//! Password hashing: argon2id with OWASP's recommended parameters
//! (m = 19 456 KiB, t = 2, p = 1), on the blocking thread pool, at most a few
//! at a time (each hash holds 19 MiB: a login flood must not exhaust memory),
//! with a bounded queue: beyond [`QUEUE_PER_SLOT`] waiting hashes per slot a
//! new one is refused at once ([`HashError::Busy`]) instead of waiting
//! seconds behind a flood.

use std::sync::atomic::{AtomicUsize, Ordering};
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
/// Hashes that may wait per hashing slot before new ones are refused: with
/// ~25 ms per hash, 32 queued per slot is under a second of waiting.
pub const QUEUE_PER_SLOT: usize = 32;

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
    /// Too many hashes are already waiting; nothing was hashed.
    #[error("password hashing queue is full")]
    Busy,
}

/// Hashes and verifies passwords; cheap to clone.
#[derive(Clone)]
pub struct PasswordHasher {
    argon: Argon2<'static>,
    /// The hash unknown users are checked against, so a failed login takes
    /// as long whether or not the user exists.
    dummy: Arc<String>,
    permits: Arc<Semaphore>,
    /// Hashes waiting for or holding a slot.
    queued: Arc<AtomicUsize>,
    max_queued: usize,
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
        let slots = max_concurrent.max(1);
        Ok(Self {
            argon,
            dummy: Arc::new(dummy),
            permits: Arc::new(Semaphore::new(slots)),
            queued: Arc::default(),
            max_queued: slots * (QUEUE_PER_SLOT + 1),
        })
    }

    /// Runs `work` on the blocking pool in one of the hashing slots. The
    /// slot is held by the blocking task itself, so a request that goes away
    /// mid-hash does not free its slot before the hash is done.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let queued = QueueSlot::take(&self.queued, self.max_queued)?;
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| HashError::Task(e.to_string()))?;
        let argon = self.argon.clone();
        tokio::task::spawn_blocking(move || {
            let _held = (permit, queued);
            work(&argon)
        })
        .await
        .map_err(|e| HashError::Task(e.to_string()))
    }

    /// A PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) for `password`.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        self.run(move |argon| hash_with(argon, password.as_bytes()))
            .await?
    }

    /// Whether `password` matches `stored`; with `None` (no such user) the
    /// dummy hash is verified instead and the answer is `false`. An
    /// unparsable stored hash is `false` (and logged, without the hash).
    pub async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.as_ref().clone());
        let ok = self
            .run(move |argon| match PasswordHash::new(&hash) {
                Ok(parsed) => argon.verify_password(password.as_bytes(), &parsed).is_ok(),
                Err(e) => {
                    tracing::error!(error = %e, "a stored password hash cannot be parsed");
                    false
                }
            })
            .await?;
        Ok(ok && exists)
    }
}

/// One place in the hashing queue, given back on drop.
struct QueueSlot(Arc<AtomicUsize>);

impl QueueSlot {
    fn take(queued: &Arc<AtomicUsize>, max: usize) -> Result<Self, HashError> {
        queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| HashError::Busy)?;
        Ok(Self(queued.clone()))
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once() {
        let h = PasswordHasher::new(1).unwrap();
        let n = h.max_queued + 20;
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let h = h.clone();
                tokio::spawn(async move { h.verify("guess".into(), None).await })
            })
            .collect();
        let mut busy = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(false) => {}
                Err(HashError::Busy) => busy += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(busy >= 20, "{busy} of {n} refused");
        assert_eq!(h.queued.load(Ordering::Acquire), 0, "every slot given back");
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
