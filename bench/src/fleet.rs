//! A fleet of workloads on one real SPIRE, OpenBao and PostgreSQL: N
//! zt-sidecars (or N `bao agent`s, the anchor), each with its own SPIFFE ID,
//! all logging in through one OpenBao jwt role that matches their IDs by a
//! glob on `sub`, each keeping one short-lived database secret and one KV
//! secret in files. `make bench-fleet` measures it at several N; the fleet
//! test in `make test` checks its lease invariant at small N.
//!
//! Identities: `spiffe://demo.local/ns/fleet/sa/w-<i>`. Each zt-sidecar runs
//! its own hard link of the binary (SPIRE's `unix:path` selector tells them
//! apart, one registration each). `bao agent` has no Workload API client, so
//! the harness (registered for every ID) fetches each agent's JWT-SVID into
//! a file, as `make bench-sidecar` does.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use devstack::process::Supervised;
use devstack::sidecar::workspace_binary;
use devstack::spire::Registration;
use devstack::{free_port, Devstack, Options};
use serde_json::json;
use zt_contracts::status::DatabaseSecretStatus;
use zt_contracts::SidecarStatus;

/// The OpenBao jwt role every fleet workload logs in with.
pub const JWT_ROLE: &str = "fleet";
/// The OpenBao database role of the fleet's database secret.
pub const DB_ROLE: &str = "fleet-role";
/// The KV v2 secret (under the `secret` mount) every workload renders.
pub const KV_PATH: &str = "fleet/config";
/// The glob the jwt role binds `sub` to.
pub const ID_GLOB: &str = "spiffe://demo.local/ns/fleet/sa/*";

/// The SPIFFE ID of workload `i`.
pub fn fleet_id(i: usize) -> String {
    format!("spiffe://demo.local/ns/fleet/sa/w-{i:03}")
}

/// Which program keeps each workload's secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contender {
    /// zt-sidecar, fetching its own JWT-SVID from the SPIRE agent.
    ZtSidecar,
    /// `bao agent` (JWT file auto-auth + two templates), the anchor.
    BaoAgent,
}

impl Contender {
    /// Name in reports.
    pub fn label(self) -> &'static str {
        match self {
            Self::ZtSidecar => "zt-sidecar",
            Self::BaoAgent => "bao agent",
        }
    }
}

/// Lifetimes the fleet runs with (short, so rotations and re-logins happen
/// during a run).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Database lease TTL (renewed up to `db_max_ttl`).
    pub db_ttl: Duration,
    /// Database lease max TTL: every workload needs new credentials this often.
    pub db_max_ttl: Duration,
    /// zt-sidecar's `rotate_before` for the database secret.
    pub rotate_before: Duration,
    /// zt-sidecar's `revoke_grace` (how long a replaced lease lives on).
    pub revoke_grace: Duration,
    /// OpenBao token TTL of the jwt role.
    pub token_ttl: Duration,
    /// OpenBao token max TTL: both contenders log in again this often.
    pub token_max_ttl: Duration,
    /// How often the KV secret is re-read (both contenders).
    pub kv_refresh: Duration,
}

impl Timing {
    /// The bench's lifetimes: a rotation about every 30 s, a re-login every 60 s.
    pub fn bench() -> Self {
        Self {
            db_ttl: Duration::from_secs(20),
            db_max_ttl: Duration::from_secs(40),
            rotate_before: Duration::from_secs(10),
            revoke_grace: Duration::from_secs(5),
            token_ttl: Duration::from_secs(30),
            token_max_ttl: Duration::from_secs(60),
            kv_refresh: Duration::from_secs(30),
        }
    }
}

/// Seconds as OpenBao and zt-sidecar durations.
fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// One workload's program.
#[derive(Debug)]
struct Member {
    process: Option<Supervised>,
    dir: PathBuf,
    /// zt-sidecar's admin address (loopback).
    admin: Option<SocketAddr>,
    config: PathBuf,
    binary: PathBuf,
}

impl Member {
    fn files(&self) -> [PathBuf; 2] {
        let d = self.dir.join("secrets");
        [d.join("db.json"), d.join("config.json")]
    }
}

/// The stack and N workloads (not started until [`Fleet::launch`]).
pub struct Fleet {
    /// SPIRE, OpenBao and PostgreSQL.
    pub stack: Devstack,
    /// Which program the workloads run.
    pub contender: Contender,
    members: Vec<Member>,
    work: Option<tempfile::TempDir>,
    work_dir: PathBuf,
    /// A cpuacct cgroup holding every workload (exact CPU time, exited
    /// threads included), when this machine lets us make one.
    group: Option<CpuGroup>,
}

/// A cgroup (v1 `cpuacct`) that counts the CPU time of the processes put
/// in it to the nanosecond: 200 processes' `/proc/<pid>/stat` ticks
/// (10 ms each) would blur what idle sidecars spend.
#[derive(Debug)]
struct CpuGroup {
    dir: PathBuf,
}

impl CpuGroup {
    const ROOT: &'static str = "/sys/fs/cgroup/cpuacct";

    fn new() -> Option<Self> {
        let dir = Path::new(Self::ROOT).join(format!("zt-fleet-{}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        Some(Self { dir })
    }

    fn add(&self, pid: u32) -> std::io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    fn cpu_secs(&self) -> Option<f64> {
        let ns: u64 = std::fs::read_to_string(self.dir.join("cpuacct.usage"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        Some(ns as f64 / 1e9)
    }
}

impl Drop for CpuGroup {
    fn drop(&mut self) {
        // Empty once the workloads are gone; a leftover process keeps it.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// CPU seconds of the shared components (and the workloads in total).
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSample {
    /// OpenBao server.
    pub openbao: f64,
    /// SPIRE server.
    pub spire_server: f64,
    /// SPIRE agent.
    pub spire_agent: f64,
    /// PostgreSQL: the postmaster, its live sessions and the ones it reaped.
    pub postgres: f64,
    /// All workloads' programs together.
    pub members: f64,
}

impl CpuSample {
    /// `self - earlier`, component by component.
    pub fn since(&self, earlier: &CpuSample) -> CpuSample {
        CpuSample {
            openbao: self.openbao - earlier.openbao,
            spire_server: self.spire_server - earlier.spire_server,
            spire_agent: self.spire_agent - earlier.spire_agent,
            postgres: self.postgres - earlier.postgres,
            members: self.members - earlier.members,
        }
    }
}

/// OpenBao requests by kind, counted from its audit log (one `response`
/// entry per request, root-token requests of the harness excluded).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// `auth/jwt/login`.
    pub logins: u64,
    /// `auth/token/renew-self`.
    pub token_renewals: u64,
    /// `auth/token/revoke-self`.
    pub token_revocations: u64,
    /// `database/creds/…`: each one a `CREATE ROLE` in PostgreSQL.
    pub creds: u64,
    /// `sys/leases/renew`.
    pub lease_renewals: u64,
    /// `sys/leases/revoke`: each one a `DROP ROLE`.
    pub lease_revocations: u64,
    /// KV reads (`secret/data/…`).
    pub kv_reads: u64,
    /// Anything else.
    pub other: u64,
}

impl Requests {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.logins
            + self.token_renewals
            + self.token_revocations
            + self.creds
            + self.lease_renewals
            + self.lease_revocations
            + self.kv_reads
            + self.other
    }

    /// Those that write to OpenBao's storage (all but KV reads).
    pub fn writes(&self) -> u64 {
        self.total() - self.kv_reads
    }

    /// Counts the `response` entries of audit-log lines.
    pub fn count(lines: &str) -> Self {
        let mut r = Self::default();
        for line in lines.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if v["type"] != "response" || v["auth"]["display_name"] == "root" {
                continue;
            }
            let path = v["request"]["path"].as_str().unwrap_or("");
            let slot = if path.starts_with("auth/jwt/login") {
                &mut r.logins
            } else if path == "auth/token/renew-self" {
                &mut r.token_renewals
            } else if path == "auth/token/revoke-self" {
                &mut r.token_revocations
            } else if path.starts_with("database/creds/") {
                &mut r.creds
            } else if path.starts_with("sys/leases/renew") {
                &mut r.lease_renewals
            } else if path.starts_with("sys/leases/revoke") {
                &mut r.lease_revocations
            } else if path.starts_with("secret/data/") {
                &mut r.kv_reads
            } else {
                &mut r.other
            };
            *slot += 1;
        }
        r
    }
}

/// utime + stime (+ reaped children's, with `reaped`) of `pid` in seconds.
fn proc_cpu(pid: u32, reaped: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    let own = ticks(11) + ticks(12);
    let children = if reaped { ticks(13) + ticks(14) } else { 0.0 };
    (own + children) / 100.0
}

/// Bytes under `dir` (recursively).
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

impl Fleet {
    /// Boots the stack with the fleet's role, policy, database role and KV
    /// secret, and one SPIRE registration per workload (plus, for `bao
    /// agent`, the JWT-SVID file each agent reads). Starts no workload.
    pub fn prepare(n: usize, contender: Contender, timing: Timing) -> anyhow::Result<Self> {
        anyhow::ensure!(n >= 1, "a fleet needs at least one workload");
        let work = tempfile::Builder::new().prefix("zt-fleet-").tempdir()?;
        let policies = fleet_policies(work.path(), timing)?;
        let opts = Options {
            policies_dir: policies,
            // bao agent reads its JWT-SVID from a file the harness writes
            // once: make it outlive the run (zt-sidecar fetches new ones).
            jwt_svid_ttl: Duration::from_secs(3600),
            ..Options::default()
        };
        let stack = Devstack::start(opts)?;
        let bao = stack.root_bao();
        bao.write(
            &format!("auth/jwt/role/{JWT_ROLE}"),
            &json!({
                "role_type": "jwt",
                "user_claim": "sub",
                "bound_audiences": ["openbao"],
                "bound_claims_type": "glob",
                "bound_claims": { "sub": ID_GLOB },
                "token_policies": ["fleet"],
                "token_ttl": secs(timing.token_ttl),
                "token_max_ttl": secs(timing.token_max_ttl),
            }),
        )
        .context("writing the fleet's jwt role")?;
        bao.write(
            &format!("secret/data/{KV_PATH}"),
            &json!({ "data": { "greeting": "hello, fleet" } }),
        )
        .context("writing the fleet's KV secret")?;

        let sidecar = workspace_binary("zt-sidecar", devstack::sidecar::SIDECAR_BIN_ENV)?;
        let me = std::env::current_exe()?;
        let mut registrations = Vec::with_capacity(n);
        let mut members = Vec::with_capacity(n);
        for i in 0..n {
            let dir = work.path().join(format!("w-{i:03}"));
            std::fs::create_dir_all(dir.join("secrets"))?;
            let binary = match contender {
                Contender::ZtSidecar => {
                    // A hard link: its own path (its identity), one copy in memory.
                    let link = dir.join("zt-sidecar");
                    std::fs::hard_link(&sidecar, &link)
                        .or_else(|_| std::fs::copy(&sidecar, &link).map(|_| ()))
                        .with_context(|| format!("linking {}", sidecar.display()))?;
                    link
                }
                Contender::BaoAgent => stack.tools().bao.clone(),
            };
            let who = match contender {
                Contender::ZtSidecar => &binary,
                Contender::BaoAgent => &me,
            };
            registrations.push(Registration::for_binary(&fleet_id(i), who)?);
            members.push(Member {
                process: None,
                dir,
                admin: None,
                config: PathBuf::new(),
                binary,
            });
        }
        let mut fleet = Self {
            stack,
            contender,
            members,
            work_dir: work.path().to_path_buf(),
            work: Some(work),
            group: None,
        };
        fleet.stack.spire.register_batch(&registrations)?;
        let ids: Vec<String> = (0..n).map(fleet_id).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        fleet.stack.spire.wait_synced(&refs)?;
        for i in 0..n {
            fleet.write_config(i, timing)?;
        }
        Ok(fleet)
    }

    fn write_config(&mut self, i: usize, timing: Timing) -> anyhow::Result<()> {
        let bao_addr = self.stack.openbao_addr();
        let m = &mut self.members[i];
        let secrets = m.dir.join("secrets");
        match self.contender {
            Contender::ZtSidecar => {
                let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
                m.admin = Some(admin);
                m.config = m.dir.join("sidecar.toml");
                std::fs::write(
                    &m.config,
                    format!(
                        r#"[identity]
workload_api = "{workload}"

[openbao]
address = "{bao_addr}"
role = "{JWT_ROLE}"
audience = "openbao"
request_timeout = "10s"

[secrets]
dir = "{secrets}"

[[secrets.database]]
name = "db"
role = "{DB_ROLE}"
host = "127.0.0.1"
port = {pg}
database = "appdb"
rotate_before = "{rotate_before}"
revoke_grace = "{revoke_grace}"

[[secrets.kv]]
name = "config"
path = "{KV_PATH}"
refresh_interval = "{kv_refresh}"

[admin]
listen = "{admin}"

[log]
level = "info"
"#,
                        workload = self.stack.workload_endpoint(),
                        secrets = secrets.display(),
                        pg = self.stack.ports.postgres,
                        rotate_before = secs(timing.rotate_before),
                        revoke_grace = secs(timing.revoke_grace),
                        kv_refresh = secs(timing.kv_refresh),
                    ),
                )?;
            }
            Contender::BaoAgent => {
                let jwt = m.dir.join("jwt");
                std::fs::write(&jwt, fetch_jwt(&self.stack, &fleet_id(i))?)?;
                m.config = m.dir.join("agent.hcl");
                std::fs::write(
                    &m.config,
                    agent_config(&bao_addr, &jwt, &secrets, timing.kv_refresh),
                )?;
            }
        }
        Ok(())
    }

    /// Number of workloads.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the fleet has no workload (never: [`Fleet::prepare`] refuses).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Starts every workload at once and returns how long until the last
    /// one has both its files (database credentials and KV secret).
    pub fn launch(&mut self, limit: Duration) -> anyhow::Result<Duration> {
        self.group = CpuGroup::new();
        let started = Instant::now();
        for (i, m) in self.members.iter_mut().enumerate() {
            let mut cmd = Command::new(&m.binary);
            match self.contender {
                Contender::ZtSidecar => {
                    cmd.arg("run").arg("--config").arg(&m.config);
                }
                Contender::BaoAgent => {
                    cmd.arg("agent")
                        .arg(format!("-config={}", m.config.display()));
                }
            }
            let p = Supervised::spawn(
                &format!("{} w-{i:03}", self.contender.label()),
                cmd,
                &m.dir.join("log"),
            )?;
            if let Some(g) = &self.group {
                if g.add(p.pid()).is_err() {
                    self.group = None; // back to /proc ticks for all
                }
            }
            m.process = Some(p);
        }
        let mut waiting: Vec<usize> = (0..self.members.len()).collect();
        while !waiting.is_empty() {
            waiting.retain(|&i| !self.members[i].files().iter().all(|f| f.exists()));
            if waiting.is_empty() {
                break;
            }
            if started.elapsed() > limit {
                let i = waiting[0];
                bail!(
                    "{} of {} workloads had no secrets after {limit:?}; w-{i:03} logged:\n{}",
                    waiting.len(),
                    self.members.len(),
                    devstack::process::log_tail(&self.members[i].dir.join("log"), 15)
                );
            }
            for &i in &waiting {
                if let Some(p) = self.members[i].process.as_mut() {
                    if let Some(status) = p.exited() {
                        bail!(
                            "w-{i:03} exited ({status}) before its secrets were written:\n{}",
                            p.log_tail(15)
                        );
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(started.elapsed())
    }

    /// Leases of the fleet's database role alive in OpenBao.
    pub fn live_leases(&self) -> anyhow::Result<usize> {
        Ok(self.lease_ids()?.len())
    }

    /// PostgreSQL users OpenBao made for the fleet's role (`v-fleet-role-…`).
    pub fn live_users(&self) -> anyhow::Result<usize> {
        Ok(self.user_names()?.len())
    }

    /// The IDs (below `database/creds/<role>/`) of the fleet's live leases.
    pub fn lease_ids(&self) -> anyhow::Result<BTreeSet<String>> {
        let v = self.stack.root_bao().read(&format!(
            "sys/leases/lookup/database/creds/{DB_ROLE}/?list=true"
        ))?;
        Ok(v.as_ref()
            .and_then(|v| v["data"]["keys"].as_array())
            .map_or_else(BTreeSet::new, |keys| {
                keys.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            }))
    }

    /// The names of the PostgreSQL users OpenBao made for the fleet's role.
    pub fn user_names(&self) -> anyhow::Result<BTreeSet<String>> {
        let out = self.stack.postgres.psql(
            "appdb",
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-fleet-role-%'",
        )?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    }

    /// CPU seconds so far of each shared component and of all workloads.
    pub fn cpu(&self) -> CpuSample {
        let by_name = |name: &str| {
            self.stack
                .processes()
                .into_iter()
                .find(|p| p.name() == name)
                .map_or(0.0, |p| proc_cpu(p.pid(), false))
        };
        let pg = self.stack.postgres.process().pid();
        CpuSample {
            openbao: proc_cpu(self.stack.openbao.process().pid(), false),
            spire_server: by_name("spire-server"),
            spire_agent: by_name("spire-agent"),
            postgres: proc_cpu(pg, true) + children(pg).map(|c| proc_cpu(c, false)).sum::<f64>(),
            members: self
                .group
                .as_ref()
                .and_then(CpuGroup::cpu_secs)
                .unwrap_or_else(|| self.pids().map(|p| proc_cpu(p, false)).sum()),
        }
    }

    fn pids(&self) -> impl Iterator<Item = u32> + '_ {
        self.members
            .iter()
            .filter_map(|m| m.process.as_ref().map(Supervised::pid))
    }

    /// Resident memory of OpenBao, KiB.
    pub fn openbao_rss_kib(&self) -> u64 {
        crate::rss_kib(self.stack.openbao.process().pid()).unwrap_or(0)
    }

    /// Whether the N programs' CPU comes from a cpuacct cgroup (exact)
    /// rather than their /proc ticks (10 ms each; needs root and cgroup v1).
    pub fn exact_member_cpu(&self) -> bool {
        self.group.is_some()
    }

    /// Sum of the N programs' VmRSS (shared pages counted once per
    /// process: an upper bound of what they use together).
    pub fn members_rss_kib(&self) -> u64 {
        self.pids().filter_map(|p| crate::rss_kib(p).ok()).sum()
    }

    /// Sum of the N programs' PSS (each shared page divided among the
    /// processes mapping it: what they hold together, the binary's pages
    /// included once).
    pub fn members_pss_kib(&self) -> u64 {
        self.pids().filter_map(|p| crate::pss_kib(p).ok()).sum()
    }

    /// OpenBao's storage (raft) and audit log, bytes.
    pub fn openbao_disk(&self) -> (u64, u64) {
        let dir = self.stack.dir().join("openbao");
        let audit = std::fs::metadata(dir.join("audit.log")).map_or(0, |m| m.len());
        (dir_bytes(&dir.join("raft")), audit)
    }

    /// Where OpenBao's audit log ends now (for [`Fleet::requests_since`]).
    pub fn audit_mark(&self) -> u64 {
        std::fs::metadata(self.stack.dir().join("openbao/audit.log")).map_or(0, |m| m.len())
    }

    /// The workloads' OpenBao requests since `mark`, by kind.
    pub fn requests_since(&self, mark: u64) -> anyhow::Result<Requests> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = std::fs::File::open(self.stack.dir().join("openbao/audit.log"))?;
        f.seek(SeekFrom::Start(mark))?;
        let mut text = String::new();
        f.read_to_string(&mut text)?;
        Ok(Requests::count(&text))
    }

    /// Each zt-sidecar's `/status` (an error for `bao agent`).
    pub fn statuses(&self) -> anyhow::Result<Vec<SidecarStatus>> {
        self.members
            .iter()
            .map(|m| {
                let admin = m.admin.context("bao agent has no status endpoint")?;
                let body = ureq::get(&format!("http://{admin}/status"))
                    .config()
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .call()?
                    .body_mut()
                    .read_to_string()?;
                Ok(serde_json::from_str(&body)?)
            })
            .collect()
    }

    /// Database rotations each zt-sidecar has made so far.
    pub fn rotations(&self) -> anyhow::Result<Vec<u64>> {
        self.database_counter(|d| d.rotations)
    }

    /// Old database leases each zt-sidecar has revoked so far.
    pub fn revocations(&self) -> anyhow::Result<Vec<u64>> {
        self.database_counter(|d| d.revocations)
    }

    /// One counter of the database secrets' status, summed per zt-sidecar.
    fn database_counter(
        &self,
        counter: impl Fn(&DatabaseSecretStatus) -> u64,
    ) -> anyhow::Result<Vec<u64>> {
        Ok(self
            .statuses()?
            .iter()
            .map(|s| {
                s.secrets
                    .iter()
                    .filter_map(|s| s.as_database())
                    .map(&counter)
                    .sum()
            })
            .collect())
    }

    /// Failed operations so far: zt-sidecar's `failures` counters, or the
    /// `[ERROR]` lines of each `bao agent`'s log.
    pub fn failures(&self) -> anyhow::Result<u64> {
        match self.contender {
            Contender::ZtSidecar => Ok(self
                .statuses()?
                .iter()
                .map(|s| s.failures.values().sum::<u64>())
                .sum()),
            Contender::BaoAgent => Ok(self
                .members
                .iter()
                .map(|m| {
                    std::fs::read_to_string(m.dir.join("log"))
                        .unwrap_or_default()
                        .lines()
                        .filter(|l| l.contains("[ERROR]"))
                        .count() as u64
                })
                .sum()),
        }
    }

    /// Asks every zt-sidecar to rotate its database credentials now
    /// (`POST /rotate/db`), all at once from several threads.
    pub fn force_rotation(&self) -> anyhow::Result<()> {
        let admins: Vec<SocketAddr> = self
            .members
            .iter()
            .map(|m| m.admin.context("bao agent cannot be told to rotate"))
            .collect::<anyhow::Result<_>>()?;
        let threads = admins.len().clamp(1, 16);
        let chunks: Vec<Vec<SocketAddr>> = admins
            .chunks(admins.len().div_ceil(threads))
            .map(<[SocketAddr]>::to_vec)
            .collect();
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks
                .into_iter()
                .map(|chunk| {
                    s.spawn(move || -> anyhow::Result<()> {
                        for admin in chunk {
                            rotate(admin)?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().expect("rotation thread panicked"))
        })
    }

    /// Stops every workload: all get one SIGTERM at once (zt-sidecars then
    /// revoke their leases side by side; a second signal would make them
    /// exit at once), then each gets up to `SHUTDOWN` to exit before it is
    /// killed.
    pub fn stop_members(&mut self) {
        const SHUTDOWN: Duration = Duration::from_secs(15);
        let _group = self.group.take(); // removed once they are gone
        for m in &self.members {
            if let Some(p) = &m.process {
                p.signal(nix::sys::signal::Signal::SIGTERM);
            }
        }
        let deadline = Instant::now() + SHUTDOWN;
        for m in &mut self.members {
            if let Some(mut p) = m.process.take() {
                while p.exited().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if p.exited().is_none() {
                    p.kill();
                }
            }
        }
    }

    /// The harness's work folder (configs, logs, secrets of every workload).
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }
}

impl Drop for Fleet {
    /// Stops the workloads; on a failing test keeps their folder (configs,
    /// logs) for inspection, as [`Devstack`] keeps its own.
    fn drop(&mut self) {
        self.stop_members();
        if std::thread::panicking() {
            if let Some(w) = self.work.take() {
                eprintln!("fleet: kept {} for inspection", w.keep().display());
            }
        }
    }
}

/// `POST /rotate/db` to one zt-sidecar; a 429 (one forced rotation per
/// secret per 10 s) is retried once after its `Retry-After`.
fn rotate(admin: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..2 {
        let resp = ureq::post(&format!("http://{admin}/rotate/db"))
            .header("X-ZT-Admin", "1")
            .config()
            .http_status_as_error(false)
            .build()
            .send_empty()?;
        match resp.status().as_u16() {
            202 => return Ok(()),
            429 => {
                let wait: u64 = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(10);
                std::thread::sleep(Duration::from_secs(wait.min(15)));
            }
            code => bail!("{admin}: POST /rotate/db answered {code}"),
        }
    }
    bail!("{admin}: POST /rotate/db still refused after its Retry-After")
}

/// Direct children of `parent`.
fn children(parent: u32) -> impl Iterator<Item = u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(move |e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid: u32 = stat
                .rsplit_once(") ")?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
}

/// A copy of the repository's policies with the fleet's database role and
/// OpenBao policy added (the jwt role, which binds `sub` by a glob, is
/// written through the API: policies/openbao/setup.toml binds exact IDs).
fn fleet_policies(work: &Path, timing: Timing) -> anyhow::Result<PathBuf> {
    let src = Options::default().policies_dir;
    let dst = work.join("policies");
    copy_dir(&src, &dst)?;
    let setup = dst.join("openbao/setup.toml");
    let mut text = std::fs::read_to_string(&setup)?;
    text.push_str(&format!(
        r#"
[[database.roles]]
name = "{DB_ROLE}"
default_ttl = "{ttl}"
max_ttl = "{max}"
creation_statements = [
  "CREATE ROLE \"{{{{name}}}}\" WITH LOGIN PASSWORD '{{{{password}}}}' VALID UNTIL '{{{{expiration}}}}' IN ROLE app_runtime;",
]
revocation_statements = [
  "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{{{name}}}}';",
  "DROP ROLE IF EXISTS \"{{{{name}}}}\";",
]
"#,
        ttl = secs(timing.db_ttl),
        max = secs(timing.db_max_ttl),
    ));
    std::fs::write(&setup, text)?;
    std::fs::write(
        dst.join("openbao/fleet.hcl"),
        format!(
            r#"# The fleet benchmark's workloads.
path "database/creds/{DB_ROLE}" {{
  capabilities = ["read"]
}}
path "sys/leases/renew/database/creds/{DB_ROLE}/*" {{
  capabilities = ["update"]
}}
path "sys/leases/revoke/database/creds/{DB_ROLE}/*" {{
  capabilities = ["update"]
}}
path "secret/data/{KV_PATH}" {{
  capabilities = ["read"]
}}
"#
        ),
    )?;
    Ok(dst)
}

fn copy_dir(src: &Path, dst: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        let to = dst.join(e.file_name());
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to)?;
        } else {
            std::fs::copy(e.path(), &to)?;
        }
    }
    Ok(())
}

/// `bao agent` doing a workload's job: JWT file auto-auth with the fleet's
/// role, the credentials and the KV secret rendered to the same files.
fn agent_config(bao: &str, jwt: &Path, secrets: &Path, kv_refresh: Duration) -> String {
    format!(
        r#"vault {{
  address = "{bao}"
}}
auto_auth {{
  method "jwt" {{
    mount_path = "auth/jwt"
    config = {{
      path = "{jwt}"
      role = "{JWT_ROLE}"
      remove_jwt_after_reading = false
    }}
  }}
}}
template_config {{
  static_secret_render_interval = "{kv}"
}}
template {{
  destination = "{secrets}/db.json"
  perms = "0400"
  contents = <<EOT
{{{{ with secret "database/creds/{DB_ROLE}" }}}}{{"username":"{{{{ .Data.username }}}}","password":"{{{{ .Data.password }}}}"}}{{{{ end }}}}
EOT
}}
template {{
  destination = "{secrets}/config.json"
  perms = "0400"
  contents = <<EOT
{{{{ with secret "secret/data/{KV_PATH}" }}}}{{{{ .Data.data | toJSON }}}}{{{{ end }}}}
EOT
}}
"#,
        jwt = jwt.display(),
        secrets = secrets.display(),
        kv = secs(kv_refresh),
    )
}

/// A JWT-SVID for `id` with audience `openbao` from the Workload API (the
/// harness is registered for every fleet ID when the contender is `bao agent`).
fn fetch_jwt(stack: &Devstack, id: &str) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = spiffe::WorkloadApiClient::connect_to(stack.workload_endpoint()).await?;
        let id = spiffe::SpiffeId::new(id)?;
        let svid = client.fetch_jwt_svid(["openbao"], Some(&id)).await?;
        Ok(svid.token().to_string())
    })
}

/// Parses `--sizes 1,10,50`.
pub fn parse_sizes(text: &str) -> Result<Vec<usize>, String> {
    let sizes: Vec<usize> = text
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=1000).contains(n))
                .ok_or_else(|| format!("`{s}` is not a fleet size (1 to 1000)"))
        })
        .collect::<Result<_, _>>()?;
    if sizes.windows(2).any(|w| w[0] >= w[1]) {
        return Err("fleet sizes must be increasing, e.g. 1,10,50".into());
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audit_lines_are_counted_by_kind_without_the_harness_root_requests() {
        let line = |typ: &str, path: &str, who: &str| {
            format!(
                r#"{{"type":"{typ}","auth":{{"display_name":"{who}"}},"request":{{"path":"{path}"}}}}"#
            )
        };
        let w = "jwt-spiffe://demo.local/ns/fleet/sa/w-001";
        let log = [
            line("request", "auth/jwt/login", ""),
            line("response", "auth/jwt/login", ""),
            line("response", "database/creds/fleet-role", w),
            line(
                "response",
                "sys/leases/renew/database/creds/fleet-role/abc",
                w,
            ),
            line(
                "response",
                "sys/leases/revoke/database/creds/fleet-role/abc",
                w,
            ),
            line("response", "auth/token/renew-self", w),
            line("response", "secret/data/fleet/config", w),
            line(
                "response",
                "sys/leases/lookup/database/creds/fleet-role/",
                "root",
            ),
            "not json".to_string(),
        ]
        .join("\n");
        let r = Requests::count(&log);
        assert_eq!(
            r,
            Requests {
                logins: 1,
                token_renewals: 1,
                creds: 1,
                lease_renewals: 1,
                lease_revocations: 1,
                kv_reads: 1,
                ..Requests::default()
            }
        );
        assert_eq!((r.total(), r.writes()), (6, 5));
    }

    #[test]
    fn fleet_ids_match_the_role_glob() {
        let id = fleet_id(7);
        assert_eq!(id, "spiffe://demo.local/ns/fleet/sa/w-007");
        assert!(id.starts_with(ID_GLOB.trim_end_matches('*')));
    }

    #[test]
    fn sizes_parse_and_garbage_is_refused() {
        assert_eq!(parse_sizes("1, 10,50").unwrap(), vec![1, 10, 50]);
        for bad in ["", "0", "1,x", "10,5", "2000", "-1"] {
            assert!(parse_sizes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_agent_renders_both_files_from_the_fleet_paths() {
        let c = agent_config(
            "http://127.0.0.1:8200",
            Path::new("/w/jwt"),
            Path::new("/w/secrets"),
            Duration::from_secs(30),
        );
        assert!(c.contains("database/creds/fleet-role"), "{c}");
        assert!(c.contains("secret/data/fleet/config"), "{c}");
        assert!(c.contains("destination = \"/w/secrets/db.json\""), "{c}");
        assert!(c.contains("static_secret_render_interval = \"30s\""), "{c}");
    }
}
