//! Test harness: the REAL stack (devstack: SPIRE, OpenBao, PostgreSQL), the
//! REAL zt-sidecar binary registered as the backend workload, the GitHub
//! stand-in (the one allowed stand-in), and the app-backend binary as a
//! process, configured through its environment like in production.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use devstack::process::Supervised;
use devstack::sidecar::{
    backend_config, install_copy, workspace_binary, BackendLayout, Sidecar, SIDECAR_BIN_ENV,
};
use devstack::spire::{BACKEND_ID, FRONTEND_ID};
use devstack::{free_port, Devstack, Options};
use github_standin::GithubStandIn;
use reqwest::blocking::{Client, RequestBuilder, Response};
use serde_json::{json, Value};

/// How the stack is set up.
pub struct Setup {
    /// (ttl, max_ttl) of both database roles' leases.
    pub db_ttl: Option<(Duration, Duration)>,
    /// The sidecar's `rotate_before`.
    pub rotate_before: &'static str,
    /// The sidecar's `revoke_grace`.
    pub revoke_grace: &'static str,
    /// Start the sidecar (files, proxy) right away.
    pub start_sidecar: bool,
    /// Also run the path the frontend uses: the backend sidecar's inbound
    /// mTLS listener in front of the backend, and a frontend sidecar whose
    /// outbound listener ([`Stack::mesh_url`]) speaks mTLS to it.
    pub mesh: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            db_ttl: None,
            rotate_before: "10m",
            revoke_grace: "30s",
            start_sidecar: true,
            mesh: false,
        }
    }
}

/// The frontend's half of the mesh: its sidecar and the ports of both halves.
pub struct Mesh {
    /// The frontend's zt-sidecar (outbound mTLS); `None` while stopped.
    pub frontend_sidecar: Option<Sidecar>,
    /// Port the backend must listen on (the inbound listener forwards here).
    pub backend_port: u16,
    /// The frontend sidecar's plain-HTTP outbound listener.
    pub outbound_port: u16,
}

pub struct Stack {
    pub sidecar: Option<Sidecar>,
    pub github: GithubStandIn,
    pub layout: BackendLayout,
    pub infra: Devstack,
    sidecar_binary: PathBuf,
    sidecar_config: String,
    /// Set with [`Setup::mesh`].
    pub mesh: Option<Mesh>,
    /// Kept (not removed) when a test fails.
    tmp: Option<tempfile::TempDir>,
    pub dir: PathBuf,
    /// Every migrator password the sidecar wrote (read when it became
    /// ready: the backend releases them soon after, and the file goes).
    pub migrator_passwords: Vec<String>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(s) = &self.sidecar {
                eprintln!("--- sidecar log ---\n{}", tail(&s.log(), 40));
            }
            if let Some(s) = self.mesh.as_ref().and_then(|m| m.frontend_sidecar.as_ref()) {
                eprintln!("--- frontend sidecar log ---\n{}", tail(&s.log(), 20));
            }
            if let Some(t) = self.tmp.take() {
                eprintln!(
                    "app-backend tests: kept {} for inspection",
                    t.keep().display()
                );
            }
        }
    }
}

/// A running app-backend process.
pub struct Backend {
    pub process: Supervised,
    pub url: String,
}

impl Backend {
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- app-backend log ({}) ---\n{}",
                self.process.log_path().display(),
                tail(&self.log(), 60)
            );
        }
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

impl Stack {
    pub fn start(setup: Setup) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("app-backend-test-")
            .tempdir()
            .unwrap();
        let sidecar_bin = workspace_binary("zt-sidecar", SIDECAR_BIN_ENV).expect(
            "the zt-sidecar binary is needed: `cargo build -p zt-sidecar` (cargo test --workspace builds it)",
        );
        let binary = install_copy(&sidecar_bin, dir.path(), "backend").unwrap();
        let path = dir.path().to_path_buf();
        let mut opts = Options::default()
            .register_binary(BACKEND_ID, &binary)
            .unwrap();
        let frontend_binary = setup.mesh.then(|| {
            let b = install_copy(&sidecar_bin, dir.path(), "frontend").unwrap();
            opts.registrations
                .push(devstack::spire::Registration::for_binary(FRONTEND_ID, &b).unwrap());
            b
        });
        if let Some((ttl, max)) = setup.db_ttl {
            opts.db_ttls = vec![
                ("backend-role".into(), ttl, max),
                ("backend-migrator".into(), ttl, max),
            ];
        }
        let infra = Devstack::start(opts).expect("devstack");
        let layout = BackendLayout::new(&dir.path().join("run")).unwrap();
        let (backend_port, inbound_port, outbound_port, frontend_admin) = (
            free_port().unwrap(),
            free_port().unwrap(),
            free_port().unwrap(),
            free_port().unwrap(),
        );
        let inbound = if setup.mesh {
            format!(
                "\n[[mtls.inbound]]\nlisten = \"127.0.0.1:{inbound_port}\"\nforward_to = \"127.0.0.1:{backend_port}\"\nallow = [\"{FRONTEND_ID}\"]\n"
            )
        } else {
            String::new()
        };
        let sidecar_config = backend_config(
            &infra,
            &layout,
            setup.rotate_before,
            setup.revoke_grace,
            &inbound,
        );
        let github = GithubStandIn::start().unwrap();
        let mut s = Self {
            sidecar: None,
            github,
            layout,
            infra,
            sidecar_binary: binary,
            sidecar_config,
            mesh: None,
            tmp: Some(dir),
            dir: path,
            migrator_passwords: Vec::new(),
        };
        if setup.start_sidecar {
            s.start_sidecar();
        }
        if let Some(fb) = frontend_binary {
            let config = format!(
                "[identity]\nworkload_api = \"{}\"\n\n[admin]\nlisten = \"127.0.0.1:{frontend_admin}\"\n\n\
                 [[mtls.outbound]]\nlisten = \"127.0.0.1:{outbound_port}\"\nupstream = \"127.0.0.1:{inbound_port}\"\nserver_id = \"{BACKEND_ID}\"\n",
                s.infra.workload_endpoint()
            );
            let mut fs = Sidecar::start(
                "frontend-sidecar",
                &fb,
                &s.dir,
                &config,
                std::net::SocketAddr::from(([127, 0, 0, 1], frontend_admin)),
            )
            .unwrap();
            if let Err(e) = fs.wait_ready(Duration::from_secs(60)) {
                panic!(
                    "frontend sidecar not ready: {e:#}\n--- log ---\n{}",
                    tail(&fs.log(), 60)
                );
            }
            s.mesh = Some(Mesh {
                frontend_sidecar: Some(fs),
                backend_port,
                outbound_port,
            });
        }
        s
    }

    /// The backend as the frontend reaches it: frontend sidecar (plain HTTP)
    /// → SPIFFE mTLS → backend sidecar → backend. Needs [`Setup::mesh`].
    pub fn mesh_url(&self) -> String {
        let m = self.mesh.as_ref().expect("Setup { mesh: true, .. }");
        format!("http://127.0.0.1:{}", m.outbound_port)
    }

    pub fn start_sidecar(&mut self) {
        let mut sidecar = Sidecar::start(
            "backend-sidecar",
            &self.sidecar_binary,
            &self.dir,
            &self.sidecar_config,
            self.layout.admin,
        )
        .unwrap();
        if let Err(e) = sidecar.wait_ready(Duration::from_secs(60)) {
            panic!(
                "sidecar not ready: {e:#}\n--- sidecar log ---\n{}",
                tail(&sidecar.log(), 60)
            );
        }
        // A backend already waiting may have used and released it by now.
        let migrator = read_json_if_present(&self.layout.secrets_dir.join("db-migrator.json"));
        if let Some(p) = migrator["password"].as_str() {
            self.migrator_passwords.push(p.to_string());
        }
        self.sidecar = Some(sidecar);
    }

    /// What a new pod's sidecar would be: the sidecar stopped (it revokes
    /// its leases) and started again on a secrets folder without the
    /// marker of a released migrator, so that it issues those again.
    pub fn new_pod_sidecar(&mut self) {
        if let Some(mut s) = self.sidecar.take() {
            s.terminate(Duration::from_secs(15));
        }
        devstack::sidecar::forget_releases(&self.layout.secrets_dir).unwrap();
        self.start_sidecar();
    }

    pub fn sidecar(&self) -> &Sidecar {
        self.sidecar.as_ref().expect("sidecar started")
    }

    /// The environment `make up` gives the backend, for this stack.
    pub fn backend_env(&self) -> Vec<(String, String)> {
        vec![
            (
                "ZT_SECRETS_DIR".into(),
                self.layout.secrets_dir.display().to_string(),
            ),
            (
                "ZT_OPENBAO_PROXY".into(),
                format!("unix:{}", self.layout.proxy_socket.display()),
            ),
            (
                "ZT_SIDECAR_ADMIN_URL".into(),
                format!("http://{}", self.layout.admin),
            ),
            ("GITHUB_API_URL".into(), self.github.url().to_string()),
            // The demo users, like `make up` (off by default).
            ("BACKEND_SEED_DEMO_USERS".into(), "true".into()),
        ]
    }

    /// Starts the backend binary with `backend_env()` plus `extra`, without waiting.
    pub fn spawn_backend(&self, name: &str, extra: &[(&str, &str)]) -> Backend {
        // Behind the mesh, the port the inbound listener forwards to.
        let port = match &self.mesh {
            Some(m) => m.backend_port,
            None => free_port().unwrap(),
        };
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_app-backend"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("BACKEND_LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info");
        for (k, v) in self.backend_env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let process = Supervised::spawn(name, cmd, &self.dir.join(format!("{name}.log"))).unwrap();
        Backend {
            process,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// Starts the backend and waits for `/readyz` 200.
    pub fn start_backend(&self, name: &str, extra: &[(&str, &str)]) -> Backend {
        let mut b = self.spawn_backend(name, extra);
        wait_ready(&mut b, Duration::from_secs(120));
        b
    }

    pub fn psql(&self, sql: &str) -> String {
        self.infra
            .postgres
            .psql("appdb", sql)
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn db_file(&self) -> Value {
        read_json(&self.layout.secrets_dir.join("db.json"))
    }

    /// Forces a make-before-break rotation of `db` through the sidecar's admin API.
    pub fn force_rotation(&self) {
        let r = http()
            .post(format!("http://{}/rotate/db", self.layout.admin))
            .header("X-ZT-Admin", "1")
            .send()
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().unwrap_or_default());
    }
}

pub fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// [`read_json`] of a file that may be gone (`db-migrator.json` once the
/// backend released it): `null` then.
pub fn read_json_if_present(p: &Path) -> Value {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b).unwrap(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
        Err(e) => panic!("{}: {e}", p.display()),
    }
}

pub fn wait_ready(b: &mut Backend, timeout: Duration) {
    let url = format!("{}/readyz", b.url);
    let c = http();
    let res = b.process.wait_ready(timeout, || match c.get(&url).send() {
        Ok(r) if r.status() == 200 => Ok(()),
        Ok(r) => Err(format!("{} {}", r.status(), r.text().unwrap_or_default())),
        Err(e) => Err(e.to_string()),
    });
    if let Err(e) = res {
        panic!(
            "backend not ready: {e}\n--- log ---\n{}",
            tail(&b.log(), 60)
        );
    }
}

pub fn http() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(4)
        .build()
        .unwrap()
}

/// `(status, JSON body or Null)`.
pub fn call(req: RequestBuilder) -> (u16, Value) {
    let r: Response = req.send().unwrap();
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Like [`call`], `None` when nothing answers (yet).
pub fn try_call(req: RequestBuilder) -> Option<(u16, Value)> {
    let r: Response = req.send().ok()?;
    let status = r.status().as_u16();
    let text = r.text().unwrap_or_default();
    Some((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Logs in; the access token.
pub fn login(c: &Client, url: &str, user: &str, password: &str) -> String {
    let (s, body) = call(
        c.post(format!("{url}/api/auth/login"))
            .json(&json!({"username": user, "password": password})),
    );
    assert_eq!(s, 200, "login {user}: {body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// Polls until `Some` (patience from `ZT_TEST_PATIENCE`): devstack's one helper.
#[allow(unused_imports)] // not every test file that includes this module waits
pub use devstack::eventually;

/// Every secret value seen during a test, to prove none reached a log.
#[derive(Default)]
pub struct SecretsSeen(BTreeSet<String>);

impl SecretsSeen {
    pub fn add(&mut self, s: &str) {
        if s.len() >= 6 {
            self.0.insert(s.to_string());
        }
    }

    /// Every migrator password `stack` saw, and [`Self::add_files`].
    pub fn add_stack(&mut self, stack: &Stack) {
        for p in &stack.migrator_passwords {
            self.add(p);
        }
        self.add_files(&stack.layout.secrets_dir);
    }

    /// Passwords of every credentials file and the signing keys, now.
    pub fn add_files(&mut self, secrets_dir: &Path) {
        for name in ["db.json", "db-migrator.json"] {
            if let Ok(b) = std::fs::read(secrets_dir.join(name)) {
                let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
                if let Some(p) = v["password"].as_str() {
                    self.add(p);
                }
            }
        }
        if let Ok(b) = std::fs::read(secrets_dir.join("jwt-signing-key.json")) {
            let v: Value = serde_json::from_slice(&b).unwrap_or(Value::Null);
            for k in ["key", "previous_key"] {
                if let Some(p) = v["data"][k].as_str() {
                    self.add(p);
                }
            }
        }
    }

    /// Panics naming the kind of secret (never the secret) found in `text`.
    pub fn assert_absent(&self, what: &str, text: &str) {
        assert!(!self.0.is_empty());
        for s in &self.0 {
            if text.contains(s.as_str()) {
                panic!(
                    "a secret ({} chars, starting {:?}) appears in {what}",
                    s.len(),
                    &s[..3]
                );
            }
        }
    }
}
