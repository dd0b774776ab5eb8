//! A real OpenBao server: integrated (raft) storage, Shamir seal with one key
//! share, file audit device; initialised once and unsealed on every start.
//!
//! OpenBao 2.x dropped the `file` storage backend; single-node raft is its
//! replacement and keeps state across restarts the same way.
//!
//! Init, unseal and the API client are zt-bootstrap's, the code the
//! Kubernetes bootstrap Job runs; they are re-exported here.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use crate::process::Supervised;
use crate::tools::Tools;

pub use zt_bootstrap::openbao::{
    active, initialise, is_initialised, state, unseal, write_private, Bao, InitKeys, SealState,
};

/// Ports and folders for OpenBao.
#[derive(Debug, Clone)]
pub struct OpenBaoOptions {
    /// Folder for config, raft data, audit log, server log and the unseal file.
    pub dir: PathBuf,
    /// API port on 127.0.0.1.
    pub port: u16,
    /// Raft cluster port on 127.0.0.1.
    pub cluster_port: u16,
}

/// A running, unsealed OpenBao server.
#[derive(Debug)]
pub struct OpenBaoServer {
    process: Supervised,
    tools: Tools,
    opts: OpenBaoOptions,
    keys: InitKeys,
}

impl OpenBaoServer {
    /// Starts the server, initialises it on first start, unseals it and waits
    /// until it is the active node.
    pub fn start(tools: &Tools, opts: &OpenBaoOptions) -> anyhow::Result<Self> {
        let mut process = spawn(tools, opts)?;
        let addr = addr(opts.port);
        process.wait_ready(Duration::from_secs(30), || {
            ureq::get(&format!("{addr}/v1/sys/seal-status"))
                .call()
                .map(|_| ())
                .map_err(|e| e.to_string())
        })?;
        let keys_file = opts.dir.join("init-keys.json");
        let keys = if keys_file.exists() {
            serde_json::from_slice(&std::fs::read(&keys_file)?)
                .with_context(|| format!("corrupt {}", keys_file.display()))?
        } else {
            let keys = initialise(&addr)?;
            write_private(&keys_file, &serde_json::to_vec_pretty(&keys)?)?;
            keys
        };
        let mut server = Self {
            process,
            tools: tools.clone(),
            opts: opts.clone(),
            keys,
        };
        server.unseal()?;
        Ok(server)
    }

    /// Seals the server through its API with the root token (what an
    /// operator's `bao operator seal` does): every request is refused with
    /// 503 until [`OpenBaoServer::unseal`].
    pub fn seal(&self) -> anyhow::Result<()> {
        self.root_client().write("sys/seal", &json!({}))?;
        match state(&self.addr())? {
            SealState::Sealed => Ok(()),
            other => bail!("OpenBao is {other} after sys/seal"),
        }
    }

    /// Unseals with the stored key share and waits until it is the active node.
    pub fn unseal(&mut self) -> anyhow::Result<()> {
        let addr = self.addr();
        unseal(&addr, &self.keys.unseal_key)?;
        self.process
            .wait_ready(Duration::from_secs(30), || active(&addr))?;
        Ok(())
    }

    /// `http://127.0.0.1:<port>`
    pub fn addr(&self) -> String {
        addr(self.opts.port)
    }

    /// The root token (tests and local bootstrap only).
    pub fn root_token(&self) -> &str {
        &self.keys.root_token
    }

    /// A client authenticated with the root token.
    pub fn root_client(&self) -> Bao {
        Bao::new(&self.addr(), Some(self.keys.root_token.clone()))
    }

    /// The audit log file (one JSON object per line).
    pub fn audit_log(&self) -> PathBuf {
        self.opts.dir.join("audit.log")
    }

    /// The server process (log, pid).
    pub fn process(&self) -> &Supervised {
        &self.process
    }

    /// Stops the server; state stays on disk.
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(10));
    }

    /// Starts a stopped server again and unseals it.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.process = spawn(&self.tools, &self.opts)?;
        let addr = self.addr();
        self.process.wait_ready(Duration::from_secs(30), || {
            ureq::get(&format!("{addr}/v1/sys/seal-status"))
                .call()
                .map(|_| ())
                .map_err(|e| e.to_string())
        })?;
        self.unseal()
    }
}

fn addr(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn spawn(tools: &Tools, opts: &OpenBaoOptions) -> anyhow::Result<Supervised> {
    std::fs::create_dir_all(opts.dir.join("raft"))?;
    let conf = opts.dir.join("openbao.hcl");
    std::fs::write(&conf, server_config(opts))?;
    let mut cmd = Command::new(&tools.bao);
    cmd.arg("server").arg(format!("-config={}", conf.display()));
    // The raft store is locked until a previous server has fully exited.
    Ok(Supervised::spawn(
        "openbao",
        cmd,
        &opts.dir.join("openbao.log"),
    )?)
}

fn server_config(o: &OpenBaoOptions) -> String {
    let d = o.dir.display();
    format!(
        r#"storage "raft" {{
  path = "{d}/raft"
  node_id = "openbao-1"
  # Single node: elect itself fast.
  performance_multiplier = 1
}}
listener "tcp" {{
  address = "127.0.0.1:{port}"
  # Without it the cluster listener binds the API port + 1, a port nobody
  # reserved: another component's free port, now and then (a sidecar's
  # admin listener then failed with "Address already in use").
  cluster_address = "127.0.0.1:{cluster}"
  tls_disable = true
}}
api_addr = "http://127.0.0.1:{port}"
cluster_addr = "http://127.0.0.1:{cluster}"
ui = false
log_level = "info"
# OpenBao only accepts audit devices from its configuration file.
audit "file" "file" {{
  options {{
    file_path = "{d}/audit.log"
  }}
}}
"#,
        port = o.port,
        cluster = o.cluster_port,
    )
}

/// Starts an OpenBao server from `opts` and returns once it answers, without
/// initialising it (what a fresh OpenBao pod is before the bootstrap Job).
pub fn start_uninitialised(tools: &Tools, opts: &OpenBaoOptions) -> anyhow::Result<Supervised> {
    let mut process = spawn(tools, opts)?;
    let addr = addr(opts.port);
    process.wait_ready(Duration::from_secs(30), || {
        state(&addr).map(|_| ()).map_err(|e| e.to_string())
    })?;
    Ok(process)
}

#[cfg(test)]
mod tests {
    use zt_bootstrap::setup::OpenBaoSetup;

    #[test]
    fn repository_policies_parse_and_are_consistent() {
        let setup =
            OpenBaoSetup::load(&crate::tools::repo_root().join("policies/openbao")).unwrap();
        assert_eq!(setup.jwt.roles[0].bound_subject, crate::spire::BACKEND_ID);
        assert_eq!(setup.jwt.roles[0].bound_audiences, vec!["openbao"]);
        assert!(setup.policies.iter().any(|(n, _)| n == "backend"));
        assert!(setup
            .database
            .roles
            .iter()
            .any(|r| r.name == "backend-role"));
    }
}
