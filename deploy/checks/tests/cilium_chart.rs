//! The Cilium half of `make deploy`, which `make install` does not cover:
//! our Helm values validate against the pinned chart's own
//! values.schema.json (strictly: helm ignores unknown keys), the chart
//! rendered with them is accepted by the real kube-apiserver, and the kind
//! config is made for Cilium and two workers.

mod common;

use std::process::Command;

use deploy_checks::manifest;
use deploy_checks::repo::{root, Versions};
use serde_json::{json, Value};

#[test]
fn cilium_values_match_the_charts_values_schema() {
    let paths = common::schemas();
    let mut schema: Value = serde_json::from_str(
        &std::fs::read_to_string(paths.cilium_chart.join("values.schema.json")).unwrap(),
    )
    .unwrap();
    // helm ignores unknown keys; a misspelt key would silently do nothing, so refuse them.
    deploy_checks::schema::make_strict(&mut schema);
    let values_path = root().join("deploy/cilium/values.yaml");
    let values = &manifest::load(&values_path).unwrap()[0].value;
    let validator =
        jsonschema::validator_for(&schema).expect("the chart's values.schema.json compiles");
    let errors: Vec<String> = validator
        .iter_errors(values)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "deploy/cilium/values.yaml violates the chart's schema:\n{}",
        errors.join("\n")
    );
    // The schema must bite: a misspelt key and a wrong type are refused.
    let mut typo = values.clone();
    typo["kubeProxyReplacment"] = json!(true);
    assert!(
        !validator.is_valid(&typo),
        "the values schema accepted an unknown key"
    );
    let mut wrong = values.clone();
    wrong["encryption"]["enabled"] = json!("yes");
    assert!(
        !validator.is_valid(&wrong),
        "the values schema accepted a string for a boolean"
    );
    // What the platform relies on.
    for (pointer, want) in [
        ("/kubeProxyReplacement", json!(true)),
        ("/encryption/enabled", json!(true)),
        ("/encryption/type", json!("wireguard")),
        ("/hubble/relay/enabled", json!(true)),
        ("/hubble/ui/enabled", json!(true)),
        ("/authentication/mutual/spire/enabled", json!(true)),
        ("/authentication/mutual/spire/install/enabled", json!(true)),
    ] {
        assert_eq!(
            values.pointer(pointer),
            Some(&want),
            "deploy/cilium/values.yaml{pointer}"
        );
    }
}

#[test]
fn cilium_chart_renders_with_our_values_into_objects_the_api_server_accepts() {
    let paths = common::schemas();
    let cp = devstack::kube::shared().unwrap_or_else(|e| panic!("{e:#}"));
    let v = Versions::load().unwrap();
    let out = Command::new(&paths.helm)
        .args(["template", "cilium"])
        .arg(&paths.cilium_chart)
        .args([
            "--namespace",
            "kube-system",
            "--kube-version",
            v.get("KUBERNETES_VERSION").unwrap(),
            "-f",
        ])
        .arg(root().join("deploy/cilium/values.yaml"))
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm template failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let rendered = manifest::parse(&text, "helm template cilium").unwrap();
    // What install.sh checks before installing: our values enable mutual auth.
    let config = rendered
        .iter()
        .find(|m| m.kind() == "ConfigMap" && m.name() == "cilium-config")
        .expect("the chart renders cilium-config");
    assert_eq!(
        config.value.pointer("/data/mesh-auth-mutual-enabled"),
        Some(&serde_json::json!("true")),
        "deploy/cilium/values.yaml must enable mutual authentication"
    );
    // The chart's CRDs are registered by its operator at run time, as on a
    // real cluster: give the server those first, then the rendered objects.
    common::install::add_cilium_crds(cp);
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let applied = common::install::kubectl(
        cp,
        &[
            "apply",
            "--server-side",
            "-f",
            &file.path().display().to_string(),
        ],
    );
    assert_eq!(
        applied.code, 0,
        "the real API server refused the rendered Cilium chart:\n{}",
        applied.output
    );
    // Warnings here would be Cilium's chart's, not ours: shown, not failed.
    println!(
        "helm template cilium: {} objects accepted; warnings: {:#?}",
        rendered.len(),
        applied.warnings()
    );
    let names: Vec<String> = rendered
        .iter()
        .map(|m| format!("{} {}/{}", m.kind(), m.namespace(), m.name()))
        .collect();
    for want in [
        "DaemonSet kube-system/cilium",
        "Deployment kube-system/hubble-relay",
        "Deployment kube-system/hubble-ui",
        "StatefulSet cilium-spire/spire-server",
        "DaemonSet cilium-spire/spire-agent",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "the rendered chart has no {want}: {names:#?}"
        );
    }
    let config = rendered
        .iter()
        .find(|m| m.kind() == "ConfigMap" && m.name() == "cilium-config")
        .expect("cilium-config");
    for (key, want) in [
        ("enable-wireguard", "true"),
        ("kube-proxy-replacement", "true"),
        ("mesh-auth-enabled", "true"),
        ("mesh-auth-mutual-enabled", "true"),
    ] {
        assert_eq!(
            config
                .value
                .pointer(&format!("/data/{key}"))
                .and_then(Value::as_str),
            Some(want),
            "cilium-config {key}"
        );
    }
}

#[test]
fn kind_config_is_made_for_cilium_and_publishes_the_frontend() {
    let m = &manifest::load(&root().join("deploy/kind/cluster.yaml")).unwrap()[0].value;
    assert_eq!(m["kind"], "Cluster");
    assert_eq!(m["apiVersion"], "kind.x-k8s.io/v1alpha4");
    assert_eq!(m["name"], "zt-demo");
    assert_eq!(m["networking"]["disableDefaultCNI"], true);
    assert_eq!(m["networking"]["kubeProxyMode"], "none");
    let roles: Vec<&str> = m["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    // Two workers: the apps prefer different nodes (pod anti-affinity), so the
    // frontend -> backend hop crosses nodes and WireGuard carries it.
    assert_eq!(roles, ["control-plane", "worker", "worker"]);
    for app in ["backend", "frontend"] {
        let other = if app == "backend" {
            "frontend"
        } else {
            "backend"
        };
        let dep = common::find(&all_manifests(), "Deployment", "99-apps", app)
            .value
            .clone();
        let term = &dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
            ["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname", "{app}");
        assert_eq!(
            term["labelSelector"]["matchLabels"]["app.kubernetes.io/name"], other,
            "{app}"
        );
    }
    let mapping = &m["nodes"][2]["extraPortMappings"][0];
    let all = all_manifests();
    let svc = common::find(&all, "Service", "99-apps", "frontend");
    assert_eq!(svc.value["spec"]["type"], "NodePort");
    assert_eq!(
        mapping["containerPort"], svc.value["spec"]["ports"][0]["nodePort"],
        "kind publishes the frontend's NodePort"
    );
    assert_eq!(
        mapping["listenAddress"], "127.0.0.1",
        "the demo is published on loopback only"
    );
    let values = &manifest::load(&root().join("deploy/cilium/values.yaml")).unwrap()[0].value;
    assert_eq!(
        values["k8sServiceHost"],
        format!("{}-control-plane", m["name"].as_str().unwrap()),
        "Cilium must find the API server of this cluster"
    );
}

fn all_manifests() -> Vec<manifest::Manifest> {
    common::deployed()
}
