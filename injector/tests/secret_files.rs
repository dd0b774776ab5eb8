//! The files the injected sidecar writes are readable by an app container
//! whose uid differs from the sidecar's, in a pod with no `fsGroup` — the
//! exact case, with the real SPIRE, OpenBao and PostgreSQL.
//!
//! The pod is the one the injector makes (the library's mutation of a pod
//! whose app runs as 10001:10001 and sets no fsGroup; the webhook test shows
//! the API server stores exactly that mutation). It is run the way a
//! container runtime runs it, minus the kubelet: in a private mount
//! namespace, `/run/zt` is a fresh tmpfs with mode 0777 (what the kubelet
//! makes of a memory-backed emptyDir without fsGroup); the sidecar runs as
//! the container's runAsUser/runAsGroup with the pod's supplementalGroups,
//! no capabilities and no_new_privs, its configuration in ZT_CONFIG exactly
//! as injected (only the Workload API socket and OpenBao's address come
//! from the sidecar's own environment overrides, since SPIRE and OpenBao
//! run on loopback here); the app is a process with the app container's
//! uid/gid and the same supplementalGroups.
//!
//! Negative control: the same app without the supplementary group (what the
//! pod would be without the injector's `supplementalGroups`) is refused.
//!
//! `harness = false`: this binary is also the sidecar and the app (it
//! re-executes itself in those roles), and the registered SPIRE workload.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use serde_json::json;
use zt_injector::annotations::{self, Intent, Source, PREFIX};
use zt_injector::patch::{self, Plan};
use zt_injector::render;
use zt_injector::settings::Settings;

const NAME: &str = "the_injected_files_are_readable_by_an_app_with_another_uid_and_no_fs_group";
const ROLE: &str = "ZT_TEST_ROLE";
const CASE: &str = "ZT_TEST_CASE";

fn main() -> ExitCode {
    match std::env::var(ROLE).as_deref() {
        Ok("sidecar") => return sidecar(),
        Ok("app") => return app(),
        Ok("pod") => return pod(),
        _ => {}
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        println!("{NAME}: test");
        return ExitCode::SUCCESS;
    }
    if let Some(filter) = args.iter().find(|a| !a.starts_with('-')) {
        if !NAME.contains(filter.as_str()) {
            println!("running 0 tests\n\ntest result: ok. 0 passed; 0 failed; 1 filtered out");
            return ExitCode::SUCCESS;
        }
    }
    println!("running 1 test");
    let started = Instant::now();
    match std::panic::catch_unwind(test) {
        Ok(()) => {
            println!(
                "test {NAME} ... ok\n\ntest result: ok. 1 passed; 0 failed; finished in {:.2?}",
                started.elapsed()
            );
            ExitCode::SUCCESS
        }
        Err(_) => {
            println!("test {NAME} ... FAILED\n\ntest result: FAILED. 0 passed; 1 failed");
            ExitCode::FAILURE
        }
    }
}

/// One pod to run: what the injector made of it.
#[derive(serde::Serialize, serde::Deserialize, Debug)]
struct Case {
    label: String,
    config: String,
    sidecar_uid: i64,
    sidecar_gid: i64,
    supplemental_groups: Vec<i64>,
    app_uid: i64,
    app_gid: i64,
    app_mount: String,
    secrets_group: u32,
    admin: String,
    workload_api: String,
    openbao: String,
    binary: PathBuf,
}

fn test() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test runs the sidecar and the app as other uids (setpriv) in a private mount namespace (unshare), which needs root"
    );
    for tool in ["setpriv", "unshare", "mount"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .output()
                .unwrap()
                .status
                .success(),
            "{tool} is missing: apt-get install util-linux"
        );
    }
    let settings = chart_settings();
    let dir = tempfile::Builder::new()
        .prefix("zt-secret-files-")
        .tempdir()
        .unwrap();
    // World-traversable (not listable) path to the binary and the sockets, as
    // a container image and the CSI driver's socket are for a non-root user.
    let binary =
        devstack::sidecar::install_copy(&std::env::current_exe().unwrap(), dir.path(), "backend")
            .unwrap();
    let stack = devstack::Devstack::start(
        devstack::Options::default()
            // The sidecar runs as the injected container's uid, and SPIRE
            // selects on it (unix:uid), as devstack does for `make up`.
            .register_binary_as(
                devstack::spire::BACKEND_ID,
                &binary,
                zt_injector::settings::DEFAULT_RUN_AS_USER as u32,
            )
            .unwrap(),
    )
    .expect("devstack (real SPIRE, OpenBao, PostgreSQL)");
    let socket = stack
        .workload_endpoint()
        .trim_start_matches("unix:")
        .to_string();
    for p in [
        Path::new(&socket).parent().unwrap(),
        binary.parent().unwrap(),
    ] {
        traversable(p);
    }

    // The default secrets group (the sidecar's own, 10000), and a group of
    // the app's (10001) that the sidecar may hand files to only because the
    // injector put it in the pod's supplementalGroups.
    let annotations_for = |group: Option<&str>| {
        let admin = devstack::free_port().unwrap().to_string();
        let mut a = vec![
            ("inject".to_string(), "true".to_string()),
            ("openbao-role".into(), "backend".into()),
            ("database-db".into(), "backend-role".into()),
            (
                "kv-jwt-signing-key".into(),
                "backend/jwt-signing-key".into(),
            ),
            (
                "proxy-allow".into(),
                "GET,PUT,POST,DELETE secret/data/github/users/*".into(),
            ),
            ("admin-port".into(), admin),
        ];
        if let Some(g) = group {
            a.push(("secrets-group".into(), g.into()));
        }
        a
    };
    for (label, group) in [
        ("default secrets group", None),
        ("secrets-group 10001", Some("10001")),
    ] {
        let notes = annotations_for(group);
        let pod = injected_pod(&settings, &notes);
        let case = case_of(label, &pod, &stack, &binary);
        println!(
            "--- {label}: sidecar {}:{} app {}:{} supplementalGroups {:?}, no fsGroup",
            case.sidecar_uid,
            case.sidecar_gid,
            case.app_uid,
            case.app_gid,
            case.supplemental_groups
        );
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(&binary)
            .env(ROLE, "pod")
            .env(CASE, serde_json::to_string(&case).unwrap())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        println!("{text}");
        assert!(out.status.success(), "{label}: the pod run failed (above)");
        for want in [
            "app reads db.json: ok",
            "app reads jwt-signing-key.json: ok",
            "app connects to openbao.sock: HTTP/1.1",
            "app without the group reads db.json: Permission denied",
            "app without the group connects to openbao.sock: Permission denied",
        ] {
            assert!(text.contains(want), "{label}: missing `{want}`");
        }
    }
    drop(stack);
}

/// World-executable (traversable, not readable) from `p` up to `/`.
fn traversable(p: &Path) {
    for a in p.ancestors() {
        if a == Path::new("/") {
            break;
        }
        let meta = std::fs::metadata(a).unwrap();
        let mode = meta.permissions().mode();
        std::fs::set_permissions(a, std::fs::Permissions::from_mode(mode | 0o011)).unwrap();
    }
}

fn chart_settings() -> Settings {
    let run = common::helm_template("zt-injector", "zt-injector", &[]);
    assert_eq!(run.code, 0, "helm template: {}", run.stderr);
    let text = common::documents(&run.stdout)
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .and_then(|d| d["data"]["injector.toml"].as_str().map(str::to_string))
        .unwrap();
    Settings::parse(
        &text,
        &BTreeMap::from([
            ("POD_NAME".to_string(), "zt-injector-0".to_string()),
            ("POD_NAMESPACE".to_string(), "zt-injector".to_string()),
        ]),
    )
    .unwrap()
}

/// The pod the injector makes of an app running as 10001:10001, no fsGroup.
fn injected_pod(settings: &Settings, notes: &[(String, String)]) -> Pod {
    let annotations: BTreeMap<String, String> = notes
        .iter()
        .map(|(k, v)| (format!("{PREFIX}{k}"), v.clone()))
        .collect();
    let manifest = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": "apps", "annotations": annotations},
        "spec": {
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "app", "image": "app:1", "securityContext": {"runAsUser": 10001, "runAsGroup": 10001}}],
        },
    });
    let pod: Pod = serde_json::from_value(manifest.clone()).unwrap();
    assert!(pod
        .spec
        .as_ref()
        .unwrap()
        .security_context
        .as_ref()
        .unwrap()
        .fs_group
        .is_none());
    let Intent::Inject(i) = annotations::parse(&annotations, &settings.trust_domain).unwrap()
    else {
        panic!("not injected")
    };
    let Source::Annotations(a) = &i.source else {
        panic!()
    };
    let rendered = render::from_annotations(a, settings).unwrap_or_else(|r| panic!("{r}"));
    let plan = Plan {
        rendered: &rendered,
        image: settings.sidecar.image.clone(),
        resources: patch::resources(&i.resources, &settings.sidecar.resources).unwrap(),
    };
    let p = patch::mutation(&pod, &plan, settings).unwrap();
    let mut out = manifest;
    json_patch::patch(&mut out, &p.0).unwrap();
    serde_json::from_value(out).unwrap()
}

fn case_of(label: &str, pod: &Pod, stack: &devstack::Devstack, binary: &Path) -> Case {
    let spec = pod.spec.as_ref().unwrap();
    assert!(
        spec.security_context.as_ref().unwrap().fs_group.is_none(),
        "no fsGroup"
    );
    let sidecar = &spec.init_containers.as_ref().unwrap()[0];
    let app = &spec.containers[0];
    let config = sidecar.env.as_ref().unwrap()[0].value.clone().unwrap();
    let sc = sidecar.security_context.as_ref().unwrap();
    let asc = app.security_context.as_ref().unwrap();
    let loaded =
        zt_sidecar::config::Config::parse(&config, &BTreeMap::<String, String>::new()).unwrap();
    let mount = app
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .find(|m| m.name == "zt-run")
        .unwrap();
    assert_eq!(mount.read_only, Some(true));
    Case {
        label: label.into(),
        config,
        sidecar_uid: sc.run_as_user.unwrap(),
        sidecar_gid: sc.run_as_group.unwrap(),
        supplemental_groups: spec
            .security_context
            .as_ref()
            .unwrap()
            .supplemental_groups
            .clone()
            .unwrap_or_default(),
        app_uid: asc.run_as_user.unwrap(),
        app_gid: asc.run_as_group.unwrap(),
        app_mount: mount.mount_path.clone(),
        secrets_group: loaded.secrets.group.unwrap(),
        admin: loaded.admin.listen.to_string(),
        workload_api: stack.workload_endpoint(),
        openbao: stack.openbao_addr(),
        binary: binary.to_path_buf(),
    }
}

/// Inside the private mount namespace: the pod's memory volume, the
/// sidecar, the app with and without the group.
fn pod() -> ExitCode {
    let case: Case = serde_json::from_str(&std::env::var(CASE).unwrap()).unwrap();
    let fail = |m: String| {
        eprintln!("{m}");
        ExitCode::FAILURE
    };
    // A private /run, then the emptyDir: tmpfs, 0777, no fsGroup, sizeLimit.
    for cmd in [
        vec![
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "mode=0755,size=1m",
            "tmpfs",
            "/run",
        ],
        vec!["mkdir", "-p", "/run/zt"],
        vec![
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "mode=0777,size=4m",
            "tmpfs",
            "/run/zt",
        ],
    ] {
        let st = Command::new(cmd[0]).args(&cmd[1..]).status().unwrap();
        if !st.success() {
            return fail(format!("{cmd:?} failed"));
        }
    }
    let groups = |g: &[i64]| g.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
    let as_user = |uid: i64, gid: i64, supplementary: Option<&[i64]>| {
        let mut c = Command::new("setpriv");
        c.args(["--reuid", &uid.to_string(), "--regid", &gid.to_string()]);
        match supplementary {
            Some(g) if !g.is_empty() => c.args(["--groups", &groups(g)]),
            _ => c.arg("--clear-groups"),
        };
        // Capabilities dropped, no privilege escalation (the restricted profile).
        c.args([
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
            "--",
        ]);
        c
    };
    let mut sidecar = as_user(
        case.sidecar_uid,
        case.sidecar_gid,
        Some(&case.supplemental_groups),
    );
    sidecar
        .arg(&case.binary)
        .env_clear()
        .env(ROLE, "sidecar")
        .env("ZT_CONFIG", &case.config)
        .env("ZT_WORKLOAD_API", &case.workload_api)
        .env("ZT_OPENBAO_ADDR", &case.openbao)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = match sidecar.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start the sidecar: {e}")),
    };
    let ready = wait_ready(&case.admin, Duration::from_secs(60));
    let mut report = Vec::new();
    if let Err(e) = ready {
        let _ = child.kill();
        let mut log = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut log);
        return fail(format!(
            "the sidecar never got ready: {e}\n--- sidecar log ---\n{log}"
        ));
    }
    let secrets = Path::new(&case.app_mount).join("secrets");
    for name in ["db.json", "jwt-signing-key.json"] {
        let meta = std::fs::metadata(secrets.join(name)).unwrap();
        report.push(format!(
            "{name}: mode {:o} uid {} gid {}",
            meta.permissions().mode() & 0o777,
            meta.uid(),
            meta.gid()
        ));
        if meta.permissions().mode() & 0o777 != 0o440
            || meta.gid() != case.secrets_group
            || i64::from(meta.uid()) != case.sidecar_uid
        {
            report.push(format!("{name}: WRONG OWNER OR MODE"));
        }
    }
    let sock = std::fs::metadata(Path::new(&case.app_mount).join("openbao.sock")).unwrap();
    report.push(format!(
        "openbao.sock: mode {:o} gid {}",
        sock.permissions().mode() & 0o777,
        sock.gid()
    ));
    let run_app = |uid: i64, gid: i64, supplementary: Option<&[i64]>, label: &str| -> String {
        let out = as_user(uid, gid, supplementary)
            .arg(&case.binary)
            .env_clear()
            .env(ROLE, "app")
            .env("ZT_TEST_APP_LABEL", label)
            .env("ZT_TEST_DIR", &case.app_mount)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .trim_end()
        .to_string()
    };
    report.push(run_app(
        case.app_uid,
        case.app_gid,
        Some(&case.supplemental_groups),
        "app",
    ));
    // Negative control: the app without the pod's supplementary group — or,
    // when the secrets group is the app's own group, a container of another
    // uid and gid without it.
    let (uid, gid) = if i64::from(case.secrets_group) == case.app_gid {
        (case.app_uid + 1, case.app_gid + 1)
    } else {
        (case.app_uid, case.app_gid)
    };
    report.push(run_app(uid, gid, None, "app without the group"));
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    println!("{}", report.join("\n"));
    if report.iter().any(|l| l.contains("WRONG")) {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn wait_ready(admin: &str, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < timeout {
        match std::net::TcpStream::connect(admin) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.write_all(
                    b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                );
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") {
                    return Ok(());
                }
                last = buf.lines().next().unwrap_or_default().to_string();
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Err(last)
}

/// The app: read the secret files (report sizes, never contents) and call
/// the OpenBao proxy.
fn app() -> ExitCode {
    let label = std::env::var("ZT_TEST_APP_LABEL").unwrap();
    let dir = PathBuf::from(std::env::var("ZT_TEST_DIR").unwrap());
    for name in ["db.json", "jwt-signing-key.json"] {
        match std::fs::read(dir.join("secrets").join(name)) {
            Ok(b) => println!("{label} reads {name}: ok ({} bytes)", b.len()),
            Err(e) => println!("{label} reads {name}: {}", io_reason(&e)),
        }
    }
    match std::os::unix::net::UnixStream::connect(dir.join("openbao.sock")) {
        Ok(mut s) => {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = s.write_all(b"GET /v1/secret/data/github/users/nobody HTTP/1.1\r\nHost: openbao\r\nConnection: close\r\n\r\n");
            let mut buf = String::new();
            let _ = s.read_to_string(&mut buf);
            println!(
                "{label} connects to openbao.sock: {}",
                buf.lines().next().unwrap_or("(no answer)").trim_end()
            );
        }
        Err(e) => println!("{label} connects to openbao.sock: {}", io_reason(&e)),
    }
    ExitCode::SUCCESS
}

fn io_reason(e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        "Permission denied".into()
    } else {
        e.to_string()
    }
}

/// The sidecar, started the way `zt-sidecar run` starts it without
/// `--config`: the configuration from ZT_CONFIG.
fn sidecar() -> ExitCode {
    use zt_contracts::ProcessEnv;
    use zt_sidecar::config::{Config, ConfigOrigin};
    let config = match ConfigOrigin::choose(None, &ProcessEnv)
        .and_then(|s| Config::load_from(&s, &ProcessEnv))
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("invalid configuration: {e}");
            return ExitCode::from(64);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log.level))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let cancel = tokio_util::sync::CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            term.recv().await;
            c.cancel();
        });
        match zt_sidecar::run::run(config, cancel).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("zt-sidecar: {e:#}");
                ExitCode::FAILURE
            }
        }
    })
}
