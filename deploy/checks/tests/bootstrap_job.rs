//! The OpenBao bootstrap Job's script, `deploy/bootstrap/bootstrap.sh`, run
//! the way the Job runs it — as uid 10002 with no passwd entry, with its
//! Secret files owned by root and readable through its group (what the
//! kubelet makes of `fsGroup`), its ServiceAccount's token and Role from
//! `deploy/k8s/openbao/bootstrap.yaml` — against a real PostgreSQL, a real
//! OpenBao, a real SPIRE OIDC discovery provider and a real kube-apiserver.
//!
//! Then killed (SIGKILL) after each of its steps and run again, once with
//! its `/keys` emptyDir kept (the Job's next attempt in the same pod) and
//! once with it lost (a new pod): every kill point either recovers or, where
//! the unseal key is really gone, stops at once with the recovery steps.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::install::kubectl;
use deploy_checks::repo::root;
use devstack::kube::ControlPlane;
use devstack::openbao::{self, OpenBaoOptions, SealState};
use devstack::postgres::{Postgres, PostgresOptions};
use devstack::process::Supervised;
use devstack::spire::{Spire, SpireOptions};
use devstack::tools::Tools;

/// The Job's user and group (deploy/k8s/openbao/bootstrap.yaml).
const JOB_UID: u32 = 10002;
const SUPERUSER_PASSWORD: &str = "bootstrap-test-superuser-pw";
const STEPS: [&str; 5] = ["init", "store", "unseal", "roles", "configure"];

/// Everything one bootstrap run needs, shared by the scenarios (which run
/// one after another: they share PostgreSQL's openbao_admin role).
struct World {
    tools: Tools,
    cp: &'static ControlPlane,
    pg: Postgres,
    spire: Spire,
    /// The "image": /opt/zt and bin/ as in deploy/docker/zt-bootstrap.Dockerfile.
    image: PathBuf,
    kubeconfig: PathBuf,
    secrets: PathBuf,
    _dir: tempfile::TempDir,
}

/// What one run printed and how it ended.
struct Ended {
    code: Option<i32>,
    output: String,
    took: Duration,
}

fn chown(path: &Path, uid: u32, gid: u32) {
    nix::unistd::chown(
        path,
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .unwrap();
}

fn copy_exe(from: &Path, to: &Path) {
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl World {
    fn new() -> Self {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "this test runs bootstrap.sh as uid {JOB_UID} (setpriv), which needs root"
        );
        assert!(
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(JOB_UID))
                .unwrap()
                .is_none(),
            "uid {JOB_UID} must have no passwd entry here, as in the image"
        );
        let tools = Tools::locate().unwrap_or_else(|e| panic!("{e}"));
        let cp = devstack::kube::shared().unwrap_or_else(|e| panic!("{e:#}"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

        let pg = Postgres::start(
            &tools,
            &PostgresOptions {
                dir: dir.path().join("pg"),
                port: devstack::free_port().unwrap(),
                durable: false,
            },
        )
        .unwrap_or_else(|e| panic!("PostgreSQL: {e:#}"));
        pg.psql_script(
            "postgres",
            &format!("ALTER ROLE postgres PASSWORD '{SUPERUSER_PASSWORD}';"),
        )
        .unwrap();
        let mut spire = Spire::start_server(
            &tools,
            &SpireOptions {
                dir: dir.path().join("spire"),
                server_port: devstack::free_port().unwrap(),
                oidc_port: devstack::free_port().unwrap(),
                x509_svid_ttl: Duration::from_secs(3600),
                jwt_svid_ttl: Duration::from_secs(300),
            },
        )
        .unwrap_or_else(|e| panic!("SPIRE: {e:#}"));
        spire
            .wait_oidc()
            .unwrap_or_else(|e| panic!("OIDC provider: {e:#}"));

        // The image's layout, readable by the Job's user.
        let image = dir.path().join("image");
        std::fs::create_dir_all(image.join("opt/zt")).unwrap();
        std::fs::create_dir_all(image.join("bin")).unwrap();
        for script in ["bootstrap.sh", "apply-roles.sh"] {
            copy_exe(
                &root().join("deploy/bootstrap").join(script),
                &image.join("opt/zt").join(script),
            );
        }
        let status = Command::new("cp")
            .arg("-r")
            .arg(root().join("policies"))
            .arg(image.join("opt/zt/policies"))
            .status()
            .unwrap();
        assert!(status.success());
        copy_exe(
            &devstack::sidecar::workspace_binary("zt-bootstrap", "ZT_ZT_BOOTSTRAP_BIN").unwrap(),
            &image.join("bin/zt-bootstrap"),
        );
        copy_exe(&cp.tools().kubectl, &image.join("bin/kubectl"));
        for pg_tool in ["psql", "pg_isready"] {
            std::os::unix::fs::symlink(tools.pg(pg_tool), image.join("bin").join(pg_tool)).unwrap();
        }
        let _ = Command::new("chmod")
            .args(["-R", "a+rX"])
            .arg(&image)
            .status();

        // The Secret volumes as the kubelet mounts them with fsGroup: owned by
        // root, group 10002, mode 0440.
        let secrets = dir.path().join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o755)).unwrap();
        for (name, value) in [
            ("superuser", SUPERUSER_PASSWORD),
            ("pg-admin", "bootstrap-test-openbao-admin-pw"),
        ] {
            let f = secrets.join(name);
            std::fs::write(&f, value).unwrap();
            chown(&f, 0, JOB_UID);
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o440)).unwrap();
        }

        // The Job's ServiceAccount, Role and RoleBinding, from the manifest.
        for file in [
            "deploy/k8s/00-namespaces.yaml",
            "deploy/k8s/openbao/bootstrap.yaml",
        ] {
            let path = root().join(file).display().to_string();
            kubectl(cp, &["apply", "-f", &path]).assert_clean(file);
        }
        let kubeconfig = dir.path().join("kubeconfig");
        cp.service_account_kubeconfig("openbao", "openbao-bootstrap", &kubeconfig)
            .unwrap_or_else(|e| panic!("{e:#}"));
        chown(&kubeconfig, JOB_UID, JOB_UID);
        std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o400)).unwrap();

        Self {
            tools,
            cp,
            pg,
            spire,
            image,
            kubeconfig,
            secrets,
            _dir: dir,
        }
    }

    /// A fresh, uninitialised OpenBao, and no keys Secret: a first install.
    fn fresh_openbao(&self, dir: &Path) -> (Supervised, String) {
        let _ = kubectl(
            self.cp,
            &[
                "-n",
                "openbao",
                "delete",
                "secret",
                "openbao-unseal-keys",
                "--ignore-not-found",
            ],
        );
        let opts = OpenBaoOptions {
            dir: dir.to_path_buf(),
            port: devstack::free_port().unwrap(),
            cluster_port: devstack::free_port().unwrap(),
        };
        let server = openbao::start_uninitialised(&self.tools, &opts)
            .unwrap_or_else(|e| panic!("OpenBao: {e:#}"));
        (server, format!("http://127.0.0.1:{}", opts.port))
    }

    /// Runs bootstrap.sh as uid 10002 with `keys_dir` as its /keys.
    fn run(&self, bao_addr: &str, keys_dir: &Path, fault: Option<&str>) -> Ended {
        let home = keys_dir.parent().unwrap().join("home");
        for d in [keys_dir, home.as_path()] {
            std::fs::create_dir_all(d).unwrap();
            chown(d, JOB_UID, JOB_UID);
        }
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={JOB_UID}"),
            &format!("--regid={JOB_UID}"),
            "--clear-groups",
            "--",
            "/bin/sh",
        ])
        .arg(self.image.join("opt/zt/bootstrap.sh"))
        .env_clear()
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", self.image.join("bin").display()),
        )
        .env("HOME", &home)
        .env("KUBECONFIG", &self.kubeconfig)
        .env("BAO_ADDR", bao_addr)
        .env("KEYS_SECRET", "openbao-unseal-keys")
        .env("POD_NAMESPACE", "openbao")
        .env("PG_HOST", "127.0.0.1")
        .env("PG_PORT", self.pg.port.to_string())
        .env("PG_SUPERUSER_PASSWORD_FILE", self.secrets.join("superuser"))
        .env(
            "OPENBAO_PG_ADMIN_PASSWORD_FILE",
            self.secrets.join("pg-admin"),
        )
        .env("JWKS_URL", self.spire.jwks_url())
        .env("JWT_ISSUER", self.spire.issuer())
        .env("POLICIES", self.image.join("opt/zt/policies"))
        .env("APPLY_ROLES", self.image.join("opt/zt/apply-roles.sh"))
        .env("KEYS_DIR", keys_dir)
        // Waits that can never end here end fast (the real Job: 60 x 5 s).
        .env("ZT_BOOTSTRAP_RETRIES", "6");
        if let Some(step) = fault {
            cmd.env("ZT_BOOTSTRAP_FAULT", step);
        }
        let started = Instant::now();
        let out = cmd.output().expect("run setpriv");
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        assert!(
            !output.contains(SUPERUSER_PASSWORD),
            "a password reached the bootstrap's output"
        );
        Ended {
            code: out.status.code(),
            output,
            took: started.elapsed(),
        }
    }

    /// OpenBao is unsealed and configured, the keys are in the Secret, and
    /// no key file is left in /keys.
    fn assert_bootstrapped(&self, what: &str, bao_addr: &str, keys_dir: &Path, ended: &Ended) {
        assert_eq!(
            ended.code,
            Some(0),
            "{what}: bootstrap failed:\n{}",
            ended.output
        );
        assert!(
            ended
                .output
                .contains("done: OpenBao is unsealed and configured"),
            "{what}:\n{}",
            ended.output
        );
        assert_eq!(
            openbao::state(bao_addr).unwrap(),
            SealState::Unsealed,
            "{what}"
        );
        let stored = kubectl(
            self.cp,
            &[
                "-n",
                "openbao",
                "get",
                "secret",
                "openbao-unseal-keys",
                "-o",
                "jsonpath={.data.keys\\.json}",
            ],
        );
        assert!(
            stored.code == 0 && !stored.output.trim().is_empty(),
            "{what}: no keys Secret"
        );
        assert!(
            !keys_dir.join("keys.json").exists(),
            "{what}: keys.json left in /keys"
        );
        let keys: openbao::InitKeys = serde_json::from_str(&self.cp_secret_keys()).unwrap();
        for secret in [&keys.root_token, &keys.unseal_key] {
            assert!(
                !ended.output.contains(secret.as_str()),
                "{what}: a key reached the output"
            );
        }
        let mounts = Command::new(&self.tools.bao)
            .args(["auth", "list", "-format=json"])
            .env("BAO_ADDR", bao_addr)
            .env("BAO_TOKEN", &keys.root_token)
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&mounts.stdout).contains("\"jwt/\""),
            "{what}: jwt auth is not configured"
        );
    }

    fn cp_secret_keys(&self) -> String {
        let got = kubectl(
            self.cp,
            &[
                "-n",
                "openbao",
                "get",
                "secret",
                "openbao-unseal-keys",
                "-o",
                "jsonpath={.data.keys\\.json}",
            ],
        );
        use base64::Engine;
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(got.output.trim())
                .unwrap(),
        )
        .unwrap()
    }
}

#[test]
fn bootstrap_recovers_or_stops_loudly_at_every_kill_point() {
    let world = World::new();
    let scratch = tempfile::tempdir().unwrap();
    std::fs::set_permissions(scratch.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    // A clean first run as the Job's user, then a second (the Job re-created
    // by the next make install): both complete.
    let dir = scratch.path().join("clean");
    let (_bao, addr) = world.fresh_openbao(&dir.join("openbao"));
    let keys = dir.join("keys");
    let first = world.run(&addr, &keys, None);
    println!("--- first run:\n{}", first.output);
    world.assert_bootstrapped("first run", &addr, &keys, &first);
    let again = world.run(&addr, &dir.join("keys-new-pod"), None);
    world.assert_bootstrapped(
        "second run (new pod)",
        &addr,
        &dir.join("keys-new-pod"),
        &again,
    );
    assert!(
        again.output.contains("unseal key from Secret"),
        "{}",
        again.output
    );

    let mut table = vec![format!("{:<10} {:<6} {}", "killed", "/keys", "next run")];
    for step in STEPS {
        for keep in [true, false] {
            let what = format!(
                "killed after {step}, /keys {}",
                if keep { "kept" } else { "lost" }
            );
            let dir = scratch.path().join(format!("{step}-{keep}"));
            let (_bao, addr) = world.fresh_openbao(&dir.join("openbao"));
            let keys = dir.join("keys");
            let killed = world.run(&addr, &keys, Some(step));
            assert_eq!(
                killed.code, None,
                "{what}: the fault point did not kill the script:\n{}",
                killed.output
            );
            assert!(
                killed
                    .output
                    .contains(&format!("fault injected after step '{step}'")),
                "{what}:\n{}",
                killed.output
            );
            let next_keys = if keep {
                keys.clone()
            } else {
                dir.join("keys-new-pod")
            };
            let next = world.run(&addr, &next_keys, None);
            if step == "init" && !keep {
                // The one window that loses the key: stop at once, say how to recover.
                assert_eq!(next.code, Some(1), "{what}:\n{}", next.output);
                for must in [
                    "its unseal key is in neither Secret openbao/openbao-unseal-keys nor this pod",
                    "kubectl -n openbao delete statefulset openbao",
                    "kubectl -n openbao delete pvc data-openbao-0",
                    "make install",
                ] {
                    assert!(
                        next.output.contains(must),
                        "{what}: missing {must:?}:\n{}",
                        next.output
                    );
                }
                assert!(
                    next.took < Duration::from_secs(20),
                    "{what}: took {:?} to give up",
                    next.took
                );
                assert_eq!(openbao::state(&addr).unwrap(), SealState::Sealed, "{what}");
                table.push(format!(
                    "{step:<10} {:<6} stops at once: key lost, recovery steps printed ({:.1} s)",
                    "lost",
                    next.took.as_secs_f64()
                ));
            } else {
                world.assert_bootstrapped(&what, &addr, &next_keys, &next);
                table.push(format!(
                    "{step:<10} {:<6} completes ({:.1} s)",
                    if keep { "kept" } else { "lost" },
                    next.took.as_secs_f64()
                ));
            }
        }
    }

    // A Secret left from an earlier OpenBao (its volume replaced) is not used
    // to "unseal" a new one: stop, and say which Secret to delete.
    let dir = scratch.path().join("stale");
    let stale = world.cp_secret_keys();
    let (_bao, addr) = world.fresh_openbao(&dir.join("openbao"));
    let secret_file = dir.join("stale-keys.json");
    std::fs::write(&secret_file, stale).unwrap();
    let path = secret_file.display().to_string();
    kubectl(
        world.cp,
        &[
            "-n",
            "openbao",
            "create",
            "secret",
            "generic",
            "openbao-unseal-keys",
            &format!("--from-file=keys.json={path}"),
        ],
    )
    .assert_clean("re-creating a stale keys Secret");
    let ended = world.run(&addr, &dir.join("keys"), None);
    assert_eq!(ended.code, Some(1), "{}", ended.output);
    assert!(
        ended
            .output
            .contains("holds the keys of an earlier OpenBao"),
        "{}",
        ended.output
    );
    assert!(
        ended
            .output
            .contains("kubectl -n openbao delete secret openbao-unseal-keys"),
        "{}",
        ended.output
    );
    assert_eq!(openbao::state(&addr).unwrap(), SealState::Uninitialised);
    table.push(format!(
        "{:<10} {:<6} stops at once: stale Secret named",
        "(stale)", "-"
    ));
    println!("kill points:\n{}", table.join("\n"));
}
