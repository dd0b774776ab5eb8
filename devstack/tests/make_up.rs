//! `make up` / `make demo` / `make down` end to end, as a newcomer runs them:
//! the real Makefile targets on a clean state dir (with the binaries this
//! test run already built: `PROFILE=debug SKIP_BUILD=1`), a login through the
//! frontend's port, the whole demo, a clean stop with nothing left behind,
//! and a second `make up` on the same state that keeps the users.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use devstack::tools::repo_root;

fn make(state: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("make");
    c.current_dir(repo_root())
        .arg("--no-print-directory")
        .args(args)
        .arg(format!("STATE={}", state.display()))
        .args(["PROFILE=debug", "SKIP_BUILD=1"]);
    c
}

/// A running `make up`. If the test fails while it runs, dropping it runs
/// `make down` (before the temp dir with its state goes), so a failed run
/// leaves no platform holding the ports for the next one.
struct Up {
    state: std::path::PathBuf,
    child: Option<Child>,
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = make(&self.state, &["down"]).output();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `make up` in the background; returns once `up.json` exists (ready).
fn make_up(state: &Path, log: &str) -> (Up, Duration) {
    let _ = std::fs::remove_file(state.join("up.json"));
    let out = std::fs::File::create(state.parent().unwrap().join(log)).unwrap();
    let started = Instant::now();
    let child = make(state, &["up"])
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let mut up = Up {
        state: state.to_path_buf(),
        child: Some(child),
    };
    while !state.join("up.json").exists() {
        let child = up.child.as_mut().expect("make up is running");
        if let Some(s) = child.try_wait().unwrap() {
            let text =
                std::fs::read_to_string(state.parent().unwrap().join(log)).unwrap_or_default();
            panic!("make up exited ({s}) before it was ready:\n{text}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "make up not ready after 5 minutes"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (up, started.elapsed())
}

fn make_down(state: &Path, mut up: Up) {
    let mut child = up.child.take().expect("make up is running");
    let out = make(state, &["down"]).output().unwrap();
    assert!(
        out.status.success(),
        "make down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "make up exited with {status} after make down"
    );
}

/// Every live process whose command line mentions the state folder.
fn leftovers(state: &Path) -> Vec<String> {
    let needle = state.to_string_lossy().to_string();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().to_string();
        if !pid.chars().all(|c| c.is_ascii_digit()) || pid == std::process::id().to_string() {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        if cmd.contains(&needle) && !stat.contains(") Z ") {
            found.push(format!("{pid}: {cmd}"));
        }
    }
    found
}

fn cookie(resp: &ureq::http::Response<ureq::Body>, name: &str) -> Option<String> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
        .map(|c| c.split(';').next().unwrap_or_default().to_string())
}

/// Logs in through the frontend's HTML form (CSRF token and all); returns
/// the dashboard HTML.
fn login_through_frontend(user: &str, password: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into();
    let mut page = agent.get("http://127.0.0.1:3000/login").call().unwrap();
    let csrf_cookie = cookie(&page, "zt_csrf").expect("the login page sets a CSRF cookie");
    let html = page.body_mut().read_to_string().unwrap();
    let token = html
        .split("name=\"csrf_token\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the login form carries a CSRF token")
        .to_string();
    let resp = agent
        .post("http://127.0.0.1:3000/login")
        .header("Cookie", &csrf_cookie)
        .send_form([
            ("username", user),
            ("password", password),
            ("csrf_token", token.as_str()),
            ("next", "/"),
        ])
        .unwrap();
    assert!(
        resp.status().is_redirection(),
        "login answered {}",
        resp.status()
    );
    let session = cookie(&resp, "zt_session").expect("a session cookie after login");
    let mut dash = agent
        .get("http://127.0.0.1:3000/")
        .header("Cookie", &format!("{session}; {csrf_cookie}"))
        .call()
        .unwrap();
    assert_eq!(dash.status(), 200);
    dash.body_mut().read_to_string().unwrap()
}

#[test]
fn make_up_demo_down_and_up_again() {
    let root = tempfile::Builder::new()
        .prefix("make-up-")
        .tempdir()
        .unwrap();
    let state = root.path().join("state");
    std::fs::create_dir_all(&state).unwrap();

    let (up, cold) = make_up(&state, "up1.log");
    eprintln!(
        "make up (clean state, binaries built): ready in {:.1} s",
        cold.as_secs_f64()
    );
    let status = make(&state, &["status"]).output().unwrap();
    assert!(
        status.status.success(),
        "make status:\n{}",
        String::from_utf8_lossy(&status.stdout)
    );

    let dash = login_through_frontend("jake", "jake99");
    assert!(
        dash.to_lowercase().contains("jake"),
        "the dashboard greets jake"
    );

    // A new user, to check that the second `make up` keeps it.
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let r = agent
        .post("http://127.0.0.1:8000/api/auth/register")
        .send_json(serde_json::json!({"username": "hitchcock", "password": "scully99"}))
        .unwrap();
    assert_eq!(r.status(), 201);

    let demo = make(&state, &["demo", "NO_PAUSE=1"]).output().unwrap();
    let text = String::from_utf8_lossy(&demo.stdout);
    assert!(
        demo.status.success(),
        "make demo failed:\n{text}\n{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    for n in 1..=5 {
        assert!(
            text.contains(&format!("✔ step {n} ok")),
            "step {n} did not report success:\n{text}"
        );
    }
    assert!(text.contains("All 5 demo steps succeeded"), "{text}");
    // Piped output is plain text: no ANSI escapes in a log or a CI transcript.
    assert!(
        !text.contains('\u{1b}'),
        "make demo wrote ANSI escapes to a pipe:\n{text:?}"
    );

    make_down(&state, up);
    std::thread::sleep(Duration::from_millis(500));
    let left = leftovers(&state);
    assert!(
        left.is_empty(),
        "processes left after make down:\n{}",
        left.join("\n")
    );

    let (up, warm) = make_up(&state, "up2.log");
    eprintln!(
        "make up (same state again): ready in {:.1} s",
        warm.as_secs_f64()
    );
    login_through_frontend("hitchcock", "scully99");
    make_down(&state, up);
    assert!(leftovers(&state).is_empty());
}
