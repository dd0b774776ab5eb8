//! `zt-sidecar run [--config FILE]` | `zt-sidecar check [--config FILE]` |
//! `zt-sidecar probe [--config FILE]`; without `--config` the TOML is read
//! from the environment variable `ZT_CONFIG`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use zt_contracts::ProcessEnv;
use zt_sidecar::config::{Config, ConfigError, ConfigOrigin, LogFormat};

/// EX_USAGE: the configuration is invalid.
const EXIT_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "zt-sidecar",
    version,
    about = "Zero-trust sidecar: SPIFFE identity, OpenBao secrets, SPIFFE mTLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar.
    Run {
        /// TOML configuration file (default: the TOML text in $ZT_CONFIG).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print the effective config (env overrides and defaults applied).
    Check {
        /// TOML configuration file (default: the TOML text in $ZT_CONFIG).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Exit 0 if the running sidecar's admin endpoint answers 200 (for exec
    /// probes, so the admin listener can stay on loopback).
    Probe {
        /// The sidecar's TOML configuration (its `admin.listen` is probed;
        /// default: the TOML text in $ZT_CONFIG).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Admin path to probe.
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (file, check_only) = match cli.command {
        Command::Run { config } => (config, false),
        Command::Check { config } => (config, true),
        Command::Probe { config, path } => return probe(config, &path),
    };
    let (source, config) = match load(file) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    if check_only {
        println!(
            "# effective configuration ({source}; valid)\n{}",
            config.to_toml()
        );
        return ExitCode::SUCCESS;
    }
    init_tracing(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("zt-sidecar: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        tokio::spawn(shutdown_on_signal(cancel.clone()));
        match zt_sidecar::run::run(config, cancel).await {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = format!("{e:#}"), "zt-sidecar failed");
                eprintln!("zt-sidecar: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `GET <path>` on the admin listener (see [`zt_probe`]).
fn probe(file: Option<PathBuf>, path: &str) -> ExitCode {
    match load(file) {
        Ok((_, c)) => zt_probe::exit_code(c.admin.listen, path),
        Err(code) => code,
    }
}

/// The validated configuration from `--config FILE` or `ZT_CONFIG`; on
/// error, prints `invalid configuration: …` and returns exit code 64.
fn load(file: Option<PathBuf>) -> Result<(ConfigOrigin, Config), ExitCode> {
    let fail = |e: ConfigError, source: Option<&ConfigOrigin>| {
        match source {
            Some(source) => eprintln!("invalid configuration: {e}\n  ({source})"),
            None => eprintln!("invalid configuration: {e}"),
        }
        ExitCode::from(EXIT_CONFIG)
    };
    let source = ConfigOrigin::choose(file, &ProcessEnv).map_err(|e| fail(e, None))?;
    match Config::load_from(&source, &ProcessEnv) {
        Ok(config) => Ok((source, config)),
        Err(e) => Err(fail(e, Some(&source))),
    }
}

fn init_tracing(config: &Config) {
    let filter = std::env::var("ZT_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&config.log.level));
    // Colours only on a terminal without NO_COLOR: log files, `kubectl logs`
    // and collectors get plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(zt_contracts::colours(
            &ProcessEnv,
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ))
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

/// SIGTERM or SIGINT starts a graceful shutdown; a second one exits at once.
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
    tracing::info!("signal received: revoking and stopping (send again to exit immediately)");
    cancel.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    std::process::exit(1);
}
