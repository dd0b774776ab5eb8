//! `make bench-injector`: what zt-injector adds to a pod create through the
//! real kube-apiserver, and its memory.
//!
//! Three namespaces, the same annotated pod created in each, in turn, in
//! one run: no webhook at all; a do-nothing webhook (the floor: TLS, HTTP
//! and JSON between the API server and any webhook, answered by a handler
//! that only echoes the uid); zt-injector (release build, one replica, run
//! as in the tests: the chart's settings, ServiceAccount and RBAC). Latency
//! is measured by the client around each create; the injector's own time
//! per review comes from its log.
//!
//! ```text
//! cargo bench -p zt-injector --bench admission -- --out bench/results/injector.md [--pods 400]
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};

struct Args {
    out: PathBuf,
    pods: usize,
}

fn args() -> Args {
    let mut a = Args {
        out: PathBuf::from("bench/results/injector.md"),
        pods: 400,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--out" => a.out = it.next().expect("--out FILE").into(),
            "--pods" => a.pods = it.next().and_then(|n| n.parse().ok()).expect("--pods N"),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[derive(Default)]
struct Series(Vec<f64>);

impl Series {
    fn stats(&self) -> (f64, f64) {
        let mut v = self.0.clone();
        v.sort_by(|a, b| a.total_cmp(b));
        (percentile(&v, 0.5), percentile(&v, 0.99))
    }
}

/// A webhook that admits everything, with `patch` (base64 JSON patch) if
/// given, doing nothing else: the floor any webhook pays (and, with
/// zt-injector's patch, the floor any injector of this sidecar pays).
async fn floor_webhook(patch: Option<String>) -> (u16, Vec<u8>) {
    let ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert_pem = ca.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ca.signing_key.serialize_der()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![ca.cert.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, patch) = (acceptor.clone(), patch.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                zt_sidecar::serve::serve_conn(
                    tls,
                    move |req: http::Request<hyper::body::Incoming>| {
                        let patch = patch.clone();
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let review: Value = serde_json::from_slice(&body).unwrap_or_default();
                            let mut response =
                                json!({"uid": review["request"]["uid"], "allowed": true});
                            if let Some(p) = patch {
                                response["patchType"] = json!("JSONPatch");
                                response["patch"] = json!(p);
                            }
                            let answer = json!({
                                "apiVersion": "admission.k8s.io/v1",
                                "kind": "AdmissionReview",
                                "response": response,
                            });
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                                answer.to_string(),
                            ))))
                        }
                    },
                )
                .await;
            });
        }
    });
    (port, cert_pem.into_bytes())
}

/// No ConfigMaps: the bench pod does not use one.
struct NoConfigMaps;

impl zt_injector::admission::ConfigMaps for NoConfigMaps {
    async fn sidecar_toml(&self, namespace: &str, name: &str) -> Result<String, String> {
        Err(format!("ConfigMap {namespace}/{name} does not exist"))
    }
}

/// The injector's work alone: `review()` on the bench pod's AdmissionReview,
/// in this process, one call at a time (ms per call, sorted).
async fn in_process(settings: &str, calls: usize) -> Vec<f64> {
    let s = zt_injector::settings::Settings::parse(
        settings,
        &std::collections::BTreeMap::from([
            ("POD_NAME".to_string(), "bench".to_string()),
            ("POD_NAMESPACE".to_string(), "zt-injector".to_string()),
        ]),
    )
    .unwrap();
    let injector = zt_injector::admission::Injector::new(Arc::new(s), NoConfigMaps);
    let body = serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b", "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "bench-zt", "operation": "CREATE", "userInfo": {"username": "bench"},
            "object": pod_manifest("p", "bench-zt", BACKEND), "dryRun": false,
        }
    }))
    .unwrap();
    let mut out = Vec::with_capacity(calls);
    for _ in 0..calls {
        let t = Instant::now();
        let review = injector.review(&body).await;
        let bytes = zt_injector::server::encode_review(review).unwrap();
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(bytes.len() > 1000);
    }
    out.sort_by(|a, b| a.total_cmp(b));
    out
}

fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let cp = control_plane();
    let client = cp.client().await.unwrap();
    let dir = tempfile::Builder::new()
        .prefix("zt-injector-bench-")
        .tempdir()
        .unwrap();
    let (https, health) = (
        devstack::free_port().unwrap(),
        devstack::free_port().unwrap(),
    );

    namespace(&client, "zt-injector", &[]).await;
    let rendered = helm_template(
        "zt-injector",
        "zt-injector",
        &[
            format!("webhook.url=https://127.0.0.1:{https}/mutate"),
            "extraSans={127.0.0.1}".into(),
            format!("ports.https={https}"),
            format!("ports.health={health}"),
            "log.format=text".into(),
        ],
    );
    assert_eq!(rendered.code, 0, "{}", rendered.stderr);
    kubectl_stdin(cp, &["apply", "--server-side"], &rendered.stdout).assert_clean("the chart");
    let settings = documents(&rendered.stdout)
        .into_iter()
        .find(|d| d["kind"] == "ConfigMap")
        .and_then(|d| d["data"]["injector.toml"].as_str().map(str::to_string))
        .unwrap();
    let kubeconfig = service_account_kubeconfig(cp, "zt-injector", "zt-injector", dir.path());
    let mut injector = InjectorProcess::start(
        "zt-injector-bench",
        &settings,
        "zt-injector",
        &kubeconfig,
        dir.path(),
        https,
        health,
    );
    injector.wait_ready(Duration::from_secs(60));
    eventually(Duration::from_secs(30), "caBundle", || {
        ca_bundle(&client, "zt-injector")
    })
    .await;
    let pid = injector.process.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_rss = proc_kib(pid, "VmRSS:");

    // zt-injector's patch for the bench pod, computed once by the library.
    let the_patch = {
        use zt_injector::annotations::{parse, Intent, Source};
        let s = zt_injector::settings::Settings::parse(
            &settings,
            &std::collections::BTreeMap::from([
                ("POD_NAME".to_string(), "bench".to_string()),
                ("POD_NAMESPACE".to_string(), "zt-injector".to_string()),
            ]),
        )
        .unwrap();
        let manifest = pod_manifest("p", "bench-patch", BACKEND);
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(manifest).unwrap();
        let Intent::Inject(i) =
            parse(pod.metadata.annotations.as_ref().unwrap(), &s.trust_domain).unwrap()
        else {
            panic!()
        };
        let Source::Annotations(a) = &i.source else {
            panic!()
        };
        let rendered = zt_injector::render::from_annotations(a, &s).unwrap();
        let plan = zt_injector::patch::Plan {
            rendered: &rendered,
            image: s.sidecar.image.clone(),
            resources: zt_injector::patch::resources(&i.resources, &s.sidecar.resources).unwrap(),
        };
        let p = zt_injector::patch::mutation(&pod, &plan, &s).unwrap();
        base64(&serde_json::to_vec(&p).unwrap())
    };
    for (name, label, patch) in [
        ("bench-floor", "floor", None),
        ("bench-patch", "patch", Some(the_patch)),
    ] {
        let (port, ca) = floor_webhook(patch).await;
        let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [{
                "name": format!("{label}.bench.local"), "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "timeoutSeconds": 5, "reinvocationPolicy": "Never",
                "clientConfig": {"url": format!("https://127.0.0.1:{port}/mutate"), "caBundle": base64(&ca)},
                "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"], "scope": "Namespaced"}],
                "namespaceSelector": {"matchLabels": {"bench": label}},
            }],
        }))
        .unwrap();
        Api::<MutatingWebhookConfiguration>::all(client.clone())
            .create(&PostParams::default(), &config)
            .await
            .unwrap();
    }
    let series = [
        ("no webhook", "bench-none", vec![]),
        (
            "do-nothing webhook (floor)",
            "bench-floor",
            vec![("bench", "floor")],
        ),
        (
            "do-nothing webhook returning zt-injector's patch",
            "bench-patch",
            vec![("bench", "patch")],
        ),
        (
            "zt-injector",
            "bench-zt",
            vec![("zt.demo.local/injection", "enabled")],
        ),
    ];
    for (_, ns, labels) in &series {
        namespace(&client, ns, labels).await;
    }
    // The webhook configurations reach the API server's cache.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut results: Vec<Series> = series.iter().map(|_| Series::default()).collect();
    let total = args.pods + 30;
    let started = Instant::now();
    for round in 0..total {
        // Rotate the order so no series always goes first.
        for k in 0..series.len() {
            let i = (round + k) % series.len();
            let (_, ns, _) = &series[i];
            let m = pod_manifest(&format!("p{round}"), ns, BACKEND);
            let t = Instant::now();
            let pod = create_pod(&client, &m)
                .await
                .unwrap_or_else(|e| panic!("{ns}: {}", api_message(&e)));
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let injected = pod.spec.unwrap().init_containers.is_some();
            assert_eq!(injected, i >= 2, "{ns}: injected = {injected}");
            if round >= 30 {
                results[i].0.push(ms);
            }
        }
    }
    let elapsed = started.elapsed();
    let rss = proc_kib(pid, "VmRSS:");
    let hwm = proc_kib(pid, "VmHWM:");
    // The injector's own time per review, from its log (`micros=`).
    let log = injector.log();
    let mut own: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("sidecar injected"))
        .filter_map(|l| {
            l.split("micros=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .map(|us| us / 1000.0)
        .collect();
    own.sort_by(|a, b| a.total_cmp(b));
    let connections = log
        .lines()
        .filter(|l| l.contains(" connection remote="))
        .count();
    assert!(
        !own.is_empty(),
        "no `sidecar injected ... micros=` line in the injector's log:\n{}",
        &log[log.len().saturating_sub(2000)..]
    );
    injector.stop();
    let alone = in_process(&settings, 2000).await;

    let stats: Vec<(f64, f64)> = results.iter().map(Series::stats).collect();
    let (none, floor_s, patch_s, zt) = (stats[0], stats[1], stats[2], stats[3]);
    let added = (zt.0 - none.0, zt.1 - none.1);
    let over_floor = (zt.0 - floor_s.0, zt.1 - floor_s.1);
    let over_patch = (zt.0 - patch_s.0, zt.1 - patch_s.1);
    let floor_added = (patch_s.0 - none.0, patch_s.1 - none.1);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    let mut md = String::new();
    md.push_str("# zt-injector: admission latency and memory\n\n");
    md.push_str(&zt_bench::machine_line());
    md.push_str(&format!(
        " Release build. kube-apiserver {} + etcd {} from `make tools-kube` (devstack::kube), everything on loopback.\n\n",
        "1.36.3", "3.6.16"
    ));
    md.push_str(&format!(
        "{} pod creates per series after 30 warm-up rounds, the three series interleaved in one run ({:.1} s). \
         Every create is the same pod (one restricted app container, eight zt.demo.local/ annotations: \
         OpenBao role, two database secrets, a KV secret, the proxy allow-list, inbound mTLS, the secrets group), \
         timed by the client around `POST /api/v1/namespaces/<ns>/pods`; only the namespace differs.\n\n",
        args.pods,
        elapsed.as_secs_f64()
    ));
    md.push_str("| Series | p50 | p99 |\n|---|---|---|\n");
    for ((name, _, _), (p50, p99)) in series.iter().zip(&stats) {
        md.push_str(&format!("| {name} | {p50:.2} ms | {p99:.2} ms |\n"));
    }
    md.push_str(&format!(
        "| zt-injector's own time per review (its log, under the load above; {} reviews over {} TLS connections) | {:.3} ms | {:.3} ms |\n",
        own.len(),
        connections,
        percentile(&own, 0.5),
        percentile(&own, 0.99)
    ));
    md.push_str(&format!(
        "| the same work alone (`review()` + encoding, in-process, 2000 calls, machine otherwise idle) | {:.3} ms | {:.3} ms |\n\n",
        percentile(&alone, 0.5),
        percentile(&alone, 0.99)
    ));
    md.push_str("| Measure | Result | Goal |\n|---|---|---|\n");
    md.push_str(&format!(
        "| Added by zt-injector vs no webhook | p50 +{:.2} ms, p99 +{:.2} ms | p99 ≤ 5 ms: {} |\n",
        added.0,
        added.1,
        verdict(added.1 <= 5.0)
    ));
    md.push_str(&format!(
        "| Added by zt-injector vs the do-nothing webhook | p50 +{:.2} ms, p99 +{:.2} ms | – |\n",
        over_floor.0, over_floor.1
    ));
    md.push_str(&format!(
        "| Added by any webhook returning this patch (floor + patch vs no webhook) | p50 +{:.2} ms, p99 +{:.2} ms | – |\n",
        floor_added.0, floor_added.1
    ));
    md.push_str(&format!(
        "| zt-injector vs a do-nothing webhook returning the same patch | p50 {:+.2} ms, p99 {:+.2} ms | – |\n",
        over_patch.0, over_patch.1
    ));
    md.push_str(&format!(
        "| zt-injector RSS: idle / after the run / peak (VmHWM) | {:.1} / {:.1} / {:.1} MiB | ≤ 20 MiB: {} |\n\n",
        mib(idle_rss),
        mib(rss),
        mib(hwm),
        verdict(mib(hwm) <= 20.0)
    ));
    md.push_str(
        "Anchors in the same run. The do-nothing webhook is the floor of any mutating webhook here: the API \
         server encodes the AdmissionReview, calls it over TLS on a kept-alive connection and decodes the \
         answer. The do-nothing webhook returning zt-injector's patch (computed once, in advance) is the floor \
         of any injector that adds this sidecar: the API server applies the patch, runs admission again on the \
         larger pod and stores it. What zt-injector adds on top is its own work per review (parsing the \
         annotations, rendering the TOML, zt-sidecar's own validator, the patch: its own time above) and its \
         process's share of the two cores.\n\nReproduce: `make bench-injector`.\n",
    );
    zt_bench::write_result(&args.out, &md).unwrap();
}

fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
