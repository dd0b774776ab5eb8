//! Running the real `zt-sidecar` binary against the stack.
//!
//! Each workload gets its own copy of the binary (`<dir>/bin/<name>/zt-sidecar`)
//! so SPIRE's `unix:path` selector tells them apart: register the copy's
//! path for the workload's SPIFFE ID *before* starting the stack.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

use crate::process::Supervised;
use crate::stack::Devstack;

/// Env var naming the `zt-sidecar` binary (default: next to the test binary).
pub const SIDECAR_BIN_ENV: &str = "ZT_SIDECAR_BIN";

/// Finds a workspace binary: `$<env>` if set, else `target/<profile>/<name>`
/// next to the running test executable (cargo builds every workspace binary
/// before running `cargo test --workspace`).
pub fn workspace_binary(name: &str, env: &str) -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
        if d.file_name().is_some_and(|n| n == "target") {
            break;
        }
        dir = d.parent();
    }
    bail!("the `{name}` binary was not found near {}; build it with `cargo build --workspace` (or set {env})", exe.display())
}

/// Copies `binary` to `<dir>/bin/<workload>/<file name>` and returns the copy,
/// which then is that workload's identity (its `unix:path`).
pub fn install_copy(binary: &Path, dir: &Path, workload: &str) -> anyhow::Result<PathBuf> {
    let name = binary.file_name().context("binary has no file name")?;
    let target_dir = dir.join("bin").join(workload);
    std::fs::create_dir_all(&target_dir)?;
    let target = target_dir.join(name);
    let tmp = target.with_extension("new");
    std::fs::copy(binary, &tmp).with_context(|| format!("copying {}", binary.display()))?;
    std::fs::rename(&tmp, &target)?;
    Ok(target)
}

/// A running sidecar.
#[derive(Debug)]
pub struct Sidecar {
    process: Supervised,
    /// Admin listener address.
    pub admin: SocketAddr,
    /// The config file it runs with.
    pub config: PathBuf,
    binary: PathBuf,
}

impl Sidecar {
    /// Writes `config_toml` to `<dir>/<name>.toml` and starts `binary run`.
    pub fn start(
        name: &str,
        binary: &Path,
        dir: &Path,
        config_toml: &str,
        admin: SocketAddr,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, config_toml)?;
        let mut cmd = Command::new(binary);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env("ZT_LOG", "info,zt_sidecar=debug");
        let process = Supervised::spawn(
            &format!("zt-sidecar ({name})"),
            cmd,
            &dir.join(format!("{name}.log")),
        )?;
        Ok(Self {
            process,
            admin,
            config,
            binary: binary.to_path_buf(),
        })
    }

    /// GET an admin path; `(status, body)`.
    pub fn admin_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut resp = ureq::get(&format!("http://{}{path}", self.admin))
            .config()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .call()?;
        Ok((resp.status().as_u16(), resp.body_mut().read_to_string()?))
    }

    /// `/status` as JSON.
    pub fn status(&self) -> anyhow::Result<Value> {
        let (code, body) = self.admin_get("/status")?;
        if code != 200 {
            bail!("/status answered {code}");
        }
        Ok(serde_json::from_str(&body)?)
    }

    /// Waits until `/readyz` says 200.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let admin = self.admin;
        self.process.wait_ready(timeout, || {
            let mut r = ureq::get(&format!("http://{admin}/readyz"))
                .config()
                .http_status_as_error(false)
                .build()
                .call()
                .map_err(|e| e.to_string())?;
            match r.status().as_u16() {
                200 => Ok(()),
                code => Err(format!(
                    "{code} {}",
                    r.body_mut().read_to_string().unwrap_or_default()
                )),
            }
        })?;
        Ok(())
    }

    /// Everything it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    /// The process (pid, log path).
    pub fn process(&self) -> &Supervised {
        &self.process
    }

    /// Mutable process access (signals, exit status).
    pub fn process_mut(&mut self) -> &mut Supervised {
        &mut self.process
    }

    /// SIGTERM and wait up to `grace` for a clean exit; the exit status.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.process.signal(nix::sys::signal::Signal::SIGTERM);
        let start = std::time::Instant::now();
        while start.elapsed() < grace {
            if let Some(s) = self.process.exited() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGKILL, no warning (a crash or an OOM kill): nothing is revoked or
    /// removed, the files it wrote stay.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Starts the same binary with the same configuration again (a
    /// container restart), appending to the same log. Does not wait.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.process.exited().is_none() {
            self.process.kill();
        }
        let mut cmd = Command::new(&self.binary);
        cmd.arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("ZT_LOG", "info,zt_sidecar=debug");
        let name = self.process.name().to_string();
        let log = self.process.log_path().to_path_buf();
        self.process = Supervised::spawn(&name, cmd, &log)?;
        Ok(())
    }

    /// The binary this sidecar runs (its identity).
    pub fn binary(&self) -> &Path {
        &self.binary
    }
}

/// Removes the markers of released secrets (`<name>.released`) from a
/// secrets folder, as a new pod's empty folder would have none.
pub fn forget_releases(secrets_dir: &Path) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(secrets_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "released") {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Paths a backend sidecar uses under `dir`.
#[derive(Debug, Clone)]
pub struct BackendLayout {
    /// Secrets folder.
    pub secrets_dir: PathBuf,
    /// OpenBao proxy socket.
    pub proxy_socket: PathBuf,
    /// A TCP listener of the OpenBao proxy besides the socket (none by
    /// default, as the manifests have it).
    pub proxy_tcp: Option<SocketAddr>,
    /// Admin address.
    pub admin: SocketAddr,
}

impl BackendLayout {
    /// Standard layout under `dir` with a free admin port.
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            secrets_dir: dir.join("secrets"),
            proxy_socket: dir.join("openbao.sock"),
            proxy_tcp: None,
            admin: SocketAddr::from(([127, 0, 0, 1], crate::free_port()?)),
        })
    }
}

/// The backend sidecar's configuration for this stack (the same shape as
/// `sidecar/examples/backend.toml`, with local addresses). `extra` is
/// appended verbatim (e.g. `[[mtls.inbound]]` sections).
pub fn backend_config(
    stack: &Devstack,
    layout: &BackendLayout,
    db_rotate_before: &str,
    revoke_grace: &str,
    extra: &str,
) -> String {
    format!(
        r#"[identity]
workload_api = "{workload}"

[openbao]
address = "{bao}"
role = "backend"
audience = "openbao"
request_timeout = "5s"

[secrets]
dir = "{secrets}"

[[secrets.database]]
name = "db"
role = "backend-role"
host = "127.0.0.1"
port = {pg}
database = "appdb"
rotate_before = "{db_rotate_before}"
revoke_grace = "{revoke_grace}"

[[secrets.database]]
name = "db-migrator"
role = "backend-migrator"
host = "127.0.0.1"
port = {pg}
database = "appdb"
rotate_before = "{db_rotate_before}"
revoke_grace = "{revoke_grace}"
# The backend releases it once its migrations ran (POST /release/db-migrator).
releasable = true

[[secrets.kv]]
name = "jwt-signing-key"
path = "backend/jwt-signing-key"
refresh_interval = "2s"

[proxy]
listen = ["unix:{sock}"{tcp}]

[[proxy.allow]]
path = "secret/data/github/users/*"
methods = ["GET", "PUT", "POST", "DELETE"]

[[proxy.allow]]
path = "secret/metadata/github/users/*"
methods = ["GET", "DELETE"]

[admin]
listen = "{admin}"

[backoff]
initial = "200ms"
max = "2s"
{extra}"#,
        workload = stack.workload_endpoint(),
        bao = stack.openbao_addr(),
        secrets = layout.secrets_dir.display(),
        pg = stack.ports.postgres,
        sock = layout.proxy_socket.display(),
        tcp = layout
            .proxy_tcp
            .map(|a| format!(", \"tcp:{a}\""))
            .unwrap_or_default(),
        admin = layout.admin,
    )
}
