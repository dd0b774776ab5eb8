//! `make install` against the real kube-apiserver of `devstack::kube`: the
//! same script users run, with what a cluster with Cilium already has (its
//! CRDs) and the CRD files `make tools` fetched.

use std::path::Path;
use std::process::{Command, Output};

use deploy_checks::repo::root;
use devstack::kube::ControlPlane;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};

/// The namespaces the platform installs workloads into.
pub const NAMESPACES: [&str; 6] = [
    "spire",
    "postgres",
    "openbao",
    "zt-injector",
    "99-apps",
    "zt-examples",
];

/// What one run of install.sh printed.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// stdout and stderr, interleaved as far as two pipes allow.
    pub output: String,
}

impl Run {
    fn from(out: Output) -> Self {
        let mut output = String::from_utf8_lossy(&out.stdout).into_owned();
        output.push_str(&String::from_utf8_lossy(&out.stderr));
        Self {
            code: out.status.code().unwrap_or(-1),
            output,
        }
    }

    /// Lines where kubectl passed on a warning from the server (Pod Security,
    /// deprecated APIs, …): each one is a defect.
    pub fn warnings(&self) -> Vec<&str> {
        self.output
            .lines()
            .filter(|l| l.trim_start().starts_with("Warning:"))
            .collect()
    }

    /// Panics unless the run succeeded without a single warning.
    pub fn assert_clean(&self, what: &str) {
        assert_eq!(self.code, 0, "{what} failed:\n{}", self.output);
        assert!(
            self.warnings().is_empty(),
            "{what}: the API server warned (every warning is a defect):\n{}",
            self.warnings().join("\n")
        );
    }
}

/// A PATH with the pinned kubectl (and helm) first.
fn path_with_tools(cp: &ControlPlane) -> String {
    format!(
        "{}:{}",
        cp.tools().bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Runs `<tree>/deploy/scripts/install.sh` with `WAIT=0` against `cp`.
/// `tree` is the repository root or a copy of it.
pub fn install(cp: &ControlPlane, tree: &Path) -> Run {
    install_with(cp, tree, &[])
}

/// [`install`] with more environment variables (e.g. `ZT_INJECTOR_VALUES`).
pub fn install_with(cp: &ControlPlane, tree: &Path, env: &[(&str, &str)]) -> Run {
    let out = Command::new("bash")
        .arg(tree.join("deploy/scripts/install.sh"))
        .envs(env.iter().copied())
        .env("KUBECONFIG", cp.kubeconfig())
        .env("PATH", path_with_tools(cp))
        .env("WAIT", "0")
        // What make tools fetched, instead of the GitHub release (docs/deploy.md).
        .env(
            "ZT_SPIRE_CRDS",
            super::schemas().spire_crds.display().to_string(),
        )
        .env("NO_COLOR", "1")
        .env_remove("ZT_CONTEXT")
        .output()
        .expect("run install.sh");
    Run::from(out)
}

/// `kubectl <args>` with the pinned client and the admin kubeconfig.
pub fn kubectl(cp: &ControlPlane, args: &[&str]) -> Run {
    Run::from(cp.kubectl().args(args).output().expect("run kubectl"))
}

/// Gives the API server Cilium's CRDs from the pinned Cilium module, as a
/// cluster with Cilium has them (its operator registers them).
pub fn add_cilium_crds(cp: &ControlPlane) {
    let dir = &super::schemas().cilium_crds;
    let run = kubectl(
        cp,
        &["apply", "--server-side", "-f", &dir.display().to_string()],
    );
    // Cilium's own CRDs draw a warning (`unrecognized format "idn-hostname"`):
    // theirs, not ours, so only success counts here.
    assert_eq!(run.code, 0, "applying Cilium's CRDs:\n{}", run.output);
    cp.wait_crd_established("ciliumnetworkpolicies.cilium.io");
}

/// What Cilium's Helm chart writes with `authentication.mutual.spire.enabled`
/// (deploy/cilium/values.yaml): the setting install.sh checks.
pub fn enable_cilium_mutual_auth(cp: &ControlPlane) {
    kubectl(
        cp,
        &[
            "-n",
            "kube-system",
            "create",
            "configmap",
            "cilium-config",
            "--from-literal=mesh-auth-mutual-enabled=true",
        ],
    )
    .assert_clean("creating kube-system/cilium-config");
}

/// Every pod template of a workload in `namespaces`, as it is stored in the
/// server, with the workload it came from.
pub async fn pod_templates(
    client: &kube::Client,
    namespace: &str,
) -> Vec<(String, PodTemplateSpec)> {
    let lp = ListParams::default();
    let mut out = Vec::new();
    for d in Api::<Deployment>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .unwrap()
    {
        out.push((
            format!("Deployment {namespace}/{}", d.metadata.name.unwrap()),
            d.spec.unwrap().template,
        ));
    }
    for s in Api::<StatefulSet>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .unwrap()
    {
        let name = s.metadata.name.unwrap();
        let spec = s.spec.unwrap();
        let mut template = spec.template;
        // The StatefulSet controller gives each pod a volume per claim template.
        let pod_spec = template.spec.as_mut().unwrap();
        for claim in spec.volume_claim_templates.unwrap_or_default() {
            let claim_name = claim.metadata.name.unwrap();
            pod_spec.volumes.get_or_insert_with(Vec::new).push(Volume {
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: format!("{claim_name}-{name}-0"),
                    read_only: None,
                }),
                name: claim_name,
                ..Default::default()
            });
        }
        out.push((format!("StatefulSet {namespace}/{name}"), template));
    }
    for d in Api::<DaemonSet>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .unwrap()
    {
        out.push((
            format!("DaemonSet {namespace}/{}", d.metadata.name.unwrap()),
            d.spec.unwrap().template,
        ));
    }
    for c in Api::<CronJob>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .unwrap()
    {
        out.push((
            format!("CronJob {namespace}/{}", c.metadata.name.unwrap()),
            c.spec.job_template.spec.unwrap().template,
        ));
    }
    for j in Api::<Job>::namespaced(client.clone(), namespace)
        .list(&lp)
        .await
        .unwrap()
    {
        out.push((
            format!("Job {namespace}/{}", j.metadata.name.unwrap()),
            j.spec.unwrap().template,
        ));
    }
    out
}

/// Server-side dry run of a Pod made from `template` in `namespace`: what
/// the workload's controller would create, so Pod Security admission (which
/// only warns on workloads) and every other admission plugin judge it.
/// `Err` carries the server's message.
pub async fn dry_run_pod(
    client: &kube::Client,
    namespace: &str,
    template: &PodTemplateSpec,
) -> Result<Pod, String> {
    let meta = template.metadata.clone().unwrap_or_default();
    let pod = Pod {
        metadata: ObjectMeta {
            generate_name: Some("zt-dry-run-".into()),
            namespace: Some(namespace.into()),
            labels: meta.labels,
            annotations: meta.annotations,
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    };
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    Api::<Pod>::namespaced(client.clone(), namespace)
        .create(&pp, &pod)
        .await
        .map_err(|e| e.to_string())
}

/// A copy of what install.sh reads (deploy/, policies/), to break on purpose.
pub fn copy_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in [
        "deploy/scripts",
        "deploy/k8s",
        "deploy/charts",
        "deploy/examples",
        "policies",
    ] {
        copy_dir(&root().join(sub), &dir.path().join(sub));
    }
    std::fs::copy(
        root().join("deploy/versions.env"),
        dir.path().join("deploy/versions.env"),
    )
    .unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Replaces `old` (which must occur exactly once) by `new` in `tree/file`.
pub fn edit(tree: &Path, file: &str, old: &str, new: &str) {
    let path = tree.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text.matches(old).count(),
        1,
        "{old:?} must occur once in {file}"
    );
    std::fs::write(&path, text.replace(old, new)).unwrap();
}
