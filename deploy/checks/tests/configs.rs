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

/// The effective sidecar configuration zt-injector gives every annotated pod
/// template of the manifests, by "<namespace>/<name>", as JSON.
fn injected_configs(
    all: &[deploy_checks::manifest::Manifest],
) -> BTreeMap<String, zt_sidecar::config::Config> {
    let settings = common::injector_settings();
    let mut out = BTreeMap::new();
    for m in all {
        let Some(t) = m.pod_template() else { continue };
        let notes: BTreeMap<String, String> =
            serde_json::from_value(t["metadata"]["annotations"].clone()).unwrap_or_default();
        let rendered = zt_injector::render::for_pod(&notes, &settings).unwrap_or_else(|r| {
            panic!("{}: zt-injector refuses its annotations: {r}", m.describe())
        });
        if let Some(r) = rendered {
            out.insert(format!("{}/{}", m.namespace(), m.name()), r.config);
        }
    }
    out
}

fn as_json(c: &zt_sidecar::config::Config) -> Value {
    serde_json::to_value(toml::from_str::<toml::Value>(&c.to_toml()).unwrap()).unwrap()
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
fn injected_sidecar_configs_are_accepted_and_match_the_pods() {
    let all = common::deployed();
    let w = Workloads::load().unwrap();
    let td = &w.trust_domain;
    let backend_id = w.get("backend").unwrap().spiffe_id(td);
    let frontend_id = w.get("frontend").unwrap().spiffe_id(td);
    let configs = injected_configs(&all);
    assert_eq!(
        configs.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "99-apps/backend",
            "99-apps/frontend",
            "zt-examples/psql-report"
        ],
        "the annotated workloads"
    );
    let b = as_json(&configs["99-apps/backend"]);
    let f = as_json(&configs["99-apps/frontend"]);
    println!(
        "backend sidecar (effective):\n{}",
        configs["99-apps/backend"].to_toml()
    );

    // Each annotated workload's namespace opted in, and its OpenBao role is
    // bound to exactly its own SPIFFE ID.
    let setup: toml::Value = toml::from_str(
        &std::fs::read_to_string(root().join("policies/openbao/setup.toml")).unwrap(),
    )
    .unwrap();
    for (key, config) in &configs {
        let (ns, name) = key.split_once('/').unwrap();
        let namespace = all
            .iter()
            .find(|m| m.kind() == "Namespace" && m.name() == ns)
            .unwrap_or_else(|| panic!("{key}: no Namespace {ns} in the manifests"));
        assert_eq!(
            namespace
                .value
                .pointer("/metadata/labels/zt.demo.local~1injection")
                .and_then(Value::as_str),
            Some("enabled"),
            "{key}: namespace {ns} must opt in to injection"
        );
        let c = as_json(config);
        let Some(role) = c.pointer("/openbao/role").and_then(Value::as_str) else {
            continue;
        };
        let m = all
            .iter()
            .find(|m| m.namespace() == ns && m.name() == name && m.pod_template().is_some())
            .unwrap();
        let sa = m.pod_template().unwrap()["spec"]["serviceAccountName"]
            .as_str()
            .unwrap();
        let bound = setup["jwt"]["roles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"].as_str() == Some(role))
            .unwrap_or_else(|| panic!("{key}: OpenBao role {role} is not in setup.toml"));
        assert_eq!(
            bound["bound_subject"].as_str(),
            Some(format!("spiffe://{td}/ns/{ns}/sa/{sa}").as_str()),
            "{key}: role {role}"
        );
    }
    assert!(
        b.pointer("/admin/listen")
            .and_then(Value::as_str)
            .unwrap()
            .starts_with("127.0.0.1:"),
        "admin listeners stay on loopback"
    );
    // The backend: its role; files for its group; mTLS allow-list.
    assert_eq!(
        b.pointer("/openbao/role").and_then(Value::as_str),
        Some("backend")
    );
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
