//! `devstack up | down | status`: the engine of `make up`, `make down` and
//! `make status`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use devstack::platform::{http_check, GithubApi, Platform, PlatformOptions, PlatformPorts};
use devstack::tools::Tools;
use devstack::Options;
use serde_json::{json, Value};

/// The seed's demo users (password = name + "99").
pub const DEMO_USERS: [&str; 6] = ["jake", "amy", "rosa", "terry", "charles", "gina"];

fn pid_file(state: &Path) -> PathBuf {
    state.join("up.pid")
}

fn info_file(state: &Path) -> PathBuf {
    state.join("up.json")
}

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

/// Whether `pid` runs the platform: after a reboot or a kill the pid file
/// may name a number the system has given to another process, which
/// `make up` must not take for the platform nor `make down` signal. The
/// platform is a devstack binary, or (a renamed copy, a run under a tracer)
/// a process whose command line has `up` and `--state`.
fn is_devstack(pid: i32) -> bool {
    let named = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .and_then(|exe| exe.file_name().map(|n| n.to_string_lossy().into_owned()))
        // A binary rebuilt while it runs shows as "devstack (deleted)".
        .is_some_and(|name| name == "devstack" || name == "devstack (deleted)");
    named
        || std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            args.contains(&b"up".as_slice()) && args.contains(&b"--state".as_slice())
        })
}

fn running_pid(state: &Path) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(pid_file(state))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (alive(pid) && is_devstack(pid)).then_some(pid)
}

/// Starts the platform and blocks until SIGINT/SIGTERM.
pub fn up(state: &Path, github_url: Option<String>) -> anyhow::Result<()> {
    std::fs::create_dir_all(state).with_context(|| format!("cannot create {}", state.display()))?;
    let state = std::fs::canonicalize(state)?;
    if let Some(pid) = running_pid(&state) {
        bail!("the platform is already running (pid {pid}); stop it with `make down` first");
    }
    let github = match github_url {
        Some(u) => GithubApi::Url(u),
        None => GithubApi::StandIn,
    };
    let ports = PlatformPorts::FIXED;
    ports.check_free(&github)?;
    let started = Instant::now();
    eprintln!("[up] starting PostgreSQL, SPIRE, OpenBao, both sidecars, backend and frontend (state in {})", state.display());
    let using_standin = github == GithubApi::StandIn;
    let platform = Platform::start(PlatformOptions {
        infra: Options {
            state_dir: Some(state.clone()),
            durable: true,
            ..Options::default()
        },
        ports,
        github,
        rotate_before: "10m".into(),
        revoke_grace: "30s".into(),
    })?;
    std::fs::write(pid_file(&state), std::process::id().to_string())?;
    let logs: Vec<Value> = platform
        .logs()
        .into_iter()
        .map(|(name, path)| json!({"name": name, "log": path}))
        .collect();
    std::fs::write(
        info_file(&state),
        serde_json::to_vec_pretty(&json!({
            "pid": std::process::id(),
            "frontend": platform.frontend_url(),
            "backend": platform.backend_url(),
            "backend_sidecar_admin": format!("http://127.0.0.1:{}", ports.backend_admin),
            "frontend_sidecar_admin": format!("http://127.0.0.1:{}", ports.frontend_admin),
            "openbao": platform.infra.openbao_addr(),
            "github": platform.github_url,
            "github_standin": using_standin,
            "logs": logs,
        }))?,
    )?;
    print_banner(&platform, &state, started.elapsed(), using_standin);

    wait_for_signal()?;
    eprintln!("\n[up] stopping: apps, then sidecars (revoking their leases), then OpenBao, SPIRE, PostgreSQL…");
    drop(platform);
    let _ = std::fs::remove_file(pid_file(&state));
    eprintln!(
        "[up] stopped. State kept in {} (make up reuses it).",
        state.display()
    );
    Ok(())
}

fn print_banner(p: &Platform, state: &Path, took: Duration, standin: bool) {
    let users: Vec<String> = DEMO_USERS.iter().map(|u| format!("{u}/{u}99")).collect();
    println!(
        "\nzt-platform is up (ready in {:.1} s)\n\n  Frontend     {}\n  Demo users   {}\n  GitHub API   {}{}\n  Logs         {}/run/*/ and {}/{{spire,openbao,postgres}}/\n  Health       make status\n  Walkthrough  make demo\n  Stop         Ctrl-C here, or `make down` from another shell\n\n  LOCAL DEMO ONLY: OpenBao's unseal key and root token are kept in\n  {}/openbao/init-keys.json (mode 0600) so `make up` can unseal on every start.\n",
        took.as_secs_f64(),
        p.frontend_url(),
        users.join("  "),
        p.github_url,
        if standin { " (local stand-in; set GITHUB_API_URL=https://api.github.com for the real one)" } else { "" },
        state.display(),
        state.display(),
        state.display(),
    );
}

pub(crate) fn wait_for_signal() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        Ok(())
    })
}

/// Stops a running `up` and waits until it has exited.
pub fn down(state: &Path) -> anyhow::Result<()> {
    let Some(pid) = running_pid(state) else {
        eprintln!("[down] nothing is running for {}", state.display());
        let _ = std::fs::remove_file(pid_file(state));
        return Ok(());
    };
    eprintln!("[down] stopping the platform (pid {pid})…");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let start = Instant::now();
    while alive(pid) {
        if start.elapsed() > Duration::from_secs(90) {
            bail!("pid {pid} did not stop within 90 s; kill it with `kill -9 {pid}`");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("[down] stopped in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Prints every component's health; fails if any is unhealthy.
pub fn status(state: &Path) -> anyhow::Result<()> {
    let Some(pid) = running_pid(state) else {
        bail!(
            "the platform is not running (no live pid in {}); start it with `make up`",
            pid_file(state).display()
        );
    };
    let info: Value = serde_json::from_slice(&std::fs::read(info_file(state))?)?;
    let ports = PlatformPorts::FIXED;
    let tools = Tools::locate()?;
    let http = |url: String| http_check(&url);
    let tcp = |port: u16| -> Result<String, String> {
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
            .map(|_| "accepting connections".to_string())
            .map_err(|e| e.to_string())
    };
    let cli = |bin: &Path, socket: PathBuf| -> Result<String, String> {
        let out = Command::new(bin)
            .arg("healthcheck")
            .arg("-socketPath")
            .arg(socket)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    };
    let i = ports.infra;
    let mut checks: Vec<(&str, Result<String, String>)> = vec![
        ("PostgreSQL", tcp(i.postgres)),
        (
            "SPIRE server",
            cli(&tools.spire_server, state.join("spire/server/api.sock")),
        ),
        (
            "SPIRE agent",
            cli(
                &tools.spire_agent,
                state.join("spire/agent/public/api.sock"),
            ),
        ),
        (
            "OIDC discovery",
            http(format!("http://127.0.0.1:{}/keys", i.oidc)),
        ),
        (
            "OpenBao",
            http(format!("http://127.0.0.1:{}/v1/sys/health", i.openbao)),
        ),
        (
            "backend sidecar",
            http(format!("http://127.0.0.1:{}/readyz", ports.backend_admin)),
        ),
        (
            "backend",
            http(format!("http://127.0.0.1:{}/readyz", ports.backend)),
        ),
        (
            "frontend sidecar",
            http(format!("http://127.0.0.1:{}/readyz", ports.frontend_admin)),
        ),
        (
            "frontend",
            http(format!("http://127.0.0.1:{}/login", ports.frontend)),
        ),
    ];
    if info["github_standin"] == json!(true) {
        checks.push((
            "GitHub stand-in",
            http(format!("http://127.0.0.1:{}/rate_limit", ports.github)),
        ));
    }
    println!("zt-platform (pid {pid}, state {})", state.display());
    let mut bad = 0;
    for (name, r) in &checks {
        match r {
            Ok(s) => println!("  ok    {name:<17} {s}"),
            Err(e) => {
                bad += 1;
                println!("  FAIL  {name:<17} {e}");
            }
        }
    }
    if bad > 0 {
        bail!(
            "{bad} component(s) unhealthy; logs are listed in {}",
            info_file(state).display()
        );
    }
    Ok(())
}

/// Starts `devstack up` in the background (log in `<state>/up.log`) unless
/// the platform is already running, and waits until it is ready.
pub fn ensure_running(state: &Path) -> anyhow::Result<()> {
    if running_pid(state).is_some() && info_file(state).exists() {
        return Ok(());
    }
    std::fs::create_dir_all(state)?;
    let _ = std::fs::remove_file(info_file(state));
    let log = std::fs::File::create(state.join("up.log"))?;
    eprintln!(
        "[demo] the platform is not up: starting it in the background (log: {}/up.log)…",
        state.display()
    );
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("up").arg("--state").arg(state);
    {
        use std::os::unix::process::CommandExt;
        cmd.stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
    }
    let mut child = cmd.spawn()?;
    let start = Instant::now();
    while !info_file(state).exists() {
        if let Some(status) = child.try_wait()? {
            let tail = devstack::process::log_tail(&state.join("up.log"), 20);
            bail!("`devstack up` exited ({status}) before the platform was ready:\n{tail}");
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!(
                "the platform was not ready after 10 minutes; see {}/up.log",
                state.display()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!(
        "[demo] platform up (pid {}); it keeps running after the demo — stop it with `make down`",
        child.id()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pid_file_naming_another_program_is_not_the_platform() {
        // This test binary (devstack-<hash>) is not devstack: a pid file
        // naming it (a number reused after a reboot) is not a running
        // platform.
        let me = std::process::id() as i32;
        assert!(alive(me) && !is_devstack(me));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(pid_file(dir.path()), me.to_string()).unwrap();
        assert_eq!(running_pid(dir.path()), None);
    }
}
