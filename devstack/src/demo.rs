//! `devstack demo`: the seed's demo, one step per part, each with a short
//! explanation and the live evidence from the running platform.
//!
//! 1. Login as jake (PostgreSQL-backed users, HS256 JWT)
//! 2. Workload identity: the backend's SVID; OpenBao's audit entry for its JWT-SVID login
//! 3. Static secrets: a GitHub token stored in and read from OpenBao through the sidecar
//! 4. Dynamic secrets: PostgreSQL users before and after a rotation
//! 5. Enforcement: the frontend's identity is refused by OpenBao and by the
//!    backend's allow-list; an unregistered process gets nothing from SPIRE

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use base64::Engine as _;
use devstack::openbao::{Bao, InitKeys};
use devstack::platform::PlatformPorts;
use devstack::process::Supervised;
use devstack::spire::BACKEND_ID;
use serde_json::{json, Value};

/// The token the GitHub stand-in accepts (see github-standin).
pub const STANDIN_TOKEN: &str = "ghp_standin_demo_token_0123456789abcdef";

struct Demo {
    state: PathBuf,
    pause: bool,
    ports: PlatformPorts,
    info: Value,
    http: ureq::Agent,
    failures: Vec<String>,
    /// jake's session from step 1 (empty until then); steps 3 and 4 use it.
    jwt: String,
}

/// `text` in the ANSI style `sgr` (e.g. "1" bold, "32" green) when stdout is
/// a terminal and `NO_COLOR` is unset or empty; plain text otherwise (piped,
/// logged, `make demo NO_PAUSE=1 | tee`).
fn styled(sgr: &str, text: &str) -> String {
    static COLOUR: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let colour = *COLOUR.get_or_init(|| {
        zt_contracts::colours(
            &zt_contracts::ProcessEnv,
            std::io::IsTerminal::is_terminal(&std::io::stdout()),
        )
    });
    if colour {
        format!("\x1b[{sgr}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

fn title(n: u32, t: &str) {
    println!("\n{}", styled("1", &format!("━━ Step {n}: {t}")));
}

fn explain(s: &str) {
    for line in s.lines() {
        println!("   {line}");
    }
}

fn evidence(label: &str, v: impl std::fmt::Display) {
    println!("   {} {v}", styled("36", &format!("▸ {label}")));
}

impl Demo {
    fn get(&self, url: &str, token: Option<&str>) -> anyhow::Result<(u16, Value)> {
        let mut req = self.http.get(url);
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut r = req.call()?;
        let code = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        Ok((
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        token: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = match method {
            "DELETE" => {
                let mut r = self.http.delete(url);
                if let Some(t) = token {
                    r = r.header("Authorization", &format!("Bearer {t}"));
                }
                let mut resp = r.call()?;
                let code = resp.status().as_u16();
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                return Ok((code, serde_json::from_str(&text).unwrap_or(Value::Null)));
            }
            _ => self.http.post(url),
        };
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut r = req.send_json(body)?;
        let code = r.status().as_u16();
        let text = r.body_mut().read_to_string().unwrap_or_default();
        Ok((
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// The backend as the frontend reaches it: through both sidecars.
    fn api(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports.frontend_outbound)
    }

    fn root_bao(&self) -> anyhow::Result<Bao> {
        let keys: InitKeys =
            serde_json::from_slice(&std::fs::read(self.state.join("openbao/init-keys.json"))?)?;
        Ok(Bao::new(
            &format!("http://127.0.0.1:{}", self.ports.infra.openbao),
            Some(keys.root_token),
        ))
    }

    fn psql(&self, sql: &str) -> anyhow::Result<String> {
        let tools = devstack::tools::Tools::locate()?;
        devstack::process::run(
            Command::new(tools.pg("psql"))
                .arg("-h")
                .arg(self.state.join("postgres/socket"))
                .args([
                    "-p",
                    &self.ports.infra.postgres.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "appdb",
                    "-X",
                    "-c",
                    sql,
                ]),
        )
    }

    fn pause(&self) {
        if self.pause {
            print!("\n   [Enter] next step… ");
            let _ = std::io::stdout().flush();
            let _ = std::io::stdin().lock().read_line(&mut String::new());
        }
    }

    fn step(&mut self, n: u32, name: &str, f: impl FnOnce(&mut Self) -> anyhow::Result<()>) {
        match f(self) {
            Ok(()) => println!("   {}", styled("32", &format!("✔ step {n} ok: {name}"))),
            Err(e) => {
                println!(
                    "   {}",
                    styled("31", &format!("✘ step {n} FAILED: {name}: {e:#}"))
                );
                self.failures.push(format!("step {n} ({name}): {e:#}"));
            }
        }
        self.pause();
    }
}

/// Runs the walkthrough against the platform started by `make up`.
pub fn demo(state: &Path, no_pause: bool) -> anyhow::Result<()> {
    let mut d = Demo::connect(state, no_pause)?;
    println!(
        "{} — every value below is read live from the running components.",
        styled("1", "zt-platform demo")
    );
    d.user_login();
    d.workload_identity();
    d.static_secrets();
    d.dynamic_secrets();
    d.enforcement();
    d.outcome()
}

impl Demo {
    /// Reads what `make up` left in the state folder.
    fn connect(state: &Path, no_pause: bool) -> anyhow::Result<Self> {
        let state = std::fs::canonicalize(state)
            .with_context(|| format!("{} does not exist: run `make up` first", state.display()))?;
        let info: Value = serde_json::from_slice(
            &std::fs::read(state.join("up.json"))
                .context("the platform is not up: run `make up` (in another shell) first")?,
        )?;
        Ok(Self {
            state,
            pause: !no_pause,
            ports: PlatformPorts::FIXED,
            info,
            http: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .new_agent(),
            failures: Vec::new(),
            jwt: String::new(),
        })
    }

    /// Step 1: jake logs in through both sidecars.
    fn user_login(&mut self) {
        title(1, "User login (PostgreSQL users, argon2id, HS256 JWT)");
        explain("Jake logs in through the same path the frontend uses: frontend's zt-sidecar →\nSPIFFE mTLS → backend's zt-sidecar → backend. Users live in PostgreSQL, not OpenBao.");
        self.step(1, "login as jake", Self::login_as_jake);
    }

    fn login_as_jake(&mut self) -> anyhow::Result<()> {
        let (code, body) = self.send(
            "POST",
            &self.api("/api/auth/login"),
            None,
            &json!({"username": "jake", "password": "jake99"}),
        )?;
        if code != 200 {
            bail!("login answered {code}: {body}");
        }
        self.jwt = body["access_token"]
            .as_str()
            .context("no access_token")?
            .to_string();
        let claims = self.jwt.split('.').nth(1).and_then(|p| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        });
        let claims: Value = claims
            .and_then(|c| serde_json::from_slice(&c).ok())
            .unwrap_or(Value::Null);
        evidence(
            "POST /api/auth/login →",
            format!("{code}, user {}", body["user"]),
        );
        evidence("JWT claims (signature not shown):", claims);
        let (code, me) = self.get(&self.api("/api/auth/me"), Some(&self.jwt))?;
        evidence("GET /api/auth/me →", format!("{code} {me}"));
        Ok(())
    }

    /// Step 2: the backend's SVID, its registration and its OpenBao login.
    fn workload_identity(&mut self) {
        title(
            2,
            "Workload identity: the backend's SVID and its OpenBao login",
        );
        explain("The backend never talks to SPIRE or OpenBao. Its zt-sidecar got an X.509-SVID and a\nJWT-SVID from the SPIRE agent (unix attestation: its own binary, run by your uid) and logged in to\nOpenBao's jwt auth with the JWT-SVID. OpenBao validated it against SPIRE's JWKS.");
        self.step(
            2,
            "backend SVID and OpenBao audit entry",
            Self::show_backend_identity,
        );
    }

    fn show_backend_identity(&mut self) -> anyhow::Result<()> {
        let (_, status) = self.get(&format!("{}/status", self.backend_admin()), None)?;
        if status["spiffe_id"] != json!(BACKEND_ID) {
            bail!("backend sidecar reports {}", status["spiffe_id"]);
        }
        evidence(
            "backend sidecar /status:",
            format!(
                "spiffe_id {} · SVID expires {} (serial {}) · token policies {}",
                status["spiffe_id"],
                status["svid"]["expires_at"],
                status["svid"]["serial"],
                status["token"]["policies"]
            ),
        );
        let tools = devstack::tools::Tools::locate()?;
        let entry = devstack::process::run(
            Command::new(&tools.spire_server)
                .args(["entry", "show", "-spiffeID", BACKEND_ID, "-socketPath"])
                .arg(self.state.join("spire/server/api.sock")),
        )?;
        let selectors: Vec<&str> = entry.lines().filter(|l| l.contains("Selector")).collect();
        evidence(
            "SPIRE registration:",
            format!(
                "{BACKEND_ID} ← {}",
                selectors
                    .join(", ")
                    .replace("Selector         :", "")
                    .trim()
            ),
        );
        let audit = std::fs::read_to_string(self.state.join("openbao/audit.log"))
            .context("no OpenBao audit log")?;
        let login = audit
            .lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["type"] == "response" && v["request"]["path"] == "auth/jwt/login")
            .find(|v| {
                v["auth"]["display_name"]
                    .as_str()
                    .is_some_and(|n| n.contains(BACKEND_ID))
            })
            .context("no jwt login by the backend in the audit log")?;
        evidence(
            "OpenBao audit log:",
            format!(
                "{} {} by {} → policies {}",
                login["time"].as_str().unwrap_or(""),
                login["request"]["path"].as_str().unwrap_or(""),
                login["auth"]["display_name"].as_str().unwrap_or(""),
                login["auth"]["policies"]
            ),
        );
        Ok(())
    }

    /// Step 3: a GitHub token stored in OpenBao through the backend's sidecar.
    fn static_secrets(&mut self) {
        title(
            3,
            "Static secrets: a GitHub token in OpenBao, through the sidecar",
        );
        let token = self.github_token();
        explain("The backend checks the token with GitHub, then writes it through its sidecar's OpenBao\nproxy to secret/data/github/users/<user id>. It never holds an OpenBao token.");
        self.step(3, "store and read a GitHub token", |d| {
            d.store_github_token(&token)
        });
    }

    /// Your GITHUB_TOKEN when the platform talks to the real GitHub API, else
    /// the stand-in's; says which.
    fn github_token(&self) -> String {
        let real = std::env::var("GITHUB_TOKEN").ok().filter(|t| !t.is_empty());
        let standin = self.info["github_standin"] == json!(true);
        match (real, standin) {
            (Some(t), false) => {
                explain("Using your GITHUB_TOKEN against the real GitHub API.");
                t
            }
            (Some(_), true) => {
                explain("GITHUB_TOKEN is set, but this platform was started with the local GitHub stand-in\n(start it with GITHUB_API_URL=https://api.github.com make up to use the real API). Using the stand-in.");
                STANDIN_TOKEN.to_string()
            }
            (None, _) => {
                explain(
                    "No GITHUB_TOKEN given: using the local GitHub stand-in (no network needed).",
                );
                STANDIN_TOKEN.to_string()
            }
        }
    }

    fn store_github_token(&mut self, token: &str) -> anyhow::Result<()> {
        if self.jwt.is_empty() {
            bail!("no session from step 1");
        }
        let jwt = self.jwt.as_str();
        let (code, body) = self.send(
            "POST",
            &self.api("/api/github/configure"),
            Some(jwt),
            &json!({"token": token}),
        )?;
        if code != 200 {
            bail!("configure answered {code}: {body}");
        }
        evidence(
            "POST /api/github/configure →",
            format!("{code}, GitHub user {}", body["github_user"]["login"]),
        );
        let (_, me) = self.get(&self.api("/api/auth/me"), Some(jwt))?;
        let id = me["id"].as_i64().context("no user id")?;
        let meta = self
            .root_bao()?
            .read(&format!("secret/metadata/github/users/{id}"))?
            .context("no secret in OpenBao")?;
        evidence(
            "OpenBao (root, metadata only):",
            format!(
                "secret/data/github/users/{id} version {} created {}",
                meta["data"]["current_version"], meta["data"]["created_time"]
            ),
        );
        let row = self.psql(&format!("SELECT user_id, is_configured, configured_at FROM github_integrations WHERE user_id = {id}"))?;
        evidence(
            "PostgreSQL github_integrations:",
            row.lines().nth(2).unwrap_or("").trim(),
        );
        let (code, repos) = self.get(&self.api("/api/github/repos?per_page=5"), Some(jwt))?;
        if code != 200 {
            bail!("repos answered {code}: {repos}");
        }
        let names: Vec<&str> = repos["repos"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
            .unwrap_or_default();
        evidence(
            "GET /api/github/repos (token read back from OpenBao) →",
            format!("{names:?}"),
        );
        Ok(())
    }

    /// Step 4: a forced rotation of the backend's database user.
    fn dynamic_secrets(&mut self) {
        title(4, "Dynamic secrets: PostgreSQL users that rotate");
        explain("The backend's database user was created by OpenBao for the sidecar; the sidecar writes\nit to a tmpfs file and the backend swaps its pool when the version changes. We now force a\nrotation: new user first, old user revoked after the grace period (make-before-break).");
        self.step(4, "rotate the database user", Self::rotate_database_user);
    }

    fn rotate_database_user(&mut self) -> anyhow::Result<()> {
        let before = self.psql(DB_USERS)?;
        println!("   before:\n{}", indent(&before));
        let admin = self.backend_admin();
        let old = self.db_lease(&admin)?;
        // The custom header makes this a request no web page can send.
        let mut r = self
            .http
            .post(&format!("{admin}/rotate/db"))
            .header("X-ZT-Admin", "1")
            .send_empty()?;
        if r.status().as_u16() != 202 {
            bail!(
                "rotate answered {}: {}",
                r.status(),
                r.body_mut().read_to_string().unwrap_or_default()
            );
        }
        let new = self.next_db_lease(&admin, &old)?;
        evidence(
            "rotated:",
            format!(
                "{} (v{}) → {} (v{})",
                old["username"], old["version"], new["username"], new["version"]
            ),
        );
        let (code, zt) = self.get(&self.api("/api/zt/status"), Some(&self.jwt))?;
        evidence(
            "backend's current_user (GET /api/zt/status):",
            format!("{code} {}", zt["database"]["current_user"]),
        );
        println!(
            "   both users exist during the grace period:\n{}",
            indent(&self.psql(DB_USERS)?)
        );
        let old_user = old["username"].as_str().unwrap_or_default().to_string();
        self.wait_until_dropped(&old_user)?;
        evidence("old user dropped:", &old_user);
        Ok(())
    }

    /// The `db` secret of the backend sidecar's `/status` (Null if absent).
    fn db_lease(&self, admin: &str) -> anyhow::Result<Value> {
        let (_, st) = self.get(&format!("{admin}/status"), None)?;
        Ok(st["secrets"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == "db").cloned())
            .unwrap_or(Value::Null))
    }

    /// Waits (20 s) for a `db` secret of a later version than `old`.
    fn next_db_lease(&self, admin: &str, old: &Value) -> anyhow::Result<Value> {
        let start = Instant::now();
        loop {
            let now = self.db_lease(admin)?;
            if now["version"].as_u64() > old["version"].as_u64() {
                return Ok(now);
            }
            if start.elapsed() > Duration::from_secs(20) {
                bail!("no new version after 20 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits (90 s) until PostgreSQL no longer has `old_user`; prints the users then.
    fn wait_until_dropped(&self, old_user: &str) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            let users = self.psql(DB_USERS)?;
            if !users.contains(old_user) {
                println!(
                    "   after ({} s):\n{}",
                    start.elapsed().as_secs(),
                    indent(&users)
                );
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(90) {
                bail!("{old_user} still exists after 90 s");
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// Step 5: three identities that get nothing.
    fn enforcement(&mut self) {
        title(5, "Enforcement");
        explain("(a) The frontend's SPIFFE ID asks OpenBao for the backend's role: refused.\n(b) An identity not on the backend sidecar's allow-list dials its mTLS port: refused.\n(c) A process with no registration asks the SPIRE agent for an identity: nothing.");
        self.step(5, "refusals", Self::refusals);
    }

    fn refusals(&mut self) -> anyhow::Result<()> {
        let workload = format!(
            "unix:{}",
            self.state.join("spire/agent/public/api.sock").display()
        );
        let scratch = tempfile::Builder::new().prefix("zt-demo-").tempdir()?;
        self.refused_by_openbao(&workload, scratch.path())?;
        self.refused_by_allow_list(&workload, scratch.path())?;
        refused_by_spire(&workload)
    }

    /// (a) the frontend's own zt-sidecar binary (its identity) tries OpenBao's backend role.
    fn refused_by_openbao(&self, workload: &str, scratch: &Path) -> anyhow::Result<()> {
        let cfg = format!(
            "[identity]\nworkload_api = \"{workload}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n[openbao]\naddress = \"http://127.0.0.1:{}\"\nrole = \"backend\"\n[backoff]\ninitial = \"5s\"\nmax = \"5s\"\n",
            devstack::free_port()?,
            self.ports.infra.openbao
        );
        let line = run_probe(
            &self.state.join("bin/frontend/zt-sidecar"),
            scratch,
            "frontend-probe",
            &cfg,
            "login to OpenBao refused",
        )?;
        evidence("frontend identity → OpenBao role backend:", line);
        Ok(())
    }

    /// (b) the backend's identity is not on its own inbound allow-list (only the frontend is).
    fn refused_by_allow_list(&self, workload: &str, scratch: &Path) -> anyhow::Result<()> {
        let out_port = devstack::free_port()?;
        let cfg = format!(
            "[identity]\nworkload_api = \"{workload}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n[[mtls.outbound]]\nlisten = \"127.0.0.1:{out_port}\"\nupstream = \"127.0.0.1:{}\"\nserver_id = \"{BACKEND_ID}\"\n",
            devstack::free_port()?,
            self.ports.backend_inbound
        );
        let mut probe = start_probe(
            &self.state.join("bin/backend/zt-sidecar"),
            scratch,
            "allowlist-probe",
            &cfg,
        )?;
        // The probe's listener needs a moment; then the backend sidecar ends
        // the TLS session with an alert, so the request gets no HTTP answer.
        let mut answer = None;
        for _ in 0..50 {
            match self
                .http
                .get(&format!("http://127.0.0.1:{out_port}/api/auth/me"))
                .call()
            {
                Ok(mut r) => {
                    let _ = r.body_mut().read_to_string();
                    answer = Some(format!("HTTP {}", r.status().as_u16()));
                    break;
                }
                Err(ureq::Error::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    answer = Some(format!("no HTTP answer ({e})"));
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        probe.stop(Duration::from_secs(5));
        let backend_log = self.info["logs"].as_array().and_then(|l| {
            l.iter()
                .find(|x| x["name"] == "zt-sidecar (backend-sidecar)")
                .and_then(|x| x["log"].as_str().map(PathBuf::from))
        });
        let refusal = backend_log
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| {
                t.lines()
                    .rev()
                    .find(|l| l.contains("refused mTLS peer") && l.contains(BACKEND_ID))
                    .map(str::to_string)
            })
            .context("the backend sidecar logged no refusal")?;
        let answer = answer.unwrap_or_else(|| "no answer".into());
        if answer == "HTTP 200" {
            bail!("a non-allowed identity got a 200 from the backend");
        }
        evidence(
            "non-allowed peer → backend mTLS:",
            format!("{answer}; backend sidecar log: {}", refusal.trim()),
        );
        Ok(())
    }

    /// The summary line; an error listing the failed steps.
    fn outcome(&self) -> anyhow::Result<()> {
        println!();
        if self.failures.is_empty() {
            println!("{}", styled("32", "All 5 demo steps succeeded."));
            Ok(())
        } else {
            bail!(
                "{} step(s) failed:\n  {}",
                self.failures.len(),
                self.failures.join("\n  ")
            )
        }
    }

    /// The backend sidecar's admin URL, from up.json.
    fn backend_admin(&self) -> String {
        self.info["backend_sidecar_admin"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

/// The database users OpenBao created (`v-…`), oldest expiry first.
const DB_USERS: &str =
    "SELECT usename, valuntil FROM pg_user WHERE usename LIKE 'v-%' ORDER BY valuntil";

/// (c) this very process is not registered: the SPIRE agent gives it nothing.
fn refused_by_spire(workload: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let r = rt.block_on(async {
        let client = spiffe::WorkloadApiClient::connect_to(workload).await?;
        tokio::time::timeout(Duration::from_secs(5), client.fetch_x509_svid())
            .await
            .map_err(|_| anyhow::anyhow!("timed out"))?
            .map_err(anyhow::Error::from)
    });
    match r {
        Ok(svid) => bail!("an unregistered process got {}", svid.spiffe_id()),
        Err(e) => evidence("unregistered process → Workload API:", format!("{e:#}")),
    }
    Ok(())
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("     {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn start_probe(bin: &Path, dir: &Path, name: &str, cfg: &str) -> anyhow::Result<Supervised> {
    let conf = dir.join(format!("{name}.toml"));
    std::fs::write(&conf, cfg)?;
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("--config").arg(&conf);
    Ok(Supervised::spawn(
        name,
        cmd,
        &dir.join(format!("{name}.log")),
    )?)
}

/// Runs a probe sidecar until its log shows `needle`; returns that line.
fn run_probe(
    bin: &Path,
    dir: &Path,
    name: &str,
    cfg: &str,
    needle: &str,
) -> anyhow::Result<String> {
    let mut p = start_probe(bin, dir, name, cfg)?;
    let start = Instant::now();
    let found = loop {
        let log = std::fs::read_to_string(p.log_path()).unwrap_or_default();
        if let Some(l) = log.lines().find(|l| l.contains(needle)) {
            break Some(l.to_string());
        }
        if start.elapsed() > Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    p.stop(Duration::from_secs(5));
    found.with_context(|| format!("{name} never logged `{needle}`:\n{}", p.log_tail(10)))
}
