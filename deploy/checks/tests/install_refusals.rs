//! The install test can fail: manifests broken on purpose, in a copy of the
//! repository, are refused by the real kube-apiserver, and the server's own
//! message reaches the test output. One test: the cases share this binary's
//! API server and run in order.

mod common;

use common::install::{self, copy_tree, edit, kubectl};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_manifests_are_refused_by_the_real_api_server() {
    let cp = devstack::kube::shared().unwrap_or_else(|e| panic!("{e:#}"));
    install::add_cilium_crds(cp);

    // 1. A misspelt field: strict field validation refuses the object.
    let tree = copy_tree();
    edit(
        tree.path(),
        "deploy/k8s/postgres/postgres.yaml",
        "  serviceName: postgres",
        "  serviceNam: postgres",
    );
    let run = install::install(cp, tree.path());
    println!("--- wrong field:\n{}", run.output);
    assert_ne!(
        run.code, 0,
        "a misspelt field was accepted:\n{}",
        run.output
    );
    assert!(
        run.output.contains("unknown field \"spec.serviceNam\""),
        "not the server's message:\n{}",
        run.output
    );

    // 2. A ClusterSPIFFEID that fails the CRD's validation (no spiffeIDTemplate).
    let tree = copy_tree();
    edit(
        tree.path(),
        "policies/spire/k8s/clusterspiffeids.yaml",
        "  spiffeIDTemplate: \"spiffe://demo.local/ns/99-apps/sa/backend\"\n",
        "",
    );
    let run = install::install(cp, tree.path());
    println!("--- invalid ClusterSPIFFEID:\n{}", run.output);
    assert_ne!(
        run.code, 0,
        "an invalid ClusterSPIFFEID was accepted:\n{}",
        run.output
    );
    assert!(
        run.output.contains("spec.spiffeIDTemplate: Required value"),
        "not the server's message:\n{}",
        run.output
    );

    // 3. A Pod that violates "restricted": the Deployment is only warned
    // about (install's output then fails assert_clean), and the Pod its
    // controller would create is refused.
    let tree = copy_tree();
    edit(
        tree.path(),
        "deploy/k8s/apps/frontend.yaml",
        "            runAsUser: 10001\n            runAsGroup: 10001\n            allowPrivilegeEscalation: false\n            readOnlyRootFilesystem: true\n            capabilities:\n              drop: [\"ALL\"]\n---",
        "            runAsUser: 10001\n            runAsGroup: 10001\n            allowPrivilegeEscalation: true\n            readOnlyRootFilesystem: true\n            capabilities:\n              drop: [\"ALL\"]\n---",
    );
    let run = install::install(cp, tree.path());
    println!("--- restricted violated:\n{}", run.output);
    let warnings = run.warnings();
    assert!(
        warnings.iter().any(
            |w| w.contains("would violate PodSecurity \"restricted:latest\"")
                && w.contains("allowPrivilegeEscalation")
        ),
        "no Pod Security warning for the privileged Deployment:\n{}",
        run.output
    );
    // No injector runs here, and its webhook fails closed for 99-apps: it
    // would refuse the Pod before Pod Security (a validating plugin) saw it.
    // Without the webhook, Pod Security judges the Pod as written.
    kubectl(
        cp,
        &[
            "delete",
            "mutatingwebhookconfiguration",
            "zt-injector",
            "--ignore-not-found",
        ],
    )
    .assert_clean("deleting the webhook configuration");
    let client = cp.client().await.unwrap();
    let templates = install::pod_templates(&client, "99-apps").await;
    let (_, frontend) = templates
        .iter()
        .find(|(w, _)| w == "Deployment 99-apps/frontend")
        .expect("the frontend Deployment was applied");
    let refused = install::dry_run_pod(&client, "99-apps", frontend)
        .await
        .expect_err("a Pod escalating privileges was admitted into 99-apps");
    println!("server refused the Pod: {refused}");
    assert!(
        refused.contains("violates PodSecurity \"restricted:latest\""),
        "{refused}"
    );
}
