//! `zt-sidecar run --config FILE` | `zt-sidecar check --config FILE`

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use zt_sidecar::config::{Config, LogFormat, ProcessEnv};

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
        /// TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the configuration and print the effective config (env overrides and defaults applied).
    Check {
        /// TOML configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Exit 0 if the running sidecar's admin endpoint answers 200 (for exec
    /// probes, so the admin listener can stay on loopback).
    Probe {
        /// The sidecar's TOML configuration (its `admin.listen` is probed).
        #[arg(long, short)]
        config: PathBuf,
        /// Admin path to probe.
        #[arg(long, default_value = "/readyz")]
        path: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (path, check_only) = match &cli.command {
        Command::Run { config } => (config, false),
        Command::Check { config } => (config, true),
        Command::Probe { config, path } => return probe(config, path),
    };
    let config = match Config::load(path, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}\n  (file: {})", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if check_only {
        println!(
            "# effective configuration of {} (valid)\n{}",
            path.display(),
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

/// `GET <path>` on the admin listener with a 2 s deadline.
fn probe(config: &std::path::Path, path: &str) -> ExitCode {
    use std::io::{Read, Write};
    let config = match Config::load(config, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut addr = config.admin.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = std::time::Duration::from_secs(2);
    let result = (|| -> std::io::Result<String> {
        let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })();
    match result {
        Ok(resp) if resp.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(resp) => {
            eprintln!("{path}: {}", resp.lines().next().unwrap_or("no answer"));
            if let Some((_, body)) = resp.split_once("\r\n\r\n") {
                eprintln!("{body}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("cannot reach the admin listener at {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(config: &Config) {
    let filter = std::env::var("ZT_LOG")
        .ok()
        .and_then(|v| tracing_subscriber::EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
