//! `devstack` — the command-line face of the devstack library.
//!
//! Bootstrap subcommands work against any OpenBao (the Kubernetes bootstrap
//! Job runs them), so OpenBao is configured by one piece of code everywhere:
//!
//! ```text
//! devstack openbao-state     --addr URL    (prints uninitialised | sealed | unsealed)
//! devstack init-openbao      --addr URL --keys-out FILE
//! devstack unseal-openbao    --addr URL --keys FILE
//! devstack configure-openbao --addr URL --token-file FILE --policies DIR \
//!          --jwks-url URL --issuer URL --pg-host HOST --pg-port PORT \
//!          --pg-admin-password-file FILE [--no-rotate-root]
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use devstack::openbao::{self, Bao, InitKeys};
use devstack::setup::{Environment, OpenBaoSetup};

mod demo;
mod up;

#[derive(Parser)]
#[command(
    name = "devstack",
    version,
    about = "Real SPIRE + OpenBao + PostgreSQL on one machine, and OpenBao bootstrap"
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
    /// Print OpenBao's state: `uninitialised`, `sealed` or `unsealed`
    /// (exit 1 if it does not answer).
    OpenbaoState {
        /// OpenBao address, e.g. http://openbao.openbao.svc:8200
        #[arg(long)]
        addr: String,
    },
    /// Initialise OpenBao (one Shamir share) if it is not yet; write the keys
    /// JSON (`unseal_key`, `root_token`) to --keys-out with mode 0600.
    /// Does nothing (exit 0) when already initialised.
    InitOpenbao {
        /// OpenBao address, e.g. http://openbao.openbao.svc:8200
        #[arg(long)]
        addr: String,
        /// Where to write the keys.
        #[arg(long)]
        keys_out: PathBuf,
    },
    /// Unseal OpenBao with the key from a keys JSON file and wait until active.
    UnsealOpenbao {
        /// OpenBao address.
        #[arg(long)]
        addr: String,
        /// Keys JSON written by init-openbao.
        #[arg(long)]
        keys: PathBuf,
    },
    /// Apply policies/openbao (policies, jwt auth, KV, database engine).
    ConfigureOpenbao {
        /// OpenBao address.
        #[arg(long)]
        addr: String,
        /// File holding a token allowed to configure OpenBao (root or keys JSON).
        #[arg(long)]
        token_file: PathBuf,
        /// The policies/openbao folder.
        #[arg(long)]
        policies: PathBuf,
        /// SPIRE OIDC discovery provider JWKS URL.
        #[arg(long)]
        jwks_url: String,
        /// `iss` of JWT-SVIDs (SPIRE server jwt_issuer).
        #[arg(long)]
        issuer: String,
        /// PostgreSQL host as OpenBao reaches it.
        #[arg(long)]
        pg_host: String,
        /// PostgreSQL port.
        #[arg(long, default_value_t = 5432)]
        pg_port: u16,
        /// File holding the openbao_admin password.
        #[arg(long)]
        pg_admin_password_file: PathBuf,
        /// Keep the admin password (default: rotate it so only OpenBao knows it).
        #[arg(long)]
        no_rotate_root: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
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
        Command::OpenbaoState { addr } => {
            println!("{}", openbao::state(&addr)?);
            Ok(())
        }
        Command::InitOpenbao { addr, keys_out } => {
            if openbao::is_initialised(&addr)? {
                eprintln!("OpenBao at {addr} is already initialised; nothing to do");
                return Ok(());
            }
            let keys = openbao::initialise(&addr)?;
            openbao::write_private(&keys_out, &serde_json::to_vec_pretty(&keys)?)?;
            eprintln!(
                "initialised OpenBao at {addr}; keys written to {}",
                keys_out.display()
            );
            Ok(())
        }
        Command::UnsealOpenbao { addr, keys } => {
            let keys: InitKeys = serde_json::from_slice(&std::fs::read(&keys)?)
                .with_context(|| format!("{} is not a keys JSON", keys.display()))?;
            openbao::unseal(&addr, &keys.unseal_key)?;
            wait(|| openbao::active(&addr))?;
            eprintln!("OpenBao at {addr} is unsealed and active");
            Ok(())
        }
        Command::ConfigureOpenbao {
            addr,
            token_file,
            policies,
            jwks_url,
            issuer,
            pg_host,
            pg_port,
            pg_admin_password_file,
            no_rotate_root,
        } => {
            let token = read_token(&token_file)?;
            let password = std::fs::read_to_string(&pg_admin_password_file)
                .with_context(|| format!("cannot read {}", pg_admin_password_file.display()))?;
            let setup = OpenBaoSetup::load(&policies)?;
            let env = Environment {
                jwks_url,
                bound_issuer: issuer,
                pg_host,
                pg_port,
                pg_admin_password: password.trim().to_string(),
                rotate_root: !no_rotate_root,
            };
            setup.apply(&Bao::new(&addr, Some(token)), &env)?;
            eprintln!("OpenBao at {addr} configured from {}", policies.display());
            Ok(())
        }
    }
}

/// A token file is either a bare token or the keys JSON from init-openbao.
fn read_token(path: &PathBuf) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match serde_json::from_str::<InitKeys>(&text) {
        Ok(keys) => Ok(keys.root_token),
        Err(_) => Ok(text.trim().to_string()),
    }
}

fn wait(mut check: impl FnMut() -> Result<(), String>) -> anyhow::Result<()> {
    let mut last = String::new();
    for _ in 0..300 {
        match check() {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    anyhow::bail!("timed out: {last}")
}
