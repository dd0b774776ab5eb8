//! Two zt-injector replicas, one serving CA in one Secret, CA and
//! certificate rotations every few seconds while pods are created through
//! the real kube-apiserver: every pod creation succeeds and both replicas
//! present, at every probe, a certificate the webhook's one caBundle trusts.
//!
//! The API server calls both replicas for every pod: the webhook
//! configuration has one webhook per replica (`webhook.url`), both kept
//! current by the injectors (they set the caBundle of every webhook in it).

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use zt_injector::tls::LeaderElector;

const NS: &str = "zt-injector";
const APPS: &str = "apps";

/// CA 12 s (rotation starts with 4 s left), certificate 3 s, polls every
/// 200 ms, 1 s per rotation phase: in 30 s, about three CA rotations and
/// a dozen certificate renewals.
const TIMING: [&str; 5] = [
    "tls.caValidity=12s",
    "tls.certValidity=3s",
    "tls.pollInterval=200ms",
    "tls.rotationDwell=1s",
    "tls.leaseDuration=1s",
];
const RUN: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
struct Observed {
    failures: Vec<String>,
    pods: usize,
    probes: BTreeMap<u16, usize>,
    /// (generation, phase) in the order seen.
    states: Vec<(u64, String)>,
}

fn tls_state(secret: &Secret) -> Option<(u64, String)> {
    let a = secret.metadata.annotations.as_ref()?;
    Some((
        a.get("zt.demo.local/tls-generation")?.parse().ok()?,
        a.get("zt.demo.local/tls-phase")?.clone(),
    ))
}

async fn holder(client: &kube::Client) -> String {
    Api::<Lease>::namespaced(client.clone(), NS)
        .get("zt-injector-tls")
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap_or_default()
}

/// Creates pods, probes both replicas and records the Secret's states until `stop`.
async fn exercise(
    client: kube::Client,
    ports: Vec<u16>,
    run: Duration,
    seen: Arc<Mutex<Observed>>,
    tag: &str,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let pods = {
        let (client, seen, stop, tag) =
            (client.clone(), seen.clone(), stop.clone(), tag.to_string());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let name = format!("{tag}-{i}");
                let m = pod_manifest(
                    &name,
                    APPS,
                    &[
                        ("inject", "true"),
                        ("openbao-role", "backend"),
                        ("kv-key", "app/key"),
                    ],
                );
                match create_pod(&client, &m).await {
                    Ok(p) => {
                        let n = p
                            .spec
                            .unwrap()
                            .init_containers
                            .unwrap_or_default()
                            .iter()
                            .filter(|c| c.name == "zt-sidecar")
                            .count();
                        let mut s = seen.lock().unwrap();
                        s.pods += 1;
                        if n != 1 {
                            s.failures.push(format!("pod {name}: {n} sidecars"));
                        }
                    }
                    Err(e) => seen
                        .lock()
                        .unwrap()
                        .failures
                        .push(format!("pod {name}: {}", api_message(&e))),
                }
            }
        })
    };
    let probes = {
        let (client, seen, stop) = (client.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                for &port in &ports {
                    let Some(before) = ca_bundle(&client, "zt-injector").await else {
                        let failure = "the caBundle is empty".to_string();
                        seen.lock().unwrap().failures.push(failure);
                        continue;
                    };
                    let result = handshake(port, &before).await;
                    *seen.lock().unwrap().probes.entry(port).or_default() += 1;
                    if let Err((cert, e)) = result {
                        // The bundle may have moved on between our read and the
                        // handshake: the certificate must be trusted by one of them.
                        let after = ca_bundle(&client, "zt-injector").await.unwrap_or_default();
                        let ok = cert.as_ref().is_some_and(|c| trusted_by(c, &after));
                        if !ok {
                            seen.lock()
                                .unwrap()
                                .failures
                                .push(format!("replica on {port}: {e}"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let watch = {
        let (client, seen, stop) = (client.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            let secrets: Api<Secret> = Api::namespaced(client, NS);
            while !stop.load(Ordering::SeqCst) {
                if let Some(st) = secrets
                    .get("zt-injector-tls")
                    .await
                    .ok()
                    .as_ref()
                    .and_then(tls_state)
                {
                    let mut s = seen.lock().unwrap();
                    if s.states.last() != Some(&st) {
                        s.states.push(st);
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::SeqCst);
    for t in [pods, probes, watch] {
        t.await.unwrap();
    }
}

/// (CA rotations completed, certificate renewals) in a sequence of states.
fn count(states: &[(u64, String)]) -> (usize, usize) {
    let mut rotations = 0;
    let mut renewals = 0;
    for w in states.windows(2) {
        let ((g0, p0), (g1, p1)) = (&w[0], &w[1]);
        if p0 == "ca-switched" && p1 == "stable" {
            rotations += 1;
        }
        if p0 == p1 && g1 > g0 {
            renewals += 1;
        }
    }
    (rotations, renewals)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_serve_trusted_certificates_through_ca_and_certificate_rotations() {
    let cp = control_plane();
    let client = cp.client().await.unwrap();
    let dir = tempfile::Builder::new()
        .prefix("zt-injector-rotation-")
        .tempdir()
        .unwrap();
    let ports: Vec<(u16, u16)> = (0..2)
        .map(|_| {
            (
                devstack::free_port().unwrap(),
                devstack::free_port().unwrap(),
            )
        })
        .collect();
    let (a, b) = (ports[0], ports[1]);

    namespace(&client, NS, &[]).await;
    namespace(&client, APPS, &[("zt.demo.local/injection", "enabled")]).await;
    let mut sets = vec![
        format!("webhook.url=https://127.0.0.1:{}/mutate", a.0),
        "extraSans={127.0.0.1}".into(),
        format!("ports.https={}", a.0),
        format!("ports.health={}", a.1),
        "log.format=text".into(),
    ];
    sets.extend(TIMING.iter().map(|s| s.to_string()));
    let rendered = helm_template("zt-injector", NS, &sets);
    assert_eq!(rendered.code, 0, "{}", rendered.stderr);
    kubectl_stdin(cp, &["apply", "--server-side"], &rendered.stdout).assert_clean("the chart");
    // A second webhook, calling the second replica, in the same configuration.
    let second = serde_json::json!([{"op": "add", "path": "/webhooks/-", "value": {
        "name": "inject-b.zt.demo.local",
        "admissionReviewVersions": ["v1"], "sideEffects": "None", "failurePolicy": "Fail",
        "reinvocationPolicy": "Never", "timeoutSeconds": 5,
        "clientConfig": {"url": format!("https://127.0.0.1:{}/mutate", b.0)},
        "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
        "namespaceSelector": {"matchLabels": {"zt.demo.local/injection": "enabled"}},
    }}]);
    kubectl(
        cp,
        &[
            "patch",
            "mutatingwebhookconfiguration",
            "zt-injector",
            "--type=json",
            "-p",
            &second.to_string(),
        ],
    )
    .assert_clean("adding the second webhook");
    let settings_a = documents(&rendered.stdout)
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .and_then(|d| d["data"]["injector.toml"].as_str().map(str::to_string))
        .unwrap();
    let settings_b = settings_a
        .replace(&format!("0.0.0.0:{}", a.0), &format!("0.0.0.0:{}", b.0))
        .replace(&format!("0.0.0.0:{}", a.1), &format!("0.0.0.0:{}", b.1));
    let kubeconfig = service_account_kubeconfig(cp, NS, "zt-injector", dir.path());
    let mut ra = InjectorProcess::start(
        "zt-injector-a",
        &settings_a,
        NS,
        &kubeconfig,
        dir.path(),
        a.0,
        a.1,
    );
    let mut rb = InjectorProcess::start(
        "zt-injector-b",
        &settings_b,
        NS,
        &kubeconfig,
        dir.path(),
        b.0,
        b.1,
    );
    ra.wait_ready(Duration::from_secs(60));
    rb.wait_ready(Duration::from_secs(60));
    eventually(
        Duration::from_secs(30),
        "both webhooks have the caBundle",
        || ca_bundle(&client, "zt-injector"),
    )
    .await;

    // --- Both replicas up, rotations running, pods being created.
    let seen = Arc::new(Mutex::new(Observed::default()));
    exercise(client.clone(), vec![a.0, b.0], RUN, seen.clone(), "rot").await;
    let s = std::mem::take(&mut *seen.lock().unwrap());
    let (rotations, renewals) = count(&s.states);
    println!(
        "{RUN:?}: {} pods created, probes {:?}, {rotations} CA rotations, {renewals} certificate renewals; states seen: {:?}",
        s.pods, s.probes, s.states
    );
    assert!(
        s.failures.is_empty(),
        "{} failures:\n{}\n--- a ---\n{}\n--- b ---\n{}",
        s.failures.len(),
        s.failures.join("\n"),
        ra.log(),
        rb.log()
    );
    assert!(s.pods >= 20, "only {} pods created", s.pods);
    assert!(
        s.probes.values().all(|n| *n >= 50),
        "probes: {:?}",
        s.probes
    );
    assert!(
        rotations >= 2,
        "only {rotations} CA rotations observed: {:?}",
        s.states
    );
    assert!(
        renewals >= 3,
        "only {renewals} certificate renewals observed: {:?}",
        s.states
    );
    let generations: Vec<u64> = s.states.iter().map(|(g, _)| *g).collect();
    assert!(
        generations.windows(2).all(|w| w[1] > w[0]),
        "generations go forward only: {generations:?}"
    );

    // --- The leader goes away (its webhook first, as a Service would stop
    // --- routing to it): the other replica takes the Lease and keeps rotating.
    let leader = holder(&client).await;
    let (stopping, survivor, survivor_port, gone) = if leader == "zt-injector-a" {
        (&mut ra, "zt-injector-b", b.0, 0)
    } else {
        (&mut rb, "zt-injector-a", a.0, 1)
    };
    kubectl(
        cp,
        &[
            "patch",
            "mutatingwebhookconfiguration",
            "zt-injector",
            "--type=json",
            "-p",
            &format!(r#"[{{"op":"remove","path":"/webhooks/{gone}"}}]"#),
        ],
    )
    .assert_clean("removing the leader's webhook");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stopping.stop();
    exercise(
        client.clone(),
        vec![survivor_port],
        Duration::from_secs(15),
        seen.clone(),
        "failover",
    )
    .await;
    let s = std::mem::take(&mut *seen.lock().unwrap());
    let (rotations, renewals) = count(&s.states);
    println!(
        "failover to {survivor}: {} pods, {rotations} CA rotations, {renewals} renewals",
        s.pods
    );
    assert!(
        s.failures.is_empty(),
        "after failover:\n{}",
        s.failures.join("\n")
    );
    assert_eq!(holder(&client).await, survivor);
    assert!(
        rotations >= 1 && renewals >= 1,
        "the new leader does not rotate: {:?}",
        s.states
    );

    // --- The Secret emptied (the README's recovery step, or a replaced
    // --- Secret): the leader makes a new CA whose generation passes the one
    // --- the webhook records, so its bundle is published and pods are
    // --- created through it. (A new CA restarting at generation 1 was never
    // --- published: every opted-in pod was refused.)
    let secrets = Api::<Secret>::namespaced(client.clone(), NS);
    let before = tls_state(&secrets.get("zt-injector-tls").await.unwrap()).unwrap();
    let old_bundle = ca_bundle(&client, "zt-injector").await.unwrap();
    kubectl(
        cp,
        &[
            "-n",
            NS,
            "patch",
            "secret",
            "zt-injector-tls",
            "--type=json",
            "-p",
            r#"[{"op":"remove","path":"/data"}]"#,
        ],
    )
    .assert_clean("emptying the TLS Secret");
    let new_bundle = eventually(
        Duration::from_secs(30),
        "a new caBundle after the Secret was emptied",
        || {
            let client = client.clone();
            let old = old_bundle.clone();
            async move {
                let b = ca_bundle(&client, "zt-injector").await?;
                (b != old && handshake(survivor_port, &b).await.is_ok()).then_some(b)
            }
        },
    )
    .await;
    let after = tls_state(&secrets.get("zt-injector-tls").await.unwrap()).unwrap();
    assert!(
        after.0 > before.0,
        "the new CA's generation {} does not pass the old one {}",
        after.0,
        before.0
    );
    assert!(!new_bundle.is_empty());
    let pod = create_pod(
        &client,
        &pod_manifest("after-reset", APPS, &[("inject", "true")]),
    )
    .await
    .unwrap_or_else(|e| panic!("a pod after the CA reset: {}", api_message(&e)));
    assert_eq!(
        pod.spec.unwrap().init_containers.unwrap()[0].name,
        "zt-sidecar"
    );

    // --- No key material in either log.
    let secret = Api::<Secret>::namespaced(client.clone(), NS)
        .get("zt-injector-tls")
        .await
        .unwrap();
    for log in [ra.log(), rb.log()] {
        assert!(!log.contains("PRIVATE KEY"));
        for key in ["ca-key.pem", "tls-key.pem"] {
            let pem = String::from_utf8(secret.data.as_ref().unwrap()[key].0.clone()).unwrap();
            for line in pem
                .lines()
                .filter(|l| !l.starts_with("-----") && l.len() > 16)
            {
                assert!(
                    !log.contains(line),
                    "a line of {key} is in a log (not shown)"
                );
            }
        }
    }
}

/// The Lease as the rotator uses it, against the real API server: one
/// holder at a time; a silent holder is replaced after the lease duration
/// (measured by the taker's own clock), and never before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_holds_the_lease_until_it_goes_silent() {
    let cp = control_plane();
    let client = cp.client().await.unwrap();
    namespace(&client, "lease-test", &[]).await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "lease-test");
    let lease = Lease {
        metadata: ObjectMeta {
            name: Some("l".into()),
            ..Default::default()
        },
        spec: Some(Default::default()),
    };
    leases.create(&PostParams::default(), &lease).await.unwrap();
    let duration = Duration::from_secs(2);
    let mut a = LeaderElector::new(leases.clone(), "l", "a", duration);
    let mut b = LeaderElector::new(leases.clone(), "l", "b", duration);
    assert!(a.try_lead().await.unwrap(), "a free lease is taken");
    let start = Instant::now();
    // While a renews, b never leads.
    while start.elapsed() < Duration::from_secs(4) {
        assert!(a.try_lead().await.unwrap());
        assert!(!b.try_lead().await.unwrap(), "b took a lease a is renewing");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // a goes silent: b waits a full duration from when it last saw a change.
    let silent = Instant::now();
    let took = loop {
        if b.try_lead().await.unwrap() {
            break silent.elapsed();
        }
        assert!(silent.elapsed() < duration * 3, "b never took the lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        took >= duration - Duration::from_millis(300),
        "b took over after {took:?}, before the lease duration"
    );
    assert!(!a.try_lead().await.unwrap(), "a comes back: b holds it now");
    let l = leases.get("l").await.unwrap().spec.unwrap();
    assert_eq!(l.holder_identity.as_deref(), Some("b"));
    assert_eq!(l.lease_transitions, Some(1));
    // A missing Lease is an error (the chart creates it; RBAC cannot create by name).
    let mut c = LeaderElector::new(leases, "missing", "c", duration);
    assert!(c.try_lead().await.is_err());
}
