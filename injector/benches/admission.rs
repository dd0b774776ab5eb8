//! `make bench-injector`: what zt-injector adds to a pod create through the
//! real kube-apiserver, and its memory.
//!
//! One run, the series interleaved (a create in each, in turn, the order
//! rotating every round), each series in its own namespace:
//!
//! - no webhook: the annotated pod as written;
//! - no webhook, the sidecar written by hand: the pod exactly as zt-injector
//!   would have the API server store it, submitted that way;
//! - do-nothing webhooks (the floors), served by a child process (this
//!   binary again) so that, like zt-injector, they are another process the
//!   API server calls over TLS: one that only echoes the uid, one that adds
//!   one annotation (the cost of any patch), one that returns zt-injector's
//!   patch computed in advance (the floor of any injector of this sidecar);
//! - zt-injector (release build, one replica, run as in the tests: the
//!   chart's settings, ServiceAccount and RBAC).
//!
//! Latency is timed by the client around each create; differences of
//! percentiles come with a bootstrap 95 % interval. The injector's own time
//! per review comes from its log.
//!
//! ```text
//! cargo bench -p zt-injector --bench admission -- --out bench/results/injector.md [--pods 2000]
//! ```

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use zt_bench::stats::{percentile, sorted, Difference};
use zt_injector::admission::{Decision, Injector};

/// Set (to a JSON file `{"<path>": "<base64 patch>" | null}`) in the child
/// process that serves the floor webhooks.
const FLOOR_ENV: &str = "ZT_BENCH_FLOOR_WEBHOOKS";
/// Bootstrap draws per interval.
const RESAMPLES: usize = 1000;

struct Args {
    out: PathBuf,
    pods: usize,
}

fn args() -> Args {
    let mut a = Args {
        out: PathBuf::from("bench/results/injector.md"),
        pods: 2000,
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

/// The child process: webhooks that admit everything, each path with its
/// patch (or none), doing nothing else. Prints its port and its
/// certificate, serves until its stdin closes (the bench ended or died).
async fn serve_floor_webhooks(patches: BTreeMap<String, Option<String>>) {
    let ca = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
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
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{port}").unwrap();
        write!(out, "{}", ca.cert.pem()).unwrap();
        writeln!(out, "END").unwrap();
        out.flush().unwrap();
    }
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    let patches = Arc::new(patches);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (acceptor, patches) = (acceptor.clone(), patches.clone());
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            zt_sidecar::serve::serve_conn(tls, move |req: http::Request<hyper::body::Incoming>| {
                let patch = patches.get(req.uri().path()).cloned().flatten();
                async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
                    let mut response = json!({"uid": review["request"]["uid"], "allowed": true});
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
            })
            .await;
        });
    }
}

/// Starts the child serving the floor webhooks: its port and CA (PEM).
fn start_floor_webhooks(
    patches: &BTreeMap<String, Option<String>>,
    dir: &std::path::Path,
) -> (std::process::Child, u16, Vec<u8>) {
    let file = dir.join("floor-webhooks.json");
    std::fs::write(&file, serde_json::to_vec(patches).unwrap()).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(FLOOR_ENV, &file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let port: u16 = lines.next().unwrap().unwrap().parse().unwrap();
    let mut pem = String::new();
    for line in lines.map(Result::unwrap) {
        if line == "END" {
            break;
        }
        pem.push_str(&line);
        pem.push('\n');
    }
    (child, port, pem.into_bytes())
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
async fn in_process(injector: &Injector<NoConfigMaps>, calls: usize) -> Vec<f64> {
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
    if let Some(file) = std::env::var_os(FLOOR_ENV) {
        let patches = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
        return serve_floor_webhooks(patches).await;
    }
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

    // zt-injector's patch for the bench pod, and the pod it gives, computed
    // once by the library.
    let s = Arc::new(
        zt_injector::settings::Settings::parse(
            &settings,
            &BTreeMap::from([
                ("POD_NAME".to_string(), "bench".to_string()),
                ("POD_NAMESPACE".to_string(), "zt-injector".to_string()),
            ]),
        )
        .unwrap(),
    );
    // The library's injector, for the patch the floor returns and for its
    // own time per review.
    let library = Injector::new(s.clone(), NoConfigMaps);
    let pod_in = |name: &str, ns: &str| -> Pod {
        serde_json::from_value(pod_manifest(name, ns, BACKEND)).unwrap()
    };
    let the_patch = match library
        .plan(&pod_in("p", "bench-patch"), "bench-patch")
        .await
    {
        Ok(Decision::Inject(patch)) => serde_json::to_value(patch).unwrap(),
        other => panic!("the bench pod is not injected: {other:?}"),
    };
    let one_annotation = json!([{
        "op": "add", "path": "/metadata/annotations/bench.local~1patched", "value": "yes"
    }]);
    let floor_patches = BTreeMap::from([
        ("/floor".to_string(), None),
        (
            "/annotation".to_string(),
            Some(base64(one_annotation.to_string().as_bytes())),
        ),
        (
            "/patch".to_string(),
            Some(base64(the_patch.to_string().as_bytes())),
        ),
    ]);
    let (mut floors, floor_port, floor_ca) = start_floor_webhooks(&floor_patches, dir.path());
    for label in ["floor", "annotation", "patch"] {
        let config: MutatingWebhookConfiguration = serde_json::from_value(json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": format!("bench-{label}")},
            "webhooks": [{
                "name": format!("{label}.bench.local"), "admissionReviewVersions": ["v1"], "sideEffects": "None",
                "failurePolicy": "Fail", "timeoutSeconds": 5, "reinvocationPolicy": "Never",
                "clientConfig": {"url": format!("https://127.0.0.1:{floor_port}/{label}"), "caBundle": base64(&floor_ca)},
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

    /// What is submitted in a series.
    #[derive(Clone, Copy, PartialEq)]
    enum Submitted {
        /// The annotated pod as written.
        AsWritten,
        /// The annotated pod with the sidecar already in it.
        ByHand,
        /// The same pod without its zt.demo.local/ annotations.
        Plain,
    }
    use Submitted::*;
    struct Spec {
        name: &'static str,
        ns: &'static str,
        labels: Vec<(&'static str, &'static str)>,
        submitted: Submitted,
    }
    let spec = |name: &'static str,
                ns: &'static str,
                labels: Vec<(&'static str, &'static str)>,
                submitted: Submitted| Spec {
        name,
        ns,
        labels,
        submitted,
    };
    let opted_in = || vec![("zt.demo.local/injection", "enabled")];
    let series = [
        spec("no webhook", "bench-none", vec![], AsWritten),
        spec(
            "no webhook, the same sidecar written by hand in the pod",
            "bench-hand",
            vec![],
            ByHand,
        ),
        spec(
            "do-nothing webhook (floor)",
            "bench-floor",
            vec![("bench", "floor")],
            AsWritten,
        ),
        spec(
            "do-nothing webhook adding one annotation",
            "bench-annotation",
            vec![("bench", "annotation")],
            AsWritten,
        ),
        spec(
            "do-nothing webhook returning zt-injector's patch",
            "bench-patch",
            vec![("bench", "patch")],
            AsWritten,
        ),
        spec("zt-injector", "bench-zt", opted_in(), AsWritten),
        spec(
            "zt-injector's webhook, opted-in namespace, the pod with no annotations (matchConditions: not sent)",
            "bench-zt-plain",
            opted_in(),
            Plain,
        ),
    ];
    const NONE: usize = 0;
    const HAND: usize = 1;
    const FLOOR: usize = 2;
    const ANNOTATION: usize = 3;
    const PATCH: usize = 4;
    const ZT: usize = 5;
    const ZT_PLAIN: usize = 6;
    for sp in &series {
        namespace(&client, sp.ns, &sp.labels).await;
    }
    // The webhook configurations reach the API server's cache.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut results: Vec<Vec<f64>> = series.iter().map(|_| Vec::new()).collect();
    let warm_up = 30;
    let started = Instant::now();
    for round in 0..args.pods + warm_up {
        // Rotate the order so no series always goes first.
        for k in 0..series.len() {
            let i = (round + k) % series.len();
            let sp = &series[i];
            let mut pod = pod_in(&format!("p{round}"), sp.ns);
            match sp.submitted {
                AsWritten => {}
                ByHand => pod = zt_injector::patch::injected(&pod, &s).unwrap(),
                Plain => pod.metadata.annotations = None,
            }
            let api = Api::<Pod>::namespaced(client.clone(), sp.ns);
            let t = Instant::now();
            let stored = api
                .create(&PostParams::default(), &pod)
                .await
                .unwrap_or_else(|e| panic!("{}: {}", sp.ns, api_message(&e)));
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            let injected = stored
                .spec
                .unwrap()
                .init_containers
                .is_some_and(|c| c.iter().any(|c| c.name == "zt-sidecar"));
            assert_eq!(
                injected,
                sp.submitted == ByHand || i == PATCH || i == ZT,
                "{}: injected = {injected}",
                sp.ns
            );
            if round >= warm_up {
                results[i].push(ms);
            }
        }
    }
    let elapsed = started.elapsed();
    let _ = floors.kill();
    let _ = floors.wait();
    let rss = proc_kib(pid, "VmRSS:");
    let hwm = proc_kib(pid, "VmHWM:");
    // The injector's own time per review, from its log (`micros=`).
    let log = injector.log();
    let own = sorted(
        &log.lines()
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
            .collect::<Vec<_>>(),
    );
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
    let alone = in_process(&library, 2000).await;

    let diff = |a: usize, b: usize| {
        (
            Difference::of(&results[a], &results[b], 0.5, RESAMPLES),
            Difference::of(&results[a], &results[b], 0.99, RESAMPLES),
        )
    };
    let added = diff(ZT, NONE);
    let over_hand = diff(ZT, HAND);
    let hand = diff(HAND, NONE);
    let floor = diff(FLOOR, NONE);
    let any_patch = diff(ANNOTATION, FLOOR);
    let patch_floor = diff(PATCH, NONE);
    let own_share = diff(ZT, PATCH);
    let plain = diff(ZT_PLAIN, NONE);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let verdict = |ok: bool| if ok { "met" } else { "**not met**" };
    // A p99 goal is judged on the interval: met when all of it is within
    // the goal, not met when none of it is, undecided otherwise.
    let judged = |d: Difference, goal: f64| {
        if d.high <= goal {
            "met"
        } else if d.low > goal {
            "**not met**"
        } else {
            "**undecided** (the interval spans the goal)"
        }
    };
    let mut md = String::new();
    md.push_str("# zt-injector: admission latency and memory\n\n");
    md.push_str(&zt_bench::machine_line());
    md.push_str(&format!(
        " Release build. kube-apiserver {} + etcd {} from `make tools-kube` (devstack::kube), everything on loopback.\n\n",
        "1.36.3", "3.6.16"
    ));
    md.push_str(&format!(
        "{} pod creates per series after {warm_up} warm-up rounds, the {} series interleaved in one run ({:.1} s). \
         Every create is the same pod (one restricted app container, eight zt.demo.local/ annotations: \
         OpenBao role, two database secrets, a KV secret, the proxy allow-list, inbound mTLS, the secrets group), \
         timed by the client around `POST /api/v1/namespaces/<ns>/pods`; only the namespace differs, except in two \
         series: one submits the pod with the sidecar already in it (zt-injector's result, {} bytes of JSON \
         against {} for the pod as written), the last one the pod without its zt.demo.local/ annotations. The do-nothing webhooks run in a child process of the bench, so that \
         each webhook, like zt-injector, is a separate process the API server calls over TLS.\n\n",
        args.pods,
        series.len(),
        elapsed.as_secs_f64(),
        serde_json::to_vec(&zt_injector::patch::injected(&pod_in("p", "x"), &s).unwrap()).unwrap().len(),
        serde_json::to_vec(&pod_in("p", "x")).unwrap().len(),
    ));
    md.push_str("| Series | p50 | p99 |\n|---|---|---|\n");
    for (sp, r) in series.iter().zip(&results) {
        let r = sorted(r);
        md.push_str(&format!(
            "| {} | {:.2} ms | {:.2} ms |\n",
            sp.name,
            percentile(&r, 0.5),
            percentile(&r, 0.99)
        ));
    }
    md.push_str(&format!(
        "| zt-injector's own time per review (its log, under the load above; {} reviews, warm-up included, over {} TLS connections) | {:.3} ms | {:.3} ms |\n",
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
    md.push_str(&format!(
        "Differences of percentiles, with a bootstrap 95 % interval ({RESAMPLES} resamples of each series):\n\n"
    ));
    md.push_str("| Measure | p50 | p99 | Goal |\n|---|---|---|---|\n");
    let row = |md: &mut String, what: &str, d: (Difference, Difference), goal: String| {
        md.push_str(&format!("| {what} | {} | {} | {goal} |\n", d.0, d.1));
    };
    row(
        &mut md,
        "**Added by zt-injector** to the create of the pod as written (zt-injector vs no webhook)",
        added,
        format!("p99 ≤ 5 ms: {}", judged(added.1, 5.0)),
    );
    row(
        &mut md,
        "**Added by zt-injector** to the create of a pod with the same sidecar (zt-injector vs the sidecar written by hand)",
        over_hand,
        format!("p99 ≤ 5 ms: {}", judged(over_hand.1, 5.0)),
    );
    row(
        &mut md,
        "Added by the webhook to a pod of an opted-in namespace without zt.demo.local/ annotations (vs no webhook)",
        plain,
        "–".into(),
    );
    row(
        &mut md,
        "A pod with the sidecar, written by hand, vs the pod without it (no webhook)",
        hand,
        "–".into(),
    );
    row(
        &mut md,
        "Any webhook (do-nothing vs no webhook)",
        floor,
        "–".into(),
    );
    row(
        &mut md,
        "Any patch (a webhook adding one annotation vs the do-nothing webhook)",
        any_patch,
        "–".into(),
    );
    row(
        &mut md,
        "Any injector of this sidecar (a webhook returning this patch vs no webhook)",
        patch_floor,
        "–".into(),
    );
    row(
        &mut md,
        "zt-injector's own share (vs a webhook returning the same patch)",
        own_share,
        "–".into(),
    );
    md.push_str(&format!(
        "\n| Memory | Result | Goal |\n|---|---|---|\n| zt-injector RSS: idle / after the run / peak (VmHWM) | {:.1} / {:.1} / {:.1} MiB | ≤ 20 MiB: {} |\n\n",
        mib(idle_rss),
        mib(rss),
        mib(hwm),
        verdict(mib(hwm) <= 20.0)
    ));
    md.push_str(
        "How to read it. The do-nothing webhook is the floor of any mutating webhook here: the API server \
         encodes the AdmissionReview, calls the webhook over TLS on a kept-alive connection and decodes the \
         answer. The webhook adding one annotation adds the cost of any patch: the API server encodes the pod \
         to JSON, applies the patch, decodes and defaults it again. The webhook returning zt-injector's patch \
         (computed once, in advance) is the floor of any injector that adds this sidecar; it also stores a \
         larger pod (one more container with three probes, two volumes). The pod with the sidecar written by \
         hand costs that larger pod without any webhook: against it, zt-injector's difference is what the \
         webhook itself costs for the pod a user of the sidecar ends up with. What zt-injector adds over the \
         webhook returning its patch is its own work per review (parsing the annotations, rendering the TOML, \
         zt-sidecar's own validator, the patch: its own time above) and its process's share of the two cores.\n\n\
         The p99 differences are judged on their interval, not on the point. The interval only covers the \
         sampling within this run: the tail of a pod create on this machine also moves by several milliseconds \
         from run to run (the API server, etcd, the webhooks and the client share two cores), so one run is not \
         the last word either way. The pods are not deleted during the run (etcd and the API server's cache grow \
         by every pod created, the same for every series).\n\n\
         Reproduce: `make bench-injector`.\n",
    );
    zt_bench::write_result(&args.out, &md).unwrap();
}

fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
