use serde_json::{json, Value};

use super::*;
use crate::testing::settings;

/// ConfigMaps from a map: (namespace, name) → sidecar.toml, or a read error.
struct MapConfigMaps(BTreeMap<(String, String), Result<String, String>>);

impl ConfigMaps for MapConfigMaps {
    async fn sidecar_toml(&self, namespace: &str, name: &str) -> Result<String, String> {
        self.0
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
            .unwrap_or_else(|| Err(format!("ConfigMap {namespace}/{name} does not exist")))
    }
}

fn injector(cms: &[(&str, &str, Result<&str, &str>)]) -> Injector<MapConfigMaps> {
    Injector::new(
        Arc::new(settings()),
        MapConfigMaps(
            cms.iter()
                .map(|(ns, n, r)| {
                    (
                        (ns.to_string(), n.to_string()),
                        r.map(str::to_string).map_err(str::to_string),
                    )
                })
                .collect(),
        ),
    )
}

fn review(namespace: &str, operation: &str, annotations: Value, dry_run: bool) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"generateName": "web-", "namespace": namespace, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            },
            "oldObject": null,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        }
    }))
    .unwrap()
}

async fn answer(inj: &Injector<MapConfigMaps>, body: &[u8]) -> Value {
    serde_json::to_value(inj.review(body).await).unwrap()
}

/// The JSON patch of a response (kube-core sends the bytes as a JSON array
/// of numbers, which the API server's decoder reads as a []byte).
fn patched(resp: &Value) -> Value {
    let bytes: Vec<u8> =
        serde_json::from_value(resp["response"]["patch"].clone()).expect("a patch");
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn an_annotated_pod_gets_a_json_patch_with_the_request_uid() {
    let inj = injector(&[]);
    let resp = answer(
        &inj,
        &review(
            "apps",
            "CREATE",
            json!({"zt.demo.local/inject": "true"}),
            false,
        ),
    )
    .await;
    assert_eq!(resp["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(resp["kind"], "AdmissionReview");
    assert_eq!(
        resp["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(resp["response"]["allowed"], true);
    assert_eq!(resp["response"]["patchType"], "JSONPatch");
    let ops = patched(&resp);
    assert_eq!(
        ops[0],
        json!({"op": "add", "path": "/metadata/annotations/zt.demo.local~1status", "value": "injected"})
    );
    assert_eq!(ops[1]["path"], "/spec/initContainers");
    // A dry run is answered exactly the same (sideEffects: None).
    let dry = answer(
        &inj,
        &review(
            "apps",
            "CREATE",
            json!({"zt.demo.local/inject": "true"}),
            true,
        ),
    )
    .await;
    assert_eq!(dry, resp);
}

#[tokio::test]
async fn malformed_annotations_are_refused_with_the_message_kubectl_shows() {
    let inj = injector(&[]);
    let resp = answer(
        &inj,
        &review(
            "apps",
            "CREATE",
            json!({"zt.demo.local/inject": "true", "zt.demo.local/mtls-inbound-http": "8000"}),
            false,
        ),
    )
    .await;
    assert_eq!(resp["response"]["allowed"], false);
    assert_eq!(
        resp["response"]["status"]["message"],
        "zt.demo.local/mtls-inbound-http: the listen port in the key: `http` is not a TCP port (1-65535)"
    );
    assert_eq!(resp["response"]["status"]["code"], 400);
    assert!(resp["response"].get("patch").is_none());
}

#[tokio::test]
async fn unannotated_excluded_and_non_create_requests_are_allowed_unchanged() {
    let inj = injector(&[]);
    let annotated = json!({"zt.demo.local/inject": "true"});
    for body in [
        review("apps", "CREATE", json!({}), false),
        review(
            "apps",
            "CREATE",
            json!({"zt.demo.local/inject": "false"}),
            false,
        ),
        review("kube-system", "CREATE", annotated.clone(), false),
        review("zt-injector", "CREATE", annotated.clone(), false),
        review("apps", "UPDATE", annotated.clone(), false),
    ] {
        let resp = answer(&inj, &body).await;
        assert_eq!(resp["response"]["allowed"], true);
        assert!(resp["response"].get("patch").is_none(), "{resp}");
    }
    let req: AdmissionRequest<Pod> = serde_json::from_slice::<AdmissionReview<Pod>>(&review(
        "kube-system",
        "CREATE",
        annotated,
        false,
    ))
    .unwrap()
    .try_into()
    .unwrap();
    assert_eq!(inj.admit(&req).await.1, Outcome::Excluded);
}

#[tokio::test]
async fn garbage_bodies_get_an_invalid_review_not_a_crash() {
    let inj = injector(&[]);
    for body in [
        &b"not json"[..],
        b"{}",
        b"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}",
    ] {
        let resp = answer(&inj, body).await;
        assert_eq!(resp["response"]["allowed"], false, "{resp}");
    }
}

const CM: &str = "[identity]\nworkload_api = \"unix:/run/spire/sockets/spire-agent.sock\"\n[admin]\nlisten = \"127.0.0.1:15100\"\n";

#[tokio::test]
async fn a_config_map_is_read_from_the_pods_namespace_validated_and_delivered_verbatim() {
    let inj = injector(&[
        ("apps", "good", Ok(CM)),
        ("apps", "broken", Ok("[admin]\nlisten = \"everywhere\"\n")),
        (
            "apps",
            "secret",
            Err("ConfigMap apps/secret: the injector may not read it (forbidden)"),
        ),
        ("other", "good", Ok(CM)),
    ]);
    let cm = |name: &str| json!({"zt.demo.local/inject": "true", "zt.demo.local/config-map": name});
    let resp = answer(&inj, &review("apps", "CREATE", cm("good"), false)).await;
    let ops = patched(&resp);
    assert_eq!(
        ops[1]["value"][0]["env"][0],
        json!({"name": "ZT_CONFIG", "value": CM})
    );
    for (name, want) in [
        ("broken", "zt.demo.local/config-map: ConfigMap broken: sidecar.toml is not a valid zt-sidecar configuration: admin.listen: `everywhere` is not an address like 127.0.0.1:15000"),
        ("secret", "zt.demo.local/config-map: ConfigMap apps/secret: the injector may not read it (forbidden)"),
        ("missing", "zt.demo.local/config-map: ConfigMap apps/missing does not exist"),
    ] {
        let resp = answer(&inj, &review("apps", "CREATE", cm(name), false)).await;
        assert_eq!(resp["response"]["status"]["message"], want);
    }
    // Another namespace's ConfigMap of the same name is never used.
    let resp = answer(&inj, &review("third", "CREATE", cm("good"), false)).await;
    assert_eq!(
        resp["response"]["status"]["message"],
        "zt.demo.local/config-map: ConfigMap third/good does not exist"
    );
}
