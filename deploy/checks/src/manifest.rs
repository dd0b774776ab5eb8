//! Kubernetes manifests as JSON values, one per YAML document.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::{read, CheckError, Result};

/// One YAML document of a manifest file.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Where it came from (relative to the repository root when possible).
    pub source: String,
    /// Index of the document in its file (0-based, empty documents skipped).
    pub index: usize,
    /// The object.
    pub value: Value,
}

impl Manifest {
    fn str_at(&self, pointer: &str) -> &str {
        self.value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
    }
    /// `apiVersion`.
    pub fn api_version(&self) -> &str {
        self.str_at("/apiVersion")
    }
    /// `kind`.
    pub fn kind(&self) -> &str {
        self.str_at("/kind")
    }
    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.str_at("/metadata/name")
    }
    /// `metadata.namespace` (empty for cluster-scoped objects).
    pub fn namespace(&self) -> &str {
        self.str_at("/metadata/namespace")
    }
    /// `file#index Kind namespace/name`, for messages.
    pub fn describe(&self) -> String {
        let ns = if self.namespace().is_empty() {
            String::new()
        } else {
            format!("{}/", self.namespace())
        };
        format!(
            "{}#{} {} {}{}",
            self.source,
            self.index,
            self.kind(),
            ns,
            self.name()
        )
    }
    /// The pod template of a workload (Deployment, StatefulSet, DaemonSet, Job), if any.
    pub fn pod_template(&self) -> Option<&Value> {
        match self.kind() {
            "Deployment" | "StatefulSet" | "DaemonSet" | "Job" => {
                self.value.pointer("/spec/template")
            }
            "CronJob" => self.value.pointer("/spec/jobTemplate/spec/template"),
            _ => None,
        }
    }
}

/// Kubernetes reads YAML 1.1, where a plain `0400` is octal (256); the YAML
/// 1.2 parser used here would read a string. Rewrites such plain mapping
/// values to decimal before parsing, so values mean what the API server sees.
pub fn yaml11_octals(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let converted = body.rsplit_once(": ").and_then(|(head, value)| {
            let digits = value.trim().strip_prefix('0')?;
            let plain_key = !head.trim_start().starts_with('#') && !head.contains(['"', '\'', '#']);
            if plain_key && !digits.is_empty() && digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
            {
                u32::from_str_radix(digits, 8)
                    .ok()
                    .map(|n| format!("{head}: {n}"))
            } else {
                None
            }
        });
        match converted {
            Some(c) => {
                out.push_str(&c);
                out.push_str(&line[body.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Parses every YAML document of `text`; `source` labels them.
pub fn parse(text: &str, source: &str) -> Result<Vec<Manifest>> {
    let mut out = Vec::new();
    let text = yaml11_octals(text);
    for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let value = Value::deserialize(doc).map_err(|e| CheckError::Malformed {
            path: source.to_string(),
            problem: format!("document {i}: {e}"),
        })?;
        if value.is_null() {
            continue;
        }
        if !value.is_object() {
            return Err(CheckError::Malformed {
                path: source.to_string(),
                problem: format!("document {i} is not a mapping"),
            });
        }
        out.push(Manifest {
            source: source.to_string(),
            index: out.len(),
            value,
        });
    }
    Ok(out)
}

/// Parses a manifest file.
pub fn load(path: &Path) -> Result<Vec<Manifest>> {
    let root = crate::repo::root();
    let label = path
        .strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string();
    parse(&read(path)?, &label)
}

/// Every `*.yaml` file under `dir`, recursively, sorted.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| CheckError::Io {
            path: d.clone(),
            source,
        })?;
        for entry in entries {
            let path = entry
                .map_err(|source| CheckError::Io {
                    path: d.clone(),
                    source,
                })?
                .path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

/// Everything `make install` applies from this repository as plain
/// manifests: deploy/k8s, deploy/examples, policies/cilium and
/// policies/spire/k8s (the injector comes from its chart).
pub fn deployed() -> Result<Vec<Manifest>> {
    let root = crate::repo::root();
    let mut all = Vec::new();
    for dir in [
        "deploy/k8s",
        "deploy/examples",
        "policies/cilium",
        "policies/spire/k8s",
    ] {
        for file in yaml_files(&root.join(dir))? {
            all.extend(load(&file)?);
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml11_octal_mode_becomes_what_kubernetes_reads() {
        let m = &parse(
            "a:\n  defaultMode: 0400\n  quoted: \"0400\"\n  port: 8080\n  zero: 0\n  nine: 0900\n",
            "t",
        )
        .unwrap()[0]
            .value;
        assert_eq!(m["a"]["defaultMode"], 256);
        assert_eq!(m["a"]["quoted"], "0400");
        assert_eq!(m["a"]["port"], 8080);
        assert_eq!(m["a"]["zero"], 0);
        assert_eq!(
            m["a"]["nine"], "0900",
            "not octal: left as the parser reads it"
        );
    }

    #[test]
    fn garbage_yaml_is_an_error_naming_the_source() {
        let err = parse("a: [1, 2\n", "broken.yaml").unwrap_err().to_string();
        assert!(err.contains("broken.yaml"), "{err}");
        assert!(
            parse("- 1\n- 2\n", "list.yaml").is_err(),
            "a top-level list is not a manifest"
        );
    }
}
