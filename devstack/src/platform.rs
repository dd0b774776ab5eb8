//! The whole platform on one machine: the infrastructure ([`Devstack`]) plus
//! the backend with its zt-sidecar, the frontend with its zt-sidecar and
//! (unless a real GitHub is used) the GitHub stand-in.
//!
//! ```text
//! browser ─▶ app-frontend :3000 ─▶ zt-sidecar(frontend) outbound :15001
//!                                        │ SPIFFE mTLS, server ID pinned
//!                                        ▼
//!            zt-sidecar(backend) inbound :8443 ─▶ app-backend :8000
//!               │ secrets/*.json, openbao.sock        │
//!               ▼                                     ▼
//!     SPIRE agent, OpenBao                  PostgreSQL, GitHub (stand-in)
//! ```
//!
//! Used by `make up` (fixed ports, persistent state under `.zt/`) and by
//! end-to-end tests (free ports, temp dir).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::Supervised;
use crate::sidecar::{
    backend_config, install_copy, workspace_binary, BackendLayout, Sidecar, SIDECAR_BIN_ENV,
};
use crate::spire::{BACKEND_ID, FRONTEND_ID};
use crate::stack::{free_port, Devstack, Options, Ports};

/// Env var naming the backend binary (default: next to the running binary).
pub const BACKEND_BIN_ENV: &str = "ZT_BACKEND_BIN";
/// Env var naming the frontend binary.
pub const FRONTEND_BIN_ENV: &str = "ZT_FRONTEND_BIN";
/// Env var naming the GitHub stand-in binary.
pub const STANDIN_BIN_ENV: &str = "ZT_GITHUB_STANDIN_BIN";

/// Every port of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformPorts {
    /// Infrastructure.
    pub infra: Ports,
    /// Frontend (browser).
    pub frontend: u16,
    /// Frontend sidecar outbound listener (frontend → backend).
    pub frontend_outbound: u16,
    /// Frontend sidecar admin.
    pub frontend_admin: u16,
    /// Backend sidecar inbound mTLS listener.
    pub backend_inbound: u16,
    /// Backend sidecar admin.
    pub backend_admin: u16,
    /// Backend (plain HTTP, loopback).
    pub backend: u16,
    /// GitHub stand-in.
    pub github: u16,
}

impl PlatformPorts {
    /// The documented fixed ports of `make up` (docs/contracts.md, section 6).
    pub const FIXED: PlatformPorts = PlatformPorts {
        infra: Ports::FIXED,
        frontend: 3000,
        frontend_outbound: 15001,
        frontend_admin: 15100,
        backend_inbound: 8443,
        backend_admin: 15000,
        backend: 8000,
        github: 18090,
    };

    /// Free ports (tests).
    pub fn ephemeral() -> std::io::Result<Self> {
        Ok(Self {
            infra: Ports::ephemeral()?,
            frontend: free_port()?,
            frontend_outbound: free_port()?,
            frontend_admin: free_port()?,
            backend_inbound: free_port()?,
            backend_admin: free_port()?,
            backend: free_port()?,
            github: free_port()?,
        })
    }

    /// (port, what uses it) for every port.
    pub fn named(&self) -> Vec<(u16, &'static str)> {
        vec![
            (self.frontend, "frontend"),
            (self.frontend_outbound, "frontend sidecar (outbound mTLS)"),
            (self.frontend_admin, "frontend sidecar (admin)"),
            (self.backend_inbound, "backend sidecar (inbound mTLS)"),
            (self.backend_admin, "backend sidecar (admin)"),
            (self.backend, "backend"),
            (self.github, "GitHub stand-in"),
            (self.infra.postgres, "PostgreSQL"),
            (self.infra.spire_server, "SPIRE server"),
            (self.infra.oidc, "SPIRE OIDC discovery provider"),
            (self.infra.openbao, "OpenBao"),
            (self.infra.openbao_cluster, "OpenBao (cluster)"),
        ]
    }

    /// Fails with a one-line explanation and the fix if any port is taken
    /// (the stand-in's only when `github` is the stand-in).
    pub fn check_free(&self, github: &GithubApi) -> anyhow::Result<()> {
        for (port, what) in self.named() {
            if port == self.github && *github != GithubApi::StandIn {
                continue;
            }
            if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                bail!(
                    "port {port} ({what}) is already in use — is the platform already up? Run `make down`, \
                     or find the process with `ss -ltnp 'sport = :{port}'`"
                );
            }
        }
        Ok(())
    }
}

/// Where the backend gets GitHub's API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GithubApi {
    /// Start the local stand-in (tests, offline demos).
    StandIn,
    /// Use this base URL (e.g. `https://api.github.com`).
    Url(String),
}

/// How to start the platform.
#[derive(Debug, Clone)]
pub struct PlatformOptions {
    /// Infrastructure options (state dir, TTLs, …); ports come from `ports`.
    pub infra: Options,
    /// All ports.
    pub ports: PlatformPorts,
    /// GitHub API.
    pub github: GithubApi,
    /// The backend sidecar's `rotate_before` for database credentials.
    pub rotate_before: String,
    /// The backend sidecar's `revoke_grace`.
    pub revoke_grace: String,
}

impl PlatformOptions {
    /// Test defaults: temp dir, free ports, stand-in GitHub, seed TTLs.
    pub fn ephemeral() -> anyhow::Result<Self> {
        Ok(Self {
            infra: Options::default(),
            ports: PlatformPorts::ephemeral()?,
            github: GithubApi::StandIn,
            rotate_before: "10m".into(),
            revoke_grace: "30s".into(),
        })
    }
}

/// The running platform. Dropping it stops everything (apps first).
#[derive(Debug)]
pub struct Platform {
    /// The frontend (dropped first).
    pub frontend: Supervised,
    /// The frontend's sidecar.
    pub frontend_sidecar: Sidecar,
    /// The backend.
    pub backend: Supervised,
    /// The backend's sidecar.
    pub backend_sidecar: Sidecar,
    /// The GitHub stand-in, when used.
    pub github: Option<Supervised>,
    /// SPIRE, OpenBao, PostgreSQL.
    pub infra: Devstack,
    /// Ports in use.
    pub ports: PlatformPorts,
    /// The backend sidecar's folders.
    pub backend_layout: BackendLayout,
    /// GitHub API base URL the backend uses.
    pub github_url: String,
    /// The temp dir of an ephemeral platform (removed last).
    tmp: Option<tempfile::TempDir>,
}

/// `GET url` (no redirects, 3 s): `Ok("HTTP <code>")` for 2xx/3xx, else the
/// status and the start of the body, or the transport error.
pub fn http_check(url: &str) -> Result<String, String> {
    let mut resp = ureq::get(url)
        .config()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .call()
        .map_err(|e| format!("{url}: {e}"))?;
    let code = resp.status().as_u16();
    if (200..400).contains(&code) {
        Ok(format!("HTTP {code}"))
    } else {
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Err(format!(
            "{url}: HTTP {code} {}",
            body.chars().take(120).collect::<String>()
        ))
    }
}

fn http_ok(url: &str) -> Result<(), String> {
    http_check(url).map(|_| ())
}

impl Platform {
    /// Starts everything and waits until the frontend answers.
    pub fn start(mut opts: PlatformOptions) -> anyhow::Result<Self> {
        let p = opts.ports;
        opts.infra.ports = Some(p.infra);
        let mut tmp = None;
        let state = match &opts.infra.state_dir {
            Some(d) => d.clone(),
            None => {
                let t = tempfile::Builder::new().prefix("platform-").tempdir()?;
                let path = t.path().to_path_buf();
                tmp = Some(t);
                opts.infra.state_dir = Some(path.clone());
                path
            }
        };
        let run = state.join("run");
        // Each workload runs its own copy of zt-sidecar: the copy's path is its identity.
        let sidecar_bin = workspace_binary("zt-sidecar", SIDECAR_BIN_ENV)?;
        let backend_sc = install_copy(&sidecar_bin, &state, "backend")?;
        let frontend_sc = install_copy(&sidecar_bin, &state, "frontend")?;
        let backend_bin = workspace_binary("app-backend", BACKEND_BIN_ENV)?;
        let frontend_bin = workspace_binary("app-frontend", FRONTEND_BIN_ENV)?;
        opts.infra = opts
            .infra
            .register_binary(BACKEND_ID, &backend_sc)?
            .register_binary(FRONTEND_ID, &frontend_sc)?;
        let infra = Devstack::start(opts.infra.clone())?;

        let (github, github_url) = match &opts.github {
            GithubApi::Url(u) => (None, u.clone()),
            GithubApi::StandIn => {
                let bin = workspace_binary("github-standin", STANDIN_BIN_ENV)?;
                let mut cmd = Command::new(bin);
                cmd.arg("--listen").arg(format!("127.0.0.1:{}", p.github));
                std::fs::create_dir_all(&run)?;
                let mut proc =
                    Supervised::spawn("github-standin", cmd, &run.join("github-standin.log"))?;
                let url = format!("http://127.0.0.1:{}", p.github);
                let probe = format!("{url}/rate_limit");
                proc.wait_ready(Duration::from_secs(20), || {
                    match ureq::get(&probe)
                        .config()
                        .http_status_as_error(false)
                        .build()
                        .call()
                    {
                        Ok(_) => Ok(()),
                        Err(e) => Err(e.to_string()),
                    }
                })?;
                (Some(proc), url)
            }
        };

        // Backend sidecar: secrets, OpenBao proxy, inbound mTLS for the frontend.
        let bdir = run.join("backend");
        let layout = BackendLayout {
            secrets_dir: bdir.join("secrets"),
            proxy_socket: bdir.join("openbao.sock"),
            proxy_tcp: None,
            admin: SocketAddr::from(([127, 0, 0, 1], p.backend_admin)),
        };
        let inbound = format!(
            "\n[[mtls.inbound]]\nlisten = \"127.0.0.1:{}\"\nforward_to = \"127.0.0.1:{}\"\nallow = [\"{FRONTEND_ID}\"]\n",
            p.backend_inbound, p.backend
        );
        let cfg = backend_config(
            &infra,
            &layout,
            &opts.rotate_before,
            &opts.revoke_grace,
            &inbound,
        );
        // Each start is a new pod: a migrator released by the last run's
        // backend is issued again (a new binary may bring migrations).
        crate::sidecar::forget_releases(&layout.secrets_dir)?;
        let mut backend_sidecar =
            Sidecar::start("backend-sidecar", &backend_sc, &bdir, &cfg, layout.admin)?;
        backend_sidecar
            .wait_ready(Duration::from_secs(60))
            .context("the backend's zt-sidecar did not become ready")?;

        let mut cmd = Command::new(&backend_bin);
        cmd.env("BACKEND_LISTEN", format!("127.0.0.1:{}", p.backend))
            .env("ZT_SECRETS_DIR", &layout.secrets_dir)
            .env(
                "ZT_OPENBAO_PROXY",
                format!("unix:{}", layout.proxy_socket.display()),
            )
            .env("ZT_SIDECAR_ADMIN_URL", format!("http://{}", layout.admin))
            .env("GITHUB_API_URL", &github_url)
            // The demo's Brooklyn Nine-Nine users (off by default elsewhere).
            .env("BACKEND_SEED_DEMO_USERS", "true")
            .env("RUST_LOG", "info");
        let mut backend = Supervised::spawn("app-backend", cmd, &bdir.join("app-backend.log"))?;
        let ready = format!("http://127.0.0.1:{}/readyz", p.backend);
        backend.wait_ready(Duration::from_secs(60), || http_ok(&ready))?;

        // Frontend sidecar: identity + outbound mTLS to the backend's sidecar.
        let fdir = run.join("frontend");
        let fcfg = format!(
            "[identity]\nworkload_api = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:{}\"\n\n\
             [[mtls.outbound]]\nlisten = \"127.0.0.1:{}\"\nupstream = \"127.0.0.1:{}\"\nserver_id = \"{BACKEND_ID}\"\n",
            infra.workload_endpoint(),
            p.frontend_admin,
            p.frontend_outbound,
            p.backend_inbound
        );
        let mut frontend_sidecar = Sidecar::start(
            "frontend-sidecar",
            &frontend_sc,
            &fdir,
            &fcfg,
            SocketAddr::from(([127, 0, 0, 1], p.frontend_admin)),
        )?;
        frontend_sidecar
            .wait_ready(Duration::from_secs(60))
            .context("the frontend's zt-sidecar did not become ready")?;
        let mut cmd = Command::new(&frontend_bin);
        cmd.env("FRONTEND_LISTEN", format!("127.0.0.1:{}", p.frontend))
            .env(
                "BACKEND_URL",
                format!("http://127.0.0.1:{}", p.frontend_outbound),
            )
            .env(
                "FRONTEND_SIDECAR_ADMIN_URL",
                format!("http://127.0.0.1:{}", p.frontend_admin),
            )
            .env("RUST_LOG", "info");
        let mut frontend = Supervised::spawn("app-frontend", cmd, &fdir.join("app-frontend.log"))?;
        let url = format!("http://127.0.0.1:{}/login", p.frontend);
        frontend.wait_ready(Duration::from_secs(60), || http_ok(&url))?;

        Ok(Self {
            frontend,
            frontend_sidecar,
            backend,
            backend_sidecar,
            github,
            infra,
            ports: p,
            backend_layout: layout,
            github_url,
            tmp,
        })
    }

    /// `http://127.0.0.1:<frontend>`
    pub fn frontend_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.frontend)
    }

    /// The backend's own address (plain HTTP, for API tests).
    pub fn backend_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.backend)
    }

    /// The backend as the frontend reaches it (through both sidecars).
    pub fn backend_via_mesh_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.frontend_outbound)
    }

    /// The state folder.
    pub fn dir(&self) -> &Path {
        self.infra.dir()
    }

    /// Every process with its log.
    pub fn logs(&self) -> Vec<(String, PathBuf)> {
        let mut v: Vec<(String, PathBuf)> = self
            .infra
            .processes()
            .iter()
            .map(|p| (p.name().to_string(), p.log_path().to_path_buf()))
            .collect();
        for p in [
            self.backend_sidecar.process(),
            &self.backend,
            self.frontend_sidecar.process(),
            &self.frontend,
        ] {
            v.push((p.name().to_string(), p.log_path().to_path_buf()));
        }
        if let Some(g) = &self.github {
            v.push((g.name().to_string(), g.log_path().to_path_buf()));
        }
        v
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in [&self.frontend, &self.backend] {
                eprintln!(
                    "== {} ({}):\n{}",
                    p.name(),
                    p.log_path().display(),
                    p.log_tail(30)
                );
            }
            for s in [&self.backend_sidecar, &self.frontend_sidecar] {
                eprintln!(
                    "== {} ({}):\n{}",
                    s.process().name(),
                    s.process().log_path().display(),
                    s.process().log_tail(30)
                );
            }
        }
        // Apps first, then sidecars (they revoke their leases), then infra.
        self.frontend.stop(Duration::from_secs(5));
        self.backend.stop(Duration::from_secs(5));
        let _ = self.frontend_sidecar.terminate(Duration::from_secs(10));
        let _ = self.backend_sidecar.terminate(Duration::from_secs(10));
        if std::thread::panicking() {
            if let Some(t) = self.tmp.take() {
                eprintln!("platform: kept {} for inspection", t.keep().display());
            }
        }
    }
}
