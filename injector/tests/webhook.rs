//! zt-injector registered in the real kube-apiserver (devstack::kube), run
//! as a process under the chart's own ServiceAccount and RBAC: the API
//! server calls it on 127.0.0.1 (`webhook.url`) for every pod created in an
//! opted-in namespace.
//!
//! One test for the webhook: its phases share one injector and one API
//! server and must run in order (the last one stops the injector). The
//! chart's own checks are separate tests with their own release names.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{json, Value};
use zt_injector::patch;
use zt_injector::settings::Settings;

const NS: &str = "zt-injector";
const APPS: &str = "apps";
const PLAIN: &str = "plain";
const WEBHOOK: &str = "inject.zt.demo.local";

/// Every key of `want` is in `got` with the same value (arrays: same
/// length, element by element). The API server adds defaults; what the
/// injector set must be there unchanged.
fn assert_subset(want: &Value, got: &Value, path: &str) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, v) in w {
                let Some(gv) = g.get(k) else {
                    panic!("{path}.{k} is missing in the stored object; want {v}");
                };
                assert_subset(v, gv, &format!("{path}.{k}"));
            }
        }
        (Value::Array(w), Value::Array(g)) => {
            assert_eq!(w.len(), g.len(), "{path}: {want}\n  vs stored {got}");
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                assert_subset(wv, gv, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(want, got, "{path}"),
    }
}

/// What the library says the stored pod must contain.
fn expected(settings: &Settings, manifest: &Value) -> Value {
    let pod: Pod = serde_json::from_value(manifest.clone()).unwrap();
    serde_json::to_value(patch::injected(&pod, settings).unwrap_or_else(|r| panic!("{r}"))).unwrap()
}

fn sidecars(pod: &Pod) -> usize {
    pod.spec
        .as_ref()
        .unwrap()
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.name == "zt-sidecar")
        .count()
}

fn untouched(pod: &Pod) {
    assert_eq!(sidecars(pod), 0, "{:?}", pod.metadata.name);
    assert!(
        !pod.metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .contains_key("zt.demo.local/status"),
        "{:?}",
        pod.metadata.name
    );
}

fn strip_server_fields(v: &mut Value) {
    let m = v["metadata"].as_object_mut().unwrap();
    for k in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "managedFields",
        "generation",
    ] {
        m.remove(k);
    }
    v.as_object_mut().unwrap().remove("status");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_injects_refuses_and_fails_closed_in_the_real_api_server() {
    let cp = control_plane();
    let client = cp.client().await.unwrap();
    let dir = tempfile::Builder::new()
        .prefix("zt-injector-test-")
        .tempdir()
        .unwrap();
    let (https, health) = (
        devstack::free_port().unwrap(),
        devstack::free_port().unwrap(),
    );

    // --- The chart, with the webhook pointed at 127.0.0.1 (the API server
    // --- runs here too), applied server-side: no warning allowed.
    namespace(&client, NS, &[]).await;
    let rendered = helm_template(
        "zt-injector",
        NS,
        &[
            format!("webhook.url=https://127.0.0.1:{https}/mutate"),
            "extraSans={127.0.0.1}".into(),
            format!("ports.https={https}"),
            format!("ports.health={health}"),
            "tls.pollInterval=500ms".into(),
            "tls.rotationDwell=2s".into(),
            "tls.leaseDuration=2s".into(),
            "log.format=text".into(),
        ],
    );
    assert_eq!(rendered.code, 0, "helm template: {}", rendered.stderr);
    kubectl_stdin(cp, &["apply", "--server-side"], &rendered.stdout).assert_clean("the chart");
    let settings_text = documents(&rendered.stdout)
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .and_then(|d| d["data"]["injector.toml"].as_str().map(str::to_string))
        .expect("the chart's settings");
    let settings = Settings::parse(
        &settings_text,
        &BTreeMap::from([
            ("POD_NAME".to_string(), "test".to_string()),
            ("POD_NAMESPACE".to_string(), NS.to_string()),
        ]),
    )
    .unwrap();
    let kubeconfig = service_account_kubeconfig(cp, NS, "zt-injector", dir.path());
    let mut injector = InjectorProcess::start(
        "zt-injector-a",
        &settings_text,
        NS,
        &kubeconfig,
        dir.path(),
        https,
        health,
    );
    injector.wait_ready(Duration::from_secs(60));

    // --- caBundle: set by the injector itself, equal to the Secret's bundle,
    // --- and it verifies what the injector serves.
    let bundle = eventually(Duration::from_secs(30), "the caBundle is set", || {
        ca_bundle(&client, "zt-injector")
    })
    .await;
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get("zt-injector-tls")
        .await
        .unwrap();
    let data = secret.data.clone().unwrap();
    assert_eq!(
        data["ca-bundle.pem"].0, bundle,
        "the caBundle is the Secret's bundle"
    );
    handshake(https, &bundle).await.unwrap_or_else(|(_, e)| {
        panic!("the injector's certificate is not trusted by the caBundle: {e}")
    });
    println!(
        "caBundle set by the injector ({} bytes), handshake verified",
        bundle.len()
    );

    namespace(&client, APPS, &[("zt.demo.local/injection", "enabled")]).await;
    namespace(&client, PLAIN, &[]).await;

    // --- An annotated pod: the stored pod has the native sidecar, the
    // --- volumes, the mounts, the groups and the config the library renders.
    let manifest = pod_manifest("backend-1", APPS, BACKEND);
    let stored = create_pod(&client, &manifest)
        .await
        .unwrap_or_else(|e| panic!("annotated pod refused: {}", api_message(&e)));
    let stored_json = serde_json::to_value(&stored).unwrap();
    let want = expected(&settings, &manifest);
    assert_subset(&want["spec"], &stored_json["spec"], "spec");
    assert_subset(
        &want["metadata"]["annotations"],
        &stored_json["metadata"]["annotations"],
        "annotations",
    );
    let spec = stored.spec.as_ref().unwrap();
    let sidecar = &spec.init_containers.as_ref().unwrap()[0];
    assert_eq!(sidecar.name, "zt-sidecar");
    assert_eq!(
        sidecar.restart_policy.as_deref(),
        Some("Always"),
        "a native sidecar"
    );
    assert!(sidecar.startup_probe.is_some());
    let config = sidecar.env.as_ref().unwrap()[0].value.clone().unwrap();
    // The delivered configuration is one zt-sidecar's loader accepts.
    let loaded =
        zt_sidecar::config::Config::parse(&config, &BTreeMap::<String, String>::new()).unwrap();
    assert_eq!(loaded.secrets.database.len(), 2);
    assert_eq!(loaded.secrets.group, Some(10001));
    assert_eq!(
        spec.security_context.as_ref().unwrap().supplemental_groups,
        Some(vec![10001])
    );
    let volumes: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["zt-workload-api", "zt-run"]);
    println!(
        "annotated pod stored with its sidecar:\n{}",
        serde_json::to_string_pretty(&stored_json["spec"]["initContainers"][0]).unwrap()
    );

    // --- A Deployment's pod template, and a Pod made from it (as the
    // --- ReplicaSet controller makes it: generateName, no name).
    let template = json!({
        "metadata": {"labels": {"app": "web"}, "annotations": {"zt.demo.local/inject": "true", "zt.demo.local/mtls-outbound-backend": "backend.99-apps.svc.cluster.local:8443, listen=15001, server_id=spiffe://demo.local/ns/99-apps/sa/backend", "zt.demo.local/admin-port": "15100"}},
        "spec": pod_manifest("x", APPS, &[])["spec"].clone(),
    });
    let deployment: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": APPS},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}}, "template": template},
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), APPS);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let stored_template = deployments.get("web").await.unwrap().spec.unwrap().template;
    let mut from_template = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": serde_json::to_value(&stored_template.metadata).unwrap(),
        "spec": serde_json::to_value(&stored_template.spec).unwrap(),
    });
    from_template["metadata"]["generateName"] = json!("web-5d8f7c-");
    from_template["metadata"]["namespace"] = json!(APPS);
    // The server-side dry run shows what the controller's pod would be.
    let pods: Api<Pod> = Api::namespaced(client.clone(), APPS);
    let typed: Pod = serde_json::from_value(from_template.clone()).unwrap();
    let dry = pods
        .create(
            &PostParams {
                dry_run: true,
                ..Default::default()
            },
            &typed,
        )
        .await
        .unwrap();
    assert_eq!(
        sidecars(&dry),
        1,
        "the server-side dry run shows the sidecar"
    );
    let made = pods.create(&PostParams::default(), &typed).await.unwrap();
    assert_eq!(sidecars(&made), 1);
    assert!(made
        .metadata
        .name
        .as_deref()
        .unwrap()
        .starts_with("web-5d8f7c-"));
    let env = made
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .unwrap()[0]
        .env
        .clone()
        .unwrap();
    assert!(env[0]
        .value
        .as_ref()
        .unwrap()
        .contains("server_id = \"spiffe://demo.local/ns/99-apps/sa/backend\""));
    assert!(
        made.spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .all(|v| v.name != "zt-run"),
        "no secrets: no shared volume"
    );

    // --- Left alone: no annotation; a namespace that did not opt in;
    // --- kube-system and the injector's namespace even when labelled.
    let plain = create_pod(&client, &pod_manifest("plain-1", APPS, &[]))
        .await
        .unwrap();
    untouched(&plain);
    let other = create_pod(&client, &pod_manifest("backend-1", PLAIN, BACKEND))
        .await
        .unwrap();
    untouched(&other);
    for ns in ["kube-system", NS] {
        kubectl(
            cp,
            &[
                "label",
                "namespace",
                ns,
                "zt.demo.local/injection=enabled",
                "--overwrite",
            ],
        )
        .assert_clean("label");
        default_service_account(&client, ns).await;
        let mut m = pod_manifest("annotated", ns, BACKEND);
        if ns == "kube-system" {
            m["spec"].as_object_mut().unwrap().remove("securityContext");
        }
        let p = create_pod(&client, &m)
            .await
            .unwrap_or_else(|e| panic!("{ns}: {}", api_message(&e)));
        untouched(&p);
    }
    println!(
        "left alone: unannotated pod, pod in a namespace without the label, kube-system, {NS}"
    );

    // --- Creating the same pod twice gives the same spec; re-creating an
    // --- injected pod (kubectl get -o yaml | kubectl create) never injects twice.
    let twice_1 = create_pod(&client, &pod_manifest("twice-1", APPS, BACKEND))
        .await
        .unwrap();
    let twice_2 = create_pod(&client, &pod_manifest("twice-2", APPS, BACKEND))
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&twice_1.spec).unwrap(),
        serde_json::to_value(&twice_2.spec).unwrap(),
        "same manifest, same stored spec"
    );
    let mut copy = serde_json::to_value(&twice_1).unwrap();
    strip_server_fields(&mut copy);
    copy["metadata"]["name"] = json!("twice-copy");
    let recreated = create_pod(&client, &copy).await.unwrap();
    assert_eq!(sidecars(&recreated), 1, "never injected twice");
    assert_eq!(
        serde_json::to_value(&recreated.spec).unwrap(),
        serde_json::to_value(&twice_1.spec).unwrap()
    );

    // --- A ConfigMap with a full sidecar TOML (read with the chart's RBAC).
    let backend_toml = fixture("backend-sidecar.toml");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), APPS);
    for (name, text) in [
        ("good", backend_toml.as_str()),
        ("broken", "this is [not toml"),
    ] {
        let cm: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": APPS},
            "data": {"sidecar.toml": text},
        }))
        .unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let from_cm = create_pod(
        &client,
        &pod_manifest("cm-1", APPS, &[("inject", "true"), ("config-map", "good")]),
    )
    .await
    .unwrap_or_else(|e| panic!("config-map pod refused: {}", api_message(&e)));
    let c = &from_cm
        .spec
        .as_ref()
        .unwrap()
        .init_containers
        .as_ref()
        .unwrap()[0];
    assert_eq!(
        c.env.as_ref().unwrap()[0].value.as_deref(),
        Some(backend_toml.as_str()),
        "delivered verbatim"
    );
    assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8443);

    // --- Malformed annotations: refused, with the message kubectl shows.
    let refusals: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("inject", "true"), ("injekt", "true")], "zt.demo.local/injekt: unknown annotation; the known ones are inject, status"),
        (vec![("inject", "true"), ("mtls-inbound-99999", "8000, allow=spiffe://demo.local/ns/a/sa/b")], "zt.demo.local/mtls-inbound-99999: the listen port in the key: `99999` is not a TCP port (1-65535)"),
        (vec![("inject", "true"), ("openbao-role", "backend"), ("proxy-allow", "GET sys/mounts")], "zt.demo.local/proxy-allow: `GET sys/mounts`: `sys/` paths cannot be proxied: the sidecar owns its token and leases"),
        (vec![("inject", "true"), ("mtls-inbound-8443", "8000, allow=spiffe://evil.example/ns/a/sa/b")], "zt.demo.local/mtls-inbound-8443: allow: `spiffe://evil.example/ns/a/sa/b` is in trust domain `evil.example`, not this cluster's `demo.local`"),
        (vec![("inject", "true"), ("config-map", "broken")], "zt.demo.local/config-map: ConfigMap broken: sidecar.toml is not a valid zt-sidecar configuration: TOML parse error"),
        (vec![("inject", "true"), ("config-map", "nowhere")], "zt.demo.local/config-map: ConfigMap apps/nowhere does not exist"),
        (vec![("inject", "maybe")], "zt.demo.local/inject: `maybe` is not \"true\" or \"false\""),
    ];
    for (i, (pairs, want)) in refusals.iter().enumerate() {
        let m = pod_manifest(&format!("refused-{i}"), APPS, pairs);
        let run = kubectl_stdin(cp, &["create"], &serde_json::to_string(&m).unwrap());
        assert_ne!(run.code, 0, "{pairs:?} was admitted");
        let prefix = format!("admission webhook \"{WEBHOOK}\" denied the request: ");
        assert!(
            run.stderr.contains(&format!("{prefix}{want}")),
            "{pairs:?}\n  kubectl said: {}\n  want: {prefix}{want}",
            run.stderr.trim()
        );
        println!("refused as expected: {}", run.stderr.trim());
    }

    // --- One plain-text line per review; never key material.
    let log = injector.log();
    assert!(
        log.contains("sidecar injected namespace=\"apps\" pod=backend-1 micros="),
        "{log}"
    );
    assert!(
        log.contains("pod refused namespace=\"apps\" pod=refused-0"),
        "{log}"
    );
    assert!(!log.contains('\x1b'), "colour codes in a log file");
    // The API server keeps its connection to the webhook alive: a TLS
    // handshake is not part of every pod create.
    let connections = log
        .lines()
        .filter(|l| l.contains(" connection remote="))
        .count();
    let reviews = log
        .lines()
        .filter(|l| l.contains("zt_injector::admission"))
        .count();
    assert!(
        connections >= 1 && connections * 2 <= reviews,
        "{connections} connections for {reviews} reviews"
    );
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get("zt-injector-tls")
        .await
        .unwrap();
    assert_no_key_material(&log, &secret);

    // --- Injector stopped: failurePolicy Fail. Every pod of an opted-in
    // --- namespace with an annotation under the prefix is refused (a typo
    // --- too); the webhook's matchConditions never send it the others, so
    // --- they are admitted, as are pods of other namespaces.
    // The prefix in capitals is sent too (matchConditions compares in lower
    // case) and refused with the right spelling.
    let mut shouted = pod_manifest("shouted", APPS, &[]);
    shouted["metadata"]["annotations"] = serde_json::json!({"Zt.Demo.Local/inject": "true"});
    let err = create_pod(&client, &shouted)
        .await
        .expect_err("the prefix in capitals was admitted");
    assert!(
        api_message(&err).contains("write `zt.demo.local/inject`"),
        "{}",
        api_message(&err)
    );

    injector.stop();
    for (name, pairs) in [
        ("down-annotated", BACKEND),
        ("down-typo", &[("injct", "true")][..]),
    ] {
        let err = create_pod(&client, &pod_manifest(name, APPS, pairs))
            .await
            .expect_err("admitted while the injector is down");
        let msg = api_message(&err);
        assert!(
            msg.contains(&format!("failed calling webhook \"{WEBHOOK}\"")),
            "{name}: {msg}"
        );
        println!("injector down, {name} refused: {msg}");
    }
    let plain = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "down-plain", "namespace": APPS,
                     "annotations": {"example.com/owner": "team-a"}},
        "spec": pod_manifest("x", APPS, &[])["spec"].clone(),
    });
    for pod in [
        create_pod(&client, &pod_manifest("down-bare", APPS, &[])).await,
        create_pod(&client, &plain).await,
        create_pod(&client, &pod_manifest("down-other", PLAIN, BACKEND)).await,
    ] {
        untouched(
            &pod.unwrap_or_else(|e| {
                panic!("refused while the injector is down: {}", api_message(&e))
            }),
        );
    }

    // --- Back up: the same CA from the Secret, the same caBundle.
    let mut again = InjectorProcess::start(
        "zt-injector-a",
        &settings_text,
        NS,
        &kubeconfig,
        dir.path(),
        https,
        health,
    );
    again.wait_ready(Duration::from_secs(60));
    let after = create_pod(&client, &pod_manifest("back-1", APPS, BACKEND))
        .await
        .unwrap();
    assert_eq!(sidecars(&after), 1);
    assert_eq!(
        ca_bundle(&client, "zt-injector").await.unwrap(),
        bundle,
        "the CA survived the restart"
    );
    assert_no_key_material(&again.log(), &secret);
    let _ = Api::<Deployment>::namespaced(client.clone(), APPS)
        .delete("web", &DeleteParams::default())
        .await;
}

/// No private key (PEM header or any line of its body) in `log`.
fn assert_no_key_material(log: &str, secret: &Secret) {
    assert!(
        !log.contains("PRIVATE KEY"),
        "a private key header is in the injector's log"
    );
    for key in ["ca-key.pem", "tls-key.pem"] {
        let pem = String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap();
        for line in pem
            .lines()
            .filter(|l| !l.starts_with("-----") && l.len() > 16)
        {
            assert!(
                !log.contains(line),
                "a line of {key} is in the injector's log (not shown)"
            );
        }
    }
}
