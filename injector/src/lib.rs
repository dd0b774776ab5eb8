//! # zt-injector
//!
//! A mutating admission webhook that attaches zt-sidecar to a pod when the
//! pod asks for it with annotations under one prefix, `zt.demo.local/`.
//!
//! ```text
//!   kubectl apply ─▶ kube-apiserver ──AdmissionReview (HTTPS)──▶ zt-injector /mutate
//!                         ▲                                          │ annotations::parse
//!                         │                                          │ render (zt-sidecar's own loader judges it)
//!                         └──── JSON patch, or a refusal ◀────────────┘ patch::mutation
//!
//!   native sidecar (initContainers[0], restartPolicy Always, startupProbe = /readyz)
//!   + SPIFFE CSI volume + memory-backed zt-run volume (/run/zt, read-only in the apps)
//!   + the sidecar's TOML in ZT_CONFIG + supplementalGroups so apps can read the files
//! ```
//!
//! The injector never creates identities: a pod's SPIFFE ID comes from its
//! entry in `policies/spire/workloads.toml`. It keeps its own serving
//! certificate trusted by the API server without manual steps ([`tls`]):
//! one CA in a Secret, a Lease so only one replica rotates it, every replica
//! keeping the webhook configuration's `caBundle` current.
//!
//! [`admission::Injector`] is what the server runs and what the tests call.
#![forbid(unsafe_code)]

pub mod admission;
pub mod annotations;
pub mod patch;
pub mod quantity;
pub mod render;
pub mod run;
pub mod server;
pub mod settings;
pub mod tls;

#[cfg(test)]
pub(crate) mod testing {
    //! Shared by the unit tests: the chart's default settings.
    use std::collections::BTreeMap;

    use crate::settings::Settings;

    /// The settings the chart renders by default (values.yaml).
    pub const CHART_DEFAULTS: &str = r#"
trust_domain = "demo.local"
[kubernetes]
namespace = "zt-injector"
[sidecar]
image = "zt-platform/zt-sidecar:dev"
[sidecar.openbao]
address = "http://openbao.openbao.svc.cluster.local:8200"
auth_mount = "jwt"
audience = "openbao"
[sidecar.database]
host = "postgres.postgres.svc.cluster.local"
port = 5432
database = "appdb"
"#;

    pub fn env() -> BTreeMap<String, String> {
        BTreeMap::from([("POD_NAME".to_string(), "zt-injector-0".to_string())])
    }

    pub fn settings() -> Settings {
        Settings::parse(CHART_DEFAULTS, &env()).expect("the chart's defaults are valid")
    }

    pub fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (format!("{}{k}", crate::annotations::PREFIX), v.to_string()))
            .collect()
    }
}
