use serde_json::json;

use super::*;
use crate::annotations::{parse, Intent, Source};
use crate::render::from_annotations;
use crate::testing::settings;

/// parse → render → mutation, as the webhook does for annotation-only pods.
fn inject(pod: &Value) -> Result<Option<Value>, String> {
    inject_with(pod, settings())
}

fn inject_with(pod: &Value, s: Settings) -> Result<Option<Value>, String> {
    let pod_typed: Pod = serde_json::from_value(pod.clone()).unwrap();
    let annotations = pod_typed.metadata.annotations.clone().unwrap_or_default();
    let injection = match parse(&annotations, &s.trust_domain).map_err(|r| r.to_string())? {
        Intent::Leave(_) => return Ok(None),
        Intent::Inject(i) => i,
    };
    let Source::Annotations(a) = &injection.source else {
        panic!("config-map pods are tested in admission")
    };
    let rendered = from_annotations(a, &s).map_err(|r| r.to_string())?;
    let plan = Plan {
        rendered: &rendered,
        image: injection.image.clone().unwrap_or(s.sidecar.image.clone()),
        resources: resources(&injection.resources, &s.sidecar.resources)
            .map_err(|r| r.to_string())?,
    };
    let patch = mutation(&pod_typed, &plan, &s).map_err(|r| r.to_string())?;
    assert!(
        patch
            .0
            .iter()
            .all(|op| matches!(op, PatchOperation::Add(_))),
        "add operations only"
    );
    let mut out = pod.clone();
    json_patch::patch(&mut out, &patch.0).expect("the patch applies to the pod it was made for");
    // What the API server stores must still be a Pod.
    serde_json::from_value::<Pod>(out.clone()).expect("the patched object is a Pod");
    Ok(Some(out))
}

fn pod(annotations: Value, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "namespace": "apps", "annotations": annotations},
        "spec": spec,
    })
}

fn app(name: &str) -> Value {
    json!({"name": name, "image": "app:1"})
}

const IDENTITY_ONLY: &str = "[admin]\nlisten = \"127.0.0.1:15000\"\n\n[identity]\nworkload_api = \"unix:/run/spire/sockets/spire-agent.sock\"\n\n[log]\nformat = \"json\"\n";

/// The sidecar container as the README documents it, written out by hand.
fn expected_sidecar(toml: &str, run_volume: bool, ports: &[u16]) -> Value {
    let probe = |path: Option<&str>, period: i32, failures: Option<i32>| {
        let mut command = vec!["/usr/local/bin/zt-sidecar", "probe"];
        if let Some(p) = path {
            command.extend(["--path", p]);
        }
        let mut p =
            json!({"exec": {"command": command}, "periodSeconds": period, "timeoutSeconds": 3});
        if let Some(f) = failures {
            p["failureThreshold"] = json!(f);
        }
        p
    };
    let mut mounts = vec![
        json!({"name": "zt-workload-api", "mountPath": "/run/spire/sockets", "readOnly": true}),
    ];
    if run_volume {
        mounts.push(json!({"name": "zt-run", "mountPath": "/run/zt"}));
    }
    let mut c = json!({
        "name": "zt-sidecar",
        "image": "zt-platform/zt-sidecar:dev",
        "imagePullPolicy": "IfNotPresent",
        "restartPolicy": "Always",
        "args": ["run"],
        "env": [{"name": "ZT_CONFIG", "value": toml}],
        "startupProbe": probe(None, 2, Some(150)),
        "readinessProbe": probe(None, 10, None),
        "livenessProbe": probe(Some("/healthz"), 20, None),
        "resources": {
            "requests": {"cpu": "20m", "memory": "32Mi"},
            "limits": {"cpu": "500m", "memory": "128Mi"},
        },
        "securityContext": {
            "runAsUser": 10000,
            "runAsGroup": 10000,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    });
    if !ports.is_empty() {
        c["ports"] = ports
            .iter()
            .map(|p| json!({"name": format!("mtls-{p}"), "containerPort": p, "protocol": "TCP"}))
            .collect();
    }
    c
}

fn csi() -> Value {
    json!({"name": "zt-workload-api", "csi": {"driver": "csi.spiffe.io", "readOnly": true}})
}

fn run_volume() -> Value {
    json!({"name": "zt-run", "emptyDir": {"medium": "Memory", "sizeLimit": "4Mi"}})
}

fn run_mount() -> Value {
    json!({"name": "zt-run", "mountPath": "/run/zt", "readOnly": true})
}

fn injected(extra: &[(&str, &str)]) -> Value {
    let mut a = json!({"zt.demo.local/inject": "true", "zt.demo.local/status": "injected"});
    for (k, v) in extra {
        a[format!("zt.demo.local/{k}")] = json!(v);
    }
    a
}

const SECRETS: &[(&str, &str)] = &[("openbao-role", "backend"), ("kv-key", "app/key")];

fn secrets_toml(group: u32) -> String {
    format!(
        "[admin]\nlisten = \"127.0.0.1:15000\"\n\n[identity]\nworkload_api = \"unix:/run/spire/sockets/spire-agent.sock\"\n\n[log]\nformat = \"json\"\n\n[openbao]\naddress = \"http://openbao.openbao.svc.cluster.local:8200\"\naudience = \"openbao\"\nauth_mount = \"jwt\"\nrole = \"backend\"\n\n[secrets]\ndir = \"/run/zt/secrets\"\nfile_mode = \"0440\"\ngroup = {group}\n\n[[secrets.kv]]\nname = \"key\"\npath = \"app/key\"\n"
    )
}

fn with(pairs: &[(&str, &str)]) -> Value {
    let mut a = json!({"zt.demo.local/inject": "true"});
    for (k, v) in pairs {
        a[format!("zt.demo.local/{k}")] = json!(v);
    }
    a
}

#[test]
fn a_plain_pod_gets_an_identity_only_native_sidecar() {
    let got = inject(&pod(with(&[]), json!({"containers": [app("app")]}))).unwrap();
    let want = pod(
        injected(&[]),
        json!({
            "containers": [app("app")],
            "initContainers": [expected_sidecar(IDENTITY_ONLY, false, &[])],
            "volumes": [csi()],
        }),
    );
    assert_eq!(got, Some(want));
}

#[test]
fn a_host_path_setting_replaces_the_csi_volume_and_nothing_else() {
    let mut s = settings();
    s.sidecar.workload_api_volume = WorkloadApiVolume::HostPath("/run/spire/agent-sockets".into());
    let got = inject_with(&pod(with(&[]), json!({"containers": [app("app")]})), s).unwrap();
    let want = pod(
        injected(&[]),
        json!({
            "containers": [app("app")],
            "initContainers": [expected_sidecar(IDENTITY_ONLY, false, &[])],
            "volumes": [{"name": "zt-workload-api", "hostPath": {"path": "/run/spire/agent-sockets", "type": "Directory"}}],
        }),
    );
    assert_eq!(got, Some(want));
}

#[test]
fn a_pod_with_secrets_gets_the_shared_volume_mounts_and_the_secrets_group() {
    let got = inject(&pod(
        with(SECRETS),
        json!({"containers": [app("app")], "restartPolicy": "Always"}),
    ))
    .unwrap();
    let mut app_with_mount = app("app");
    app_with_mount["volumeMounts"] = json!([run_mount()]);
    let want = pod(
        injected(SECRETS),
        json!({
            "containers": [app_with_mount],
            "restartPolicy": "Always",
            "initContainers": [expected_sidecar(&secrets_toml(10000), true, &[])],
            "volumes": [csi(), run_volume()],
            "securityContext": {"supplementalGroups": [10000]},
        }),
    );
    assert_eq!(got, Some(want));
}

#[test]
fn init_containers_stay_after_the_sidecar_and_get_the_mount_too() {
    let mut migrate = app("migrate");
    migrate["volumeMounts"] = json!([{"name": "scratch", "mountPath": "/scratch"}]);
    let got = inject(&pod(
        with(SECRETS),
        json!({
            "initContainers": [migrate.clone(), app("wait")],
            "containers": [app("app")],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        }),
    ))
    .unwrap()
    .unwrap();
    let names: Vec<&str> = got["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["zt-sidecar", "migrate", "wait"],
        "native sidecar first"
    );
    assert_eq!(
        got["spec"]["initContainers"][1]["volumeMounts"],
        json!([{"name": "scratch", "mountPath": "/scratch"}, run_mount()])
    );
    assert_eq!(
        got["spec"]["initContainers"][2]["volumeMounts"],
        json!([run_mount()])
    );
    assert_eq!(
        got["spec"]["containers"][0]["volumeMounts"],
        json!([run_mount()])
    );
    assert_eq!(
        got["spec"]["volumes"],
        json!([{"name": "scratch", "emptyDir": {}}, csi(), run_volume()])
    );
}

#[test]
fn several_app_containers_each_get_the_mount_and_existing_groups_are_kept() {
    let mut logs = app("logs");
    logs["volumeMounts"] = json!([{"name": "data", "mountPath": "/run"}]);
    let spec = json!({
        "containers": [app("web"), logs, app("worker")],
        "volumes": [{"name": "data", "emptyDir": {}}],
        "securityContext": {"runAsNonRoot": true, "supplementalGroups": [5]},
    });
    let got = inject(&pod(with(SECRETS), spec.clone())).unwrap().unwrap();
    for (i, want) in [
        json!([run_mount()]),
        json!([{"name": "data", "mountPath": "/run"}, run_mount()]),
        json!([run_mount()]),
    ]
    .iter()
    .enumerate()
    {
        assert_eq!(
            &got["spec"]["containers"][i]["volumeMounts"], want,
            "container {i}"
        );
    }
    assert_eq!(
        got["spec"]["securityContext"],
        json!({"runAsNonRoot": true, "supplementalGroups": [5, 10000]}),
        "the pod's own groups stay; the secrets group is added"
    );
    // A group the pod already has is not added twice.
    let mut spec2 = spec.clone();
    spec2["securityContext"]["supplementalGroups"] = json!([10000]);
    let got = inject(&pod(with(SECRETS), spec2)).unwrap().unwrap();
    assert_eq!(
        got["spec"]["securityContext"]["supplementalGroups"],
        json!([10000])
    );
    // An empty list is replaced.
    let mut spec3 = spec;
    spec3["securityContext"]["supplementalGroups"] = json!([]);
    let got = inject(&pod(with(SECRETS), spec3)).unwrap().unwrap();
    assert_eq!(
        got["spec"]["securityContext"]["supplementalGroups"],
        json!([10000])
    );
}

#[test]
fn an_already_injected_or_opted_out_pod_is_not_patched() {
    let spec = json!({"containers": [app("app")]});
    assert_eq!(inject(&pod(injected(&[]), spec.clone())).unwrap(), None);
    assert_eq!(
        inject(&pod(json!({"zt.demo.local/inject": "false"}), spec.clone())).unwrap(),
        None
    );
    assert_eq!(inject(&pod(json!({}), spec)).unwrap(), None);
}

#[test]
fn clashes_with_the_pods_own_names_are_refused_not_overwritten() {
    let cases = [
        (
            json!({"containers": [app("zt-sidecar")]}),
            "zt.demo.local/inject: the pod already has a container named zt-sidecar; rename it (the injector adds its own)",
        ),
        (
            json!({"containers": [app("app")], "initContainers": [app("zt-sidecar")]}),
            "zt.demo.local/inject: the pod already has a container named zt-sidecar; rename it (the injector adds its own)",
        ),
        (
            json!({"containers": [app("app")], "volumes": [{"name": "zt-run", "emptyDir": {}}]}),
            "zt.demo.local/inject: the pod already has a volume named zt-run; rename it (the injector adds its own)",
        ),
        (
            json!({"containers": [app("app")], "volumes": [{"name": "zt-workload-api", "emptyDir": {}}]}),
            "zt.demo.local/inject: the pod already has a volume named zt-workload-api; rename it (the injector adds its own)",
        ),
        (
            json!({"containers": [{"name": "app", "image": "a", "volumeMounts": [{"name": "x", "mountPath": "/run/zt"}]}], "volumes": [{"name": "x", "emptyDir": {}}]}),
            "zt.demo.local/inject: container app already mounts x at /run/zt, where the injector mounts the sidecar's files (/run/zt)",
        ),
        (
            json!({"containers": [{"name": "app", "image": "a", "volumeMounts": [{"name": "x", "mountPath": "/run/zt/secrets"}]}], "volumes": [{"name": "x", "emptyDir": {}}]}),
            "zt.demo.local/inject: container app already mounts x at /run/zt/secrets, where the injector mounts the sidecar's files (/run/zt)",
        ),
        (
            json!({"containers": [{"name": "app", "image": "a", "volumeMounts": [{"name": "zt-workload-api", "mountPath": "/spire"}]}]}),
            "zt.demo.local/inject: container app mounts volume zt-workload-api, which the injector adds for the sidecar; mount nothing of it (the app gets /run/zt read-only)",
        ),
        (
            json!({"initContainers": [{"name": "setup", "image": "a", "volumeMounts": [{"name": "zt-run", "mountPath": "/writable"}]}], "containers": [app("app")]}),
            "zt.demo.local/inject: container setup mounts volume zt-run, which the injector adds for the sidecar; mount nothing of it (the app gets /run/zt read-only)",
        ),
        (
            json!({"containers": [{"name": "app", "image": "a", "ports": [{"containerPort": 15000}]}]}),
            "zt.demo.local/admin-port: port 15000 is already used by container app",
        ),
        (
            json!({"containers": [app("app")], "hostNetwork": true}),
            "zt.demo.local/inject: the pod uses hostNetwork: the sidecar's listeners would be on the node",
        ),
        (
            json!({"containers": [app("app")], "os": {"name": "windows"}}),
            "zt.demo.local/inject: the sidecar runs on Linux pods only",
        ),
    ];
    for (spec, want) in cases {
        assert_eq!(
            inject(&pod(with(SECRETS), spec.clone())).unwrap_err(),
            want,
            "{spec}"
        );
    }
    let inbound = [(
        "mtls-inbound-8443",
        "8000, allow=spiffe://demo.local/ns/a/sa/b",
    )];
    assert_eq!(
        inject(&pod(
            with(&inbound),
            json!({"containers": [{"name": "app", "image": "a", "ports": [{"containerPort": 8443}]}]})
        ))
        .unwrap_err(),
        "zt.demo.local/mtls-inbound-8443: port 8443 is already used by container app"
    );
    assert_eq!(
        inject(&pod(
            with(&inbound),
            json!({"containers": [{"name": "app", "image": "a", "ports": [{"name": "mtls-8443", "containerPort": 9000}]}]})
        ))
        .unwrap_err(),
        "zt.demo.local/mtls-inbound-8443: the port name mtls-8443 is already used by container app"
    );
}

#[test]
fn each_container_annotation_reaches_the_sidecar_container() {
    let got = inject(&pod(
        with(&[
            ("image", "registry.example/zt-sidecar:1.2"),
            ("cpu-request", "5m"),
            ("cpu-limit", "100m"),
            ("memory-request", "16Mi"),
            ("memory-limit", "48Mi"),
            (
                "mtls-inbound-8443",
                "8000, allow=spiffe://demo.local/ns/99-apps/sa/frontend",
            ),
            (
                "mtls-inbound-9443",
                "9000, allow=spiffe://demo.local/ns/99-apps/*",
            ),
        ]),
        json!({"containers": [app("app")]}),
    ))
    .unwrap()
    .unwrap();
    let c = &got["spec"]["initContainers"][0];
    assert_eq!(c["image"], "registry.example/zt-sidecar:1.2");
    assert_eq!(
        c["resources"],
        json!({"requests": {"cpu": "5m", "memory": "16Mi"}, "limits": {"cpu": "100m", "memory": "48Mi"}})
    );
    assert_eq!(
        c["ports"],
        json!([
            {"name": "mtls-8443", "containerPort": 8443, "protocol": "TCP"},
            {"name": "mtls-9443", "containerPort": 9443, "protocol": "TCP"},
        ])
    );
    assert!(
        got["spec"].get("securityContext").is_none(),
        "no shared files, no group"
    );
}

#[test]
fn a_request_above_its_limit_is_refused_naming_the_annotation_set() {
    let spec = json!({"containers": [app("app")]});
    assert_eq!(
        inject(&pod(with(&[("cpu-request", "1")]), spec.clone())).unwrap_err(),
        "zt.demo.local/cpu-request: 1 is above the limit 500m"
    );
    assert_eq!(
        inject(&pod(with(&[("memory-limit", "16Mi")]), spec)).unwrap_err(),
        "zt.demo.local/memory-limit: 16Mi is below the request 32Mi"
    );
}

#[test]
fn the_secrets_group_annotation_sets_the_file_group_and_the_pods_group() {
    let mut pairs = SECRETS.to_vec();
    pairs.push(("secrets-group", "10001"));
    let got = inject(&pod(with(&pairs), json!({"containers": [app("app")]})))
        .unwrap()
        .unwrap();
    assert_eq!(
        got["spec"]["initContainers"][0]["env"][0]["value"],
        json!(secrets_toml(10001))
    );
    assert_eq!(
        got["spec"]["securityContext"]["supplementalGroups"],
        json!([10001])
    );
}

#[test]
fn pods_of_controllers_have_no_name_yet_and_are_injected_all_the_same() {
    let mut p = pod(with(&[]), json!({"containers": [app("app")]}));
    p["metadata"] = json!({"generateName": "web-7d9c-", "annotations": with(&[])});
    let got = inject(&p).unwrap().unwrap();
    assert_eq!(got["metadata"]["generateName"], "web-7d9c-");
    assert_eq!(got["spec"]["initContainers"][0]["name"], "zt-sidecar");
}
