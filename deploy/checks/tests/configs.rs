//! The configuration files inside the manifests go through the real
//! programs: spire-server/spire-agent `validate`, `bao policy fmt`, `bao
//! operator diagnose`, and zt-sidecar's own config parser. ClusterSPIFFEIDs
//! are rendered from policies/spire/workloads.toml and must be up to date.

mod common;

use std::collections::BTreeMap;
use std::process::Command;

use deploy_checks::repo::root;
use deploy_checks::spire::{Workloads, LAB_ENTRIES_PATH, RENDERED_PATH, WORKLOAD_LABEL};
use devstack::tools::Tools;
use serde_json::Value;

fn tools() -> Tools {
    Tools::locate().unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn clusterspiffeids_are_rendered_from_workloads_toml_and_up_to_date() {
    let w = Workloads::load().unwrap();
    for (file, rendered) in [
        (RENDERED_PATH, w.render()),
        (LAB_ENTRIES_PATH, w.render_lab_entries()),
    ] {
        let committed = std::fs::read_to_string(root().join(file)).unwrap_or_default();
        assert!(
            committed == rendered,
            "{file} is stale: run `cargo run -p deploy-checks --bin render-clusterspiffeids`"
        );
    }
}

#[test]
fn workloads_toml_garbage_is_refused_with_a_clear_error() {
    for (text, want) in [
        ("trust_domain = \"demo.local\"\n", "workload"),
        ("trust_domain = \"Demo Local\"\n[[workload]]\nname=\"a\"\nnamespace=\"b\"\nservice_account=\"c\"\n", "trust domain"),
        ("trust_domain = \"demo.local\"\n[[workload]]\nname=\"a\"\nnamespace=\"../etc\"\nservice_account=\"c\"\n", "DNS-1123"),
        ("trust_domain = \"demo.local\"\n[[workload]]\nname=\"a\"\nnamespace=\"b\"\nservice_account=\"c\"\n[[workload]]\nname=\"a\"\nnamespace=\"b\"\nservice_account=\"d\"\n", "twice"),
        ("trust_domain = \"demo.local\"\n[[workload]]\nname=\"a\"\nnamespace=\"b\"\n", "service_account"),
    ] {
        let err = Workloads::parse(text).expect_err(text).to_string();
        assert!(err.contains(want), "error for {text:?} should mention {want:?}: {err}");
    }
}

#[test]
fn every_workload_runs_under_the_service_account_its_spiffe_id_names() {
    let w = Workloads::load().unwrap();
    let all = common::deployed();
    for wl in &w.workloads {
        let pods: Vec<_> = all
            .iter()
            .filter(|m| m.namespace() == wl.namespace)
            .filter_map(|m| m.pod_template().map(|t| (m, t)))
            .filter(|(_, t)| {
                t.pointer(&format!(
                    "/metadata/labels/{}",
                    WORKLOAD_LABEL.replace('/', "~1")
                ))
                .and_then(Value::as_str)
                    == Some(&wl.name)
            })
            .collect();
        assert_eq!(
            pods.len(),
            1,
            "exactly one workload in {} should carry {WORKLOAD_LABEL}={}",
            wl.namespace,
            wl.name
        );
        let (m, t) = pods[0];
        assert_eq!(
            t.pointer("/spec/serviceAccountName")
                .and_then(Value::as_str),
            Some(wl.service_account.as_str()),
            "{}",
            m.describe()
        );
    }
}

#[test]
fn spire_server_and_agent_configs_pass_the_real_validate_commands() {
    let tools = tools();
    let all = common::deployed();
    let dir = tempfile::tempdir().unwrap();
    for (bin, cm, key) in [
        (&tools.spire_server, "spire-server", "server.conf"),
        (&tools.spire_agent, "spire-agent", "agent.conf"),
    ] {
        let text = common::config_map_entry(&all, "spire", cm, key);
        assert!(
            text.contains("trust_domain = \"demo.local\""),
            "{key} trust domain"
        );
        let path = dir.path().join(key);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(bin)
            .arg("validate")
            .arg("-config")
            .arg(&path)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.contains("is valid"),
            "{} validate {key}: {said}",
            bin.display()
        );
        // And the command does refuse a broken file (the check can fail).
        std::fs::write(
            &path,
            text.replacen("trust_domain", "trust_domian = \"x\"\n  trust_domain", 1)
                .replacen("bind_port = \"8081\"", "bind_port = \"eighty\"", 1)
                .replacen("server_port = \"8081\"", "server_port = \"eighty\"", 1),
        )
        .unwrap();
        let out = Command::new(bin)
            .arg("validate")
            .arg("-config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            !out.status.success(),
            "{} validate accepted a broken {key}",
            bin.display()
        );
    }
}

#[test]
fn issuer_and_jwks_url_agree_between_spire_and_the_openbao_bootstrap() {
    let all = common::deployed();
    let server = common::config_map_entry(&all, "spire", "spire-server", "server.conf");
    let oidc = common::config_map_entry(
        &all,
        "spire",
        "spire-server",
        "oidc-discovery-provider.conf",
    );
    let issuer_of = |text: &str| {
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("jwt_issuer = ")
                    .map(|v| v.trim_matches('"').to_string())
            })
            .expect("jwt_issuer")
    };
    let issuer = issuer_of(server);
    assert_eq!(
        issuer_of(oidc),
        issuer,
        "OIDC provider and server must agree on the issuer"
    );
    let job = common::find(&all, "Job", "openbao", "openbao-bootstrap");
    let env: BTreeMap<String, String> = job
        .value
        .pointer("/spec/template/spec/containers/0/env")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect();
    assert_eq!(env["JWT_ISSUER"], issuer);
    assert_eq!(env["JWKS_URL"], format!("{issuer}/keys"));
    let host = issuer
        .trim_start_matches("http://")
        .split(':')
        .next()
        .unwrap()
        .to_string();
    assert!(
        oidc.contains(&format!("\"{host}\"")),
        "the OIDC provider must serve the domain {host}"
    );
    let svc = common::find(&all, "Service", "spire", "spire-oidc");
    assert!(
        host.starts_with(&format!("{}.{}.svc", svc.name(), svc.namespace())),
        "{host} must be the spire-oidc Service"
    );
}

#[test]
fn openbao_policies_parse_with_the_real_bao() {
    let bao = tools().bao;
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    for entry in std::fs::read_dir(root().join("policies/openbao")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "hcl") {
            let copy = dir.path().join(path.file_name().unwrap());
            std::fs::copy(&path, &copy).unwrap();
            let out = Command::new(&bao)
                .args(["policy", "fmt"])
                .arg(&copy)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "bao policy fmt {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            n += 1;
        }
    }
    assert!(n > 0, "no policy found");
    let broken = dir.path().join("broken.hcl");
    std::fs::write(&broken, "path \"secret/*\" { capabilities = [\"read\" }\n").unwrap();
    assert!(
        !Command::new(&bao)
            .args(["policy", "fmt"])
            .arg(&broken)
            .output()
            .unwrap()
            .status
            .success(),
        "bao policy fmt accepted garbage"
    );
}

/// `bao operator diagnose` parses the server config and opens its storage
/// and listener; paths and the port are moved into a temp dir for that.
#[test]
fn openbao_server_config_passes_bao_operator_diagnose() {
    let bao = tools().bao;
    let all = common::deployed();
    let text = common::config_map_entry(&all, "openbao", "openbao", "openbao.hcl");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let local = text
        .replace("\"/openbao/data\"", &format!("\"{d}/data\""))
        .replace(
            "\"/openbao/audit/audit.log\"",
            &format!("\"{d}/audit.log\""),
        )
        .replace("\"0.0.0.0:8200\"", "\"127.0.0.1:0\"");
    assert_ne!(
        local, text,
        "nothing rewritten: the storage/audit paths changed?"
    );
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    let run = |conf: &str| {
        let path = dir.path().join("openbao.hcl");
        std::fs::write(&path, conf).unwrap();
        let out = Command::new(&bao)
            .args(["operator", "diagnose"])
            .arg(format!("-config={}", path.display()))
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        said.replace('\u{1b}', "")
    };
    let said = run(&local);
    for bad in ["[ failure ]", "Unknown or unsupported field"] {
        assert!(!said.contains(bad), "bao operator diagnose: {bad}\n{said}");
    }
    assert!(
        said.contains("Create Storage Backend") && said.contains("Finalize Shamir Seal"),
        "diagnose did not get through: {said}"
    );
    // It does complain about a field OpenBao 2.x no longer knows.
    let said = run(&format!("{local}\ndisable_mlock = true\n"));
    assert!(
        said.contains("Unknown or unsupported field"),
        "diagnose did not flag an unknown field: {said}"
    );
}

fn sidecar_config(
    all: &[deploy_checks::manifest::Manifest],
    name: &str,
) -> zt_sidecar::config::Config {
    let text = common::config_map_entry(all, "99-apps", name, "sidecar.toml");
    zt_sidecar::config::Config::parse(text, &BTreeMap::new())
        .unwrap_or_else(|e| panic!("{name}: invalid configuration: {e}"))
}

/// The value of env var `name` in container `c`.
fn env_of<'a>(c: &'a Value, name: &str) -> &'a str {
    c["env"]
        .as_array()
        .and_then(|e| e.iter().find(|v| v["name"] == name))
        .and_then(|v| v["value"].as_str())
        .unwrap_or_else(|| panic!("{} sets no {name}", c["name"]))
}

#[test]
fn app_containers_are_probed_where_they_listen() {
    let all = common::deployed();
    // The backend listens on loopback only (the kubelet cannot reach it):
    // exec probes through the binary itself.
    let d = common::find(&all, "Deployment", "99-apps", "backend");
    let c = d.value.pointer("/spec/template/spec/containers/0").unwrap();
    let listen = env_of(c, "BACKEND_LISTEN");
    assert!(
        listen.starts_with("127.0.0.1:"),
        "backend listens on {listen}"
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(
            c[probe]["exec"]["command"],
            serde_json::json!(["/usr/local/bin/app-backend", "probe", path]),
            "backend {probe}"
        );
    }
    // The frontend listens on the pod IP: TCP probes on its named port.
    let d = common::find(&all, "Deployment", "99-apps", "frontend");
    let c = d.value.pointer("/spec/template/spec/containers/0").unwrap();
    let port = env_of(c, "FRONTEND_LISTEN").rsplit(':').next().unwrap();
    let named = c["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .expect("frontend names its port http");
    assert_eq!(named["containerPort"].to_string(), port);
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(c[probe]["tcpSocket"]["port"], "http", "frontend {probe}");
    }
}

#[test]
fn sidecar_configs_are_accepted_by_zt_sidecar_and_match_the_pods() {
    let all = common::deployed();
    let w = Workloads::load().unwrap();
    let td = &w.trust_domain;
    let backend_id = w.get("backend").unwrap().spiffe_id(td);
    let frontend_id = w.get("frontend").unwrap().spiffe_id(td);
    let backend = sidecar_config(&all, "backend-sidecar");
    let frontend = sidecar_config(&all, "frontend-sidecar");
    let b =
        serde_json::to_value(toml::from_str::<toml::Value>(&backend.to_toml()).unwrap()).unwrap();
    let f =
        serde_json::to_value(toml::from_str::<toml::Value>(&frontend.to_toml()).unwrap()).unwrap();
    println!("backend sidecar (effective):\n{}", backend.to_toml());

    // Identity through the CSI driver's mount.
    for (c, deploy) in [(&b, "backend"), (&f, "frontend")] {
        let api = c
            .pointer("/identity/workload_api")
            .and_then(Value::as_str)
            .unwrap();
        let d = common::find(&all, "Deployment", "99-apps", deploy);
        let sidecar = &d
            .value
            .pointer("/spec/template/spec/initContainers/0")
            .unwrap();
        assert_eq!(
            sidecar["restartPolicy"], "Always",
            "{deploy}: zt-sidecar must be a native sidecar"
        );
        let mount = sidecar["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "spiffe-workload-api")
            .unwrap();
        assert!(
            api.starts_with(&format!("unix:{}/", mount["mountPath"].as_str().unwrap())),
            "{deploy}: {api} is not in the CSI mount"
        );
        let agent = common::config_map_entry(&all, "spire", "spire-agent", "agent.conf");
        let socket = api.rsplit('/').next().unwrap();
        assert!(
            agent.contains(&format!("/run/spire/agent-sockets/{socket}\"")),
            "{deploy}: the agent does not create {socket}"
        );
        // The admin listener stays on loopback; the kubelet probes it through
        // `zt-sidecar probe --config <the mounted config>` (exec).
        let admin = c.pointer("/admin/listen").and_then(Value::as_str).unwrap();
        assert!(
            admin.starts_with("127.0.0.1:"),
            "{deploy}: admin.listen {admin} must be loopback"
        );
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let cmd: Vec<&str> = sidecar[probe]["exec"]["command"]
                .as_array()
                .unwrap_or_else(|| panic!("{deploy}: {probe} must be an exec probe"))
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(
                &cmd[..4],
                [
                    "/usr/local/bin/zt-sidecar",
                    "probe",
                    "--config",
                    "/etc/zt/sidecar.toml"
                ],
                "{deploy}: {probe}"
            );
            assert_eq!(
                sidecar["args"][2], "/etc/zt/sidecar.toml",
                "{deploy}: the probe reads the config the sidecar runs with"
            );
        }
    }
    // The backend: OpenBao role bound to its ID; files for its group; mTLS allow-list.
    let setup: toml::Value = toml::from_str(
        &std::fs::read_to_string(root().join("policies/openbao/setup.toml")).unwrap(),
    )
    .unwrap();
    let role = b.pointer("/openbao/role").and_then(Value::as_str).unwrap();
    let bound = setup["jwt"]["roles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"].as_str() == Some(role))
        .expect("role in setup.toml");
    assert_eq!(bound["bound_subject"].as_str(), Some(backend_id.as_str()));
    let d = common::find(&all, "Deployment", "99-apps", "backend");
    let app = d.value.pointer("/spec/template/spec/containers/0").unwrap();
    assert_eq!(
        b.pointer("/secrets/group").and_then(Value::as_u64),
        app.pointer("/securityContext/runAsGroup")
            .and_then(Value::as_u64),
        "secret files must be readable by the backend's group"
    );
    assert_eq!(
        b.pointer("/mtls/inbound/0/allow/0").and_then(Value::as_str),
        Some(frontend_id.as_str())
    );
    let forward = b
        .pointer("/mtls/inbound/0/forward_to")
        .and_then(Value::as_str)
        .unwrap();
    let env = |c: &Value, name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .map(str::to_string)
    };
    assert_eq!(
        env(app, "BACKEND_LISTEN").as_deref(),
        Some(forward),
        "the sidecar forwards to where the backend listens"
    );
    let inbound_port: u64 = b
        .pointer("/mtls/inbound/0/listen")
        .and_then(Value::as_str)
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let svc = common::find(&all, "Service", "99-apps", "backend");
    assert_eq!(
        svc.value
            .pointer("/spec/ports/0/port")
            .and_then(Value::as_u64),
        Some(inbound_port)
    );
    // The frontend: pinned to the backend's ID, upstream is the backend Service.
    assert_eq!(
        f.pointer("/mtls/outbound/0/server_id")
            .and_then(Value::as_str),
        Some(backend_id.as_str())
    );
    assert_eq!(
        f.pointer("/mtls/outbound/0/upstream")
            .and_then(Value::as_str),
        Some(format!("backend.99-apps.svc.cluster.local:{inbound_port}").as_str())
    );
    assert!(
        f.get("openbao").is_none_or(Value::is_null),
        "the frontend sidecar must not talk to OpenBao"
    );
    let fd = common::find(&all, "Deployment", "99-apps", "frontend");
    let fapp = fd
        .value
        .pointer("/spec/template/spec/containers/0")
        .unwrap();
    let outbound = f
        .pointer("/mtls/outbound/0/listen")
        .and_then(Value::as_str)
        .unwrap();
    assert_eq!(env(fapp, "BACKEND_URL"), Some(format!("http://{outbound}")));
}
