//! What `deploy/scripts/schemas.sh` fetches for the deploy tests (pinned,
//! from the Go module proxy): Cilium's CRDs and Helm chart (with its
//! `values.schema.json`), the spire-controller-manager CRDs, and helm.
//!
//! The manifests themselves are checked by the real kube-apiserver
//! (`tests/install.rs`); the only schema checked here is the Cilium chart's
//! values schema, which no server sees: helm ignores unknown keys, so
//! [`make_strict`] makes a misspelt key an error.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use crate::repo::{root, Versions};
use crate::{CheckError, Result};

/// Where `deploy/scripts/schemas.sh` puts what it fetched.
#[derive(Debug, Clone)]
pub struct SchemaPaths {
    /// Cilium's CRDs (one YAML file each), as its operator registers them.
    pub cilium_crds: PathBuf,
    /// The spire-controller-manager CRDs the Go module proxy serves
    /// (istio.io/istio's copy: ClusterSPIFFEID, ClusterFederatedTrustDomain).
    pub spire_crds: PathBuf,
    /// The Cilium Helm chart folder.
    pub cilium_chart: PathBuf,
    /// `helm`, built at the pinned version.
    pub helm: PathBuf,
}

impl SchemaPaths {
    /// The paths for the versions pinned in `deploy/versions.env`.
    pub fn pinned() -> Result<Self> {
        let v = Versions::load()?;
        let base = root().join(".tools/schemas");
        let cilium = base.join(format!("cilium-{}", v.get("CILIUM_VERSION")?));
        Ok(Self {
            cilium_crds: cilium.join("crds"),
            spire_crds: base
                .join(format!("spire-crds-{}", v.get("ISTIO_MODULE_VERSION")?))
                .join("crds.yaml"),
            cilium_chart: cilium.join("chart"),
            helm: root().join(".tools/bin/helm"),
        })
    }

    /// The first path that does not exist, if any.
    pub fn missing(&self) -> Option<&Path> {
        [
            &self.cilium_crds,
            &self.spire_crds,
            &self.cilium_chart,
            &self.helm,
        ]
        .into_iter()
        .map(PathBuf::as_path)
        .find(|p| !p.exists())
    }
}

/// The pinned files, fetched with `deploy/scripts/schemas.sh` first when
/// anything is missing (idempotent; one run per process).
pub fn ensure_pinned() -> Result<SchemaPaths> {
    static FETCH: Mutex<()> = Mutex::new(());
    let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    let paths = SchemaPaths::pinned()?;
    if let Some(missing) = paths.missing() {
        let script = root().join("deploy/scripts/schemas.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .output()
            .map_err(|source| CheckError::Io {
                path: script.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(CheckError::SchemasMissing(format!(
                "{} is missing and schemas.sh failed:\n{}",
                missing.display(),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        if let Some(still) = paths.missing() {
            return Err(CheckError::SchemasMissing(format!(
                "{} still missing after schemas.sh",
                still.display()
            )));
        }
    }
    Ok(paths)
}

/// Adds `additionalProperties: false` to every object schema that lists its
/// properties, does not say otherwise and does not preserve unknown fields.
pub fn make_strict(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let preserves = obj
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    if obj.contains_key("properties") && !obj.contains_key("additionalProperties") && !preserves {
        obj.insert("additionalProperties".into(), Value::Bool(false));
    }
    for key in ["properties", "patternProperties", "definitions"] {
        if let Some(Value::Object(children)) = obj.get_mut(key) {
            children.values_mut().for_each(make_strict);
        }
    }
    // Not into allOf/anyOf/oneOf/not: their branches often list a subset of
    // the properties to express constraints, and must not refuse the rest.
    for key in ["items", "additionalProperties"] {
        if let Some(child) = obj.get_mut(key) {
            make_strict(child);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strict_refuses_unknown_properties_but_respects_preserve_unknown_fields() {
        let mut s = json!({"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {}}},
            "open": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"c": {}}}},
            "oneOf": [{"properties": {"a": {}}, "required": ["a"]}]});
        make_strict(&mut s);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["a"]["additionalProperties"], false);
        assert!(s["properties"]["open"]
            .get("additionalProperties")
            .is_none());
        assert!(s["oneOf"][0].get("additionalProperties").is_none());
    }
}
