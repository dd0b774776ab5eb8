//! `github-standin --listen 127.0.0.1:18090 [--mode normal]`: the GitHub API
//! stand-in as a process (`make up` without `GITHUB_TOKEN`, browser tests).
//! Switch modes at run time with `PUT /_standin/mode {"mode": "…"}`.

use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use github_standin::{Mode, StandInState, DEMO_TOKEN, EMPTY_TOKEN, SECOND_TOKEN};

/// EX_USAGE.
const EXIT_USAGE: u8 = 64;

#[derive(Parser)]
#[command(
    name = "github-standin",
    version,
    about = "Local stand-in for GitHub's REST API (GET /user, GET /user/repos) for tests and offline demos"
)]
struct Cli {
    /// Address to listen on (loopback recommended).
    #[arg(long, default_value = "127.0.0.1:18090")]
    listen: String,
    /// Initial mode: normal, unauthorized, rate_limited, server_error, slow.
    #[arg(long, default_value = "normal")]
    mode: String,
    /// Delay of the `slow` mode, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    delay_ms: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let addr: SocketAddr = match cli.listen.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "invalid configuration: --listen: {e} (expected ip:port, e.g. 127.0.0.1:18090)"
            );
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mode = match Mode::parse(&cli.mode, Some(Duration::from_millis(cli.delay_ms))) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("invalid configuration: --mode: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(addr, mode) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("github-standin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(addr: SocketAddr, mode: Mode) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
    let state = Arc::new(StandInState::with_default_users());
    state.set_mode(mode);
    // Token prefixes only: enough to tell them apart, not the tokens.
    println!(
        "github-standin listening on http://{} (mode {}); seeded tokens: {}…, {}…, {}…",
        listener.local_addr()?,
        mode.name(),
        &DEMO_TOKEN[..16],
        &SECOND_TOKEN[..18],
        &EMPTY_TOKEN[..17],
    );
    actix_web::rt::System::new().block_on(async move {
        let server = github_standin::serve(listener, state)?;
        let handle = server.handle();
        let stop = actix_web::rt::spawn(async move {
            let _ = actix_web::rt::signal::ctrl_c().await;
            handle.stop(true).await;
        });
        #[cfg(unix)]
        {
            let handle = server.handle();
            actix_web::rt::spawn(async move {
                if let Ok(mut term) = actix_web::rt::signal::unix::signal(
                    actix_web::rt::signal::unix::SignalKind::terminate(),
                ) {
                    term.recv().await;
                    handle.stop(true).await;
                }
            });
        }
        server.await?;
        stop.abort();
        Ok(())
    })
}
