//! `make install WAIT=0` against a real kube-apiserver + etcd (built from
//! their Go modules by `make tools-kube`, started by `devstack::kube`): every
//! manifest of the platform must be accepted by the real server — schemas
//! with strict field validation, CRD validation, admission, immutable fields
//! on a second run — without a single warning, in an order where nothing is
//! applied before its namespace or CRD (this server starts empty). A Pod made
//! from every pod template is dry-run in its namespace, so Pod Security
//! "restricted" judges what the controllers would create.
//!
//! One test: its phases share one fresh API server and must run in order.

mod common;

use common::install::{self, kubectl, NAMESPACES};
use deploy_checks::repo::root;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_is_accepted_by_the_real_api_server_and_runs_twice() {
    let cp = devstack::kube::shared().unwrap_or_else(|e| panic!("{e:#}"));

    // A cluster without Cilium is refused before anything is applied.
    let run = install::install(cp, &root());
    assert_eq!(run.code, 1, "{}", run.output);
    assert!(
        run.output.contains("this cluster has no Cilium"),
        "{}",
        run.output
    );
    let ns = kubectl(
        cp,
        &[
            "get",
            "namespace",
            "99-apps",
            "--ignore-not-found",
            "-o",
            "name",
        ],
    );
    assert_eq!(
        ns.output.trim(),
        "",
        "install applied something before refusing"
    );

    install::add_cilium_crds(cp);
    for round in 1..=2 {
        let run = install::install(cp, &root());
        run.assert_clean(&format!("make install WAIT=0, run {round}"));
        println!("--- install run {round}:\n{}", run.output);
        assert!(
            run.output.contains("7/7 installed into context"),
            "{}",
            run.output
        );
    }

    // Every object of every file install.sh applies is in the server.
    for file in [
        "deploy/k8s/00-namespaces.yaml",
        "policies/cilium/99-apps.yaml",
        "policies/cilium/openbao.yaml",
        "policies/cilium/postgres.yaml",
        "policies/cilium/spire.yaml",
        "deploy/k8s/spire",
        "policies/spire/k8s/clusterspiffeids.yaml",
        "deploy/k8s/postgres/postgres.yaml",
        "deploy/k8s/openbao/openbao.yaml",
        "deploy/k8s/openbao/bootstrap.yaml",
        "deploy/k8s/apps/backend.yaml",
        "deploy/k8s/apps/frontend.yaml",
    ] {
        let path = root().join(file).display().to_string();
        let got = kubectl(cp, &["get", "-f", &path, "-o", "name"]);
        assert_eq!(
            got.code, 0,
            "{file}: not everything is in the server:\n{}",
            got.output
        );
    }
    // The generated secrets exist, with a value, and are not in git.
    for (ns, name) in [
        ("postgres", "postgres-superuser"),
        ("openbao", "openbao-pg-admin"),
        ("openbao", "postgres-superuser"),
    ] {
        let got = kubectl(
            cp,
            &[
                "-n",
                ns,
                "get",
                "secret",
                name,
                "-o",
                "jsonpath={.data.password}",
            ],
        );
        assert_eq!(got.code, 0, "{}", got.output);
        assert!(got.output.len() >= 40, "secret {ns}/{name} has no password");
    }
    let same = kubectl(
        cp,
        &[
            "-n",
            "openbao",
            "get",
            "secret",
            "postgres-superuser",
            "-o",
            "jsonpath={.data.password}",
        ],
    );
    let orig = kubectl(
        cp,
        &[
            "-n",
            "postgres",
            "get",
            "secret",
            "postgres-superuser",
            "-o",
            "jsonpath={.data.password}",
        ],
    );
    assert_eq!(
        same.output, orig.output,
        "the bootstrap Job's copy of the superuser password differs"
    );

    // A Pod from every pod template passes admission in its namespace.
    let client = cp.client().await.unwrap();
    let mut judged = Vec::new();
    for ns in NAMESPACES {
        for (workload, template) in install::pod_templates(&client, ns).await {
            install::dry_run_pod(&client, ns, &template)
                .await
                .unwrap_or_else(|e| panic!("a Pod from {workload} is refused: {e}"));
            judged.push(workload);
        }
    }
    println!("dry-run Pods admitted: {judged:#?}");
    for must in [
        "StatefulSet spire/spire-server",
        "DaemonSet spire/spire-agent",
        "DaemonSet spire/spiffe-csi-driver",
        "StatefulSet postgres/postgres",
        "StatefulSet openbao/openbao",
        "Job openbao/openbao-bootstrap",
        "Deployment 99-apps/backend",
        "Deployment 99-apps/frontend",
    ] {
        assert!(
            judged.iter().any(|w| w == must),
            "{must} was not judged: {judged:?}"
        );
    }
}
