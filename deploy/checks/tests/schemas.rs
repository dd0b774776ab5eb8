//! Every manifest validates against the real schemas of the pinned versions:
//! Kubernetes (the API server's swagger.json), Cilium's CRDs, and the
//! ClusterSPIFFEID CRD. The Cilium Helm values validate against the chart's
//! own values.schema.json, and the chart rendered with them (helm template)
//! validates against the Kubernetes schemas.

mod common;

use std::process::Command;

use deploy_checks::manifest;
use deploy_checks::repo::{root, Versions};
use serde_json::{json, Value};

#[test]
fn every_deployed_manifest_matches_the_pinned_schemas() {
    let (_, set) = common::schemas();
    let all = common::deployed();
    assert!(all.len() > 40, "suspiciously few manifests: {}", all.len());
    let mut errors = Vec::new();
    let mut kinds = std::collections::BTreeSet::new();
    for m in &all {
        kinds.insert(format!("{} {}", m.api_version(), m.kind()));
        errors.extend(set.validate(m).unwrap_or_else(|e| panic!("{e}")));
    }
    println!("validated {} objects of kinds: {kinds:#?}", all.len());
    assert!(
        errors.is_empty(),
        "schema violations:\n{}",
        errors.join("\n")
    );
    for must in [
        "cilium.io/v2 CiliumNetworkPolicy",
        "spire.spiffe.io/v1alpha1 ClusterSPIFFEID",
        "apps/v1 StatefulSet",
        "batch/v1 Job",
    ] {
        assert!(kinds.contains(must), "no {must} was validated");
    }
}

/// The validator must catch what the API server would refuse; otherwise the
/// test above proves nothing.
#[test]
fn validator_refuses_typos_wrong_types_missing_fields_and_unknown_kinds() {
    let (_, set) = common::schemas();
    let bad = [
        ("unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  selectr: {a: b}\n  ports: [{port: 80}]\n"),
        ("wrong type", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: two\n  selector: {matchLabels: {a: b}}\n  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}\n"),
        ("missing required", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  template: {spec: {containers: [{name: c}]}}\n"),
        ("unknown kind", "apiVersion: v1\nkind: Servise\nmetadata: {name: x}\n"),
        ("crd unknown field", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: y}\nspec:\n  endpointSelector: {}\n  ingres: [{}]\n"),
        ("crd bad enum", "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: x, namespace: y}\nspec:\n  endpointSelector: {}\n  egress: [{toEntities: [wrold]}]\n"),
        ("clusterspiffeid typo", "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata: {name: x}\nspec:\n  spiffeIdTemplate: spiffe://x/y\n"),
        ("bad metadata on a custom resource", "apiVersion: spire.spiffe.io/v1alpha1\nkind: ClusterSPIFFEID\nmetadata: {name: x, labels: {a: [1]}}\nspec:\n  spiffeIDTemplate: spiffe://x/y\n"),
    ];
    for (what, text) in bad {
        let m = &manifest::parse(text, what).unwrap()[0];
        let errors = set.validate(m).unwrap();
        assert!(
            !errors.is_empty(),
            "{what}: accepted but must be refused:\n{text}"
        );
        println!("{what}: refused ({})", errors[0]);
    }
    let good = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 80, targetPort: http}]\n";
    assert_eq!(
        set.validate(&manifest::parse(good, "good").unwrap()[0])
            .unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn cilium_values_match_the_charts_values_schema() {
    let (paths, _) = common::schemas();
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
fn cilium_chart_renders_with_our_values_into_valid_kubernetes_objects() {
    let (paths, set) = common::schemas();
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
    let rendered = manifest::parse(
        &String::from_utf8(out.stdout).unwrap(),
        "helm template cilium",
    )
    .unwrap();
    let mut errors = Vec::new();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for m in &rendered {
        *kinds.entry(m.kind().to_string()).or_default() += 1;
        errors.extend(set.validate(m).unwrap());
    }
    println!("helm template cilium: {} objects {kinds:?}", rendered.len());
    assert!(
        errors.is_empty(),
        "rendered Cilium chart violates the Kubernetes schemas:\n{}",
        errors.join("\n")
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
    assert_eq!(roles, ["control-plane", "worker"]);
    let mapping = &m["nodes"][1]["extraPortMappings"][0];
    let all = common::deployed();
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
