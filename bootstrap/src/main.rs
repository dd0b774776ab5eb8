//! `zt-bootstrap` — the OpenBao bootstrap steps the Kubernetes Job runs
//! (deploy/bootstrap/bootstrap.sh), against any OpenBao:
//!
//! ```text
//! zt-bootstrap openbao-state     --addr URL    (prints uninitialised | sealed | unsealed)
//! zt-bootstrap init-openbao      --addr URL --keys-out FILE
//! zt-bootstrap unseal-openbao    --addr URL --keys FILE
//! zt-bootstrap configure-openbao --addr URL --token-file FILE --policies DIR \
//!              --jwks-url URL --issuer URL --pg-host HOST --pg-port PORT \
//!              --pg-admin-password-file FILE [--no-rotate-root]
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use zt_bootstrap::openbao::{self, Bao, InitKeys};
use zt_bootstrap::setup::{Environment, OpenBaoSetup};

/// How long unseal-openbao waits for OpenBao to become the active node.
const ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "zt-bootstrap",
    version,
    about = "Initialise, unseal and configure OpenBao from policies/openbao"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("zt-bootstrap: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
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
            wait_until(ACTIVE_TIMEOUT, || openbao::active(&addr))?;
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
fn read_token(path: &Path) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    match serde_json::from_str::<InitKeys>(&text) {
        Ok(keys) => Ok(keys.root_token),
        Err(_) => Ok(text.trim().to_string()),
    }
}

/// Polls `check` every 100 ms until it is `Ok` or `limit` has passed.
fn wait_until(
    limit: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> anyhow::Result<()> {
    let step = Duration::from_millis(100);
    let mut last = String::new();
    for _ in 0..limit.as_millis() / step.as_millis() {
        match check() {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(step);
    }
    anyhow::bail!("timed out: {last}")
}
