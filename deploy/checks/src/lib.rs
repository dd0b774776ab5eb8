//! Checks of everything `make install` and `make deploy` apply.
//!
//! The manifests go to a real kube-apiserver (`tests/install.rs`, through
//! `devstack::kube` and the same `deploy/scripts/install.sh`); the bootstrap
//! script runs against the real servers (`tests/bootstrap_job.rs`). This
//! crate holds what the server cannot check:
//!
//! ```text
//!  policies/cilium/ + helm template cilium ─▶ cilium::Evaluator ─▶ the policy table
//!  policies/spire/workloads.toml ──▶ spire::render ──▶ policies/spire/k8s/clusterspiffeids.yaml
//!  deploy/docker/*.Dockerfile ──▶ dockerfile::parse ──▶ COPY sources, binary names
//!  deploy/cilium/values.yaml ──▶ schema::make_strict(values.schema.json)
//!  .tools/schemas/ (deploy/scripts/schemas.sh) ──▶ Cilium CRDs + chart, spire CRDs, helm
//! ```
//!
//! SPIRE and OpenBao configs go through the real `spire-server`/`spire-agent
//! validate`, `bao policy fmt` and `bao operator diagnose`.
#![forbid(unsafe_code)]

pub mod cilium;
pub mod dockerfile;
pub mod manifest;
pub mod repo;
pub mod schema;
pub mod spire;

/// Why a check could not even run (as opposed to a finding it reports).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not what it should be (bad YAML/TOML/JSON, missing field, ...).
    #[error("{path}: {problem}")]
    Malformed {
        /// The file (or a label for in-memory text).
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// The schemas are not installed and could not be fetched.
    #[error("schemas missing: {0}\n  Fetch them with `bash deploy/scripts/schemas.sh` (needs Go and the Go module proxy).")]
    SchemasMissing(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = CheckError> = std::result::Result<T, E>;

pub(crate) fn read(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| CheckError::Io {
        path: path.to_path_buf(),
        source,
    })
}
