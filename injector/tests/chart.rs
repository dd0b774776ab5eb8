//! The Helm chart `deploy/charts/zt-injector`: rendered by the pinned helm
//! with its default values and applied to the real kube-apiserver
//! (server-side, dry run) without a single warning; what it grants and
//! registers; its values schema; and the Cilium policy for the traffic to
//! and from the injector.

mod common;

use std::collections::BTreeMap;

use common::*;
use deploy_checks::cilium::{Evaluator, Peer, Protocol, Verdict};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

const NS: &str = "zt-system";

fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("the chart renders no {kind}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chart_with_its_defaults_is_accepted_by_the_api_server_without_warnings() {
    let cp = control_plane();
    let client = cp.client().await.unwrap();
    namespace(&client, NS, &[]).await;
    let rendered = helm_template("zt-injector", NS, &[]);
    assert_eq!(rendered.code, 0, "helm template: {}", rendered.stderr);
    let applied = kubectl_stdin(
        cp,
        &["apply", "--server-side", "--dry-run=server"],
        &rendered.stdout,
    );
    applied
        .assert_clean("helm template zt-injector | kubectl apply --server-side --dry-run=server");
    println!("{}", applied.stdout);
    let docs = documents(&rendered.stdout);
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for want in [
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Lease",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "MutatingWebhookConfiguration",
    ] {
        assert!(kinds.contains(&want), "no {want} in {kinds:?}");
    }

    // Two replicas that never both go away, under "restricted".
    let deployment = find(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        find(&docs, "PodDisruptionBudget")["spec"]["minAvailable"],
        1
    );
    let template = &deployment["spec"]["template"];
    // The Pod needs its ServiceAccount to exist (the dry run above stored nothing).
    kubectl_stdin(
        cp,
        &["apply", "--server-side"],
        &find(&docs, "ServiceAccount").to_string(),
    )
    .assert_clean("the chart's ServiceAccount");
    let pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "zt-injector-", "namespace": NS, "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), NS)
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &pod,
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "a Pod of the injector's Deployment is refused in a restricted namespace: {}",
                api_message(&e)
            )
        });

    // The webhook: fail closed, no side effects, never kube-system or its own namespace.
    let webhook = &find(&docs, "MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(webhook["failurePolicy"], "Fail");
    assert_eq!(webhook["sideEffects"], "None");
    assert_eq!(webhook["reinvocationPolicy"], "Never");
    assert_eq!(webhook["timeoutSeconds"], 5);
    assert_eq!(
        webhook["clientConfig"]["service"],
        json!({"name": "zt-injector", "namespace": NS, "path": "/mutate", "port": 443})
    );
    assert!(
        webhook["clientConfig"].get("caBundle").is_none(),
        "the injector sets the caBundle"
    );
    assert_eq!(
        webhook["namespaceSelector"],
        json!({
            "matchLabels": {"zt.demo.local/injection": "enabled"},
            "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system", NS]}],
        })
    );
    assert_eq!(
        webhook["matchConditions"],
        json!([{"name": "has-zt-annotations", "expression": "has(object.metadata.annotations) && object.metadata.annotations.exists(k, k.lowerAscii().startsWith('zt.demo.local/'))"}])
    );
    assert_eq!(
        webhook["rules"],
        json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}])
    );

    // RBAC: its own objects by name; ConfigMaps get only; nothing else.
    let role = find(&docs, "Role");
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["zt-injector-tls"], "verbs": ["get", "update", "patch"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["zt-injector-tls"], "verbs": ["get", "update", "patch"]},
        ])
    );
    assert_eq!(
        find(&docs, "ClusterRole")["rules"],
        json!([
            {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations"], "resourceNames": ["zt-injector"], "verbs": ["get", "update", "patch"]},
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]},
        ])
    );
    let without = helm_template("zt-injector", NS, &["rbac.readConfigMaps=false".into()]);
    let without = documents(&without.stdout);
    let rules = &find(&without, "ClusterRole")["rules"];
    assert_eq!(rules.as_array().unwrap().len(), 1, "{rules}");

    // Its settings are ones zt-injector accepts (the same check `zt-injector check` does).
    let settings = find(&docs, "ConfigMap")["data"]["injector.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("injector.toml");
    std::fs::write(&file, &settings).unwrap();
    let check = Run::from(
        std::process::Command::new(env!("CARGO_BIN_EXE_zt-injector"))
            .args(["check", "--config"])
            .arg(&file)
            .env("POD_NAME", "zt-injector-0")
            .env("POD_NAMESPACE", NS)
            .output()
            .unwrap(),
    );
    assert_eq!(check.code, 0, "zt-injector check: {}", check.stderr);
    let s = zt_injector::settings::Settings::parse(
        &settings,
        &BTreeMap::from([
            ("POD_NAME".to_string(), "p".to_string()),
            ("POD_NAMESPACE".to_string(), NS.to_string()),
        ]),
    )
    .unwrap();
    assert_eq!(s.kubernetes.tls_secret, "zt-injector-tls");
    assert_eq!(s.kubernetes.webhook_configuration, "zt-injector");
    assert_eq!(
        s.sidecar.openbao.unwrap().address,
        "http://openbao.openbao.svc.cluster.local:8200"
    );
}

#[test]
fn the_charts_values_are_checked_by_its_schema() {
    for (set, says) in [
        ("replica=3", "replica"),
        ("webhook.failurePolicy=Sometimes", "failurePolicy"),
        ("webhook.url=http://127.0.0.1:8443/mutate", "url"),
        ("tls.pollInterval=soon", "pollInterval"),
        ("defaults.resources.cpuLimit=lots", "cpuLimit"),
        ("defaults.secretsGroup=0", "secretsGroup"),
    ] {
        let run = helm_template("zt-injector", NS, &[set.to_string()]);
        assert_ne!(run.code, 0, "{set} was accepted");
        assert!(run.stderr.contains(says), "{set}: {}", run.stderr);
    }
    // A misconfiguration the schema cannot see is still refused by the injector's own check.
    let run = helm_template("zt-injector", NS, &["tls.caValidity=1m".into()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let settings = documents(&run.stdout)
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .unwrap()["data"]["injector.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let e = zt_injector::settings::Settings::parse(
        &settings,
        &BTreeMap::from([
            ("POD_NAME".to_string(), "p".to_string()),
            ("POD_NAMESPACE".to_string(), NS.to_string()),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("tls.ca_validity: 1m is too short"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cilium_policy_lets_only_the_api_server_and_the_kubelet_in() {
    let cp = control_plane();
    let client = cp.client().await.unwrap();
    let paths = deploy_checks::schema::ensure_pinned().unwrap_or_else(|e| panic!("{e}"));
    // Cilium's own CRDs draw a warning of theirs; only success counts here.
    let crds = kubectl(
        cp,
        &[
            "apply",
            "--server-side",
            "-f",
            &paths.cilium_crds.display().to_string(),
        ],
    );
    assert_eq!(crds.code, 0, "{}", crds.stderr);
    cp.wait_crd_established("ciliumnetworkpolicies.cilium.io");
    namespace(&client, "zt-injector", &[]).await;
    let file = repo()
        .join("policies/cilium/zt-injector.yaml")
        .display()
        .to_string();
    kubectl(cp, &["apply", "--server-side", "-f", &file])
        .assert_clean("policies/cilium/zt-injector.yaml");

    let all = deploy_checks::manifest::deployed().unwrap();
    let eval = Evaluator::new(&all).unwrap();
    let labels = BTreeMap::from([(
        "app.kubernetes.io/name".to_string(),
        "zt-injector".to_string(),
    )]);
    let injector = Peer::pod("zt-injector", "zt-injector", "zt-injector", &labels);
    let frontend = Peer::pod("frontend", "99-apps", "frontend", &BTreeMap::new());
    let openbao = Peer::pod("openbao", "openbao", "openbao", &BTreeMap::new());
    let dns = Peer::pod(
        "kube-dns",
        "kube-system",
        "coredns",
        &BTreeMap::from([("k8s-app".to_string(), "kube-dns".to_string())]),
    );
    let entity = |e: &str| Peer::Entity(e.into());
    let tcp = Protocol::Tcp;
    let flows = [
        (
            entity("kube-apiserver"),
            injector.clone(),
            8443,
            true,
            "admission calls",
        ),
        (
            entity("host"),
            injector.clone(),
            9090,
            true,
            "kubelet probes",
        ),
        (
            entity("host"),
            injector.clone(),
            8443,
            false,
            "the node is not the API server",
        ),
        (
            entity("world"),
            injector.clone(),
            8443,
            false,
            "nobody else calls the webhook",
        ),
        (
            frontend,
            injector.clone(),
            8443,
            false,
            "pods do not call the webhook",
        ),
        (
            entity("kube-apiserver"),
            injector.clone(),
            9090,
            false,
            "probes only from the kubelet",
        ),
        (
            injector.clone(),
            entity("kube-apiserver"),
            6443,
            true,
            "Secret, Lease, caBundle, ConfigMaps",
        ),
        (
            injector.clone(),
            openbao,
            8200,
            false,
            "the injector never talks to OpenBao",
        ),
        (injector.clone(), entity("world"), 443, false, "no internet"),
        (injector.clone(), dns, 53, false, "no DNS needed"),
    ];
    for (from, to, port, allow, why) in flows {
        let v = eval.verdict(&from, &to, port, tcp);
        assert_eq!(
            matches!(v, Verdict::Allowed { .. }),
            allow,
            "{} -> {}:{port} ({why}): {v:?}",
            from.name(),
            to.name()
        );
        println!(
            "{:<16} -> {:<14} {port:>5}  {}  {why}",
            from.name(),
            to.name(),
            if allow { "allow" } else { "deny " }
        );
    }
    assert_eq!(
        eval.enforced(&injector),
        (true, true),
        "default deny both ways"
    );
}
