//! The platform on a real one-node Kubernetes cluster (devstack::kube::lab:
//! etcd, kube-apiserver, controller-manager, scheduler, a kubelet on
//! containerd with a bridge CNI, kube-proxy, CoreDNS, local-path-provisioner),
//! installed by the same `make install` users run, with the lab profile and
//! its waits. The tests share that one cluster and run in order (`serial`).
//!
//! Needs root (network namespace, containerd, kubelet) and `make tools-kube`.

mod common;

use std::time::{Duration, Instant};

use deploy_checks::repo::root;
use deploy_checks::spire::Workloads;
use devstack::kube::lab::{self, Lab};
use devstack::openbao::{Bao, InitKeys};
use serde_json::Value;

/// The lab, with the platform installed once for the whole binary.
fn installed() -> &'static Lab {
    static INSTALLED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let lab = lab::shared().unwrap_or_else(|e| panic!("{e:#}"));
    let result = INSTALLED.get_or_init(|| {
        let started = Instant::now();
        let out = lab.install_platform().map_err(|e| format!("{e:#}"))?;
        println!(
            "make install (lab profile) took {:.0} s:\n{out}",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}\n--- lab logs ---\n{}", lab.log_tails(20));
    }
    lab
}

fn kubectl(lab: &Lab, args: &[&str]) -> String {
    lab.kubectl(args)
        .unwrap_or_else(|e| panic!("kubectl {args:?}: {e:#}"))
}

fn running_pod(lab: &Lab, ns: &str, app: &str) -> String {
    kubectl(
        lab,
        &[
            "-n",
            ns,
            "get",
            "pod",
            "-l",
            &format!("app.kubernetes.io/name={app}"),
            "--field-selector=status.phase=Running",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ],
    )
}

/// The backend sidecar's admin endpoint, reached as a local client inside the pod.
fn sidecar_status(lab: &Lab) -> Value {
    let pod = running_pod(lab, "99-apps", "backend");
    let pf = lab.port_forward("99-apps", &pod, 15000).unwrap();
    let mut resp = ureq::get(&format!("http://127.0.0.1:{}/status", pf.local_port))
        .header("Host", "127.0.0.1:15000")
        .call()
        .unwrap();
    resp.body_mut().read_json().unwrap()
}

/// OpenBao as its root (the bootstrap Job's Secret: demo only), through a port-forward.
fn root_bao(lab: &Lab) -> (Bao, lab::PortForward) {
    let keys = kubectl(
        lab,
        &[
            "-n",
            "openbao",
            "get",
            "secret",
            "openbao-unseal-keys",
            "-o",
            "jsonpath={.data.keys\\.json}",
        ],
    );
    use base64::Engine;
    let keys: InitKeys = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD
            .decode(keys.trim())
            .unwrap(),
    )
    .unwrap();
    let pf = lab.port_forward("openbao", "openbao-0", 8200).unwrap();
    (
        Bao::new(
            &format!("http://127.0.0.1:{}", pf.local_port),
            Some(keys.root_token),
        ),
        pf,
    )
}

/// Live lease ids of a database role (LIST sys/leases/lookup/...).
fn leases(bao: &Bao, role: &str) -> Vec<String> {
    bao.read(&format!(
        "sys/leases/lookup/database/creds/{role}/?list=true"
    ))
    .unwrap_or_else(|e| panic!("listing leases of {role}: {e:#}"))
    .map(|v| {
        v["data"]["keys"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

#[test]
fn platform_installs_into_the_lab_and_every_pod_becomes_ready() {
    let _serial = lab::serial();
    let lab = installed();
    for ns in ["spire", "postgres", "openbao", "zt-injector", "99-apps"] {
        let pods = kubectl(
            lab,
            &["-n", ns, "get", "pods", "-o",
              "jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}"],
        );
        assert!(!pods.trim().is_empty(), "no pods in {ns}");
        for line in pods.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ok = matches!(
                fields.as_slice(),
                [_, "Running", "True"] | [_, "Succeeded", ..]
            );
            assert!(
                ok,
                "{ns}: {line}\n{}",
                kubectl(lab, &["-n", ns, "describe", "pods"])
            );
        }
        println!("{ns}:\n{pods}");
    }
    let job = kubectl(
        lab,
        &[
            "-n",
            "openbao",
            "get",
            "job",
            "openbao-bootstrap",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Complete\")].status}",
        ],
    );
    assert_eq!(job.trim(), "True", "the bootstrap Job did not complete");
    // The bootstrap pod ran as uid 10002 with fsGroup, and read its Secret files.
    let log = kubectl(lab, &["-n", "openbao", "logs", "job/openbao-bootstrap"]);
    assert!(
        log.contains("done: OpenBao is unsealed and configured"),
        "{log}"
    );
}

#[test]
fn spire_agent_attests_with_k8s_psat_and_entries_match_the_clusterspiffeids() {
    let _serial = lab::serial();
    let lab = installed();
    let agent = kubectl(lab, &["-n", "spire", "logs", "daemonset/spire-agent"]);
    assert!(
        agent.contains("Node attestation was successful") && agent.contains("k8s_psat"),
        "the agent did not attest with k8s_psat:\n{agent}"
    );
    let json = kubectl(
        lab,
        &[
            "-n",
            "spire",
            "exec",
            "spire-server-0",
            "-c",
            "spire-server",
            "--",
            "/opt/spire/bin/spire-server",
            "entry",
            "show",
            "-output",
            "json",
            "-socketPath",
            "/tmp/spire-server/private/api.sock",
        ],
    );
    let entries: Value = serde_json::from_str(&json).unwrap();
    let workloads = Workloads::load().unwrap();
    for w in &workloads.workloads {
        let id = w.spiffe_id(&workloads.trust_domain);
        let entry = entries["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| {
                format!(
                    "spiffe://{}{}",
                    e["spiffe_id"]["trust_domain"].as_str().unwrap(),
                    e["spiffe_id"]["path"].as_str().unwrap()
                ) == id
            })
            .unwrap_or_else(|| panic!("no entry for {id}: {json}"));
        let mut got: Vec<String> = entry["selectors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                format!(
                    "{}:{}",
                    s["type"].as_str().unwrap(),
                    s["value"].as_str().unwrap()
                )
            })
            .collect();
        got.sort();
        let mut want = Workloads::selectors(w);
        want.sort();
        assert_eq!(
            got, want,
            "{id}: the lab's entry differs from what its ClusterSPIFFEID selects"
        );
    }
    // The sidecars hold SVIDs issued through those k8s selectors.
    let status = sidecar_status(lab);
    assert_eq!(
        status["spiffe_id"], "spiffe://demo.local/ns/99-apps/sa/backend",
        "{status}"
    );
}

#[test]
fn the_seed_demo_steps_pass_through_the_cluster() {
    let _serial = lab::serial();
    let lab = installed();
    let out = std::process::Command::new("bash")
        .arg(root().join("deploy/scripts/demo-cluster.sh"))
        .env("KUBECONFIG", lab.control_plane().kubeconfig())
        .env(
            "PATH",
            format!(
                "{}:{}",
                lab.tools().kube.bin_dir.display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .env("ZT_LAB", "1")
        .env("ZT_CONTEXT", "devstack")
        .env("FRONTEND_URL", format!("http://{}:30080", lab::NODE_IP))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "make demo (lab) failed:\n{text}");
    for part in ["Part 1", "Part 2", "Part 3", "Part 4", "Part 4b"] {
        assert!(text.contains(part), "{part} did not run:\n{text}");
    }
    // The apps' sidecars were injected, and the example job (not ours) got
    // its own user through annotations alone, dropped when it ended.
    for want in [
        "ok: backend: zt-sidecar injected from its annotations",
        "ok: frontend: zt-sidecar injected from its annotations",
        "ok: the job's psql connected as its own short-lived user v-report-reader",
        "the sidecar revoked its lease when the job ended",
    ] {
        assert!(text.contains(want), "missing {want:?}:\n{text}");
    }
    assert!(
        !text.contains("UNEXPECTED") && !text.contains("skipped: set GITHUB_TOKEN"),
        "{text}"
    );
}

#[test]
fn a_deleted_backend_pod_comes_back_with_new_credentials_and_leaves_no_lease() {
    let _serial = lab::serial();
    let lab = installed();
    let old_pod = running_pod(lab, "99-apps", "backend");
    let before = sidecar_status(lab);
    let user = |status: &Value| {
        status["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == "db")
            .and_then(|l| l["username"].as_str())
            .unwrap_or_else(|| panic!("no db lease in {status}"))
            .to_string()
    };
    let old_user = user(&before);
    kubectl(
        lab,
        &["-n", "99-apps", "delete", "pod", &old_pod, "--wait=true"],
    );
    kubectl(
        lab,
        &[
            "-n",
            "99-apps",
            "rollout",
            "status",
            "deployment/backend",
            "--timeout=180s",
        ],
    );
    let new_pod = running_pod(lab, "99-apps", "backend");
    assert_ne!(new_pod, old_pod);
    let after = sidecar_status(lab);
    let new_user = user(&after);
    assert_ne!(
        new_user, old_user,
        "the new pod got the old pod's credentials"
    );

    // The old pod's sidecar revoked its leases on the way out: one live
    // runtime lease, the new pod's, and no migrator lease (the new pod's
    // backend released its own after the migrations).
    let (bao, _pf) = root_bao(lab);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let live: Vec<(String, usize)> = ["backend-role", "backend-migrator"]
            .iter()
            .map(|r| (r.to_string(), leases(&bao, r).len()))
            .collect();
        if live
            == [
                ("backend-role".to_string(), 1),
                ("backend-migrator".to_string(), 0),
            ]
        {
            println!("live leases after the pod was replaced: {live:?}");
            break;
        }
        assert!(Instant::now() < deadline, "leases left behind: {live:?}");
        std::thread::sleep(Duration::from_secs(1));
    }
    let users = kubectl(
        lab,
        &[
            "-n",
            "postgres",
            "exec",
            "postgres-0",
            "--",
            "psql",
            "-X",
            "-At",
            "-U",
            "postgres",
            "-d",
            "appdb",
            "-c",
            "SELECT usename FROM pg_user WHERE usename LIKE 'v-backend-role%'",
        ],
    );
    assert!(
        !users.contains(&old_user),
        "the old pod's user {old_user} is still in PostgreSQL: {users}"
    );
    assert!(users.contains(&new_user), "{users}");
}
