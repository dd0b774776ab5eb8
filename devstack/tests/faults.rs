//! The fault suite: the whole platform (real SPIRE, OpenBao, PostgreSQL, both
//! zt-sidecars, backend, frontend) under steady load through the frontend,
//! while one component at a time fails and comes back.
//!
//! For each fault: requests that failed, time to recover, OpenBao leases and
//! PostgreSQL users left behind. It passes when
//! - no request failed, for every fault that ends while the credentials the
//!   backend uses are still valid (all of them here: the TTLs are chosen so);
//! - it recovered within the bound set (and justified) in [`Fault::bound`];
//! - once recovered, OpenBao holds no database lease and PostgreSQL no
//!   `v-…` user but the ones the backend's sidecar is using.
//!
//! `ZT_FAULTS` picks the faults: unset, the three that `make test` runs
//! (PostgreSQL restart, OpenBao restart, sidecar SIGKILL); `all` (what
//! `make test-faults` sets) runs every fault and writes the table to
//! `bench/results/faults.md`; or a comma-separated list of names.
//! Nothing is skipped: a fault that cannot run (the tmpfs one needs root to
//! mount) fails the test.
//!
//! Needs the workspace binaries next to this test (`cargo test --workspace`
//! builds them; alone: `cargo build -p zt-sidecar -p app-backend -p
//! app-frontend -p github-standin` first).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use devstack::platform::{Platform, PlatformOptions};
use serde_json::Value;

/// Workers of the steady load; each sends `GET /` (two backend calls, both
/// reading PostgreSQL, over the sidecars' mTLS) every [`LOAD_PAUSE`].
const LOAD_WORKERS: usize = 3;
const LOAD_PAUSE: Duration = Duration::from_millis(25);
/// Short TTLs so the suite stays short (the seed's are 1 h).
const X509_SVID_TTL: Duration = Duration::from_secs(30);
const DB_LEASE_TTL: Duration = Duration::from_secs(20);
const TOKEN_TTL: Duration = Duration::from_secs(60);
const REVOKE_GRACE: Duration = Duration::from_secs(3);
/// How long the backend's sidecar stays dead before it is started again.
const SIDECAR_RESTART_DELAY: Duration = Duration::from_secs(1);
/// How long to wait, once recovered, for old leases to be revoked.
const CLEANUP_PATIENCE: Duration = Duration::from_secs(15);
/// The tmpfs the backend's secrets live on (KiB).
const SECRETS_TMPFS_KIB: u64 = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    PostgresRestart,
    OpenBaoRestart,
    OpenBaoSealed,
    SpireServerStopped,
    SidecarKilled,
    SecretsDirFull,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::PostgresRestart,
        Fault::OpenBaoRestart,
        Fault::OpenBaoSealed,
        Fault::SpireServerStopped,
        Fault::SidecarKilled,
        Fault::SecretsDirFull,
    ];
    /// What `make test` runs: quick, and each exercises another layer
    /// (database sessions, the OpenBao session, the sidecar process).
    const MAKE_TEST: [Fault; 3] = [
        Fault::PostgresRestart,
        Fault::OpenBaoRestart,
        Fault::SidecarKilled,
    ];

    fn name(self) -> &'static str {
        match self {
            Fault::PostgresRestart => "postgres-restart",
            Fault::OpenBaoRestart => "openbao-restart",
            Fault::OpenBaoSealed => "openbao-sealed",
            Fault::SpireServerStopped => "spire-server-stopped",
            Fault::SidecarKilled => "sidecar-killed",
            Fault::SecretsDirFull => "secrets-dir-full",
        }
    }

    fn describe(self) -> String {
        match self {
            Fault::PostgresRestart => "PostgreSQL restarted (fast shutdown, 2 s down)".into(),
            Fault::OpenBaoRestart => {
                "OpenBao restarted (SIGTERM, start, unseal) as a lease renewal falls due".into()
            }
            Fault::OpenBaoSealed => format!(
                "OpenBao sealed for {} s (renewal window {} s), then unsealed",
                seal_time().as_secs(),
                (DB_LEASE_TTL / 2).as_secs()
            ),
            Fault::SpireServerStopped => format!(
                "SPIRE server stopped for {} s (X.509-SVID half-life {} s)",
                spire_stop_time().as_secs(),
                (X509_SVID_TTL / 2).as_secs()
            ),
            Fault::SidecarKilled => format!(
                "backend's zt-sidecar killed (SIGKILL), restarted {} s later",
                SIDECAR_RESTART_DELAY.as_secs()
            ),
            Fault::SecretsDirFull => format!(
                "secrets tmpfs ({SECRETS_TMPFS_KIB} KiB) filled for 8 s during a forced rotation"
            ),
        }
    }

    /// What "recovered" means for this fault (checked by [`Suite::run`]).
    fn recovered_when(self) -> &'static str {
        match self {
            Fault::PostgresRestart => "the sidecar is ready and a dashboard started after the restart loaded",
            Fault::OpenBaoRestart | Fault::OpenBaoSealed => {
                "the sidecar renewed the database lease again and is ready"
            }
            Fault::SpireServerStopped => {
                "the sidecar holds a new X.509-SVID (the agent rotated it again), is ready, and a dashboard loaded"
            }
            Fault::SidecarKilled => {
                "the new sidecar is ready, wrote credentials of its own lease, and a dashboard loaded"
            }
            Fault::SecretsDirFull => "the forced rotation's new credentials file is written and the sidecar is ready",
        }
    }

    /// Why [`Fault::bound`] is what it is.
    fn why_bound(self) -> &'static str {
        match self {
            Fault::PostgresRestart => "the server takes queries when the fault ends; waiting requests retry on a new connection within 0.5 s (the backend's backoff cap)",
            Fault::OpenBaoRestart | Fault::OpenBaoSealed => "the failed renewal is retried after at most backoff.max (2 s) and may take up to request_timeout (5 s)",
            Fault::SpireServerStopped => "the agent syncs again at the end of its current backoff, which grows x1.5 (+-10 % jitter) per failed sync from its sync_interval (1 s here; SPIRE's default is 5 s, capped at 48 times that) — after 20 s of failures at most ~12.6 s; the Workload API stream then delivers the SVID at once",
            Fault::SidecarKilled => "a new sidecar needs an SVID from the agent, an OpenBao login, its lease (the migrator stays released) and its files: about 0.5 s here, 5 s leaves room for a loaded machine",
            Fault::SecretsDirFull => "the refused rotation is retried after at most backoff.max (2 s), plus the write",
        }
    }

    /// How long recovery may take, from the end of the fault.
    fn bound(self) -> Duration {
        match self {
            // The server accepts queries when the fault ends; a request that
            // lost its session retries on a fresh connection at once.
            Fault::PostgresRestart => Duration::from_secs(3),
            // The failed renewal is retried after at most backoff.max (2 s);
            // the retry itself may take up to request_timeout (5 s).
            Fault::OpenBaoRestart | Fault::OpenBaoSealed => Duration::from_secs(7),
            // The agent's next sync after the server is back: its backoff
            // grows x1.5 (+-10 %) per failed sync from sync_interval (1 s),
            // so after 20 s of failures the wait is at most ~12.6 s.
            Fault::SpireServerStopped => Duration::from_secs(15),
            // A new process: SVID from the agent, OpenBao login, two leases,
            // files, listeners — about 1 s; 5 s for a loaded machine.
            Fault::SidecarKilled => Duration::from_secs(5),
            // The rotation is retried after at most backoff.max (2 s).
            Fault::SecretsDirFull => Duration::from_secs(4),
        }
    }
}

fn seal_time() -> Duration {
    DB_LEASE_TTL / 2 + Duration::from_secs(3)
}

fn spire_stop_time() -> Duration {
    X509_SVID_TTL / 2 + Duration::from_secs(5)
}

fn selected() -> Vec<Fault> {
    match std::env::var("ZT_FAULTS").ok().as_deref() {
        None | Some("") => Fault::MAKE_TEST.to_vec(),
        Some("all") => Fault::ALL.to_vec(),
        Some(list) => list
            .split(',')
            .map(|n| {
                Fault::ALL
                    .into_iter()
                    .find(|f| f.name() == n.trim())
                    .unwrap_or_else(|| panic!("ZT_FAULTS: unknown fault {n:?}"))
            })
            .collect(),
    }
}

/// One request of the load.
#[derive(Debug, Clone)]
struct Sample {
    worker: usize,
    start: Instant,
    took: Duration,
    ok: bool,
    what: String,
}

impl Sample {
    fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.start < to && self.start + self.took >= from
    }
}

/// Steady load through the frontend: logged-in users loading the dashboard.
struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .new_agent()
}

fn cookies_of(resp: &ureq::http::Response<ureq::Body>, jar: &mut Vec<(String, String)>) {
    for v in resp.headers().get_all("set-cookie") {
        let Some((name, rest)) = v.to_str().unwrap_or("").split_once('=') else {
            continue;
        };
        let value = rest.split(';').next().unwrap_or("").to_string();
        jar.retain(|(n, _)| n != name);
        if !value.is_empty() {
            jar.push((name.to_string(), value));
        }
    }
}

fn cookie_header(jar: &[(String, String)]) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Signs in through the frontend's login form; the cookies of the session.
fn login(base: &str, user: &str, password: &str) -> Vec<(String, String)> {
    let a = agent();
    let mut jar = Vec::new();
    let mut page = a.get(&format!("{base}/login")).call().expect("GET /login");
    cookies_of(&page, &mut jar);
    let body = page.body_mut().read_to_string().unwrap();
    let marker = r#"name="csrf_token" value=""#;
    let i = body.find(marker).expect("login form has a CSRF field") + marker.len();
    let csrf = body[i..i + 64].to_string();
    let resp = a
        .post(&format!("{base}/login"))
        .header("cookie", cookie_header(&jar))
        .send_form([
            ("username", user),
            ("password", password),
            ("csrf_token", csrf.as_str()),
            ("next", ""),
        ])
        .expect("POST /login");
    assert_eq!(resp.status().as_u16(), 303, "login as {user} failed");
    cookies_of(&resp, &mut jar);
    assert!(
        jar.iter().any(|(n, _)| n == "zt_session"),
        "no session cookie"
    );
    jar
}

impl Load {
    fn start(base: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
        let users = [("jake", "jake99"), ("amy", "amy99"), ("rosa", "rosa99")];
        let mut workers = Vec::new();
        for i in 0..LOAD_WORKERS {
            let (user, password) = users[i % users.len()];
            let cookies = cookie_header(&login(base, user, password));
            let (stop, samples, url) = (stop.clone(), samples.clone(), format!("{base}/"));
            workers.push(std::thread::spawn(move || {
                let a = agent();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let result = a.get(&url).header("cookie", &cookies).call();
                    let (ok, what) = match result {
                        Ok(mut r) => {
                            let code = r.status().as_u16();
                            let body = r.body_mut().read_to_string().unwrap_or_default();
                            // The dashboard shows a backend problem inline
                            // (200 with an alert): that is a failure too.
                            if code == 200 && body.contains("Hi, ") {
                                if body.contains("GitHub status unavailable") {
                                    (false, "200 with 'GitHub status unavailable'".into())
                                } else {
                                    (true, String::new())
                                }
                            } else {
                                (false, format!("HTTP {code} {}", page_problem(&body)))
                            }
                        }
                        Err(e) => (false, format!("transport: {e}")),
                    };
                    let took = start.elapsed();
                    samples.lock().unwrap().push(Sample {
                        worker: i,
                        start,
                        took,
                        ok,
                        what,
                    });
                    std::thread::sleep(LOAD_PAUSE);
                }
            }));
        }
        Load {
            stop,
            samples,
            workers,
        }
    }

    /// Requests under way at some time in `[from, to)` (started before
    /// `to`, ended at or after `from`: one in flight when the fault began
    /// counts): (total, failures, slowest).
    fn between(&self, from: Instant, to: Instant) -> (usize, Vec<Sample>, Duration) {
        let s = self.samples.lock().unwrap();
        let window: Vec<&Sample> = s.iter().filter(|x| x.overlaps(from, to)).collect();
        let failed = window.iter().filter(|x| !x.ok).map(|x| (*x).clone());
        let slowest = window.iter().map(|x| x.took).max().unwrap_or_default();
        (window.len(), failed.collect(), slowest)
    }

    /// Waits until every request that started before `t` has been recorded:
    /// each worker is serial, so once it has recorded one started at or
    /// after `t`, its earlier ones are in.
    fn drain(&self, t: Instant) {
        wait_for(
            Duration::from_secs(40),
            "the requests in flight to end",
            || {
                let s = self.samples.lock().unwrap();
                (0..LOAD_WORKERS).all(|w| s.iter().rev().any(|x| x.worker == w && x.start >= t))
            },
        );
    }

    /// Requests from `from` to `to` that overlap none of `windows`: (total,
    /// failures).
    fn outside(
        &self,
        windows: &[(Instant, Instant)],
        from: Instant,
        to: Instant,
    ) -> (usize, Vec<Sample>) {
        let s = self.samples.lock().unwrap();
        let quiet: Vec<&Sample> = s
            .iter()
            .filter(|x| x.start >= from && x.start < to)
            .filter(|x| !windows.iter().any(|&(a, b)| x.overlaps(a, b)))
            .collect();
        let failed = quiet.iter().filter(|x| !x.ok).map(|x| (*x).clone());
        (quiet.len(), failed.collect())
    }

    /// Whether a request that started after `t` succeeded.
    fn succeeded_after(&self, t: Instant) -> bool {
        self.samples
            .lock()
            .unwrap()
            .iter()
            .any(|x| x.ok && x.start >= t)
    }

    fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.join();
        }
    }
}

/// The heading and first alert of an error page (no secrets are ever on it).
fn page_problem(body: &str) -> String {
    let grab = |open: &str| {
        body.find(open).map(|i| {
            let rest = &body[i + open.len()..];
            let rest = &rest[rest.find('>').map(|j| j + 1).unwrap_or(0)..];
            rest.split('<').next().unwrap_or("").trim().to_string()
        })
    };
    let h1 = grab("<h1").unwrap_or_default();
    let alert = grab("role=\"alert\"").unwrap_or_default();
    format!("{h1} {alert}").chars().take(160).collect()
}

/// A tmpfs mounted on a folder for the suite's lifetime.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, kib: u64) -> Tmpfs {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the secrets-dir-full fault mounts a small tmpfs for the backend's secrets and needs \
             root: run `make test-faults` as root (`sudo -i` first), or pick the other faults with ZT_FAULTS"
        );
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={kib}k,mode=0700"))
            .arg("zt-faults-secrets")
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount tmpfs on {}: {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// One line of the table.
#[derive(Debug)]
struct Row {
    fault: Fault,
    /// From the start of the fault's run (some first wait for a renewal or
    /// a rotation) until everything settled.
    window: (Instant, Instant),
    requests: usize,
    failed: Vec<Sample>,
    slowest: Duration,
    creds_valid_at_end: bool,
    recovery: Option<Duration>,
    leases_left: usize,
    users_left: usize,
    tokens_left: usize,
    notes: String,
}

impl Row {
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.creds_valid_at_end && !self.failed.is_empty() {
            let first: Vec<&str> = self
                .failed
                .iter()
                .take(3)
                .map(|s| s.what.as_str())
                .collect();
            p.push(format!(
                "{} of {} requests failed although the credentials were still valid when the fault ended; first: {first:?}",
                self.failed.len(),
                self.requests
            ));
        }
        match self.recovery {
            None => p.push("never recovered".into()),
            Some(r) if r > self.fault.bound() => p.push(format!(
                "recovered after {:.1} s, bound {} s",
                r.as_secs_f64(),
                self.fault.bound().as_secs()
            )),
            Some(_) => {}
        }
        if self.leases_left > 0 || self.users_left > 0 {
            p.push(format!(
                "{} database leases and {} PostgreSQL users left behind",
                self.leases_left, self.users_left
            ));
        }
        p
    }
}

struct Suite {
    platform: Platform,
    load: Option<Load>,
    /// Removed after the platform stops; kept when the test fails.
    state: Option<tempfile::TempDir>,
}

impl Drop for Suite {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(t) = self.state.take() {
                eprintln!("faults: kept {} for inspection", t.keep().display());
            }
        }
    }
}

impl Suite {
    fn sidecar_status(&self) -> Value {
        self.platform
            .backend_sidecar
            .status()
            .unwrap_or(Value::Null)
    }

    fn secret(&self, name: &str) -> Value {
        self.sidecar_status()["secrets"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
            .unwrap_or(Value::Null)
    }

    fn ready(&self) -> bool {
        matches!(
            self.platform.backend_sidecar.admin_get("/readyz"),
            Ok((200, _))
        )
    }

    fn db_file(&self) -> Value {
        let path = self.platform.backend_layout.secrets_dir.join("db.json");
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null)
    }

    /// Whether the credentials in `db.json` (what the backend uses) are
    /// unexpired now.
    fn creds_valid(&self) -> bool {
        self.db_file()["expires_at"]
            .as_str()
            .map(|at| parse_rfc3339(at) > SystemTime::now())
            .unwrap_or(false)
    }

    /// Leases of the database roles in OpenBao.
    fn openbao_leases(&self) -> BTreeSet<String> {
        let bao = self.platform.infra.root_bao();
        let mut all = BTreeSet::new();
        for prefix in [
            "database/creds/backend-role/",
            "database/creds/backend-migrator/",
            "auth/jwt/login/",
        ] {
            let path = format!(
                "sys/leases/lookup/{}?list=true",
                prefix.trim_end_matches('/')
            );
            if let Ok(Some(v)) = bao.read(&path) {
                for k in v["data"]["keys"].as_array().into_iter().flatten() {
                    if let Some(k) = k.as_str() {
                        all.insert(format!("{prefix}{k}"));
                    }
                }
            }
        }
        all
    }

    fn pg_users(&self) -> BTreeSet<String> {
        self.platform
            .infra
            .postgres
            .psql(
                "appdb",
                "SELECT usename FROM pg_user WHERE usename LIKE 'v-%'",
            )
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// (database leases, PostgreSQL users, token leases) beyond what the
    /// backend's sidecar holds now.
    fn leftovers(&self) -> (Vec<String>, Vec<String>, usize) {
        let held: Vec<Value> = ["db", "db-migrator"].map(|n| self.secret(n)).to_vec();
        let held_leases: BTreeSet<String> = held
            .iter()
            .filter_map(|s| s["lease_id"].as_str().map(String::from))
            .collect();
        let held_users: BTreeSet<String> = held
            .iter()
            .filter_map(|s| s["username"].as_str().map(String::from))
            .collect();
        let leases = self.openbao_leases();
        let tokens = leases
            .iter()
            .filter(|l| l.starts_with("auth/"))
            .count()
            .saturating_sub(1);
        let db_left = leases
            .into_iter()
            .filter(|l| l.starts_with("database/") && !held_leases.contains(l))
            .collect();
        let users_left = self
            .pg_users()
            .into_iter()
            .filter(|u| !held_users.contains(u))
            .collect();
        (db_left, users_left, tokens)
    }

    fn load(&self) -> &Load {
        self.load.as_ref().expect("load running")
    }

    /// Waits until nothing is left behind (or `patience` passes); the counts then.
    fn settle(&self, patience: Duration) -> (usize, usize, usize) {
        let start = Instant::now();
        loop {
            let (l, u, t) = self.leftovers();
            if (l.is_empty() && u.is_empty()) || start.elapsed() > patience {
                if !l.is_empty() || !u.is_empty() {
                    eprintln!("left behind: leases {l:?}, users {u:?}");
                }
                return (l.len(), u.len(), t);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Waits for `done` up to three times the bound (so an overrun is
    /// measured, not just reported); the time it took from `from`.
    fn recovery(
        &self,
        fault: Fault,
        from: Instant,
        mut done: impl FnMut(&Suite) -> bool,
    ) -> Option<Duration> {
        let patience = fault.bound() * 3 + Duration::from_secs(5);
        loop {
            if done(self) {
                return Some(from.elapsed());
            }
            if from.elapsed() > patience {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn run(&mut self, fault: Fault) -> Row {
        // Start from a steady state: ready, nothing left behind.
        wait_for(
            Duration::from_secs(30),
            "a steady state before the fault",
            || {
                self.ready() && {
                    let (l, u, _) = self.leftovers();
                    l.is_empty() && u.is_empty()
                }
            },
        );
        eprintln!("fault {}: {}", fault.name(), fault.describe());
        let begin = Instant::now();
        let mut notes = String::new();
        let (end, creds_valid_at_end, recovery) = match fault {
            Fault::PostgresRestart => {
                self.platform.infra.postgres.stop();
                std::thread::sleep(Duration::from_secs(2));
                self.platform
                    .infra
                    .postgres
                    .restart()
                    .expect("PostgreSQL restarts");
                let end = Instant::now();
                let valid = self.creds_valid();
                let rec = self.recovery(fault, end, |s| s.ready() && s.load().succeeded_after(end));
                (end, valid, rec)
            }
            Fault::OpenBaoRestart => {
                self.wait_renewal_due_within(Duration::from_secs(1));
                let renewals = self.secret("db")["renewals"].as_u64().unwrap_or(0);
                self.platform
                    .infra
                    .openbao
                    .restart()
                    .expect("OpenBao restarts");
                let end = Instant::now();
                let valid = self.creds_valid();
                let rec = self.recovery(fault, end, |s| {
                    s.ready() && s.secret("db")["renewals"].as_u64().unwrap_or(0) > renewals
                });
                (end, valid, rec)
            }
            Fault::OpenBaoSealed => {
                // Right after a renewal: the credentials then outlive the seal.
                self.wait_for_renewal();
                let renewals = self.secret("db")["renewals"].as_u64().unwrap_or(0);
                self.platform.infra.openbao.seal().expect("OpenBao seals");
                std::thread::sleep(seal_time());
                let failed = self.secret("db")["renewals"].as_u64().unwrap_or(0) == renewals;
                notes.push_str(if failed {
                    "a renewal fell due during the seal; "
                } else {
                    "no renewal fell due during the seal?; "
                });
                self.platform
                    .infra
                    .openbao
                    .unseal()
                    .expect("OpenBao unseals");
                let end = Instant::now();
                let valid = self.creds_valid();
                let rec = self.recovery(fault, end, |s| {
                    s.ready() && s.secret("db")["renewals"].as_u64().unwrap_or(0) > renewals
                });
                (end, valid, rec)
            }
            Fault::SpireServerStopped => {
                // Right after an SVID rotation: it then outlives the stop.
                let serial = self.svid_serial();
                wait_for(X509_SVID_TTL, "an SVID rotation", || {
                    self.svid_serial() != serial
                });
                let serial = self.svid_serial();
                self.platform.infra.spire.stop_server();
                std::thread::sleep(spire_stop_time());
                notes.push_str(if self.svid_serial() == serial {
                    "no SVID rotation while the server was down (one was due); "
                } else {
                    "the SVID rotated while the server was down?; "
                });
                self.platform
                    .infra
                    .spire
                    .restart_server()
                    .expect("SPIRE server restarts");
                let end = Instant::now();
                let valid = self.creds_valid();
                let rec = self.recovery(fault, end, |s| {
                    s.ready() && s.svid_serial() != serial && s.load().succeeded_after(end)
                });
                (end, valid, rec)
            }
            Fault::SidecarKilled => {
                let before = self.db_file()["lease_id"].as_str().map(String::from);
                self.platform.backend_sidecar.kill();
                // A container runtime takes about this long to restart one.
                std::thread::sleep(SIDECAR_RESTART_DELAY);
                self.platform
                    .backend_sidecar
                    .restart()
                    .expect("the sidecar starts again");
                let end = Instant::now();
                let valid = self.creds_valid();
                let rec = self.recovery(fault, end, |s| {
                    s.ready()
                        && s.db_file()["lease_id"].as_str().map(String::from) != before
                        && s.load().succeeded_after(end)
                });
                (end, valid, rec)
            }
            Fault::SecretsDirFull => {
                let version = self.db_file()["version"].as_u64().unwrap_or(0);
                let filler = self.platform.backend_layout.secrets_dir.join("filler");
                fill(&filler);
                let (code, _) = self.rotate("db");
                assert_eq!(code, 202, "POST /rotate/db");
                std::thread::sleep(Duration::from_secs(8));
                let attempts = self.sidecar_status()["failures"]["file"]
                    .as_u64()
                    .unwrap_or(0);
                notes.push_str(&format!(
                    "{attempts} writes refused (ENOSPC) in all so far; "
                ));
                std::fs::remove_file(&filler).unwrap();
                let end = Instant::now();
                let valid = self.creds_valid();
                let rec = self.recovery(fault, end, |s| {
                    s.ready() && s.db_file()["version"].as_u64().unwrap_or(0) > version
                });
                (end, valid, rec)
            }
        };
        let (leases_left, users_left, tokens_left) = self.settle(CLEANUP_PATIENCE);
        // Requests from the start of the fault until everything settled.
        let until = Instant::now();
        self.load().drain(until);
        let (requests, failed, slowest) = self.load().between(begin, until);
        let _ = end;
        let row = Row {
            fault,
            window: (begin, until),
            requests,
            failed,
            slowest,
            creds_valid_at_end,
            recovery,
            leases_left,
            users_left,
            tokens_left,
            notes,
        };
        eprintln!(
            "fault {}: {} requests, {} failed, slowest {:?}, recovery {:?}, leases left {}, users left {}, extra token leases {}",
            fault.name(),
            row.requests,
            row.failed.len(),
            row.slowest,
            row.recovery,
            row.leases_left,
            row.users_left,
            row.tokens_left
        );
        row
    }

    fn svid_serial(&self) -> String {
        self.sidecar_status()["svid"]["serial"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    fn rotate(&self, name: &str) -> (u16, String) {
        let resp = agent()
            .post(&format!(
                "http://{}/rotate/{name}",
                self.platform.backend_sidecar.admin
            ))
            .header("X-ZT-Admin", "1")
            .send_empty();
        match resp {
            Ok(mut r) => (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(e) => (0, e.to_string()),
        }
    }

    /// Waits until the `db` lease has just been renewed.
    fn wait_for_renewal(&self) {
        let n = self.secret("db")["renewals"].as_u64().unwrap_or(0);
        wait_for(DB_LEASE_TTL, "a lease renewal", || {
            self.secret("db")["renewals"].as_u64().unwrap_or(0) > n
        });
    }

    /// Waits until the `db` lease's next renewal (at half its TTL) is at most
    /// `within` away.
    fn wait_renewal_due_within(&self, within: Duration) {
        self.wait_for_renewal();
        let expires = self.secret("db")["expires_at"]
            .as_str()
            .map(parse_rfc3339)
            .expect("db expires_at");
        let renew_at = expires - DB_LEASE_TTL / 2;
        if let Ok(left) = renew_at.duration_since(SystemTime::now()) {
            std::thread::sleep(left.saturating_sub(within));
        }
    }
}

/// Writes zeros to `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 4096];
    loop {
        match f.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    let _ = f.sync_all();
}

fn wait_for(patience: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < patience, "no {what} within {patience:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn parse_rfc3339(s: &str) -> SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("bad timestamp {s:?}: {e}"))
}

fn table(rows: &[Row]) -> String {
    let mut t = String::from(
        "| Fault | Requests | Failed | Slowest request | Credentials valid at the end | Recovery | Bound | Leases left | PostgreSQL users left | Extra token leases | Pass |\n\
         |---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        t.push_str(&format!(
            "| {} | {} | {} | {:.2} s | {} | {} | {} s | {} | {} | {} | {} |\n",
            r.fault.describe(),
            r.requests,
            r.failed.len(),
            r.slowest.as_secs_f64(),
            if r.creds_valid_at_end { "yes" } else { "no" },
            r.recovery
                .map(|d| format!("{:.2} s", d.as_secs_f64()))
                .unwrap_or_else(|| "never".into()),
            r.fault.bound().as_secs(),
            r.leases_left,
            r.users_left,
            r.tokens_left,
            if r.problems().is_empty() {
                "yes"
            } else {
                "**no**"
            },
        ));
    }
    t
}

#[test]
fn the_platform_survives_its_faults_under_load() {
    let faults = selected();
    let state = tempfile::Builder::new()
        .prefix("faults-")
        .tempdir()
        .expect("temp dir");
    let secrets = state.path().join("run/backend/secrets");
    let _tmpfs = faults
        .contains(&Fault::SecretsDirFull)
        .then(|| Tmpfs::mount(&secrets, SECRETS_TMPFS_KIB));

    let mut opts = PlatformOptions::ephemeral().expect("free ports");
    opts.infra.state_dir = Some(state.path().to_path_buf());
    opts.infra.x509_svid_ttl = X509_SVID_TTL;
    opts.infra.token_ttls = Some((TOKEN_TTL, Duration::from_secs(3600)));
    for role in ["backend-role", "backend-migrator"] {
        opts.infra
            .db_ttls
            .push((role.into(), DB_LEASE_TTL, Duration::from_secs(3600)));
    }
    opts.rotate_before = "5s".into();
    opts.revoke_grace = format!("{}s", REVOKE_GRACE.as_secs());
    let platform = Platform::start(opts).expect("the platform starts");
    let load = Load::start(&platform.frontend_url());
    let mut suite = Suite {
        platform,
        load: Some(load),
        state: Some(state),
    };
    wait_for(Duration::from_secs(10), "successful load", || {
        suite
            .load()
            .succeeded_after(Instant::now() - Duration::from_secs(1))
    });

    let mut rows = Vec::new();
    for f in &faults {
        rows.push(suite.run(*f));
    }
    // Between the faults (waiting for a steady state) nothing may fail
    // either: a late effect of one fault would show there. Each run drained
    // the requests that started before its window's end.
    let between = match (rows.first(), rows.last()) {
        (Some(first), Some(last)) => {
            let windows: Vec<_> = rows.iter().map(|r| r.window).collect();
            let (n, failed) = suite
                .load()
                .outside(&windows, first.window.0, last.window.1);
            eprintln!("between the faults: {n} requests, {} failed", failed.len());
            Some((n, failed))
        }
        _ => None,
    };
    if let Some(load) = suite.load.take() {
        load.finish();
    }
    let t = table(&rows);
    println!("{t}");
    if faults == Fault::ALL {
        write_results(&t, &rows);
    }
    let problems: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            r.problems()
                .into_iter()
                .map(move |p| format!("{}: {p}", r.fault.name()))
        })
        .chain(
            between
                .into_iter()
                .filter(|(_, failed)| !failed.is_empty())
                .map(|(n, failed)| {
                    let first: Vec<&str> = failed.iter().take(3).map(|s| s.what.as_str()).collect();
                    format!(
                        "between the faults: {} of {n} requests failed; first: {first:?}",
                        failed.len()
                    )
                }),
        )
        .collect();
    assert!(problems.is_empty(), "{problems:#?}\n{t}");
}

fn write_results(table: &str, rows: &[Row]) {
    let notes: String = rows
        .iter()
        .filter(|r| !r.notes.is_empty())
        .map(|r| format!("- {}: {}\n", r.fault.name(), r.notes.trim_end_matches("; ")))
        .collect();
    let bounds: String = rows
        .iter()
        .map(|r| {
            format!(
                "- **{}**: recovered when {}. Bound {} s: {}.\n",
                r.fault.name(),
                r.fault.recovered_when(),
                r.fault.bound().as_secs(),
                r.fault.why_bound()
            )
        })
        .collect();
    let text = format!(
        "# Fault suite (`make test-faults`)\n\n{}\n\n\
         The real platform from devstack (SPIRE, OpenBao, PostgreSQL, both zt-sidecars, backend, \
         frontend, debug builds) under steady load: {LOAD_WORKERS} signed-in users loading the \
         dashboard through the frontend every {} ms each (two backend calls over both sidecars' \
         mTLS, both reading PostgreSQL). Short TTLs: X.509-SVIDs {} s, OpenBao token {} s, \
         database leases {} s (renewed at half-life), revoke grace {} s.\n\n\
         A request failed if it was not a 200 dashboard without a problem shown. Recovery: from \
         the end of the fault until the condition below holds. \
         Left behind: database leases in OpenBao and `v-…` users in PostgreSQL other than the \
         two the sidecar holds, counted once recovered (after its revoke grace); extra token \
         leases: OpenBao tokens beyond the sidecar's current one — after the SIGKILL, the killed \
         sidecar's token, which nobody renews and which expires at its TTL (60 s here, 1 h by \
         default); its leases are revoked by the new sidecar after the grace, so it holds \
         nothing by then (later rows still count it while it lives).\n\n{table}\n{notes}\n\
         ## Recovery conditions and bounds\n\n{bounds}",
        zt_bench::machine_line(),
        LOAD_PAUSE.as_millis(),
        X509_SVID_TTL.as_secs(),
        TOKEN_TTL.as_secs(),
        DB_LEASE_TTL.as_secs(),
        REVOKE_GRACE.as_secs(),
    );
    let path = devstack::tools::repo_root().join("bench/results/faults.md");
    std::fs::write(&path, text).expect("write bench/results/faults.md");
    println!("wrote {}", path.display());
}
