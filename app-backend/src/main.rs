//! `app-backend`: configuration from the environment (see the README's
//! reference), then [`app_backend::run::run`]. A bad configuration prints
//! `invalid configuration: <VAR>: <what is wrong>` and exits 64.
//!
//! `app-backend probe [/readyz|/healthz]` asks the running backend (at
//! `BACKEND_LISTEN`, which stays on loopback) and exits 0 on 200: the
//! Kubernetes exec probe.

use std::process::ExitCode;

use app_backend::config::{Config, LogFormat, ProcessEnv};
use tracing_subscriber::EnvFilter;

/// EX_USAGE: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;
/// Log filter directive always added (see `main`).
const TOKIO_POSTGRES_CAP: &str = "tokio_postgres=info";

/// Paths `app-backend probe` accepts.
const PROBE_PATHS: [&str; 2] = ["/readyz", "/healthz"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let probe_path = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => None,
        ["probe"] => Some(PROBE_PATHS[0]),
        ["probe", path] if PROBE_PATHS.contains(&path) => Some(path),
        _ => {
            eprintln!(
                "usage: app-backend (configured by environment variables, see the README)\n       app-backend probe [{}]",
                PROBE_PATHS.join("|")
            );
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let config = match Config::from_source(&ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(path) = probe_path {
        return zt_probe::exit_code(config.listen, path);
    }
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info"))
        // tokio-postgres prints query parameters (password hashes) at debug:
        // capped at info whatever RUST_LOG says.
        .add_directive(
            TOKIO_POSTGRES_CAP
                .parse()
                .expect("constant directive parses"),
        );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .with_ansi(zt_contracts::colours(
            &ProcessEnv,
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
        ));
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    match actix_web::rt::System::new().block_on(app_backend::run::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "app-backend failed");
            eprintln!("app-backend: {e}");
            ExitCode::FAILURE
        }
    }
}
