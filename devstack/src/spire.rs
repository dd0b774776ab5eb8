//! A real SPIRE deployment on loopback: server (sqlite, join-token node
//! attestation, JWT issuer), agent (`unix` workload attestor with binary-path
//! discovery) and the OIDC discovery provider that publishes the JWKS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::process::{run, Supervised};
use crate::tools::Tools;

/// Trust domain of the whole platform.
pub const TRUST_DOMAIN: &str = "demo.local";
/// SPIFFE ID the local agent's node is aliased to; workloads hang below it.
pub const NODE_ALIAS: &str = "spiffe://demo.local/host/devstack";
/// The backend's SPIFFE ID (seed).
pub const BACKEND_ID: &str = "spiffe://demo.local/ns/99-apps/sa/backend";
/// The frontend's SPIFFE ID (seed).
pub const FRONTEND_ID: &str = "spiffe://demo.local/ns/99-apps/sa/frontend";
/// How often the agent syncs registration entries from the server.
pub const AGENT_SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// Ports and lifetimes for SPIRE.
#[derive(Debug, Clone)]
pub struct SpireOptions {
    /// Folder for configs, data, sockets and logs.
    pub dir: PathBuf,
    /// SPIRE server API port (agents connect here).
    pub server_port: u16,
    /// OIDC discovery provider HTTP port (OpenBao fetches the JWKS here).
    pub oidc_port: u16,
    /// Default X.509-SVID lifetime (agents rotate at half-life).
    pub x509_svid_ttl: Duration,
    /// Default JWT-SVID lifetime.
    pub jwt_svid_ttl: Duration,
}

/// A registration: this SPIFFE ID goes to processes matching all `selectors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The SPIFFE ID to issue.
    pub spiffe_id: String,
    /// SPIRE selectors, e.g. `unix:path:/opt/bin/zt-sidecar`.
    pub selectors: Vec<String>,
}

impl Registration {
    /// Identity for a process that runs the binary at `exe` (its real path)
    /// **as this user**: on a shared machine another user who can run the
    /// same binary must not get the identity (and through it the backend's
    /// OpenBao role). Selectors sorted, as [`Spire::entries`] lists them.
    pub fn for_binary(spiffe_id: &str, exe: &Path) -> anyhow::Result<Self> {
        Self::for_binary_as(spiffe_id, exe, nix::unistd::geteuid().as_raw())
    }

    /// Identity for a process that runs the binary at `exe` as user `uid`
    /// (a test that runs the workload as another user, as a pod would).
    pub fn for_binary_as(spiffe_id: &str, exe: &Path, uid: u32) -> anyhow::Result<Self> {
        let real = std::fs::canonicalize(exe)
            .with_context(|| format!("cannot resolve workload binary {}", exe.display()))?;
        let mut selectors = vec![
            format!("unix:path:{}", real.display()),
            format!("unix:uid:{uid}"),
        ];
        selectors.sort();
        Ok(Self {
            spiffe_id: spiffe_id.to_string(),
            selectors,
        })
    }
}

/// A registration entry as the server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Entry ID.
    pub id: String,
    /// Selectors, `type:value`, sorted.
    pub selectors: Vec<String>,
}

/// The running SPIRE server, agent and OIDC discovery provider.
#[derive(Debug)]
pub struct Spire {
    server: Supervised,
    agent: Option<Supervised>,
    oidc: Supervised,
    tools: Tools,
    opts: SpireOptions,
}

impl Spire {
    /// The issuer (`iss`) of JWT-SVIDs, which is also the discovery URL.
    pub fn issuer(&self) -> String {
        issuer(self.opts.oidc_port)
    }

    /// Where the OIDC discovery provider serves the JWKS.
    pub fn jwks_url(&self) -> String {
        format!("{}/keys", self.issuer())
    }

    /// The Workload API socket workloads connect to.
    pub fn workload_socket(&self) -> PathBuf {
        self.opts.dir.join("agent/public/api.sock")
    }

    /// `unix:` endpoint string for the Workload API (SPIFFE_ENDPOINT_SOCKET form).
    pub fn workload_endpoint(&self) -> String {
        format!("unix:{}", self.workload_socket().display())
    }

    fn server_socket(&self) -> PathBuf {
        self.opts.dir.join("server/api.sock")
    }

    /// Log files of the three processes.
    pub fn processes(&self) -> Vec<&Supervised> {
        let mut v = vec![&self.server, &self.oidc];
        v.extend(self.agent.as_ref());
        v
    }

    /// Starts the server and the discovery provider (not yet the agent).
    pub fn start_server(tools: &Tools, opts: &SpireOptions) -> anyhow::Result<Self> {
        let dir = &opts.dir;
        for sub in [
            "server/data",
            "agent/data",
            "agent/public",
            "agent/admin",
            "oidc",
        ] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let server_conf = dir.join("server/server.conf");
        std::fs::write(&server_conf, server_config(opts))?;
        let mut cmd = Command::new(&tools.spire_server);
        cmd.arg("run").arg("-config").arg(&server_conf);
        let server = Supervised::spawn("spire-server", cmd, &dir.join("server/server.log"))?;

        let oidc_conf = dir.join("oidc/oidc.conf");
        std::fs::write(&oidc_conf, oidc_config(opts))?;
        let mut cmd = Command::new(&tools.oidc_provider);
        cmd.arg("-config").arg(&oidc_conf);
        // The provider retries the server API until it is up.
        let oidc = Supervised::spawn("oidc-discovery-provider", cmd, &dir.join("oidc/oidc.log"))?;
        Ok(Self {
            server,
            agent: None,
            oidc,
            tools: tools.clone(),
            opts: opts.clone(),
        })
    }

    /// Waits for the server, registers `registrations` (idempotently), then
    /// starts the agent with a fresh join token and waits until it is healthy.
    pub fn start_agent(&mut self, registrations: &[Registration]) -> anyhow::Result<()> {
        let socket = self.server_socket();
        let tools = self.tools.clone();
        self.server.wait_ready(Duration::from_secs(30), || {
            let mut cmd = Command::new(&tools.spire_server);
            cmd.arg("healthcheck").arg("-socketPath").arg(&socket);
            run(&mut cmd).map(|_| ()).map_err(|e| format!("{e:#}"))
        })?;
        for r in registrations {
            self.register(r)?;
        }
        let token =
            self.server_cli(&["token", "generate", "-spiffeID", NODE_ALIAS, "-ttl", "600"])?;
        let token = token
            .split_whitespace()
            .nth(1)
            .context("unexpected `token generate` output")?
            .to_string();
        let bundle = self.server_cli(&["bundle", "show"])?;
        let dir = &self.opts.dir;
        std::fs::write(dir.join("agent/bundle.pem"), bundle)?;
        let agent_conf = dir.join("agent/agent.conf");
        std::fs::write(&agent_conf, agent_config(&self.opts, &token))?;
        // A stale socket from a previous run would look like a live agent.
        let _ = std::fs::remove_file(self.workload_socket());
        let mut cmd = Command::new(&self.tools.spire_agent);
        cmd.arg("run").arg("-config").arg(&agent_conf);
        let mut agent = Supervised::spawn("spire-agent", cmd, &dir.join("agent/agent.log"))?;
        let socket = self.workload_socket();
        let agent_bin = self.tools.spire_agent.clone();
        agent.wait_ready(Duration::from_secs(30), || {
            let mut cmd = Command::new(&agent_bin);
            cmd.arg("healthcheck").arg("-socketPath").arg(&socket);
            run(&mut cmd).map(|_| ()).map_err(|e| format!("{e:#}"))
        })?;
        self.agent = Some(agent);
        let ids: Vec<&str> = registrations.iter().map(|r| r.spiffe_id.as_str()).collect();
        self.wait_synced(&ids)
    }

    /// Waits until the agent has minted an X.509-SVID for each of `ids`, i.e.
    /// its cache holds those entries and the Workload API will serve them.
    /// (The agent logs `Creating X509-SVID … spiffe_id="<id>"` per entry.)
    pub fn wait_synced(&mut self, ids: &[&str]) -> anyhow::Result<()> {
        let Some(agent) = self.agent.as_mut() else {
            bail!("the SPIRE agent is not running");
        };
        let log = agent.log_path().to_path_buf();
        agent.wait_ready(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let missing: Vec<&&str> = ids
                .iter()
                .filter(|id| {
                    !text.lines().any(|l| {
                        l.contains("Creating X509-SVID")
                            && l.contains(&format!("spiffe_id=\"{id}\""))
                    })
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("agent has no SVID yet for {missing:?}"))
            }
        })?;
        Ok(())
    }

    /// Waits until the discovery provider serves at least one signing key.
    pub fn wait_oidc(&mut self) -> anyhow::Result<()> {
        let url = self.jwks_url();
        self.oidc.wait_ready(Duration::from_secs(30), || {
            let body: serde_json::Value = ureq::get(&url)
                .call()
                .map_err(|e| e.to_string())?
                .body_mut()
                .read_json()
                .map_err(|e| e.to_string())?;
            match body["keys"].as_array() {
                Some(keys) if !keys.is_empty() => Ok(()),
                _ => Err("JWKS has no keys yet".into()),
            }
        })?;
        Ok(())
    }

    /// Creates a registration entry unless an identical one exists, and
    /// deletes an entry an older version left for the same SPIFFE ID and
    /// binary without a `unix:uid` selector (in a persistent state it would
    /// still match any user running the binary). Other entries for the same
    /// ID (another binary) are kept.
    pub fn register(&self, r: &Registration) -> anyhow::Result<()> {
        let mut want = r.selectors.clone();
        want.sort();
        let stale = |e: &Entry| {
            e.selectors != want
                && !e.selectors.iter().any(|s| s.starts_with("unix:uid:"))
                && e.selectors
                    .iter()
                    .any(|s| s.starts_with("unix:path:") && want.contains(s))
        };
        for stale in self.entries(&r.spiffe_id)?.into_iter().filter(stale) {
            self.server_cli(&["entry", "delete", "-entryID", &stale.id])
                .with_context(|| format!("deleting the stale entry for {}", r.spiffe_id))?;
        }
        let mut args = vec![
            "entry".to_string(),
            "create".into(),
            "-parentID".into(),
            NODE_ALIAS.into(),
            "-spiffeID".into(),
            r.spiffe_id.clone(),
        ];
        for s in &r.selectors {
            args.push("-selector".into());
            args.push(s.clone());
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        match self.server_cli(&refs) {
            Ok(_) => Ok(()),
            Err(e) if format!("{e:#}").contains("AlreadyExists") => Ok(()),
            Err(e) if format!("{e:#}").contains("similar entry already exists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates many new registrations with one `entry create -data` call (a
    /// fleet of workloads: one CLI call each would take minutes). Unlike
    /// [`Spire::register`] it neither skips nor replaces existing entries:
    /// for a fresh server. Does not wait for the agent (see
    /// [`Spire::wait_synced`]).
    pub fn register_batch(&self, registrations: &[Registration]) -> anyhow::Result<()> {
        let entries: Vec<serde_json::Value> = registrations
            .iter()
            .map(|r| {
                let selectors: Vec<serde_json::Value> = r
                    .selectors
                    .iter()
                    .filter_map(|s| s.split_once(':'))
                    .map(|(t, v)| serde_json::json!({ "type": t, "value": v }))
                    .collect();
                serde_json::json!({
                    "spiffe_id": r.spiffe_id,
                    "parent_id": NODE_ALIAS,
                    "selectors": selectors,
                })
            })
            .collect();
        let file = self.opts.dir.join("entries-batch.json");
        std::fs::write(
            &file,
            serde_json::to_vec(&serde_json::json!({ "entries": entries }))?,
        )?;
        let out = self.server_cli(&["entry", "create", "-data", &file.display().to_string()]);
        let _ = std::fs::remove_file(&file);
        let out = out.context("creating registration entries in a batch")?;
        // The CLI prints one block per entry; a refused one says why.
        if out.contains("Failed to create") {
            bail!("`entry create -data` refused some entries:\n{out}");
        }
        Ok(())
    }

    /// The registration entries for `spiffe_id` (selectors as `type:value`, sorted).
    pub fn entries(&self, spiffe_id: &str) -> anyhow::Result<Vec<Entry>> {
        let out = self.server_cli(&["entry", "show", "-spiffeID", spiffe_id, "-output", "json"])?;
        let v: serde_json::Value =
            serde_json::from_str(&out).context("`entry show -output json` is not JSON")?;
        let mut entries = Vec::new();
        for e in v["entries"].as_array().into_iter().flatten() {
            let mut selectors: Vec<String> = e["selectors"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| Some(format!("{}:{}", s["type"].as_str()?, s["value"].as_str()?)))
                .collect();
            selectors.sort();
            entries.push(Entry {
                id: e["id"].as_str().context("entry without id")?.to_string(),
                selectors,
            });
        }
        Ok(entries)
    }

    /// Runs `spire-server <args> -socketPath <server socket>`.
    pub fn server_cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut cmd = Command::new(&self.tools.spire_server);
        cmd.args(args).arg("-socketPath").arg(self.server_socket());
        run(&mut cmd)
    }

    /// Stops and restarts the agent (same registrations, new join token).
    /// Returns once the agent serves the Workload API again.
    pub fn restart_agent(&mut self) -> anyhow::Result<()> {
        if let Some(mut agent) = self.agent.take() {
            agent.stop(Duration::from_secs(5));
        }
        self.start_agent(&[])
    }

    /// Stops the SPIRE server only (the agent keeps serving the SVIDs it
    /// has until they expire; the discovery provider keeps its last JWKS).
    pub fn stop_server(&mut self) {
        self.server.stop(Duration::from_secs(5));
    }

    /// Starts a stopped server again on the same data folder (its CA keys and
    /// registrations persist) and waits until it answers its health check.
    pub fn restart_server(&mut self) -> anyhow::Result<()> {
        self.stop_server();
        let conf = self.opts.dir.join("server/server.conf");
        let mut cmd = Command::new(&self.tools.spire_server);
        cmd.arg("run").arg("-config").arg(&conf);
        self.server = Supervised::spawn(
            "spire-server",
            cmd,
            &self.opts.dir.join("server/server.log"),
        )?;
        let socket = self.server_socket();
        let tools = self.tools.clone();
        self.server.wait_ready(Duration::from_secs(30), || {
            let mut cmd = Command::new(&tools.spire_server);
            cmd.arg("healthcheck").arg("-socketPath").arg(&socket);
            run(&mut cmd).map(|_| ()).map_err(|e| format!("{e:#}"))
        })?;
        Ok(())
    }

    /// Stops the agent only (tests of Workload API outages).
    pub fn stop_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.stop(Duration::from_secs(5));
        }
    }
}

fn issuer(oidc_port: u16) -> String {
    format!("http://127.0.0.1:{oidc_port}")
}

fn server_config(o: &SpireOptions) -> String {
    let d = o.dir.display();
    format!(
        r#"server {{
  bind_address = "127.0.0.1"
  bind_port = "{port}"
  socket_path = "{d}/server/api.sock"
  trust_domain = "{TRUST_DOMAIN}"
  data_dir = "{d}/server/data"
  log_level = "INFO"
  ca_ttl = "168h"
  default_x509_svid_ttl = "{x509}s"
  default_jwt_svid_ttl = "{jwt}s"
  # The agent's own SVID: a join-token agent whose SVID expires while the
  # server is down cannot attest again, so tests that shorten workload
  # SVIDs do not shorten it.
  agent_ttl = "{agent}s"
  jwt_issuer = "{issuer}"
}}
plugins {{
  DataStore "sql" {{
    plugin_data {{
      database_type = "sqlite3"
      connection_string = "{d}/server/data/datastore.sqlite3"
    }}
  }}
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "disk" {{
    plugin_data {{
      keys_path = "{d}/server/data/keys.json"
    }}
  }}
}}
"#,
        port = o.server_port,
        x509 = o.x509_svid_ttl.as_secs().max(1),
        jwt = o.jwt_svid_ttl.as_secs().max(1),
        agent = o.x509_svid_ttl.as_secs().max(3600),
        issuer = issuer(o.oidc_port),
    )
}

fn agent_config(o: &SpireOptions, join_token: &str) -> String {
    let d = o.dir.display();
    format!(
        r#"agent {{
  data_dir = "{d}/agent/data"
  log_level = "INFO"
  server_address = "127.0.0.1"
  server_port = "{port}"
  socket_path = "{d}/agent/public/api.sock"
  admin_socket_path = "{d}/agent/admin/api.sock"
  trust_bundle_path = "{d}/agent/bundle.pem"
  trust_domain = "{TRUST_DOMAIN}"
  join_token = "{join_token}"
  experimental {{
    sync_interval = "{sync}s"
  }}
}}
plugins {{
  NodeAttestor "join_token" {{
    plugin_data {{}}
  }}
  KeyManager "memory" {{
    plugin_data {{}}
  }}
  WorkloadAttestor "unix" {{
    plugin_data {{
      # unix:path selectors tell apart processes of one user by their binary;
      # unix:uid selectors keep other users' processes out.
      discover_workload_path = true
      workload_size_limit = -1
    }}
  }}
}}
"#,
        port = o.server_port,
        sync = AGENT_SYNC_INTERVAL.as_secs(),
    )
}

fn oidc_config(o: &SpireOptions) -> String {
    let d = o.dir.display();
    format!(
        r#"log_level = "INFO"
domains = ["127.0.0.1", "localhost"]
# Loopback only: OpenBao on this machine is the sole consumer of the JWKS.
allow_insecure_scheme = true
insecure_addr = "127.0.0.1:{port}"
jwt_issuer = "{issuer}"
server_api {{
  address = "unix://{d}/server/api.sock"
  poll_interval = "2s"
}}
"#,
        port = o.oidc_port,
        issuer = issuer(o.oidc_port),
    )
}

/// Renders the three configs into `dir` and checks each with the real
/// binaries' `validate` commands (the agent's needs a placeholder token).
pub fn validate_configs(tools: &Tools, opts: &SpireOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.dir)?;
    let server = opts.dir.join("server.conf");
    std::fs::write(&server, server_config(opts))?;
    let agent = opts.dir.join("agent.conf");
    std::fs::write(
        &agent,
        agent_config(opts, "00000000-0000-0000-0000-000000000000"),
    )?;
    for (bin, conf) in [(&tools.spire_server, &server), (&tools.spire_agent, &agent)] {
        let mut cmd = Command::new(bin);
        cmd.arg("validate").arg("-config").arg(conf);
        let out = run(&mut cmd)?;
        if !out.contains("is valid") {
            bail!("{} validate said: {out}", bin.display());
        }
    }
    Ok(())
}
