//! # github-standin
//!
//! A small local stand-in for the parts of GitHub's REST API the platform
//! uses, for tests and offline demos. GitHub's API is the one external
//! service that cannot be reached from the test machines; everything else
//! (SPIRE, OpenBao, PostgreSQL) always runs for real.
//!
//! ```text
//!   GET /user                 the token's user              (auth required)
//!   GET /user/repos           ?page ?per_page ?sort ?direction, Link header
//!   GET /rate_limit           always 200 (also the liveness probe)
//!   GET|PUT /_standin/mode    switch failure modes from another process
//! ```
//!
//! Authentication is `Authorization: token <tok>` or `Authorization: Bearer
//! <tok>`; tokens map to seeded users ([`DEMO_TOKEN`], [`SECOND_TOKEN`],
//! [`EMPTY_TOKEN`], or [`GithubStandIn::add_user`]). Unknown tokens get
//! GitHub's `401 Bad credentials`.
//!
//! Tests switch the stand-in into a failure [`Mode`]: `401` for every token,
//! `403` rate-limited (`x-ratelimit-remaining: 0`), `500`, or slow answers.
//!
//! ```no_run
//! use github_standin::{GithubStandIn, Mode, DEMO_TOKEN};
//! let gh = GithubStandIn::start().unwrap();
//! let base_url = gh.url(); // give this to the code under test
//! gh.set_mode(Mode::RateLimited);
//! # let _ = (base_url, DEMO_TOKEN);
//! ```
//!
//! Tokens are never logged or echoed back; the request log
//! ([`GithubStandIn::requests`]) records which seeded user a token matched,
//! not the token.
#![forbid(unsafe_code)]

mod data;
mod routes;

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

pub use data::{
    default_users, SeedRepo, SeedUser, DEMO_REPOS, DEMO_TOKEN, EMPTY_TOKEN, SECOND_REPOS,
    SECOND_TOKEN,
};

/// How the stand-in answers `/user` and `/user/repos`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Like GitHub: seeded data for known tokens, 401 for unknown ones.
    #[default]
    Normal,
    /// `401 Bad credentials` for every token (a revoked token).
    Unauthorized,
    /// `403` with `x-ratelimit-remaining: 0` (GitHub's primary rate limit).
    RateLimited,
    /// `500 Server Error`.
    ServerError,
    /// Normal answers, each after this delay (client timeouts).
    Slow(Duration),
}

impl Mode {
    /// The name used by `/_standin/mode` and `--mode`.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Normal => "normal",
            Mode::Unauthorized => "unauthorized",
            Mode::RateLimited => "rate_limited",
            Mode::ServerError => "server_error",
            Mode::Slow(_) => "slow",
        }
    }

    /// Parses a mode name; `slow` takes `delay` (default 30 s).
    pub fn parse(name: &str, delay: Option<Duration>) -> Result<Self, UnknownMode> {
        Ok(match name {
            "normal" => Mode::Normal,
            "unauthorized" => Mode::Unauthorized,
            "rate_limited" => Mode::RateLimited,
            "server_error" => Mode::ServerError,
            "slow" => Mode::Slow(delay.unwrap_or(Duration::from_secs(30))),
            other => return Err(UnknownMode(other.chars().take(40).collect())),
        })
    }
}

/// A mode name that is not one of `normal`, `unauthorized`, `rate_limited`,
/// `server_error`, `slow`.
#[derive(Debug, thiserror::Error)]
#[error("unknown mode {0:?}: expected normal, unauthorized, rate_limited, server_error or slow")]
pub struct UnknownMode(pub String);

/// How a request authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: token <tok>`
    Token,
    /// `Authorization: Bearer <tok>`
    Bearer,
    /// No (usable) `Authorization` header.
    None,
}

/// One request the stand-in answered (for assertions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// HTTP method.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// How the client authenticated.
    pub auth: AuthScheme,
    /// The login of the seeded user the token matched, if any.
    pub login: Option<String>,
    /// The status answered.
    pub status: u16,
}

/// State shared by the HTTP handlers and the controlling handle.
#[derive(Debug, Default)]
pub struct StandInState {
    mode: Mutex<Mode>,
    users: RwLock<HashMap<String, SeedUser>>,
    requests: Mutex<Vec<RecordedRequest>>,
}

impl StandInState {
    /// State with the default seeded users ([`default_users`]) in [`Mode::Normal`].
    pub fn with_default_users() -> Self {
        Self {
            users: RwLock::new(default_users()),
            ..Self::default()
        }
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Switches the mode for every following request.
    pub fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(PoisonError::into_inner) = mode;
    }

    /// Adds (or replaces) the user behind `token`.
    pub fn add_user(&self, token: &str, user: SeedUser) {
        self.users
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(token.to_string(), user);
    }

    /// The user behind `token`.
    pub fn user(&self, token: &str) -> Option<SeedUser> {
        self.users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    /// Every request answered so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn record(&self, r: RecordedRequest) {
        let mut v = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded: a long demo must not grow without limit.
        if v.len() >= 10_000 {
            v.drain(..5_000);
        }
        v.push(r);
    }
}

/// Serves the stand-in on `listener` with `state` (the binary's entry point;
/// tests use [`GithubStandIn::start`]). Must run inside an actix system.
pub fn serve(
    listener: TcpListener,
    state: Arc<StandInState>,
) -> std::io::Result<actix_web::dev::Server> {
    let data = actix_web::web::Data::from(state);
    Ok(actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .configure(routes::configure)
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run())
}

/// A running stand-in on `127.0.0.1` (own thread); stops when dropped.
#[derive(Debug)]
pub struct GithubStandIn {
    url: String,
    addr: SocketAddr,
    state: Arc<StandInState>,
    server: actix_web::dev::ServerHandle,
    thread: Option<JoinHandle<()>>,
}

impl GithubStandIn {
    /// Starts on a free loopback port with the default seeded users.
    pub fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?)
    }

    /// Starts on `addr` with the default seeded users.
    pub fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(StandInState::with_default_users());
        let (tx, rx) = std::sync::mpsc::channel();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("github-standin".into())
            .spawn(move || {
                let sys = actix_web::rt::System::new();
                sys.block_on(async move {
                    match serve(listener, st) {
                        Ok(server) => {
                            let _ = tx.send(Ok(server.handle()));
                            let _ = server.await;
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                });
            })?;
        let server = rx.recv().map_err(std::io::Error::other)??;
        Ok(Self {
            url: format!("http://{addr}"),
            addr,
            state,
            server,
            thread: Some(thread),
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Switches the failure mode.
    pub fn set_mode(&self, mode: Mode) {
        self.state.set_mode(mode);
    }

    /// The current mode.
    pub fn mode(&self) -> Mode {
        self.state.mode()
    }

    /// Adds (or replaces) the user behind `token`.
    pub fn add_user(&self, token: &str, user: SeedUser) {
        self.state.add_user(token, user);
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.state.clear_requests();
    }

    /// The shared state (for embedding the stand-in elsewhere).
    pub fn state(&self) -> &Arc<StandInState> {
        &self.state
    }
}

impl Drop for GithubStandIn {
    fn drop(&mut self) {
        // `stop` sends the command at once; the returned future only waits.
        drop(self.server.stop(false));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
