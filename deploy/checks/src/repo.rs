//! Where the repository is and what `deploy/versions.env` pins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{read, CheckError, Result};

/// The repository root (this crate lives in `deploy/checks`).
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .and_then(Path::parent)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// `deploy/versions.env`: `KEY=VALUE` lines, `#` comments.
#[derive(Debug, Clone)]
pub struct Versions(BTreeMap<String, String>);

impl Versions {
    /// Reads `deploy/versions.env` from the repository.
    pub fn load() -> Result<Self> {
        let path = root().join("deploy/versions.env");
        Self::parse(&read(&path)?, &path.display().to_string())
    }

    /// Parses versions.env text; `label` names it in errors.
    pub fn parse(text: &str, label: &str) -> Result<Self> {
        let mut map = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| CheckError::Malformed {
                path: label.to_string(),
                problem: format!("line {}: not KEY=VALUE: {line}", n + 1),
            })?;
            let ok_key = !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            if !ok_key || v.is_empty() || v.contains(char::is_whitespace) {
                return Err(CheckError::Malformed {
                    path: label.to_string(),
                    problem: format!(
                        "line {}: expected KEY=VALUE without spaces or quotes: {line}",
                        n + 1
                    ),
                });
            }
            if map.insert(k.to_string(), v.to_string()).is_some() {
                return Err(CheckError::Malformed {
                    path: label.to_string(),
                    problem: format!("{k} is set twice"),
                });
            }
        }
        Ok(Self(map))
    }

    /// The value of `key`, or an error naming the missing key.
    pub fn get(&self, key: &str) -> Result<&str> {
        self.0
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| CheckError::Malformed {
                path: "deploy/versions.env".into(),
                problem: format!("{key} is not set"),
            })
    }
}
