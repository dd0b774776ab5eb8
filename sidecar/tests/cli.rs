//! The command line: `check` prints the effective config; a bad config exits
//! 64 with a message naming the key, for every kind of garbage.

use std::process::Command;

fn sidecar(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zt-sidecar"))
        .args(args)
        .env_remove("ZT_WORKLOAD_API")
        .env_remove("ZT_OPENBAO_ADDR")
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("ZT_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_prints_the_effective_config_with_env_overrides() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/backend.toml");
    let (code, out, err) = sidecar(
        &["check", "--config", example],
        &[("ZT_OPENBAO_ADDR", "http://10.0.0.9:8200")],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("address = \"http://10.0.0.9:8200\""), "{out}");
    assert!(out.contains("revoke_grace = \"30s\""), "{out}");
}

#[test]
fn without_config_the_toml_comes_from_zt_config() {
    let toml = "[admin]\nlisten = \"127.0.0.1:15100\"\n[log]\nformat = \"json\"\n";
    let (code, out, err) = sidecar(&["check"], &[("ZT_CONFIG", toml)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("# effective configuration (from ZT_CONFIG; valid)"),
        "{out}"
    );
    assert!(out.contains("listen = \"127.0.0.1:15100\""), "{out}");
    assert!(out.contains("format = \"json\""), "{out}");

    // --config wins over ZT_CONFIG.
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/backend.toml");
    let (code, out, err) = sidecar(&["check", "--config", example], &[("ZT_CONFIG", toml)]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("role = \"backend-role\""), "{out}");
    assert!(!out.contains("15100"), "{out}");

    // probe reads admin.listen from ZT_CONFIG too (nothing listens there).
    let port = devstack::free_port().unwrap();
    let admin = format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n");
    let (code, _, err) = sidecar(&["probe"], &[("ZT_CONFIG", &admin)]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.starts_with(&format!("/readyz: cannot reach 127.0.0.1:{port}: ")),
        "{err}"
    );

    // Neither: a clear usage error for every command.
    for cmd in ["run", "check", "probe"] {
        let (code, _, err) = sidecar(&[cmd], &[]);
        assert_eq!(code, 64, "{cmd}: {err}");
        assert_eq!(
            err.trim(),
            "invalid configuration: no configuration: pass --config FILE or set ZT_CONFIG to the TOML text",
            "{cmd}"
        );
    }
    // Garbage in ZT_CONFIG: exit 64, naming ZT_CONFIG or the key.
    for (text, says) in [
        ("this is not toml", "ZT_CONFIG: TOML parse error"),
        ("[admin]\nlisten = \"localhost\"\n", "admin.listen"),
        ("[secrets]\nfile_mode = \"0444\"\n", "secrets.file_mode"),
    ] {
        for cmd in ["run", "check", "probe"] {
            let (code, _, err) = sidecar(&[cmd], &[("ZT_CONFIG", text)]);
            assert_eq!(code, 64, "{cmd} {text:?}: {err}");
            assert!(err.starts_with("invalid configuration: "), "{err}");
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(err.contains("(from ZT_CONFIG)"), "{err}");
        }
    }
}

#[test]
fn garbage_configs_exit_64_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[identity]\nworkload_apii = \"unix:/x\"\n", "workload_apii"),
        ("[backoff]\ninitial = \"-1s\"\n", "backoff.initial"),
        (
            "[identity]\nworkload_api = \"tcp:/nope\"\n",
            "identity.workload_api",
        ),
        ("[admin]\nlisten = \"localhost\"\n", "admin.listen"),
        ("this is not toml", "TOML parse error"),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("c{i}.toml"));
        std::fs::write(&path, text).unwrap();
        for cmd in ["check", "run"] {
            let (code, _, err) = sidecar(&[cmd, "--config", path.to_str().unwrap()], &[]);
            assert_eq!(code, 64, "{cmd} {text:?}: {err}");
            assert!(err.starts_with("invalid configuration:"), "{err}");
            assert!(err.contains(key), "{text:?}: {err}");
        }
    }
    let (code, _, err) = sidecar(&["run", "--config", "/nonexistent/zt.toml"], &[]);
    assert_eq!(code, 64);
    assert!(err.contains("/nonexistent/zt.toml"), "{err}");
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let (code, _, err) = sidecar(
        &["check", "--config", empty.to_str().unwrap()],
        &[("ZT_WORKLOAD_API", "nope")],
    );
    assert_eq!(code, 64);
    assert!(err.contains("ZT_WORKLOAD_API"), "{err}");
}

#[test]
fn a_listener_that_cannot_bind_is_a_clear_startup_error() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        format!("[admin]\nlisten = \"{}\"\n", busy.local_addr().unwrap()),
    )
    .unwrap();
    let (code, _, err) = sidecar(&["run", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("admin.listen: cannot listen on"), "{err}");
}

#[test]
fn probe_reports_a_missing_or_unready_sidecar() {
    let dir = tempfile::tempdir().unwrap();
    let port = devstack::free_port().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    // Nothing listens there.
    let (code, _, err) = sidecar(&["probe", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("/readyz: cannot reach 127.0.0.1:{port}: ")),
        "{err}"
    );
    // A sidecar that is up but has no identity (no Workload API) is alive, not ready.
    let cfg = format!("[identity]\nworkload_api = \"unix:{}/none.sock\"\n[admin]\nlisten = \"127.0.0.1:{port}\"\n", dir.path().display());
    std::fs::write(&path, cfg).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_zt-sidecar"))
        .args(["run", "--config", path.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut healthz = None;
    for _ in 0..50 {
        let (code, _, _) = sidecar(
            &[
                "probe",
                "--config",
                path.to_str().unwrap(),
                "--path",
                "/healthz",
            ],
            &[],
        );
        if code == 0 {
            healthz = Some(code);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (ready, _, err) = sidecar(&["probe", "--config", path.to_str().unwrap()], &[]);
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(healthz, Some(0), "healthz probe never succeeded");
    assert_eq!(ready, 1, "not ready without an SVID");
    assert!(err.contains("503"), "{err}");
    assert!(err.contains("no X.509-SVID"), "{err}");
}
