//! Wires the state, the background tasks and the HTTP server, and runs
//! until SIGTERM/SIGINT (actix drains in-flight requests for up to
//! [`SHUTDOWN_GRACE`]) or a fatal start-up error.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, App, HttpServer};

use crate::config::{Config, LISTEN};
use crate::secrets::watch::watch_dir;
use crate::state::{AppState, StartupError, StateError};

/// How long in-flight requests may take to finish at shutdown.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the backend stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The state could not be built.
    #[error(transparent)]
    State(#[from] StateError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr} ({LISTEN}): {source}")]
    Bind {
        /// Address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// Start-up (migrations) failed.
    #[error("start-up failed: {0}")]
    Startup(#[from] StartupError),
    /// The server stopped with an I/O error.
    #[error("HTTP server: {0}")]
    Server(std::io::Error),
}

/// Runs the backend. Must be called inside an actix system
/// (`actix_web::rt::System::new().block_on(run(config))`).
pub async fn run(config: Config) -> Result<(), RunError> {
    let workers = match config.workers {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    };
    tracing::info!(
        listen = %config.listen,
        secrets_dir = %config.secrets_dir.display(),
        openbao_proxy = %config.openbao_proxy,
        sidecar_admin = %config.sidecar_admin_url,
        github_api = %config.github_api_url,
        workers,
        "app-backend starting"
    );
    let state = web::Data::new(AppState::new(config.clone())?);

    // Secrets: inotify + polling, for the life of the process.
    let s = state.clone();
    let watcher = actix_web::rt::spawn(watch_dir(
        config.secrets_dir.clone(),
        config.secrets_poll_interval,
        move || {
            let s = s.clone();
            async move { s.reconcile_secrets().await }
        },
    ));

    let data = state.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .wrap(from_fn(crate::require_our_host))
            .wrap(from_fn(crate::observe))
            .wrap(
                DefaultHeaders::new()
                    .add(("Cache-Control", "no-store"))
                    .add(("X-Content-Type-Options", "nosniff")),
            )
            .configure(crate::configure)
    })
    .workers(workers)
    .shutdown_timeout(SHUTDOWN_GRACE.as_secs())
    .bind(config.listen)
    .map_err(|source| RunError::Bind {
        addr: config.listen,
        source,
    })?
    .run();

    // Start-up runs beside the server: /healthz answers at once, /readyz when done.
    let fatal: Arc<Mutex<Option<StartupError>>> = Arc::default();
    let (f, s, handle) = (fatal.clone(), state.clone(), server.handle());
    let startup = actix_web::rt::spawn(async move {
        if let Err(e) = s.startup().await {
            tracing::error!(error = %e, "start-up failed; stopping");
            *f.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
            handle.stop(false).await;
        }
    });

    let result = server.await;
    watcher.abort();
    startup.abort();
    if let Some(e) = fatal.lock().unwrap_or_else(PoisonError::into_inner).take() {
        return Err(e.into());
    }
    result.map_err(RunError::Server)?;
    tracing::info!("app-backend stopped");
    Ok(())
}
