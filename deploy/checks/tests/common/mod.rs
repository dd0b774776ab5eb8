//! Shared by the deploy-checks integration tests.
#![allow(dead_code)]

pub mod install;

use std::sync::OnceLock;

use deploy_checks::manifest::{self, Manifest};
use deploy_checks::schema::{self, SchemaPaths};

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
