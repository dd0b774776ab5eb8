//! The whole stack: PostgreSQL, SPIRE (server, agent, OIDC discovery
//! provider) and OpenBao, wired together and configured from `policies/`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rand::distributions::{Alphanumeric, DistString};

use crate::openbao::{write_private, Bao, OpenBaoOptions, OpenBaoServer};
use crate::postgres::{Postgres, PostgresOptions};
use crate::process::Supervised;
use crate::setup::{Environment, OpenBaoSetup};
use crate::spire::{Registration, Spire, SpireOptions};
use crate::tools::{repo_root, Tools};

/// Loopback ports of the infrastructure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// PostgreSQL.
    pub postgres: u16,
    /// SPIRE server API.
    pub spire_server: u16,
    /// SPIRE OIDC discovery provider (HTTP).
    pub oidc: u16,
    /// OpenBao API.
    pub openbao: u16,
    /// OpenBao raft cluster port.
    pub openbao_cluster: u16,
}

impl Ports {
    /// The fixed ports `make up` uses (documented in the README).
    pub const FIXED: Ports = Ports {
        postgres: 15432,
        spire_server: 18081,
        oidc: 18082,
        openbao: 18200,
        openbao_cluster: 18201,
    };

    /// Free ports picked by the kernel (tests).
    pub fn ephemeral() -> std::io::Result<Self> {
        Ok(Self {
            postgres: free_port()?,
            spire_server: free_port()?,
            oidc: free_port()?,
            openbao: free_port()?,
            openbao_cluster: free_port()?,
        })
    }
}

/// A free loopback TCP port.
///
/// Ports come from 20000–32767, below Linux's ephemeral range (32768+), so
/// outgoing connections of any process cannot take one between our check and
/// the component's bind; within this process a port is never handed out twice.
pub fn free_port() -> std::io::Result<u16> {
    use rand::Rng;
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED_OUT.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..1000 {
        let port = rand::thread_rng().gen_range(20000..32768);
        if handed.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.push(port);
            return Ok(port);
        }
    }
    // Fall back to the kernel's choice.
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// How to boot the stack. `Options::default()` is what tests want: a temp
/// dir, free ports, the repository's policies.
#[derive(Debug, Clone)]
pub struct Options {
    /// Persistent state folder; `None` = a temp dir removed on drop.
    pub state_dir: Option<PathBuf>,
    /// Ports; `None` = free ones.
    pub ports: Option<Ports>,
    /// Folder with `openbao/`, `postgres/` and `spire/` policies.
    pub policies_dir: PathBuf,
    /// X.509-SVID lifetime.
    pub x509_svid_ttl: Duration,
    /// JWT-SVID lifetime.
    pub jwt_svid_ttl: Duration,
    /// Override of every JWT role's (token_ttl, token_max_ttl).
    pub token_ttls: Option<(Duration, Duration)>,
    /// Override of database role lease TTLs: (role, ttl, max_ttl).
    pub db_ttls: Vec<(String, Duration, Duration)>,
    /// Registrations created before the agent starts.
    pub registrations: Vec<Registration>,
    /// fsync etc. (off in tests for speed).
    pub durable: bool,
    /// Where SPIRE and OpenBao binaries are; `None` = [`Tools::locate`]'s default.
    pub tools_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            state_dir: None,
            ports: None,
            policies_dir: repo_root().join("policies"),
            x509_svid_ttl: Duration::from_secs(3600),
            jwt_svid_ttl: Duration::from_secs(300),
            token_ttls: None,
            db_ttls: Vec::new(),
            registrations: Vec::new(),
            durable: false,
            tools_dir: None,
        }
    }
}

impl Options {
    /// Adds a registration: processes running `exe` get `spiffe_id`.
    pub fn register_binary(mut self, spiffe_id: &str, exe: &Path) -> anyhow::Result<Self> {
        self.registrations
            .push(Registration::for_binary(spiffe_id, exe)?);
        Ok(self)
    }

    /// [`Options::register_binary`] for a workload that runs as user `uid`.
    pub fn register_binary_as(
        mut self,
        spiffe_id: &str,
        exe: &Path,
        uid: u32,
    ) -> anyhow::Result<Self> {
        self.registrations
            .push(Registration::for_binary_as(spiffe_id, exe, uid)?);
        Ok(self)
    }
}

/// The running infrastructure. Dropping it stops every process; when the
/// current thread is panicking (a failing test) it prints each component's
/// log path and tail, and keeps the temp dir for inspection.
#[derive(Debug)]
pub struct Devstack {
    /// PostgreSQL.
    pub postgres: Postgres,
    /// SPIRE server, agent, OIDC discovery provider.
    pub spire: Spire,
    /// OpenBao.
    pub openbao: OpenBaoServer,
    /// The setup that was applied (policies, roles, TTLs).
    pub setup: OpenBaoSetup,
    /// Ports in use.
    pub ports: Ports,
    dir: PathBuf,
    tempdir: Option<tempfile::TempDir>,
    tools: Tools,
}

impl Devstack {
    /// Boots everything and returns when OpenBao is configured and the SPIRE
    /// agent serves the Workload API.
    pub fn start(opts: Options) -> anyhow::Result<Self> {
        let tools = match &opts.tools_dir {
            Some(d) => Tools::locate_in(d)?,
            None => Tools::locate()?,
        };
        let (dir, tempdir) = match &opts.state_dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                (d.clone(), None)
            }
            None => {
                let t = tempfile::Builder::new().prefix("devstack-").tempdir()?;
                (t.path().to_path_buf(), Some(t))
            }
        };
        // Keys, tokens and sockets live here: nothing for other users (also
        // fixes a folder an older version made 0755). PostgreSQL may add
        // group traverse for its own account.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("cannot make {} private (0700)", dir.display()))?;
        }
        let ports = match opts.ports {
            Some(p) => p,
            None => Ports::ephemeral()?,
        };
        let mut setup = OpenBaoSetup::load(&opts.policies_dir.join("openbao"))?;
        if let Some((ttl, max)) = opts.token_ttls {
            setup.set_token_ttls(ttl, max);
        }
        for (role, ttl, max) in &opts.db_ttls {
            setup.set_db_ttls(role, *ttl, *max);
        }

        // Start the slow starters first and let them boot side by side.
        let spire_opts = SpireOptions {
            dir: dir.join("spire"),
            server_port: ports.spire_server,
            oidc_port: ports.oidc,
            x509_svid_ttl: opts.x509_svid_ttl,
            jwt_svid_ttl: opts.jwt_svid_ttl,
        };
        let mut spire =
            Spire::start_server(&tools, &spire_opts).context("starting SPIRE server")?;
        let postgres = Postgres::start(
            &tools,
            &PostgresOptions {
                dir: dir.join("postgres"),
                port: ports.postgres,
                durable: opts.durable,
            },
        )
        .context("starting PostgreSQL")?;
        let admin_password = secret_in(&dir.join("postgres-admin-password"))?;
        postgres
            .apply_roles(
                &opts.policies_dir.join("postgres/roles.sql"),
                &admin_password,
            )
            .context("applying policies/postgres/roles.sql")?;
        let openbao = OpenBaoServer::start(
            &tools,
            &OpenBaoOptions {
                dir: dir.join("openbao"),
                port: ports.openbao,
                cluster_port: ports.openbao_cluster,
            },
        )
        .context("starting OpenBao")?;
        spire
            .start_agent(&opts.registrations)
            .context("starting SPIRE agent")?;
        spire
            .wait_oidc()
            .context("waiting for the OIDC discovery provider")?;
        let env = Environment {
            jwks_url: spire.jwks_url(),
            bound_issuer: spire.issuer(),
            pg_host: "127.0.0.1".into(),
            pg_port: ports.postgres,
            pg_admin_password: admin_password,
            rotate_root: true,
        };
        setup
            .apply(&openbao.root_client(), &env)
            .context("configuring OpenBao from policies/openbao")?;
        Ok(Self {
            postgres,
            spire,
            openbao,
            setup,
            ports,
            dir,
            tempdir,
            tools,
        })
    }

    /// The state folder (temp dir in tests).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The binaries in use.
    pub fn tools(&self) -> &Tools {
        &self.tools
    }

    /// `unix:/…/api.sock` of the SPIRE agent's Workload API.
    pub fn workload_endpoint(&self) -> String {
        self.spire.workload_endpoint()
    }

    /// OpenBao's address.
    pub fn openbao_addr(&self) -> String {
        self.openbao.addr()
    }

    /// An OpenBao client with the root token (assertions only).
    pub fn root_bao(&self) -> Bao {
        self.openbao.root_client()
    }

    /// Connection string for `appdb` as the superuser (assertions only).
    pub fn pg_superuser(&self) -> String {
        self.postgres.superuser_conn_string("appdb")
    }

    /// Registers a workload after start and waits until the agent serves it.
    pub fn register(&mut self, r: &Registration) -> anyhow::Result<()> {
        self.spire.register(r)?;
        self.spire.wait_synced(&[&r.spiffe_id])
    }

    /// Every process with its log path.
    pub fn processes(&self) -> Vec<&Supervised> {
        let mut v = vec![self.postgres.process(), self.openbao.process()];
        v.extend(self.spire.processes());
        v
    }

    /// Prints each component's log path and last lines (used on failures).
    pub fn dump_logs(&self) {
        eprintln!("---- devstack logs (state in {}) ----", self.dir.display());
        for p in self.processes() {
            eprintln!(
                "== {} (pid {}): {}",
                p.name(),
                p.pid(),
                p.log_path().display()
            );
            eprintln!("{}", p.log_tail(15));
        }
    }
}

impl Drop for Devstack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_logs();
            if let Some(t) = self.tempdir.take() {
                let kept = t.keep();
                eprintln!("devstack: kept {} for inspection", kept.display());
            }
        }
        // Field drops stop the processes; the temp dir goes after them.
    }
}

/// Reads a secret from `path`, creating it (mode 0600) with 32 random
/// alphanumerics the first time.
pub fn secret_in(path: &Path) -> anyhow::Result<String> {
    if let Ok(s) = std::fs::read_to_string(path) {
        if !s.trim().is_empty() {
            return Ok(s.trim().to_string());
        }
    }
    let s = Alphanumeric.sample_string(&mut rand::thread_rng(), 32);
    write_private(path, s.as_bytes())?;
    Ok(s)
}
