//! The application state shared by every worker, the reconcile step that
//! applies the sidecar's files to it, and the start-up sequence
//! (migrations → schema check → seed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::auth::jwt::JwtKeys;
use crate::auth::password::{HashError, PasswordHasher};
use crate::auth::ratelimit::{AttemptLimiter, KnownClients};
use crate::config::{
    Config, GITHUB_MAX_PENDING_PER_USER, KNOWN_CLIENT_TTL, LOGIN_MAX_PENDING_PER_ACCOUNT,
    LOGIN_MAX_PENDING_PER_CLIENT, REGISTER_MAX_PENDING_PER_CLIENT,
};
use crate::db::migrate::{self, MigrateError};
use crate::db::Database;
use crate::github::GithubClient;
use crate::metrics::Metrics;
use crate::openbao::SecretStore;
use crate::secrets::{
    DbCredentials, DbCredentialsFile, FileError, SigningKeyFile, DB_FILE, MIGRATOR_FILE,
    MIGRATOR_RELEASED_FILE, MIGRATOR_SECRET,
};
use crate::sidecar::SidecarAdmin;

/// How long the backend keeps asking an unreachable sidecar to release the
/// migrator credentials.
const RELEASE_PATIENCE: Duration = Duration::from_secs(300);

/// Where start-up is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Waiting for `db-migrator.json` (at most `BACKEND_MIGRATOR_WAIT`).
    WaitingForMigrator,
    /// Applying migrations.
    Migrating,
    /// Waiting for `db.json` and a working pool.
    WaitingForDatabase,
    /// The schema is older than this binary needs (migrations did not run).
    SchemaBehind {
        /// Version found.
        have: i64,
        /// Version needed.
        need: i64,
        /// The migrator credentials were released in this pod
        /// (`db-migrator.released`): only a new pod migrates.
        released: bool,
    },
    /// Inserting the seed users.
    Seeding,
    /// Done: requests may be served.
    Ready,
}

impl Phase {
    /// For `/readyz`.
    pub fn describe(&self) -> String {
        match self {
            Phase::WaitingForMigrator => "waiting for db-migrator.json".into(),
            Phase::Migrating => "applying migrations".into(),
            Phase::WaitingForDatabase => "waiting for db.json and a working database pool".into(),
            Phase::SchemaBehind { have, need, released: false } => format!(
                "schema is at version {have}, this binary needs {need}: migrations have not run (is db-migrator.json provided?)"
            ),
            Phase::SchemaBehind { have, need, released: true } => format!(
                "schema is at version {have}, this binary needs {need}: migrations have not run, and the migrator credentials were released earlier in this pod (db-migrator.released); start a new pod (kubectl rollout restart) to migrate"
            ),
            Phase::Seeding => "seeding demo users".into(),
            Phase::Ready => "ok".into(),
        }
    }
}

/// Could not build the state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// argon2 set-up failed.
    #[error("password hasher: {0}")]
    Hasher(#[from] HashError),
    /// An HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Start-up failed for good (the process exits 1).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartupError {
    /// Migrations failed (after retrying until `BACKEND_MIGRATOR_WAIT`).
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    /// The migrator file exists but is unusable.
    #[error("{0}")]
    MigratorFile(#[from] FileError),
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// PostgreSQL.
    pub db: Database,
    /// JWT keys.
    pub keys: JwtKeys,
    /// argon2id.
    pub hasher: PasswordHasher,
    /// Failed logins per client (reserved before the password is checked).
    pub login_limiter: AttemptLimiter,
    /// Failed logins per account name, from all clients together.
    pub account_login_limiter: AttemptLimiter,
    /// Clients that signed in to an account recently (not held back by
    /// `account_login_limiter`).
    pub known_clients: KnownClients,
    /// Registrations per client (each costs a hash, so all of them count).
    pub register_limiter: AttemptLimiter,
    /// GitHub token checks per user (each calls GitHub).
    pub github_check_limiter: AttemptLimiter,
    /// GitHub reads per user (each reads OpenBao and calls GitHub).
    pub github_read_limiter: AttemptLimiter,
    /// OpenBao KV through the sidecar.
    pub store: SecretStore,
    /// GitHub.
    pub github: GithubClient,
    /// The sidecar's admin endpoint.
    pub sidecar: SidecarAdmin,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    phase: Mutex<Phase>,
    file_errors: Mutex<HashMap<&'static str, String>>,
}

impl AppState {
    /// Builds the state (computes the dummy password hash: tens of ms).
    pub fn new(config: Config) -> Result<Self, StateError> {
        let metrics = Arc::new(Metrics::default());
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Ok(Self {
            db: Database::new(config.db_pool_size, metrics.clone()),
            keys: JwtKeys::new(config.jwt_previous_key_grace),
            hasher: PasswordHasher::new(cores)?,
            login_limiter: AttemptLimiter::new(
                config.login_max_failures,
                config.login_failure_window,
                LOGIN_MAX_PENDING_PER_CLIENT,
            ),
            account_login_limiter: AttemptLimiter::new(
                config.login_max_failures_per_account,
                config.login_failure_window,
                LOGIN_MAX_PENDING_PER_ACCOUNT,
            ),
            known_clients: KnownClients::new(KNOWN_CLIENT_TTL),
            register_limiter: AttemptLimiter::new(
                config.register_max_per_client,
                config.register_window,
                REGISTER_MAX_PENDING_PER_CLIENT,
            ),
            github_check_limiter: AttemptLimiter::new(
                config.github_checks_per_user,
                config.github_check_window,
                GITHUB_MAX_PENDING_PER_USER,
            ),
            github_read_limiter: AttemptLimiter::new(
                config.github_reads_per_user,
                config.github_read_window,
                GITHUB_MAX_PENDING_PER_USER,
            ),
            store: SecretStore::new(config.openbao_proxy.clone(), config.openbao_timeout),
            github: GithubClient::new(&config.github_api_url, config.github_timeout)?,
            sidecar: SidecarAdmin::new(&config.sidecar_admin_url)?,
            metrics,
            phase: Mutex::new(Phase::WaitingForMigrator),
            file_errors: Mutex::new(HashMap::new()),
            config,
        })
    }

    /// The start-up phase.
    pub fn phase(&self) -> Phase {
        self.phase
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_phase(&self, p: Phase) {
        let mut cur = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        if *cur != p {
            tracing::debug!(phase = %p.describe(), "start-up phase");
            *cur = p;
        }
    }

    /// Logs a problem with `file` once (until it changes or clears).
    fn file_problem(&self, file: &'static str, problem: Option<String>) {
        let mut errs = self
            .file_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match problem {
            Some(p) => {
                if errs.get(file) != Some(&p) {
                    tracing::warn!(file, problem = %p, "cannot use secrets file (will retry)");
                    errs.insert(file, p);
                }
            }
            None => {
                if errs.remove(file).is_some() {
                    tracing::info!(file, "secrets file usable again");
                }
            }
        }
    }

    /// Re-reads `db.json` and `jwt-signing-key.json` and applies what changed.
    pub async fn reconcile_secrets(&self) {
        let dir = &self.config.secrets_dir;
        match DbCredentials::load(dir, DB_FILE) {
            Ok(c) => match self.db.apply(c).await {
                Ok(_) => self.file_problem(DB_FILE, None),
                Err(e) => self.file_problem(
                    DB_FILE,
                    Some(format!("new credentials do not work yet: {e}")),
                ),
            },
            // Gone (e.g. the sidecar removed it on shutdown): keep the pool we have.
            Err(FileError::Missing { .. }) if self.db.version().is_some() => {}
            Err(e) => self.file_problem(DB_FILE, Some(e.to_string())),
        }
        match SigningKeyFile::load(dir) {
            Ok(f) => {
                if self.keys.apply(&f) {
                    tracing::info!(
                        version = f.version,
                        previous_key = f.previous_key.is_some(),
                        "JWT signing key loaded"
                    );
                    self.metrics.jwt_key_version.set(f.version);
                }
                self.file_problem(crate::secrets::SIGNING_KEY_FILE, None);
            }
            Err(FileError::Missing { .. }) if self.keys.loaded() => {}
            Err(e) => self.file_problem(crate::secrets::SIGNING_KEY_FILE, Some(e.to_string())),
        }
    }

    /// Migrations (if `db-migrator.json` appears within the wait), then the
    /// schema check and the seed through the runtime pool. Returns when the
    /// backend is ready; an error is fatal.
    pub async fn startup(&self) -> Result<(), StartupError> {
        self.run_migrations().await?;
        self.set_phase(Phase::WaitingForDatabase);
        let need = migrate::latest_version();
        let mut last_err = String::new();
        loop {
            if self.db.version().is_some() {
                match migrate::schema_version(&self.db).await {
                    Ok(have) if have >= need => break,
                    Ok(have) => {
                        let released = self.migrator_released();
                        let behind = Phase::SchemaBehind {
                            have,
                            need,
                            released,
                        };
                        if self.phase() != behind {
                            tracing::error!(have, need, migrator_released = released, "the database schema is older than this binary needs and no migrator credentials were provided; not ready");
                        }
                        self.set_phase(behind);
                    }
                    Err(e) => {
                        let s = e.to_string();
                        if s != last_err {
                            tracing::warn!(error = %s, "cannot read the schema version yet");
                            last_err = s;
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if !self.config.seed_demo_users {
            self.warn_about_leftover_demo_users().await;
            self.set_phase(Phase::Ready);
            tracing::info!(
                "start-up complete (demo users not seeded: BACKEND_SEED_DEMO_USERS is off)"
            );
            return Ok(());
        }
        self.set_phase(Phase::Seeding);
        loop {
            match migrate::seed_users(&self.db, &self.hasher).await {
                Ok(inserted) => {
                    if inserted.is_empty() {
                        tracing::info!("demo users already present");
                    } else {
                        tracing::info!(users = ?inserted, "seeded demo users");
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "seeding demo users failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        self.set_phase(Phase::Ready);
        tracing::info!("start-up complete");
        Ok(())
    }

    /// Seeding is off, but a demo run may have left its users (known
    /// passwords, operators) in this database: say so, once, loudly.
    async fn warn_about_leftover_demo_users(&self) {
        match migrate::demo_users_present(&self.db).await {
            Ok(names) if !names.is_empty() => tracing::warn!(
                users = ?names,
                "demo users with publicly known passwords exist in this database (from a run with BACKEND_SEED_DEMO_USERS=true); delete them unless this is a demo"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot check for leftover demo users"),
        }
    }

    /// The migrations are done (or will not run here): give the schema
    /// owner's credentials back, so that code running in this container
    /// later cannot use them, in the background (readiness does not wait).
    /// A sidecar that cannot release them (an older one, a secret not marked
    /// `releasable`) keeps them fresh for the pod's life: said loudly.
    fn release_migrator(&self) {
        let sidecar = self.sidecar.clone();
        actix_web::rt::spawn(async move {
            let mut delay = Duration::from_secs(1);
            let give_up = Instant::now() + RELEASE_PATIENCE;
            loop {
                match sidecar.release(MIGRATOR_SECRET).await {
                    Ok(()) => {
                        tracing::info!("released the migrator credentials (the sidecar revokes them and issues them no more in this pod)");
                        return;
                    }
                    Err(e) if e.is_transient() && Instant::now() + delay < give_up => {
                        tracing::debug!(error = %e, retry_in_s = delay.as_secs(), "cannot release the migrator credentials yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(10));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "could not release the migrator credentials: the sidecar keeps them fresh, so this container can act as the schema owner (a sidecar without POST /release answers 404 `not found`: upgrade it; one whose db-migrator lacks `releasable = true` answers 409: see sidecar/README.md, \"Releasable secrets\")");
                        return;
                    }
                }
            }
        });
    }

    /// Whether the sidecar left `db-migrator.released`: the migrator
    /// credentials will not come again in this pod.
    fn migrator_released(&self) -> bool {
        self.config
            .secrets_dir
            .join(MIGRATOR_RELEASED_FILE)
            .symlink_metadata()
            .is_ok()
    }

    async fn run_migrations(&self) -> Result<(), StartupError> {
        let wait = self.config.migrator_wait;
        let deadline = Instant::now() + wait;
        self.set_phase(Phase::WaitingForMigrator);
        loop {
            match DbCredentials::load(&self.config.secrets_dir, MIGRATOR_FILE) {
                Ok(creds) => {
                    self.set_phase(Phase::Migrating);
                    match migrate::migrate(&creds).await {
                        Ok(r) => {
                            tracing::info!(applied = ?r.applied, already = ?r.already, user = %creds.username, "schema migrations done (as app_owner)");
                            self.release_migrator();
                            return Ok(());
                        }
                        Err(e @ MigrateError::Changed { .. }) => return Err(e.into()),
                        Err(e) if Instant::now() >= deadline => return Err(e.into()),
                        Err(e) => {
                            tracing::warn!(error = %e, "migration attempt failed; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    }
                }
                Err(FileError::Missing { .. }) if self.migrator_released() => {
                    tracing::info!("the migrator credentials were released by an earlier start in this pod (db-migrator.released): starting without running migrations (/readyz checks the schema version)");
                    return Ok(());
                }
                Err(FileError::Missing { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(FileError::Missing { .. }) => {
                    tracing::warn!(
                        wait = %humantime::format_duration(wait),
                        "db-migrator.json did not appear: starting without running migrations (the schema must already be in place; /readyz checks its version)"
                    );
                    // Too late for this start: if they come now, they would
                    // only stay readable. Released all the same.
                    self.release_migrator();
                    return Ok(());
                }
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "db-migrator.json unusable; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
}
