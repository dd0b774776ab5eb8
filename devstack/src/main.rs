//! `devstack` — the command-line face of the devstack library: `make up`,
//! `down`, `status`, `demo` and `lab`. The OpenBao bootstrap steps the
//! Kubernetes Job runs are zt-bootstrap's (bootstrap/).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod up;

#[derive(Parser)]
#[command(
    name = "devstack",
    version,
    about = "Real SPIRE + OpenBao + PostgreSQL on one machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform on this machine until Ctrl-C or `devstack down` (make up).
    Up {
        /// State folder (kept between runs: users, GitHub tokens, OpenBao, SPIRE).
        #[arg(long, default_value = ".zt")]
        state: PathBuf,
        /// Use this GitHub API instead of the local stand-in (e.g. https://api.github.com).
        #[arg(long, env = "GITHUB_API_URL")]
        github_url: Option<String>,
    },
    /// Stop a platform started with `up` (make down).
    Down {
        /// State folder of the running platform.
        #[arg(long, default_value = ".zt")]
        state: PathBuf,
    },
    /// Guided walkthrough of the seed's demo against the running platform (make demo);
    /// starts the platform in the background first if it is not up.
    Demo {
        /// State folder of the platform.
        #[arg(long, default_value = ".zt")]
        state: PathBuf,
        /// Do not wait for Enter between steps (for scripts and CI).
        #[arg(long)]
        no_pause: bool,
    },
    /// Show each component's health (make status).
    Status {
        /// State folder of the running platform.
        #[arg(long, default_value = ".zt")]
        state: PathBuf,
    },
    /// Run the lab cluster (a real one-node Kubernetes: make lab) until
    /// Ctrl-C; needs root and make tools-kube.
    Lab {
        /// Also install the platform into it (make install, lab profile).
        #[arg(long)]
        install: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(zt_contracts::colours(
            &zt_contracts::ProcessEnv,
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ))
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("devstack: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up { state, github_url } => up::up(&state, github_url),
        Command::Down { state } => up::down(&state),
        Command::Status { state } => up::status(&state),
        Command::Demo { state, no_pause } => {
            up::ensure_running(&state)?;
            demo::demo(&state, no_pause)
        }
        #[cfg(not(feature = "kube"))]
        Command::Lab { .. } => anyhow::bail!(
            "this devstack was built without its `kube` feature (make up and make demo build it so); \
             `make lab` builds it with"
        ),
        #[cfg(feature = "kube")]
        Command::Lab { install } => {
            let lab = devstack::kube::lab::Lab::start()?;
            if install {
                eprintln!("{}", lab.install_platform()?);
            }
            eprintln!(
                "lab cluster up: export KUBECONFIG={}\n(node {}, logs in {}/logs); Ctrl-C stops it and removes everything",
                lab.control_plane().kubeconfig().display(),
                devstack::kube::lab::NODE_IP,
                lab.dir().display()
            );
            up::wait_for_signal()?;
            drop(lab);
            Ok(())
        }
    }
}
