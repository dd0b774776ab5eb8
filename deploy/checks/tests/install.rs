//! `make install WAIT=0` against a real kube-apiserver + etcd (built from
//! their Go modules by `make tools-kube`, started by `devstack::kube`): every
//! manifest of the platform must be accepted by the real server — schemas
//! with strict field validation, CRD validation, admission, immutable fields
//! on a second run — without a single warning, in an order where nothing is
//! applied before its namespace or CRD (this server starts empty). A Pod made
//! from every pod template is dry-run in its namespace, so Pod Security
//! "restricted" judges what the controllers would create — and, with
//! zt-injector (installed from its chart by install.sh) running as a process
//! the API server calls, every annotated template's Pod comes back from the
//! dry run with its sidecar injected.
//!
//! One test: its phases share one fresh API server and must run in order.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::install::{self, kubectl, NAMESPACES};
use deploy_checks::repo::root;
use devstack::free_port;
use devstack::process::Supervised;

/// The chart's injector as a process here (no kubelet in this test): its
/// settings from the ConfigMap install.sh's helm release made, listening on
/// loopback where the webhook's `url` points, as the chart's ServiceAccount.
fn start_injector(
    cp: &devstack::kube::ControlPlane,
    dir: &std::path::Path,
    https: u16,
) -> Supervised {
    let settings = kubectl(
        cp,
        &[
            "-n",
            "zt-injector",
            "get",
            "configmap",
            "zt-injector",
            "-o",
            "jsonpath={.data.injector\\.toml}",
        ],
    );
    assert_eq!(settings.code, 0, "{}", settings.output);
    let health = free_port().unwrap();
    let text: String = settings
        .output
        .lines()
        .map(|l| {
            if l.starts_with("listen = ") {
                format!("listen = \"127.0.0.1:{https}\"")
            } else if l.starts_with("health_listen = ") {
                format!("health_listen = \"127.0.0.1:{health}\"")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let config = dir.join("injector.toml");
    std::fs::write(&config, text).unwrap();
    let kubeconfig = dir.join("kubeconfig-zt-injector");
    cp.service_account_kubeconfig("zt-injector", "zt-injector", &kubeconfig)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let bin = devstack::sidecar::workspace_binary("zt-injector", "ZT_ZT_INJECTOR_BIN")
        .unwrap_or_else(|e| panic!("{e:#}"));
    let mut cmd = Command::new(bin);
    cmd.args(["run", "--config"])
        .arg(&config)
        .env("POD_NAME", "zt-injector-test")
        .env("POD_NAMESPACE", "zt-injector")
        .env("KUBECONFIG", &kubeconfig);
    let mut p = Supervised::spawn("zt-injector", cmd, &dir.join("zt-injector.log")).unwrap();
    let url = format!("http://127.0.0.1:{health}/readyz");
    p.wait_ready(Duration::from_secs(60), || {
        ureq::get(&url)
            .call()
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .unwrap_or_else(|e| {
        panic!(
            "zt-injector not ready: {e:#}\n{}",
            std::fs::read_to_string(dir.join("zt-injector.log")).unwrap_or_default()
        )
    });
    p
}

/// install.sh stops with `why` and has applied nothing (no namespace).
fn refused_before_applying(cp: &devstack::kube::ControlPlane, why: &str) {
    let run = install::install(cp, &root());
    assert_eq!(run.code, 1, "{}", run.output);
    assert!(run.output.contains(why), "{}", run.output);
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_is_accepted_by_the_real_api_server_and_runs_twice() {
    let cp = devstack::kube::shared().unwrap_or_else(|e| panic!("{e:#}"));

    // A cluster without Cilium is refused before anything is applied.
    refused_before_applying(cp, "this cluster has no Cilium");
    install::add_cilium_crds(cp);
    // Cilium without mutual authentication: refused, nothing applied.
    refused_before_applying(cp, "Cilium's mutual authentication is not enabled");
    install::enable_cilium_mutual_auth(cp);
    // The webhook calls the injector started below, on loopback.
    let dir = tempfile::tempdir().unwrap();
    let https = free_port().unwrap();
    let values = dir.path().join("injector-values.yaml");
    std::fs::write(
        &values,
        format!("webhook:\n  url: https://127.0.0.1:{https}/mutate\nextraSans: [\"127.0.0.1\"]\n"),
    )
    .unwrap();
    let values = values.display().to_string();
    for round in 1..=2 {
        // Round 2 is the demo profile (make deploy): only it seeds the demo users.
        let demo = if round == 2 { "1" } else { "0" };
        let run = install::install_with(
            cp,
            &root(),
            &[("ZT_INJECTOR_VALUES", &values), ("ZT_DEMO_USERS", demo)],
        );
        run.assert_clean(&format!("make install WAIT=0, run {round}"));
        println!("--- install run {round}:\n{}", run.output);
        assert!(
            run.output.contains("8/8 installed into context"),
            "{}",
            run.output
        );
        let seeded = kubectl(
            cp,
            &[
                "-n",
                "99-apps",
                "get",
                "deployment",
                "backend",
                "-o",
                r#"jsonpath={.spec.template.spec.containers[?(@.name=="backend")].env[?(@.name=="BACKEND_SEED_DEMO_USERS")].value}"#,
            ],
        );
        assert_eq!(
            seeded.output.trim(),
            if round == 2 { "true" } else { "false" },
            "round {round}: demo users seeded only in the demo profile"
        );
    }

    // Every object of every file install.sh applies is in the server.
    for file in [
        "deploy/k8s/00-namespaces.yaml",
        "policies/cilium/99-apps.yaml",
        "policies/cilium/openbao.yaml",
        "policies/cilium/postgres.yaml",
        "policies/cilium/spire.yaml",
        "policies/cilium/zt-injector.yaml",
        "policies/cilium/zt-examples.yaml",
        "deploy/k8s/spire",
        "policies/spire/k8s/clusterspiffeids.yaml",
        "deploy/k8s/postgres/postgres.yaml",
        "deploy/k8s/openbao/openbao.yaml",
        "deploy/k8s/openbao/bootstrap.yaml",
        "deploy/k8s/apps/backend.yaml",
        "deploy/k8s/apps/frontend.yaml",
        "deploy/examples/psql-report/psql-report.yaml",
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

    // The injector sets its caBundle itself; then pods in the opted-in
    // namespaces go through it.
    let mut injector = start_injector(cp, dir.path(), https);
    let started = Instant::now();
    loop {
        let bundle = kubectl(
            cp,
            &[
                "get",
                "mutatingwebhookconfiguration",
                "zt-injector",
                "-o",
                "jsonpath={.webhooks[0].clientConfig.caBundle}",
            ],
        );
        if !bundle.output.trim().is_empty() {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no caBundle after 60 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // A Pod from every pod template passes admission in its namespace.
    let client = cp.client().await.unwrap();
    let mut judged = Vec::new();
    let mut injected = Vec::new();
    for ns in NAMESPACES {
        for (workload, template) in install::pod_templates(&client, ns).await {
            let pod = install::dry_run_pod(&client, ns, &template)
                .await
                .unwrap_or_else(|e| panic!("a Pod from {workload} is refused: {e}"));
            let annotated = template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.as_ref())
                .is_some_and(|a| a.get("zt.demo.local/inject").is_some_and(|v| v == "true"));
            let first_init = pod
                .spec
                .as_ref()
                .and_then(|s| s.init_containers.as_ref())
                .and_then(|c| c.first())
                .map(|c| c.name.clone());
            if annotated {
                assert_eq!(
                    first_init.as_deref(),
                    Some("zt-sidecar"),
                    "{workload}: the webhook did not inject the sidecar"
                );
                assert_eq!(
                    pod.metadata.annotations.as_ref().unwrap()["zt.demo.local/status"],
                    "injected",
                    "{workload}"
                );
                injected.push(workload.clone());
            } else {
                assert_ne!(first_init.as_deref(), Some("zt-sidecar"), "{workload}");
            }
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
        "Deployment zt-injector/zt-injector",
        "CronJob zt-examples/psql-report",
    ] {
        assert!(
            judged.iter().any(|w| w == must),
            "{must} was not judged: {judged:?}"
        );
    }
    assert_eq!(
        injected,
        [
            "Deployment 99-apps/backend",
            "Deployment 99-apps/frontend",
            "CronJob zt-examples/psql-report"
        ],
        "the annotated templates, each injected"
    );
    injector.stop(Duration::from_secs(10));
}
