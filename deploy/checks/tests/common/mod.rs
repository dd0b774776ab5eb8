//! Shared by the deploy-checks integration tests.
#![allow(dead_code)]

pub mod install;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::OnceLock;

use deploy_checks::manifest::{self, Manifest};
use deploy_checks::repo::root;
use deploy_checks::schema::{self, SchemaPaths};
use serde_json::Value;

/// What deploy/scripts/schemas.sh fetched (fetched once if missing).
pub fn schemas() -> &'static SchemaPaths {
    static S: OnceLock<SchemaPaths> = OnceLock::new();
    S.get_or_init(|| schema::ensure_pinned().unwrap_or_else(|e| panic!("{e}")))
}

/// Every manifest make deploy applies from this repository.
pub fn deployed() -> Vec<Manifest> {
    manifest::deployed().unwrap_or_else(|e| panic!("{e}"))
}

/// The one manifest of this kind/namespace/name.
pub fn find<'a>(all: &'a [Manifest], kind: &str, namespace: &str, name: &str) -> &'a Manifest {
    all.iter()
        .find(|m| m.kind() == kind && m.namespace() == namespace && m.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {namespace}/{name} in the manifests"))
}

/// `data.<key>` of a ConfigMap.
pub fn config_map_entry<'a>(
    all: &'a [Manifest],
    namespace: &str,
    name: &str,
    key: &str,
) -> &'a str {
    find(all, "ConfigMap", namespace, name)
        .value
        .pointer(&format!("/data/{key}"))
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| panic!("ConfigMap {namespace}/{name} has no data.{key}"))
}

/// zt-injector's settings as its chart renders them with the default values
/// (what `make install` installs).
pub fn injector_settings() -> zt_injector::settings::Settings {
    let out = Command::new(&schemas().helm)
        .args(["template", "zt-injector"])
        .arg(root().join("deploy/charts/zt-injector"))
        .args(["--namespace", "zt-injector", "--kube-version", "1.36.3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = manifest::parse(&String::from_utf8(out.stdout).unwrap(), "chart")
        .unwrap_or_else(|e| panic!("{e}"));
    let text = docs
        .iter()
        .find_map(|m| {
            m.value
                .pointer("/data/injector.toml")
                .and_then(Value::as_str)
        })
        .expect("the chart's ConfigMap has injector.toml");
    zt_injector::settings::Settings::parse(
        text,
        &BTreeMap::from([
            ("POD_NAME".to_string(), "zt-injector-0".to_string()),
            ("POD_NAMESPACE".to_string(), "zt-injector".to_string()),
        ]),
    )
    .unwrap_or_else(|e| panic!("the chart's settings: {e}"))
}

/// A pod template as zt-injector's webhook has the API server store its pods
/// (unchanged when its annotations do not ask for the sidecar).
pub fn injected_template(template: &Value, settings: &zt_injector::settings::Settings) -> Value {
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(template.clone())
        .unwrap_or_else(|e| panic!("not a pod template: {e}"));
    serde_json::to_value(
        zt_injector::patch::injected(&pod, settings).unwrap_or_else(|r| panic!("zt-injector: {r}")),
    )
    .unwrap()
}
