//! `zt-bench backend` — `make bench-backend` (scripts/bench-backend.sh): the backend's benchmark
//! on the real stack — devstack (SPIRE, OpenBao, PostgreSQL) + the real
//! zt-sidecar + the release app-backend — measured with `wrk`:
//!
//! - `POST /api/auth/login` latency p50/p99 (argon2id dominates), 1 and 2
//!   connections;
//! - `GET /api/auth/me` requests/s and p99 (JWT check + one PostgreSQL
//!   query per request) at a few connection counts.
//!
//! Writes a Markdown report (default `bench/results/backend.md`).
//!
//! ```text
//! zt-bench backend [--out FILE] [--secs N]
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use devstack::process::Supervised;
use devstack::sidecar::{
    backend_config, install_copy, workspace_binary, BackendLayout, Sidecar, SIDECAR_BIN_ENV,
};
use devstack::spire::BACKEND_ID;
use devstack::{free_port, Devstack, Options};
use zt_bench::{cores, cpu_secs, machine_line, tree_cpu_secs, which, write_result, Wrk};

const GOAL_LOGIN_P50_MS: f64 = 50.0;
const GOAL_ME_RPS: f64 = 5000.0;
const GOAL_ME_P99_MS: f64 = 10.0;

struct Run<'a> {
    wrk: PathBuf,
    url: &'a str,
    secs: u64,
    backend_pid: u32,
    postmaster_pid: u32,
}

/// One wrk run with the CPU the backend and PostgreSQL spent per request (µs).
#[derive(Debug, Clone, Copy)]
struct Measured {
    wrk: Wrk,
    backend_us: f64,
    pg_us: f64,
}

impl Run<'_> {
    fn wrk(
        &self,
        threads: u32,
        conns: u32,
        path: &str,
        extra: &[&str],
    ) -> anyhow::Result<Measured> {
        let cpu0 = cpu_secs(self.backend_pid);
        let pg0 = tree_cpu_secs(self.postmaster_pid);
        let mut args = vec!["--timeout", "10s"];
        args.extend_from_slice(extra);
        let url = format!("{}{path}", self.url);
        let w = Wrk::run(&self.wrk, &url, threads, conns, self.secs, &args)?;
        if w.non_2xx > 0 || w.errors > 0 {
            bail!(
                "{path}: {} non-2xx responses, {} socket errors",
                w.non_2xx,
                w.errors
            );
        }
        let n = w.requests.max(1) as f64;
        Ok(Measured {
            wrk: w,
            backend_us: (cpu_secs(self.backend_pid) - cpu0) * 1e6 / n,
            pg_us: (tree_cpu_secs(self.postmaster_pid) - pg0) * 1e6 / n,
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the benchmark with `secs` seconds per wrk run and writes the report to `out`.
pub fn bench_backend(out: &Path, secs: u64) -> anyhow::Result<()> {
    let wrk =
        which("wrk").context("wrk is not installed: `make bench-backend` installs Debian's wrk")?;

    let dir = tempfile::Builder::new()
        .prefix("backend-bench-")
        .tempdir()?;
    let sidecar_bin = workspace_binary("zt-sidecar", SIDECAR_BIN_ENV)?;
    let backend_bin = workspace_binary("app-backend", "ZT_BACKEND_BIN")?;
    let sidecar_copy = install_copy(&sidecar_bin, dir.path(), "backend")?;
    eprintln!("[bench] starting PostgreSQL, SPIRE, OpenBao and the backend's zt-sidecar…");
    let stack = Devstack::start(Options::default().register_binary(BACKEND_ID, &sidecar_copy)?)?;
    let layout = BackendLayout::new(&dir.path().join("run"))?;
    let cfg = backend_config(&stack, &layout, "10m", "30s", "");
    let mut sidecar = Sidecar::start(
        "backend-sidecar",
        &sidecar_copy,
        dir.path(),
        &cfg,
        layout.admin,
    )?;
    sidecar.wait_ready(Duration::from_secs(60))?;

    let port = free_port()?;
    let url = format!("http://127.0.0.1:{port}");
    let mut cmd = Command::new(&backend_bin);
    cmd.env("BACKEND_LISTEN", format!("127.0.0.1:{port}"))
        .env("ZT_SECRETS_DIR", &layout.secrets_dir)
        .env(
            "ZT_OPENBAO_PROXY",
            format!("unix:{}", layout.proxy_socket.display()),
        )
        .env("ZT_SIDECAR_ADMIN_URL", format!("http://{}", layout.admin))
        // The benchmark logs in as jake.
        .env("BACKEND_SEED_DEMO_USERS", "true")
        .env("RUST_LOG", "warn");
    let mut backend = Supervised::spawn("app-backend", cmd, &dir.path().join("app-backend.log"))?;
    let ready = format!("{url}/readyz");
    backend.wait_ready(Duration::from_secs(120), || match http_status(&ready) {
        Ok(200) => Ok(()),
        Ok(s) => Err(format!("readyz {s}")),
        Err(e) => Err(e),
    })?;
    eprintln!("[bench] backend ready at {url}");

    let scripts = dir.path().join("wrk");
    std::fs::create_dir_all(&scripts)?;
    std::fs::write(
        scripts.join("login.lua"),
        "wrk.method = \"POST\"\nwrk.body = '{\"username\":\"jake\",\"password\":\"jake99\"}'\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
    )?;
    let login_lua = scripts.join("login.lua");
    let login_lua = login_lua.to_str().context("temp path is not UTF-8")?;
    let token = login_token(&url)?;
    let auth = format!("Authorization: Bearer {token}");
    let run = Run {
        wrk,
        url: &url,
        secs,
        backend_pid: backend.pid(),
        postmaster_pid: stack.postgres.process().pid(),
    };

    // Warm-up (pool connections, prepared statements, page cache).
    let _ = run.wrk(1, 8, "/api/auth/me", &["-H", &auth])?;

    let mut login_rows = Vec::new();
    for conns in [1u32, 2] {
        eprintln!("[bench] POST /api/auth/login, {conns} connection(s), {secs} s…");
        let m = run.wrk(1, conns, "/api/auth/login", &["-s", login_lua])?;
        login_rows.push((1, conns, m));
    }
    let mut me_rows = Vec::new();
    for (threads, conns) in [(1u32, 1u32), (1, 2), (1, 4), (1, 8), (1, 16), (2, 64)] {
        eprintln!("[bench] GET /api/auth/me, {threads} thread(s), {conns} connections, {secs} s…");
        let m = run.wrk(threads, conns, "/api/auth/me", &["-H", &auth])?;
        me_rows.push((threads, conns, m));
    }

    let login1 = login_rows[0].2.wrk;
    let best_me = me_rows
        .iter()
        .filter(|(_, _, m)| ms(m.wrk.p99) <= GOAL_ME_P99_MS)
        .max_by(|a, b| a.2.wrk.rps.total_cmp(&b.2.wrk.rps))
        .copied();
    let md = report(secs, &login_rows, &me_rows, login1, best_me);
    write_result(out, &md)?;
    drop(backend);
    let _ = sidecar.terminate(Duration::from_secs(10));
    Ok(())
}

type Row = (u32, u32, Measured);

fn report(secs: u64, login: &[Row], me: &[Row], login1: Wrk, best_me: Option<Row>) -> String {
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    let n = cores();
    let mut s = format!(
        "# app-backend\n\n{} Release builds. Everything on loopback.\n\n\
         The release `app-backend` behind its real zt-sidecar (credentials files, OpenBao proxy) on the real \
         PostgreSQL 15, OpenBao and SPIRE from devstack. Load generator: `wrk` (Debian 4.1.0), keep-alive \
         connections, {secs} s per run, on the same {n} cores as the backend, PostgreSQL and the rest of the \
         stack. Backend: {n} actix workers, pool of 16 connections, `RUST_LOG=warn`. CPU columns: CPU time \
         the backend process / all PostgreSQL processes spent per request during the run. The machine may be \
         shared: other work on it shows up as noise, mostly in p99.\n\n",
        machine_line()
    );
    s.push_str(
        "## POST /api/auth/login (argon2id m=19456 KiB, t=2, p=1; JWT signing; audit row)\n\n",
    );
    s.push_str(
        "| Connections | p50 | p99 | logins/s | backend CPU per login | PostgreSQL CPU per login |\n|---|---|---|---|---|---|\n",
    );
    for (_, c, m) in login {
        s.push_str(&format!(
            "| {c} | {:.1} ms | {:.1} ms | {:.1} | {:.1} ms | {:.0} µs |\n",
            ms(m.wrk.p50),
            ms(m.wrk.p99),
            m.wrk.rps,
            m.backend_us / 1000.0,
            m.pg_us
        ));
    }
    s.push_str(&format!(
        "\nLogin p50 with one client: **{:.1} ms** (goal ≤ {GOAL_LOGIN_P50_MS} ms: {}; the seed quotes ~100 ms). \
         An argon2id hash keeps one core busy for its whole duration, so logins/s is bounded by cores ÷ hash \
         time; the backend runs at most {n} hashes at once (one per core), more wait their turn.\n\n",
        ms(login1.p50),
        met(ms(login1.p50) <= GOAL_LOGIN_P50_MS),
    ));
    s.push_str("## GET /api/auth/me (HS256 check + one PostgreSQL query per request)\n\n");
    s.push_str(
        "| wrk threads | Connections | req/s | p50 | p99 | backend CPU per request | PostgreSQL CPU per request |\n|---|---|---|---|---|---|---|\n",
    );
    for (t, c, m) in me {
        s.push_str(&format!(
            "| {t} | {c} | {:.0} | {:.2} ms | {:.2} ms | {:.0} µs | {:.0} µs |\n",
            m.wrk.rps,
            ms(m.wrk.p50),
            ms(m.wrk.p99),
            m.backend_us,
            m.pg_us
        ));
    }
    match best_me {
        Some((t, c, m)) => s.push_str(&format!(
            "\nBest throughput with p99 ≤ {GOAL_ME_P99_MS} ms: **{:.0} req/s** at {c} connection(s), {t} wrk \
             thread(s) (p99 {:.2} ms). Goal ≥ {GOAL_ME_RPS:.0} req/s with p99 ≤ {GOAL_ME_P99_MS} ms: {}.\n",
            m.wrk.rps,
            ms(m.wrk.p99),
            met(m.wrk.rps >= GOAL_ME_RPS)
        )),
        None => s.push_str(&format!(
            "\nNo run kept p99 ≤ {GOAL_ME_P99_MS} ms: goal ≥ {GOAL_ME_RPS:.0} req/s with p99 ≤ {GOAL_ME_P99_MS} ms NOT met.\n"
        )),
    }
    s.push_str(
        "Throughput is bounded by the cores the backend, PostgreSQL and wrk share (see the CPU columns); past \
         that point more connections only add queueing, and p99 is the figure that moves most between runs \
         when other work shares the machine.\n\n",
    );
    s.push_str("Reproduce: `make bench-backend` (or `bash scripts/bench-backend.sh --secs 20`).\n");
    s
}

/// The status `url` answers with (any status; an error only without an answer).
fn http_status(url: &str) -> Result<u16, String> {
    ureq::get(url)
        .config()
        .timeout_global(Some(Duration::from_secs(3)))
        .http_status_as_error(false)
        .build()
        .call()
        .map(|r| r.status().as_u16())
        .map_err(|e| e.to_string())
}

fn login_token(url: &str) -> anyhow::Result<String> {
    let start = Instant::now();
    let r: serde_json::Value = ureq::post(&format!("{url}/api/auth/login"))
        .send_json(serde_json::json!({"username": "jake", "password": "jake99"}))?
        .body_mut()
        .read_json()?;
    eprintln!(
        "[bench] first login took {:.1} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );
    Ok(r["access_token"]
        .as_str()
        .context("no access_token")?
        .to_string())
}
