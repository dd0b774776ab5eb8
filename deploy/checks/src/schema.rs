//! Validation against the real schemas: the Kubernetes API server's OpenAPI
//! (swagger.json of the pinned release) and the CRDs of the pinned Cilium and
//! spire-controller-manager.
//!
//! Two faithful adjustments, the same kubeconform's `-strict` schemas make:
//! - objects that list their `properties` refuse unknown ones
//!   (`additionalProperties: false`), as the API server's strict field
//!   validation (kubectl's default) does, unless they preserve unknown fields;
//! - `IntOrString` and `Quantity`, strings with a format in swagger, also
//!   accept numbers, as the API server does.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use jsonschema::Validator;
use serde_json::{json, Value};

use crate::manifest::{self, Manifest};
use crate::repo::{root, Versions};
use crate::{read, CheckError, Result};

/// Where `deploy/scripts/schemas.sh` puts the pinned schemas.
#[derive(Debug, Clone)]
pub struct SchemaPaths {
    /// Kubernetes `api/openapi-spec/swagger.json`.
    pub swagger: PathBuf,
    /// Files holding CustomResourceDefinitions (multi-document YAML allowed).
    pub crd_files: Vec<PathBuf>,
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
        let mut crd_files = vec![base
            .join(format!("spire-crds-{}", v.get("ISTIO_MODULE_VERSION")?))
            .join("quickstart.yaml")];
        for name in [
            "ciliumnetworkpolicies.yaml",
            "ciliumclusterwidenetworkpolicies.yaml",
        ] {
            crd_files.push(cilium.join("crds").join(name));
        }
        Ok(Self {
            swagger: base
                .join(format!("kubernetes-{}", v.get("KUBERNETES_VERSION")?))
                .join("swagger.json"),
            crd_files,
            cilium_chart: cilium.join("chart"),
            helm: root().join(".tools/bin/helm"),
        })
    }

    /// The first path that does not exist, if any.
    pub fn missing(&self) -> Option<&Path> {
        std::iter::once(&self.swagger)
            .chain(&self.crd_files)
            .chain([&self.cilium_chart, &self.helm])
            .map(PathBuf::as_path)
            .find(|p| !p.exists())
    }
}

/// The pinned schemas, fetched with `deploy/scripts/schemas.sh` first when
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

/// `apiVersion` + `kind`.
pub type Gvk = (String, String);

/// Validators for every Kubernetes kind and every loaded CRD version.
pub struct SchemaSet {
    definitions: Value,
    k8s_kinds: HashMap<Gvk, String>,
    crds: HashMap<Gvk, Value>,
    compiled: Mutex<HashMap<Gvk, std::sync::Arc<Validator>>>,
    object_meta: Validator,
}

impl std::fmt::Debug for SchemaSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaSet")
            .field("kubernetes_kinds", &self.k8s_kinds.len())
            .field("custom_kinds", &self.crds.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn malformed(path: &Path, problem: impl Into<String>) -> CheckError {
    CheckError::Malformed {
        path: path.display().to_string(),
        problem: problem.into(),
    }
}

fn compile(schema: &Value, what: &str) -> Result<Validator> {
    // Patterns are Go (RE2) regular expressions: the `regex` engine is RE2-like.
    jsonschema::draft4::options()
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .should_validate_formats(false)
        .build(schema)
        .map_err(|e| CheckError::Malformed {
            path: what.to_string(),
            problem: format!("schema does not compile: {e}"),
        })
}

impl SchemaSet {
    /// Loads the swagger and the CRDs.
    pub fn load(paths: &SchemaPaths) -> Result<Self> {
        let swagger: Value = serde_json::from_str(&read(&paths.swagger)?)
            .map_err(|e| malformed(&paths.swagger, e.to_string()))?;
        let mut definitions = swagger
            .get("definitions")
            .cloned()
            .ok_or_else(|| malformed(&paths.swagger, "no `definitions`"))?;
        let defs = definitions
            .as_object_mut()
            .ok_or_else(|| malformed(&paths.swagger, "`definitions` is not an object"))?;
        let mut k8s_kinds = HashMap::new();
        for (name, def) in defs.iter_mut() {
            if let Some(gvks) = def
                .get("x-kubernetes-group-version-kind")
                .and_then(Value::as_array)
            {
                for gvk in gvks {
                    let group = gvk["group"].as_str().unwrap_or("");
                    let version = gvk["version"].as_str().unwrap_or("");
                    let api_version = if group.is_empty() {
                        version.to_string()
                    } else {
                        format!("{group}/{version}")
                    };
                    k8s_kinds.insert(
                        (api_version, gvk["kind"].as_str().unwrap_or("").to_string()),
                        name.clone(),
                    );
                }
            }
            make_strict(def);
        }
        for (name, any_of) in [
            (
                "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
                json!([{"type": "string"}, {"type": "integer"}]),
            ),
            (
                "io.k8s.apimachinery.pkg.api.resource.Quantity",
                json!([{"type": "string"}, {"type": "number"}]),
            ),
        ] {
            if defs
                .insert(name.to_string(), json!({ "anyOf": any_of }))
                .is_none()
            {
                return Err(malformed(&paths.swagger, format!("no definition {name}")));
            }
        }
        let meta_name = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";
        let object_meta = compile(
            &json!({"definitions": definitions, "allOf": [{"$ref": format!("#/definitions/{meta_name}")}]}),
            meta_name,
        )?;

        let mut crds = HashMap::new();
        for file in &paths.crd_files {
            for m in manifest::load(file)? {
                if m.kind() != "CustomResourceDefinition" {
                    continue;
                }
                for (gvk, schema) in crd_schemas(&m.value).map_err(|p| malformed(file, p))? {
                    crds.insert(gvk, schema);
                }
            }
        }
        Ok(Self {
            definitions,
            k8s_kinds,
            crds,
            compiled: Mutex::new(HashMap::new()),
            object_meta,
        })
    }

    /// Whether the schemas know `apiVersion`/`kind`.
    pub fn knows(&self, api_version: &str, kind: &str) -> bool {
        let key = (api_version.to_string(), kind.to_string());
        self.k8s_kinds.contains_key(&key) || self.crds.contains_key(&key)
    }

    fn validator(&self, gvk: &Gvk) -> Result<Option<std::sync::Arc<Validator>>> {
        let mut cache = self.compiled.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(v) = cache.get(gvk) {
            return Ok(Some(v.clone()));
        }
        let schema = if let Some(def) = self.k8s_kinds.get(gvk) {
            json!({"definitions": self.definitions, "allOf": [{"$ref": format!("#/definitions/{def}")}]})
        } else if let Some(schema) = self.crds.get(gvk) {
            schema.clone()
        } else {
            return Ok(None);
        };
        let v = std::sync::Arc::new(compile(&schema, &format!("{} {}", gvk.0, gvk.1))?);
        cache.insert(gvk.clone(), v.clone());
        Ok(Some(v))
    }

    /// Every schema violation of `m` (empty when valid). An unknown kind is a violation.
    pub fn validate(&self, m: &Manifest) -> Result<Vec<String>> {
        let gvk = (m.api_version().to_string(), m.kind().to_string());
        let Some(validator) = self.validator(&gvk)? else {
            return Ok(vec![format!(
                "{}: unknown apiVersion/kind {} {} for the pinned versions",
                m.describe(),
                gvk.0,
                gvk.1
            )]);
        };
        // The API server reads `key: null` as an absent key (helm emits those).
        let instance = without_nulls(&m.value);
        let mut errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| {
                format!(
                    "{}: at {}: {}",
                    m.describe(),
                    display_path(&e.instance_path().to_string()),
                    e
                )
            })
            .collect();
        if self.crds.contains_key(&gvk) {
            let meta = instance.get("metadata").cloned().unwrap_or(Value::Null);
            errors.extend(
                self.object_meta
                    .iter_errors(&meta)
                    .map(|e| format!("{}: at /metadata{}: {}", m.describe(), e.instance_path(), e)),
            );
        }
        Ok(errors)
    }
}

/// A copy of `v` without object members whose value is null.
pub fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

fn display_path(p: &str) -> &str {
    if p.is_empty() {
        "/"
    } else {
        p
    }
}

/// The schema of every served version of a CRD, made strict.
pub fn crd_schemas(crd: &Value) -> std::result::Result<Vec<(Gvk, Value)>, String> {
    let group = crd
        .pointer("/spec/group")
        .and_then(Value::as_str)
        .ok_or("CRD without spec.group")?;
    let kind = crd
        .pointer("/spec/names/kind")
        .and_then(Value::as_str)
        .ok_or("CRD without spec.names.kind")?;
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .ok_or("CRD without spec.versions")?;
    let mut out = Vec::new();
    for v in versions {
        if v.get("served").and_then(Value::as_bool) == Some(false) {
            continue;
        }
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .ok_or("CRD version without name")?;
        let mut schema = v
            .pointer("/schema/openAPIV3Schema")
            .cloned()
            .ok_or_else(|| format!("{kind} {name}: no openAPIV3Schema"))?;
        make_strict(&mut schema);
        rewrite_patterns(&mut schema);
        out.push(((format!("{group}/{name}"), kind.to_string()), schema));
    }
    Ok(out)
}

/// Go (RE2) writes a one-letter Unicode class as `\\PC`; the schema
/// compiler checks patterns as ECMA-262, which needs `\\P{C}` (same meaning).
pub fn go_pattern_to_ecma(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        out.push(c);
        if c != '\\' {
            continue;
        }
        match chars.next() {
            Some(p @ ('p' | 'P')) => {
                out.push(p);
                match chars.peek() {
                    Some(&l) if l.is_ascii_alphabetic() => {
                        chars.next();
                        out.push('{');
                        out.push(l);
                        out.push('}');
                    }
                    _ => {}
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

fn rewrite_patterns(schema: &mut Value) {
    match schema {
        Value::Object(o) => {
            for (k, v) in o.iter_mut() {
                match (k.as_str(), v) {
                    ("pattern", Value::String(p)) => *p = go_pattern_to_ecma(p),
                    (_, v) => rewrite_patterns(v),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite_patterns),
        _ => {}
    }
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

    #[test]
    fn go_unicode_classes_become_ecma_braces() {
        assert_eq!(go_pattern_to_ecma(r"^\PC*$"), r"^\P{C}*$");
        assert_eq!(go_pattern_to_ecma(r"\pL\p{N}\\p"), r"\p{L}\p{N}\\p");
        assert_eq!(go_pattern_to_ecma(r"^[a-z]+\.x$"), r"^[a-z]+\.x$");
    }

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

    #[test]
    fn nulls_are_dropped_like_the_api_server_does() {
        assert_eq!(
            without_nulls(&json!({"a": null, "b": [{"c": null, "d": 1}]})),
            json!({"b": [{"d": 1}]})
        );
    }
}
