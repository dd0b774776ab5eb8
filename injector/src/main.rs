//! `zt-injector run --config FILE` | `zt-injector check --config FILE`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use zt_contracts::ProcessEnv;
use zt_injector::settings::Settings;

/// EX_USAGE: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;
/// The injector's own log filter, over `log.level`.
const ENV_LOG: &str = "ZT_LOG";

#[derive(Parser)]
#[command(
    name = "zt-injector",
    version,
    about = "Mutating admission webhook: attaches zt-sidecar to pods by annotation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the webhook.
    Run {
        /// TOML settings file (injector/README.md).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the settings and exit.
    Check {
        /// TOML settings file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let (path, check_only) = match Cli::parse().command {
        Command::Run { config } => (config, false),
        Command::Check { config } => (config, true),
    };
    let settings = match Settings::load(&path, &ProcessEnv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("invalid configuration: {e}\n  (file: {})", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if check_only {
        println!("{}: valid", path.display());
        return ExitCode::SUCCESS;
    }
    init_tracing(&settings);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zt-injector: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        tokio::spawn(shutdown_on_signal(cancel.clone()));
        match zt_injector::run::run(settings, cancel).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "zt-injector failed");
                eprintln!("zt-injector: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

fn init_tracing(settings: &Settings) {
    let filter = std::env::var(ENV_LOG)
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&settings.log.level));
    // Colours only on a terminal: log files and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(zt_contracts::colours(
            &ProcessEnv,
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ))
        .with_writer(std::io::stderr);
    if settings.log.json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// SIGTERM or SIGINT: stop accepting, finish the requests in flight, exit;
/// a second signal exits at once.
async fn shutdown_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("signal received: draining (send again to exit immediately)");
    cancel.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    std::process::exit(1);
}
