//! PostgreSQL: a deadpool pool built from the sidecar's `db.json`, swapped
//! atomically when the credentials rotate.
//!
//! ```text
//!  db.json v3 ──▶ new Pool ──SELECT 1──▶ ArcSwap ◀── every request loads the current pool
//!                                           │
//!                             old pool ─────┘ close(): idle connections go now, busy ones
//!                                             when their request returns them
//! ```
//!
//! The sidecar revokes the old user `revoke_grace` (30 s) after writing the
//! new file, terminating its sessions; by then new work runs on the new pool.
//! A query whose session was terminated anyway (a revocation, a restart, an
//! administrator ending sessions, or a request that picked the old pool just
//! as it closed) is retried on the current pool, on a connection opened
//! *after* the loss was seen: every connection that was open at that moment
//! is dropped, idle ones at once, busy ones when they come back (they were
//! most likely ended too, and may not have noticed yet). The retry itself
//! can lose its session to the next such event — opening a connection under
//! load can take longer than the time between two of them (issue 16, 9) —
//! so it is repeated, up to [`MAX_ATTEMPTS`] in all within [`RETRY_BUDGET`].
//!
//! A server that does not take connections for a moment (a restart: "the
//! database system is shutting down", then "connection refused", then
//! "starting up") is waited for, with a short backoff, within the same
//! budget: a restart of a second or two costs those requests latency, not
//! an error (the fault suite, `devstack/tests/faults.rs`). Refused
//! credentials are not waited for.

pub mod migrate;
pub mod queries;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use deadpool_postgres::{
    Hook, HookError, Manager, ManagerConfig, Object, Pool, PoolError, RecyclingMethod, Runtime,
};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::metrics::{Metrics, PoolSample};
use crate::secrets::{DbCredentials, DbCredentialsFile};

/// `application_name` of the backend's sessions (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "app-backend";
/// How long a request waits for a free connection.
const WAIT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long opening a connection may take.
const CREATE_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts of one statement whose session keeps being lost (the first
/// and up to two retries).
pub const MAX_ATTEMPTS: u32 = 3;
/// No retry starts later than this after the first attempt began.
pub const RETRY_BUDGET: Duration = Duration::from_secs(8);
/// First and longest pause between connection attempts while the server is
/// unavailable (doubling in between).
const UNAVAILABLE_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(50), Duration::from_millis(500));

/// When a lost session was last seen: connections opened before then are
/// not reused.
#[derive(Debug)]
pub struct LossClock {
    base: Instant,
    /// Nanoseconds after `base` of the last loss, plus one (0 = none yet).
    last: AtomicU64,
}

impl Default for LossClock {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }
}

impl LossClock {
    /// Records a loss seen now.
    pub fn lost_now(&self) {
        let at = self.base.elapsed().as_nanos() as u64 + 1;
        self.last.fetch_max(at, Ordering::AcqRel);
    }

    /// Whether a connection created at `created` was open when the last loss
    /// was seen.
    pub fn predates_last_loss(&self, created: Instant) -> bool {
        match self.last.load(Ordering::Acquire) {
            0 => false,
            at => created <= self.base + Duration::from_nanos(at - 1),
        }
    }
}

/// Why a database operation failed. Never contains credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// No credentials have been loaded yet.
    #[error("no database credentials loaded yet")]
    NotReady,
    /// No connection could be had (timeout, server unreachable, login refused).
    #[error("no database connection: {}", pool_message(.0))]
    Pool(#[from] PoolError),
    /// The pool could not be built (a programming error: no runtime).
    #[error("cannot build a database pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    /// The statement failed.
    #[error("query failed: {}", pg_message(.0))]
    Query(#[from] tokio_postgres::Error),
}

impl DbError {
    /// The SQLSTATE of a failed statement.
    pub fn code(&self) -> Option<&SqlState> {
        match self {
            DbError::Query(e) => e.code(),
            _ => None,
        }
    }

    /// The violated constraint of a failed statement.
    pub fn constraint(&self) -> Option<&str> {
        match self {
            DbError::Query(e) => e.as_db_error().and_then(|d| d.constraint()),
            _ => None,
        }
    }
}

/// tokio-postgres prints a server error as just "db error": add the
/// SQLSTATE and PostgreSQL's message (never its DETAIL, which can quote
/// row values).
pub fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} {}: {}", d.severity(), d.code().code(), d.message()),
        None => e.to_string(),
    }
}

fn pool_message(e: &PoolError) -> String {
    match e {
        PoolError::Backend(pg) => format!("cannot connect: {}", pg_message(pg)),
        other => other.to_string(),
    }
}

/// Whether `e` means the session is gone (terminated by the revocation of
/// its user, server restart, broken socket) rather than a bad statement.
pub fn is_session_lost(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        return [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::CRASH_SHUTDOWN,
            SqlState::CANNOT_CONNECT_NOW,
        ]
        .contains(code);
    }
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        if s.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        src = s.source();
    }
    false
}

/// Whether getting a connection failed because the server is not taking
/// connections right now (shutting down, restarting, unreachable, or a
/// connection attempt timed out) rather than because it refused us: worth
/// waiting for. A refused login (wrong or revoked credentials) is not.
pub fn is_server_unavailable(e: &DbError) -> bool {
    match e {
        DbError::Pool(PoolError::Backend(pg)) => is_session_lost(pg),
        DbError::Pool(PoolError::Timeout(deadpool_postgres::TimeoutType::Create)) => true,
        _ => false,
    }
}

/// The pool in use and the credentials it was built from.
struct PoolEntry {
    pool: Pool,
    creds: DbCredentials,
}

/// The swappable pool.
pub struct Database {
    current: ArcSwapOption<PoolEntry>,
    swap: tokio::sync::Mutex<()>,
    pool_size: usize,
    metrics: Arc<Metrics>,
    losses: Arc<LossClock>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("user", &self.current_user())
            .field("version", &self.version())
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

/// Builds a pool for `creds` (no connection is opened yet) that never hands
/// out a connection opened before the last loss `losses` recorded.
pub fn build_pool(
    creds: &DbCredentials,
    max_size: usize,
    losses: Arc<LossClock>,
) -> Result<Pool, deadpool_postgres::BuildError> {
    let manager = Manager::from_config(
        creds.pg_config(APPLICATION_NAME),
        NoTls,
        ManagerConfig {
            // A closed connection is noticed without a round trip; a session
            // killed mid-flight is covered by the retry in `Database::run`.
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(max_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(WAIT_TIMEOUT))
        .create_timeout(Some(CREATE_TIMEOUT))
        .recycle_timeout(Some(CREATE_TIMEOUT))
        .pre_recycle(Hook::sync_fn(move |_, metrics| {
            if losses.predates_last_loss(metrics.created) {
                Err(HookError::Message(
                    "opened before a lost session was seen".into(),
                ))
            } else {
                Ok(())
            }
        }))
        .build()
}

impl Database {
    /// An empty database handle: requests fail with [`DbError::NotReady`]
    /// until [`Database::apply`] installs credentials.
    pub fn new(pool_size: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            current: ArcSwapOption::empty(),
            swap: tokio::sync::Mutex::new(()),
            pool_size,
            metrics,
            losses: Arc::default(),
        }
    }

    /// Moves to `creds` if they supersede the credentials in use: builds a
    /// pool, proves it with `SELECT 1`, swaps it in and closes the old one.
    /// `Ok(false)` when nothing changed (e.g. a renewal rewrote the file).
    /// On error the old pool stays in use.
    pub async fn apply(&self, creds: DbCredentials) -> Result<bool, DbError> {
        let _one_at_a_time = self.swap.lock().await;
        let old = self.current.load_full();
        if let Some(cur) = &old {
            if !creds.supersedes(&cur.creds) {
                return Ok(false);
            }
        }
        let pool = build_pool(&creds, self.pool_size, self.losses.clone())?;
        let client = pool.get().await?;
        client.simple_query("SELECT 1").await?;
        drop(client);
        let (user, version) = (creds.username.clone(), creds.version);
        self.current
            .store(Some(Arc::new(PoolEntry { pool, creds })));
        self.metrics.db_credentials_version.set(version);
        match old {
            Some(old) => {
                self.metrics.db_pool_swaps.inc();
                let st = old.pool.status();
                old.pool.close();
                tracing::info!(
                    old_user = %old.creds.username, old_version = old.creds.version,
                    new_user = %user, new_version = version,
                    old_busy_connections = st.size.saturating_sub(st.available),
                    "database credentials rotated: new requests use the new pool; the old pool is closed (busy connections close when returned)"
                );
            }
            None => tracing::info!(user = %user, version, "database pool ready"),
        }
        Ok(true)
    }

    /// The PostgreSQL user of the pool in use.
    pub fn current_user(&self) -> Option<String> {
        self.current
            .load()
            .as_ref()
            .map(|e| e.creds.username.clone())
    }

    /// The credentials version of the pool in use.
    pub fn version(&self) -> Option<u64> {
        self.current.load().as_ref().map(|e| e.creds.version)
    }

    /// Pool numbers for `/metrics` and `/api/zt/status`.
    pub fn sample(&self) -> PoolSample {
        match self.current.load().as_ref() {
            Some(e) => {
                let s = e.pool.status();
                PoolSample {
                    size: s.size,
                    available: s.available,
                    waiting: s.waiting,
                    max_size: s.max_size,
                }
            }
            None => PoolSample::default(),
        }
    }

    /// A connection from the pool in use. A pool closed by a rotation between
    /// loading it and asking it is skipped for the new one.
    pub async fn client(&self) -> Result<Object, DbError> {
        for _ in 0..3 {
            let Some(entry) = self.current.load_full() else {
                return Err(DbError::NotReady);
            };
            match entry.pool.get().await {
                Ok(c) => return Ok(c),
                Err(PoolError::Closed) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(DbError::NotReady)
    }

    /// Runs `f` on a connection; while its session is lost (see
    /// [`is_session_lost`]), runs it again on a connection opened after the
    /// loss, up to [`MAX_ATTEMPTS`] in all and not after [`RETRY_BUDGET`].
    pub async fn run<T, F, Fut>(&self, f: F) -> Result<T, DbError>
    where
        F: Fn(Object) -> Fut,
        Fut: Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let started = Instant::now();
        let mut attempt = 1;
        let mut pause = UNAVAILABLE_BACKOFF.0;
        loop {
            let client = match self.client().await {
                Ok(c) => c,
                Err(e) if is_server_unavailable(&e) && started.elapsed() < RETRY_BUDGET => {
                    // Sessions die with a restarting server: none is reused.
                    self.losses.lost_now();
                    tracing::debug!(error = %e, retry_in_ms = pause.as_millis() as u64, "database unavailable; waiting for it");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(UNAVAILABLE_BACKOFF.1);
                    continue;
                }
                Err(e) => {
                    if is_server_unavailable(&e) {
                        tracing::warn!(error = %e, waited_ms = started.elapsed().as_millis() as u64, "database unavailable for the whole retry budget; giving up");
                    }
                    return Err(e);
                }
            };
            let e = match f(client).await {
                Ok(v) => return Ok(v),
                Err(e) if is_session_lost(&e) => e,
                Err(e) => return Err(e.into()),
            };
            // A revocation or restart ends every session at once; one still
            // open now may not have noticed. None of them is used again.
            self.losses.lost_now();
            let dropped = self
                .current
                .load_full()
                .map(|entry| entry.pool.retain(|_, _| false).removed.len())
                .unwrap_or(0);
            if attempt >= MAX_ATTEMPTS || started.elapsed() >= RETRY_BUDGET {
                tracing::warn!(
                    error = %pg_message(&e),
                    attempts = attempt,
                    "database session lost on every attempt; giving up"
                );
                return Err(e.into());
            }
            self.metrics.db_query_retries.inc();
            tracing::info!(
                error = %pg_message(&e),
                attempt,
                idle_connections_dropped = dropped,
                "database session lost (e.g. ended by a credential rotation); retrying on a connection opened after the loss"
            );
            attempt += 1;
        }
    }
}
