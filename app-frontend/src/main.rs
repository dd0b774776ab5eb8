//! `app-frontend`: reads its configuration from the environment (see the
//! crate README), serves until SIGTERM/SIGINT, then drains.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use app_frontend::FrontendConfig;

/// EX_USAGE: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only on a terminal: log files stay plain text.
        .with_ansi(zt_contracts::colours(
            &zt_contracts::ProcessEnv,
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ))
        .init();
    let config = match FrontendConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match actix_web::rt::System::new().block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("app-frontend: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: FrontendConfig) -> anyhow::Result<()> {
    let listen = config.listen;
    let listener = std::net::TcpListener::bind(listen).with_context(|| {
        format!("cannot listen on {listen} (set FRONTEND_LISTEN to a free address)")
    })?;
    tracing::info!(
        listen = %listen,
        backend = %config.backend_url,
        sidecar_admin = %config.sidecar_admin_url,
        "app-frontend serving"
    );
    let state = app_frontend::state(config).context("cannot set up the backend client")?;
    app_frontend::server(state, listener)
        .context("cannot start the HTTP server")?
        .await
        .context("the HTTP server failed")?;
    tracing::info!("app-frontend stopped");
    Ok(())
}
