//! Test harness: the real devstack plus the real zt-sidecar binary,
//! registered as the backend workload.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use devstack::sidecar::{backend_config, install_copy, BackendLayout, Sidecar};
use devstack::spire::BACKEND_ID;
use devstack::{Devstack, Options};
use serde_json::Value;

pub struct Harness {
    pub sidecar: Sidecar,
    pub layout: BackendLayout,
    pub stack: Devstack,
    pub dir: tempfile::TempDir,
}

pub struct Setup {
    pub db_ttl: Option<(Duration, Duration)>,
    pub token_ttls: Option<(Duration, Duration)>,
    pub rotate_before: &'static str,
    pub revoke_grace: &'static str,
    pub extra: String,
    /// Give the OpenBao proxy a TCP listener too ([`Harness::proxy_tcp`]).
    pub proxy_tcp: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            db_ttl: None,
            token_ttls: None,
            rotate_before: "10m",
            revoke_grace: "30s",
            extra: String::new(),
            proxy_tcp: false,
        }
    }
}

pub fn sidecar_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_zt-sidecar"))
}

impl Harness {
    pub fn start(setup: Setup) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("zt-sidecar-test-")
            .tempdir()
            .unwrap();
        let binary = install_copy(&sidecar_binary(), dir.path(), "backend").unwrap();
        let mut opts = Options::default()
            .register_binary(BACKEND_ID, &binary)
            .unwrap();
        opts.token_ttls = setup.token_ttls;
        if let Some((ttl, max)) = setup.db_ttl {
            opts.db_ttls = vec![
                ("backend-role".into(), ttl, max),
                ("backend-migrator".into(), ttl, max),
            ];
        }
        let stack = Devstack::start(opts).expect("devstack");
        let mut layout = BackendLayout::new(&dir.path().join("run")).unwrap();
        if setup.proxy_tcp {
            layout.proxy_tcp = Some(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                devstack::free_port().unwrap(),
            )));
        }
        let config = backend_config(
            &stack,
            &layout,
            setup.rotate_before,
            setup.revoke_grace,
            &setup.extra,
        );
        let mut sidecar = Sidecar::start(
            "backend-sidecar",
            &binary,
            dir.path(),
            &config,
            layout.admin,
        )
        .unwrap();
        if let Err(e) = sidecar.wait_ready(Duration::from_secs(60)) {
            panic!(
                "sidecar not ready: {e:#}\n--- sidecar log ---\n{}",
                sidecar.log()
            );
        }
        Self {
            sidecar,
            layout,
            stack,
            dir,
        }
    }

    pub fn db_file(&self) -> PathBuf {
        self.layout.secrets_dir.join("db.json")
    }

    pub fn read_db_file(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.db_file()).unwrap()).unwrap()
    }

    pub async fn pg_admin(&self) -> tokio_postgres::Client {
        let (client, conn) =
            tokio_postgres::connect(&self.stack.pg_superuser(), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(conn);
        client
    }

    pub fn proxy(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        uds_request(&self.layout.proxy_socket, method, path, headers, body)
    }

    /// One request with `Host: host` to the proxy's TCP listener.
    pub fn proxy_tcp(
        &self,
        method: &str,
        path: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let addr = self.layout.proxy_tcp.expect("Setup::proxy_tcp");
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        raw_request(&mut s, method, path, host, headers, body)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- sidecar log ({}) ---\n{}",
                self.sidecar.process().log_path().display(),
                tail(&self.sidecar.log(), 80)
            );
            return;
        }
        // Every test also asserts that no secret reached the sidecar's log.
        let log = self.sidecar.log();
        assert_no_token_material(&log);
        for name in ["db.json", "db-migrator.json", "jwt-signing-key.json"] {
            let Ok(bytes) = std::fs::read(self.layout.secrets_dir.join(name)) else {
                continue;
            };
            let v: Value = serde_json::from_slice(&bytes).unwrap();
            for secret in [&v["password"], &v["data"]["key"]] {
                if let Some(s) = secret.as_str() {
                    assert!(
                        !log.contains(s),
                        "a secret from {name} is in the sidecar log"
                    );
                }
            }
        }
    }
}

/// Whether PostgreSQL has a role named `name`.
pub async fn role_exists(pg: &tokio_postgres::Client, name: &str) -> bool {
    pg.query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

/// No OpenBao token (`s.` + 24 chars) and no JWT (`eyJ…`) in `log`.
pub fn assert_no_token_material(log: &str) {
    for word in
        log.split(|c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'))
    {
        let token_like = word.len() >= 26
            && (word.starts_with("s.") || word.starts_with("hvs."))
            && word[2..].chars().all(|c| c.is_ascii_alphanumeric());
        assert!(!token_like, "an OpenBao token is in the log (not shown)");
        assert!(
            !(word.starts_with("eyJ") && word.len() > 40),
            "JWT in the log"
        );
    }
}

pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A raw HTTP/1.1 request over a Unix socket: the path goes out byte for
/// byte (no client-side normalisation), which is what attacks look like.
pub fn uds_request(
    sock: &Path,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    raw_request(&mut s, method, path, "openbao", headers, body)
}

/// One HTTP/1.1 request with `Host: host` on `s`, then the status and body
/// of the answer (read to the close).
pub fn raw_request(
    s: &mut (impl Read + Write),
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) before reading the whole body.
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Polls until `Some` (patience from `ZT_TEST_PATIENCE`): devstack's one helper.
#[allow(unused_imports)] // not every test file that includes this module waits
pub use devstack::eventually;

pub fn parse_time(s: &str) -> std::time::SystemTime {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap();
    std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(t.unix_timestamp() as u64)
}
