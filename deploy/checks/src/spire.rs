//! ClusterSPIFFEIDs rendered from `policies/spire/workloads.toml`, the single
//! list of workloads that devstack registers locally too.
//!
//! Each workload gets one ClusterSPIFFEID with its literal SPIFFE ID
//! `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`. It targets
//! pods labelled `zt.demo.local/workload: <name>` in that namespace, and the
//! registration entries also carry the selectors `k8s:ns:<namespace>` and
//! `k8s:sa:<service_account>`: a pod that wears the label but runs under
//! another service account gets no SVID from it.

use std::fmt::Write as _;

use serde::Deserialize;

use crate::{CheckError, Result};

/// Where the rendering is committed (relative to the repository root).
pub const RENDERED_PATH: &str = "policies/spire/k8s/clusterspiffeids.yaml";
/// The lab's registration entries, rendered from the same file (the lab has
/// no spire-controller-manager: install.sh creates these with the SPIRE CLI).
pub const LAB_ENTRIES_PATH: &str = "policies/spire/lab/entries.txt";
/// Where the list of workloads is (relative to the repository root).
pub const WORKLOADS_PATH: &str = "policies/spire/workloads.toml";
/// Pod label the ClusterSPIFFEIDs select on.
pub const WORKLOAD_LABEL: &str = "zt.demo.local/workload";

/// `policies/spire/workloads.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct Workloads {
    /// The trust domain, e.g. `demo.local`.
    pub trust_domain: String,
    /// Every workload.
    #[serde(rename = "workload")]
    pub workloads: Vec<Workload>,
}

/// One workload of `workloads.toml`.
#[derive(Debug, Clone, Deserialize)]
pub struct Workload {
    /// Short name (label value, ClusterSPIFFEID name suffix).
    pub name: String,
    /// Kubernetes namespace.
    pub namespace: String,
    /// Kubernetes service account.
    pub service_account: String,
}

impl Workload {
    /// The SPIFFE ID this workload gets.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.service_account
        )
    }
}

fn bad(problem: String) -> CheckError {
    CheckError::Malformed {
        path: WORKLOADS_PATH.into(),
        problem,
    }
}

/// A DNS-1123 label: what Kubernetes accepts as a namespace, service account
/// and label value here.
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Workloads {
    /// Parses and checks `workloads.toml` text.
    pub fn parse(text: &str) -> Result<Self> {
        let w: Workloads = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let td = &w.trust_domain;
        let td_ok = !td.is_empty()
            && td.len() <= 255
            && td
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if !td_ok {
            return Err(bad(format!(
                "trust_domain {td:?} is not a SPIFFE trust domain name"
            )));
        }
        if w.workloads.is_empty() {
            return Err(bad("no [[workload]]".into()));
        }
        let mut names = std::collections::HashSet::new();
        for wl in &w.workloads {
            for (key, value) in [
                ("name", &wl.name),
                ("namespace", &wl.namespace),
                ("service_account", &wl.service_account),
            ] {
                if !is_dns_label(value) {
                    return Err(bad(format!(
                        "workload {:?}: {key} {value:?} is not a DNS-1123 label",
                        wl.name
                    )));
                }
            }
            if !names.insert(&wl.name) {
                return Err(bad(format!("workload {:?} is listed twice", wl.name)));
            }
        }
        Ok(w)
    }

    /// Reads the repository's `workloads.toml`.
    pub fn load() -> Result<Self> {
        Self::parse(&crate::read(&crate::repo::root().join(WORKLOADS_PATH))?)
    }

    /// The workload with this name.
    pub fn get(&self, name: &str) -> Option<&Workload> {
        self.workloads.iter().find(|w| w.name == name)
    }

    /// The selectors a ClusterSPIFFEID of `w` gives its pods: the pod label
    /// it selects on and its workload selector templates.
    pub fn selectors(w: &Workload) -> Vec<String> {
        vec![
            format!("k8s:ns:{}", w.namespace),
            format!("k8s:sa:{}", w.service_account),
            format!("k8s:pod-label:{WORKLOAD_LABEL}:{}", w.name),
        ]
    }

    /// The lab's entries: one line per workload, `<SPIFFE ID> <selector>...`,
    /// what the ClusterSPIFFEIDs render to (see [`Workloads::selectors`]).
    pub fn render_lab_entries(&self) -> String {
        let mut out = String::from(
            "# GENERATED from policies/spire/workloads.toml: do not edit.\n\
             # Regenerate: cargo run -p deploy-checks --bin render-clusterspiffeids\n\
             # The lab cluster's registration entries (deploy/scripts/install.sh, ZT_LAB=1),\n\
             # one per workload: <SPIFFE ID> <selector>... (all must match).\n",
        );
        for w in &self.workloads {
            let _ = writeln!(
                out,
                "{} {}",
                w.spiffe_id(&self.trust_domain),
                Self::selectors(w).join(" ")
            );
        }
        out
    }

    /// The ClusterSPIFFEID manifests (multi-document YAML), deterministic.
    pub fn render(&self) -> String {
        let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
        let mut out = String::from(
            "# GENERATED from policies/spire/workloads.toml: do not edit.\n\
             # Regenerate: cargo run -p deploy-checks --bin render-clusterspiffeids\n\
             # (deploy/checks fails while this file is stale).\n",
        );
        for w in &self.workloads {
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "---\n\
                 apiVersion: spire.spiffe.io/v1alpha1\n\
                 kind: ClusterSPIFFEID\n\
                 metadata:\n  name: {name}\n  labels:\n    app.kubernetes.io/part-of: zt-platform\n\
                 spec:\n\
                 \x20 spiffeIDTemplate: {id}\n\
                 \x20 namespaceSelector:\n    matchLabels:\n      kubernetes.io/metadata.name: {ns}\n\
                 \x20 podSelector:\n    matchLabels:\n      {label}: {wl}\n\
                 \x20 workloadSelectorTemplates:\n    - {sel_ns}\n    - {sel_sa}\n",
                name = q(&format!("zt-{}", w.name)),
                id = q(&w.spiffe_id(&self.trust_domain)),
                ns = q(&w.namespace),
                label = WORKLOAD_LABEL,
                wl = q(&w.name),
                sel_ns = q(&format!("k8s:ns:{}", w.namespace)),
                sel_sa = q(&format!("k8s:sa:{}", w.service_account)),
            );
        }
        out
    }
}
