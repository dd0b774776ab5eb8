//! The `app-frontend` binary itself: configuration errors exit 64 with
//! `invalid configuration: <key>: <what>` (and never print a secret), a
//! good configuration serves, SIGTERM drains and exits 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_app-frontend");

fn run_with(env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(BIN);
    cmd.env_clear().env("PATH", "/usr/bin:/bin");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A valid config would serve forever; these must all exit at once.
    let start = Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(10));
    out
}

#[test]
fn invalid_configuration_exits_64_naming_the_key() {
    let cases: [(&str, &str, &str); 6] = [
        (
            "FRONTEND_LISTEN",
            "not-an-address",
            "invalid configuration: FRONTEND_LISTEN: not an IP address with a port",
        ),
        (
            "BACKEND_URL",
            "ftp://backend",
            "invalid configuration: BACKEND_URL: must be an http:// or https:// URL",
        ),
        (
            "FRONTEND_SIDECAR_ADMIN_URL",
            "::::",
            "invalid configuration: FRONTEND_SIDECAR_ADMIN_URL: not a URL",
        ),
        (
            "FRONTEND_COOKIE_SECURE",
            "maybe",
            "invalid configuration: FRONTEND_COOKIE_SECURE: expected auto, true or false",
        ),
        (
            "FRONTEND_BACKEND_TIMEOUT",
            "-5",
            "invalid configuration: FRONTEND_BACKEND_TIMEOUT: not a duration",
        ),
        (
            "FRONTEND_CSRF_KEY",
            "TOP-SECRET-NOT-HEX-KEY",
            "invalid configuration: FRONTEND_CSRF_KEY: must be 64 hexadecimal characters",
        ),
    ];
    for (key, value, want) in cases {
        let out = run_with(&[(key, value)]);
        assert_eq!(out.status.code(), Some(64), "{key}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{key}: {err}");
        assert!(!err.contains("TOP-SECRET"), "secret printed: {err}");
    }
}

#[test]
fn a_taken_port_is_a_clear_error_not_a_panic() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run_with(&[("FRONTEND_LISTEN", &addr)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn serves_with_defaults_for_the_rest_and_drains_on_sigterm() {
    let port = devstack::free_port().unwrap();
    let child = Command::new(BIN)
        .env("FRONTEND_LISTEN", format!("127.0.0.1:{port}"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let body = loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            use std::io::{Read, Write};
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut buf = String::new();
            s.read_to_string(&mut buf).unwrap();
            break buf;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "never listened");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        body.starts_with("HTTP/1.1 200") && body.ends_with("ok\n"),
        "{body}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("app-frontend serving") && err.contains("app-frontend stopped"),
        "{err}"
    );
}
