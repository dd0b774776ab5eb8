//! SPIFFE mTLS between two real zt-sidecars with identities from the real
//! SPIRE: frontend app → frontend sidecar (outbound) → backend sidecar
//! (inbound) → test app. Refusals, forged headers, pinned server IDs,
//! rotation without dropped connections, and garbage on the TLS port.

mod common;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{eventually, tail};
use devstack::sidecar::{install_copy, Sidecar};
use devstack::spire::{BACKEND_ID, FRONTEND_ID};
use devstack::{free_port, Devstack, Options};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zt_sidecar::mtls::Material;
use zt_sidecar::status::ListenerStats;

const INTRUDER_ID: &str = "spiffe://demo.local/ns/99-apps/sa/intruder";

struct Mesh {
    stack: Devstack,
    backend: Sidecar,
    frontend: Sidecar,
    inbound: SocketAddr,
    outbound: SocketAddr,
    outbound_wrong_id: SocketAddr,
    /// An inbound listener that forwards to a port nobody listens on.
    inbound_no_app: SocketAddr,
    /// An inbound listener in front of [`start_raw_app`].
    inbound_raw: SocketAddr,
    /// Connections [`start_raw_app`] accepted.
    raw_connections: Arc<std::sync::atomic::AtomicUsize>,
    _dir: tempfile::TempDir,
}

impl Drop for Mesh {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- backend sidecar ---\n{}", tail(&self.backend.log(), 60));
            eprintln!(
                "--- frontend sidecar ---\n{}",
                tail(&self.frontend.log(), 60)
            );
        }
    }
}

/// Size of the app's `GET /big` response.
const BIG_RESPONSE: usize = 8 * 1024 * 1024;

/// The app behind the backend sidecar: echoes what it received (as JSON);
/// `/close…` also closes the connection after answering, `/big` answers
/// with [`BIG_RESPONSE`] bytes.
async fn start_app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let peers: Vec<String> = req
                        .headers()
                        .get_all("x-spiffe-peer-id")
                        .iter()
                        .map(|v| v.to_str().unwrap_or("?").to_string())
                        .collect();
                    let path = req.uri().path().to_string();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    if path == "/big" {
                        let big = Bytes::from(vec![b'y'; BIG_RESPONSE]);
                        return Ok::<_, Infallible>(hyper::Response::new(Full::new(big)));
                    }
                    let out = json!({"peer_ids": peers, "path": path, "body_len": body.len()})
                        .to_string();
                    let mut resp = hyper::Response::new(Full::new(Bytes::from(out)));
                    if path.starts_with("/close") {
                        // hyper closes the connection after this response.
                        resp.headers_mut().insert(
                            hyper::header::CONNECTION,
                            hyper::header::HeaderValue::from_static("close"),
                        );
                    }
                    Ok(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .await;
            });
        }
    });
    addr
}

fn addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()))
}

async fn mesh(x509_ttl: Duration) -> Mesh {
    let dir = tempfile::Builder::new()
        .prefix("zt-mtls-")
        .tempdir()
        .unwrap();
    let bin = common::sidecar_binary();
    let backend_bin = install_copy(&bin, dir.path(), "backend").unwrap();
    let frontend_bin = install_copy(&bin, dir.path(), "frontend").unwrap();
    let me = std::env::current_exe().unwrap();
    let mut opts = Options::default()
        .register_binary(BACKEND_ID, &backend_bin)
        .unwrap()
        .register_binary(FRONTEND_ID, &frontend_bin)
        .unwrap()
        .register_binary(FRONTEND_ID, &me)
        .unwrap()
        .register_binary(INTRUDER_ID, &me)
        .unwrap();
    opts.x509_svid_ttl = x509_ttl;
    let stack = tokio::task::block_in_place(|| Devstack::start(opts)).unwrap();
    let app = start_app().await;
    let (raw_app, raw_connections) = start_raw_app().await;
    let (inbound, outbound, outbound_wrong_id) = (addr(), addr(), addr());
    let (inbound_no_app, no_app, inbound_raw) = (addr(), addr(), addr());
    let workload = stack.workload_endpoint();
    let backend_cfg = format!(
        "[identity]\nworkload_api = \"{workload}\"\nsvid_dir = \"{}\"\n[admin]\nlisten = \"{}\"\n\
         [[mtls.inbound]]\nlisten = \"{inbound}\"\nforward_to = \"{app}\"\nallow = [\"{FRONTEND_ID}\"]\nhandshake_timeout = \"2s\"\n\
         [[mtls.inbound]]\nlisten = \"{inbound_no_app}\"\nforward_to = \"{no_app}\"\nallow = [\"{FRONTEND_ID}\"]\n\
         [[mtls.inbound]]\nlisten = \"{inbound_raw}\"\nforward_to = \"{raw_app}\"\nallow = [\"{FRONTEND_ID}\"]\n",
        dir.path().join("svid").display(),
        addr()
    );
    let frontend_cfg = format!(
        "[identity]\nworkload_api = \"{workload}\"\n[admin]\nlisten = \"{}\"\n\
         [[mtls.outbound]]\nlisten = \"{outbound}\"\nupstream = \"{inbound}\"\nserver_id = \"{BACKEND_ID}\"\n\
         [[mtls.outbound]]\nlisten = \"{outbound_wrong_id}\"\nupstream = \"{inbound}\"\nserver_id = \"spiffe://demo.local/ns/99-apps/sa/someone-else\"\n",
        addr()
    );
    let admin = |cfg: &str| {
        cfg.split("listen = \"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut backend = Sidecar::start(
        "backend",
        &backend_bin,
        dir.path(),
        &backend_cfg,
        admin(&backend_cfg),
    )
    .unwrap();
    let mut frontend = Sidecar::start(
        "frontend",
        &frontend_bin,
        dir.path(),
        &frontend_cfg,
        admin(&frontend_cfg),
    )
    .unwrap();
    tokio::task::block_in_place(|| {
        backend.wait_ready(Duration::from_secs(30)).unwrap();
        frontend.wait_ready(Duration::from_secs(30)).unwrap();
    });
    Mesh {
        stack,
        backend,
        frontend,
        inbound,
        outbound,
        outbound_wrong_id,
        inbound_no_app,
        inbound_raw,
        raw_connections,
        _dir: dir,
    }
}

/// An app written on raw TCP, to close its connections the ways real apps
/// do. It reads request heads (no bodies) and answers by path:
/// `/quiet…` answers, then closes the connection without having said so
/// (an idle timeout firing, a restart); `/said-close` answers with
/// `Connection: close` and closes; `/drop` closes without answering (a
/// crash); `/half` sends the head and 10 of 100 body bytes, then closes;
/// `/slow` answers after 11 s; `/huge` answers with [`HUGE`] bytes; anything
/// else is answered and the connection kept.
/// Size of the raw app's `/huge` answer: more than any socket buffers hold.
const HUGE: usize = 64 << 20;

async fn start_raw_app() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        let mut chunk = [0u8; 4096];
                        match tcp.read(&mut chunk).await {
                            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            _ => return,
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_string();
                    buf.drain(..end + 4);
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    let answer = |body: &str| {
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    };
                    match path.as_str() {
                        "/drop" => return,
                        "/half" => {
                            let _ = tcp
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789",
                                )
                                .await;
                            return;
                        }
                        "/said-close" => {
                            let _ = tcp
                                .write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 4\r\n\r\nbye!")
                                .await;
                            return;
                        }
                        "/huge" => {
                            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {HUGE}\r\n\r\n");
                            if tcp.write_all(head.as_bytes()).await.is_err() {
                                return;
                            }
                            let chunk = vec![b'h'; 1 << 20];
                            for _ in 0..HUGE >> 20 {
                                if tcp.write_all(&chunk).await.is_err() {
                                    return;
                                }
                            }
                        }
                        "/slow" => {
                            // Longer than the sidecar's 10 s for a request head.
                            tokio::time::sleep(Duration::from_secs(11)).await;
                            if tcp.write_all(answer("/slow").as_bytes()).await.is_err() {
                                return;
                            }
                        }
                        p if p.starts_with("/quiet") => {
                            let _ = tcp.write_all(answer(p).as_bytes()).await;
                            return;
                        }
                        p => {
                            if tcp.write_all(answer(p).as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, accepted)
}

/// Picks the test binary's SVID for one SPIFFE ID.
#[derive(Debug)]
struct Pick(&'static str);
impl spiffe::x509_source::SvidPicker for Pick {
    fn pick_svid(&self, svids: &[Arc<spiffe::X509Svid>]) -> Option<usize> {
        svids
            .iter()
            .position(|s| s.spiffe_id().to_string() == self.0)
    }
}

async fn source(stack: &Devstack, id: &'static str) -> spiffe::X509Source {
    spiffe::X509Source::builder()
        .endpoint(stack.workload_endpoint())
        .picker(Pick(id))
        .build()
        .await
        .unwrap()
}

/// One HTTP/1.1 request over a direct mTLS connection to the backend
/// sidecar. `Ok(body)` or `Err(what went wrong)`. Also returns the serial
/// of the certificate the server presented.
async fn direct(
    cfg: rustls::ClientConfig,
    to: SocketAddr,
    extra_header: &str,
) -> (Result<String, String>, Option<String>) {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cfg));
    let tcp = TcpStream::connect(to).await.unwrap();
    let mut tls = match connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
    {
        Ok(t) => t,
        Err(e) => return (Err(format!("handshake: {e}")), None),
    };
    let serial = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| {
            x509_parser::parse_x509_certificate(c)
                .unwrap()
                .1
                .raw_serial_as_string()
                .replace(':', "")
        });
    let req =
        format!("GET /direct HTTP/1.1\r\nHost: backend\r\n{extra_header}Connection: close\r\n\r\n");
    if let Err(e) = tls.write_all(req.as_bytes()).await {
        return (Err(format!("write: {e}")), serial);
    }
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut out)).await {
        Ok(Ok(_)) if out.starts_with(b"HTTP/1.1 200") => {
            let text = String::from_utf8_lossy(&out).to_string();
            (
                Ok(text
                    .split_once("\r\n\r\n")
                    .map(|x| x.1.to_string())
                    .unwrap_or_default()),
                serial,
            )
        }
        Ok(Ok(_)) => (
            Err(format!("no 200: {:?}", String::from_utf8_lossy(&out))),
            serial,
        ),
        Ok(Err(e)) => (Err(format!("read: {e}")), serial),
        Err(_) => (Err("read timed out".into()), serial),
    }
}

fn stats() -> Arc<ListenerStats> {
    Arc::new(ListenerStats::default())
}

/// A client that keeps (at most) one connection to each host, so its
/// requests go over the same connection.
fn keepalive_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap()
}

/// GET `url` and its body as text (the request and the read must succeed).
async fn get_text(client: &reqwest::Client, url: String) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

fn peer_ids(body: &str) -> Vec<String> {
    let v: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("app JSON expected: {body}"));
    v["peer_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frontend_reaches_backend_and_impostors_do_not() {
    let m = mesh(Duration::from_secs(3600)).await;
    let http = reqwest::Client::new();

    // Through both sidecars: the app sees the frontend's verified ID.
    let body = get_text(&http, format!("http://{}/hello", m.outbound)).await;
    assert_eq!(peer_ids(&body), vec![FRONTEND_ID.to_string()]);

    // A forged peer-ID header (any case, repeated) is replaced by the verified one.
    let body = http
        .get(format!("http://{}/forged", m.outbound))
        .header("X-SPIFFE-Peer-ID", BACKEND_ID)
        .header(
            "x-spiffe-peer-id",
            "spiffe://demo.local/ns/kube-system/sa/admin",
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        peer_ids(&body),
        vec![FRONTEND_ID.to_string()],
        "forged header must not reach the app"
    );

    // Streaming a 5 MiB body through both hops.
    let big = vec![b'z'; 5 * 1024 * 1024];
    let body = http
        .post(format!("http://{}/upload", m.outbound))
        .body(big)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["body_len"],
        5 * 1024 * 1024
    );

    let frontend_src = source(&m.stack, FRONTEND_ID).await;
    let intruder_src = source(&m.stack, INTRUDER_ID).await;
    let frontend = Material::from_source(&frontend_src).unwrap();
    let intruder = Material::from_source(&intruder_src).unwrap();

    // Direct control: the frontend identity from this process is allowed.
    let (r, _) = direct(
        frontend.client_config(BACKEND_ID, stats(), "t").unwrap(),
        m.inbound,
        "",
    )
    .await;
    assert_eq!(peer_ids(&r.unwrap()), vec![FRONTEND_ID.to_string()]);

    // Refused: another SPIFFE ID of the same trust domain.
    let (r, _) = direct(
        intruder.client_config(BACKEND_ID, stats(), "t").unwrap(),
        m.inbound,
        "",
    )
    .await;
    assert!(r.is_err(), "intruder got through: {r:?}");

    // Refused: a client from another trust domain with its own CA.
    let (r, _) = direct(foreign_client(&frontend), m.inbound, "").await;
    assert!(r.is_err(), "foreign trust domain got through: {r:?}");

    // Refused: no client certificate at all.
    let no_cert = rustls::ClientConfig::builder_with_provider(zt_sidecar::mtls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(zt_sidecar::mtls::SpiffeServerVerifier::new(
            frontend.roots.clone(),
            BACKEND_ID,
            stats(),
            "t",
        )))
        .with_no_client_auth();
    let (r, _) = direct(no_cert, m.inbound, "").await;
    assert!(r.is_err(), "client without certificate got through: {r:?}");

    // Each refusal is logged with the presented ID and a reason, and counted.
    let log = eventually(
        Duration::from_secs(5),
        "refusals in the backend sidecar log",
        || {
            let log = m.backend.log();
            (log.contains(INTRUDER_ID)
                && log.contains("no client certificate")
                && log.contains("untrusted certificate"))
            .then_some(log)
        },
    );
    assert!(
        log.contains("SPIFFE ID not in the allow-list"),
        "{}",
        tail(&log, 20)
    );
    let status = m.backend.status().unwrap();
    let inbound = &status["mtls"]["inbound"][0];
    assert!(inbound["refused"].as_u64().unwrap() >= 3, "{inbound}");
    assert!(inbound["accepted"].as_u64().unwrap() >= 2, "{inbound}");
    let metrics = m.backend.admin_get("/metrics").unwrap().1;
    assert!(
        metrics.contains("zt_mtls_peers_refused_total{direction=\"inbound\",listener=\"0\"}"),
        "{metrics}"
    );

    // Outbound fails closed when the upstream presents the wrong SPIFFE ID.
    let resp = http
        .get(format!("http://{}/pinned", m.outbound_wrong_id))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(text.contains("upstream_unavailable"), "{text}");
    let flog = m.frontend.log();
    assert!(
        flog.contains("server SPIFFE ID is not the expected one"),
        "{}",
        tail(&flog, 20)
    );
}

/// A client with a certificate from a CA outside our trust bundle, claiming
/// a SPIFFE ID of another trust domain (and verifying the server properly).
fn foreign_client(ours: &Material) -> rustls::ClientConfig {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let _ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf_params.subject_alt_names = vec![rcgen::SanType::URI(
        "spiffe://evil.local/ns/99-apps/sa/frontend"
            .try_into()
            .unwrap(),
    )];
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    rustls::ClientConfig::builder_with_provider(zt_sidecar::mtls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(zt_sidecar::mtls::SpiffeServerVerifier::new(
            ours.roots.clone(),
            BACKEND_ID,
            stats(),
            "t",
        )))
        .with_client_auth_cert(
            vec![leaf.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_old_connections_and_new_handshakes_use_the_new_svid() {
    // SVIDs live 16 s; the agent rotates them at half-life.
    let m = mesh(Duration::from_secs(16)).await;
    let keepalive = keepalive_client();
    let frontend_src = source(&m.stack, FRONTEND_ID).await;
    let mut serials = BTreeSet::new();
    let mut failures = Vec::new();
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(40) {
        n += 1;
        // The long-lived keep-alive connection (app → outbound → inbound).
        match keepalive
            .get(format!("http://{}/keepalive/{n}", m.outbound))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {}
            other => failures.push(format!("keep-alive request {n}: {other:?}")),
        }
        // A brand-new connection each time, through the sidecars…
        let fresh = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        match fresh
            .get(format!("http://{}/fresh/{n}", m.outbound))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => {}
            other => failures.push(format!("new connection {n}: {other:?}")),
        }
        // …and a direct handshake that records which certificate the backend presents.
        let material = Material::from_source(&frontend_src).unwrap();
        let (r, serial) = direct(
            material.client_config(BACKEND_ID, stats(), "t").unwrap(),
            m.inbound,
            "",
        )
        .await;
        if let Err(e) = r {
            failures.push(format!("direct {n}: {e}"));
        }
        if let Some(s) = serial {
            serials.insert(s);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(
        failures.is_empty(),
        "requests failed across rotations: {failures:#?}"
    );
    let status = m.backend.status().unwrap();
    let rotations = status["svid"]["rotations"].as_u64().unwrap();
    assert!(
        rotations >= 2,
        "expected ≥ 2 SVID rotations in 40 s, status {status}"
    );
    assert!(
        serials.len() >= 3,
        "new handshakes must present the new certificates; serials seen: {serials:?}"
    );
    // A new handshake presents the SVID the sidecar reports as current (read
    // before and after, to step around a rotation in between).
    let mut checked = false;
    for _ in 0..5 {
        let s1 = m.backend.status().unwrap()["svid"]["serial"].clone();
        let material = Material::from_source(&frontend_src).unwrap();
        let (r, presented) = direct(
            material.client_config(BACKEND_ID, stats(), "t").unwrap(),
            m.inbound,
            "",
        )
        .await;
        let s2 = m.backend.status().unwrap()["svid"]["serial"].clone();
        if s1 == s2 {
            assert!(r.is_ok(), "{r:?}");
            assert_eq!(
                presented.as_deref(),
                s1.as_str(),
                "the current SVID is the one presented"
            );
            checked = true;
            break;
        }
    }
    assert!(checked, "could not observe a stable SVID");
    // The optional PEM files follow the rotations: the certificate on disk is the current SVID.
    let svid_dir = m._dir.path().join("svid");
    let on_disk = || {
        let pem = std::fs::read(svid_dir.join("svid.pem")).unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let serial = p
            .parse_x509()
            .unwrap()
            .raw_serial_as_string()
            .replace(':', "");
        serial
    };
    let mut same = false;
    for _ in 0..10 {
        let current = m.backend.status().unwrap()["svid"]["serial"].clone();
        if on_disk() == current.as_str().unwrap() {
            same = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(same, "svid.pem is not the current SVID");
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(svid_dir.join("svid_key.pem"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(key_mode, 0o400);
    assert!(std::fs::read_to_string(svid_dir.join("bundle.pem"))
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    // The keep-alive connection really was one connection the whole time.
    let inbound = &status["mtls"]["inbound"][0];
    assert!(
        inbound["active_connections"].as_u64().unwrap() >= 1,
        "{inbound}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_tls_port_is_refused_without_hurting_others() {
    let m = mesh(Duration::from_secs(3600)).await;
    let http = reqwest::Client::new();
    let before = m.backend.status().unwrap()["mtls"]["inbound"][0]["handshake_failures"]
        .as_u64()
        .unwrap();

    // Plain HTTP to the TLS port.
    let mut plain = TcpStream::connect(m.inbound).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf))
        .await
        .expect("closed promptly");
    assert!(
        !String::from_utf8_lossy(&buf).contains("200"),
        "plain HTTP must not get through"
    );

    // Slowloris: connect and dribble a ClientHello byte by byte, never finishing.
    let slow = tokio::spawn({
        let to = m.inbound;
        async move {
            let mut s = TcpStream::connect(to).await.unwrap();
            let started = Instant::now();
            for b in [0x16u8, 0x03, 0x01, 0x00] {
                if s.write_all(&[b]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(700)).await;
            }
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            started.elapsed()
        }
    });

    // Meanwhile, normal traffic flows.
    for i in 0..10 {
        let r = http
            .get(format!("http://{}/during/{i}", m.outbound))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let held = slow.await.unwrap();
    assert!(
        held < Duration::from_secs(6),
        "slow client held the connection for {held:?} (handshake timeout is 2 s)"
    );

    // A 1 MiB header through the frontend sidecar: refused by the backend
    // sidecar (431 on a new connection; on a reused one the connection is
    // closed instead), not forwarded; the next request works.
    let huge = "a".repeat(1024 * 1024);
    let r = http
        .get(format!("http://{}/huge", m.outbound))
        .header("x-huge", huge)
        .send()
        .await;
    // A closed connection (Err) is also a refusal.
    if let Ok(resp) = r {
        assert!(
            resp.status().is_client_error(),
            "1 MiB header got {}",
            resp.status()
        );
    }
    let r = http
        .get(format!("http://{}/after", m.outbound))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let after = m.backend.status().unwrap()["mtls"]["inbound"][0]["handshake_failures"]
        .as_u64()
        .unwrap();
    assert!(
        after >= before + 2,
        "plain HTTP and slowloris count as handshake failures ({before} → {after})"
    );
}

/// The inbound's HTTP side with apps and clients that are not the easy
/// case: an app that closes its connection after each response, pipelined
/// requests, a large response body, and an app that is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_handles_closing_apps_pipelining_large_responses_and_no_app() {
    let m = mesh(Duration::from_secs(3600)).await;
    let keepalive = keepalive_client();

    // The app closes after each answer: its `Connection: close` and its
    // close reach the client through both sidecars (one connection end to
    // end), and the client's next request gets through on a new one.
    for i in 0..3 {
        let body = get_text(&keepalive, format!("http://{}/close/{i}", m.outbound)).await;
        assert_eq!(peer_ids(&body), vec![FRONTEND_ID.to_string()], "{body}");
    }
    let body = get_text(&keepalive, format!("http://{}/after-close", m.outbound)).await;
    assert_eq!(peer_ids(&body), vec![FRONTEND_ID.to_string()], "{body}");

    // Two pipelined requests on one connection: two answers, in order,
    // each with the verified ID.
    let mut tcp = TcpStream::connect(m.outbound).await.unwrap();
    tcp.write_all(
        b"GET /pipelined/1 HTTP/1.1\r\nHost: up\r\n\r\nGET /pipelined/2 HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .expect("both pipelined answers within 10 s")
        .unwrap();
    let raw = String::from_utf8_lossy(&raw);
    assert_eq!(raw.matches("HTTP/1.1 200 OK").count(), 2, "{raw}");
    let (first, second) = (
        raw.find("/pipelined/1").expect("first answer"),
        raw.find("/pipelined/2").expect("second answer"),
    );
    assert!(first < second, "answers out of order: {raw}");
    assert_eq!(raw.matches(FRONTEND_ID).count(), 2, "{raw}");

    // A large response body streams back through both hops, whole.
    let big = keepalive
        .get(format!("http://{}/big", m.outbound))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 200);
    let big = big.bytes().await.unwrap();
    assert_eq!(big.len(), BIG_RESPONSE);
    assert!(big.iter().all(|b| *b == b'y'));
    let body = get_text(&keepalive, format!("http://{}/after-big", m.outbound)).await;
    assert_eq!(peer_ids(&body), vec![FRONTEND_ID.to_string()], "{body}");

    // The app is not there: the inbound sidecar answers 502 with its JSON
    // error, and keeps serving.
    let frontend_src = source(&m.stack, FRONTEND_ID).await;
    let frontend = Material::from_source(&frontend_src).unwrap();
    let (r, _) = direct(
        frontend.client_config(BACKEND_ID, stats(), "t").unwrap(),
        m.inbound_no_app,
        "",
    )
    .await;
    let answer = r.expect_err("no app, no 200");
    assert!(answer.contains("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("upstream_unavailable"), "{answer}");
    assert!(
        answer.contains("the application is not reachable"),
        "{answer}"
    );
    let (r, _) = direct(
        frontend.client_config(BACKEND_ID, stats(), "t").unwrap(),
        m.inbound,
        "",
    )
    .await;
    assert_eq!(peer_ids(&r.unwrap()), vec![FRONTEND_ID.to_string()]);
}

/// One mTLS connection to `to` as the frontend.
async fn mtls_conn(m: &Mesh, to: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let src = source(&m.stack, FRONTEND_ID).await;
    let cfg = Material::from_source(&src)
        .unwrap()
        .client_config(BACKEND_ID, stats(), "t")
        .unwrap();
    let tcp = TcpStream::connect(to).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

/// Sends `GET path` and reads one answer (head and `content-length` body):
/// the head and the body, or what came before the connection closed.
async fn exchange(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    path: &str,
) -> Result<(String, String), String> {
    tls.write_all(format!("GET {path} HTTP/1.1\r\nHost: app\r\n\r\n").as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                    return Ok((head, body));
                }
            }
            let mut chunk = [0u8; 4096];
            match tls.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return Err(format!("closed after {:?}", String::from_utf8_lossy(&buf))),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}

/// The app closing its connections is not the client's problem when it
/// need not be: an idle close is absorbed (the next request opens another
/// app connection, on the same client connection), a request the app drops
/// unanswered gets a 502, and an answer cut short closes the client's
/// connection with what came (no 502 glued onto half a body).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_closing_its_connections_costs_the_client_only_what_it_must() {
    use std::sync::atomic::Ordering::SeqCst;
    let m = mesh(Duration::from_secs(3600)).await;
    let mut tls = mtls_conn(&m, m.inbound_raw).await;
    for i in 0..3 {
        let path = format!("/quiet/{i}");
        let (head, body) = exchange(&mut tls, &path).await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, path);
        // The app's close reaches the sidecar before the next request (a
        // request crossing the close on the wire is the one case that gets
        // a 502: nothing can tell it was not being answered).
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, body) = exchange(&mut tls, "/kept").await.unwrap();
    assert_eq!(body, "/kept");
    let (_, body) = exchange(&mut tls, "/kept-again").await.unwrap();
    assert_eq!(body, "/kept-again");
    assert_eq!(
        m.raw_connections.load(SeqCst),
        4,
        "one app connection per quiet close, plus the kept one"
    );

    // The app drops a request: 502, then the client's connection closes.
    let dropped = exchange(&mut tls, "/drop").await.unwrap();
    assert!(dropped.0.starts_with("HTTP/1.1 502"), "{dropped:?}");
    assert!(
        dropped.0.to_ascii_lowercase().contains("connection: close"),
        "{dropped:?}"
    );
    assert!(dropped.1.contains("without answering"), "{dropped:?}");
    assert!(dropped.1.contains("upstream_unavailable"), "{dropped:?}");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));

    // An answer cut short: what came, then the close.
    let mut tls = mtls_conn(&m, m.inbound_raw).await;
    let half = exchange(&mut tls, "/half").await.unwrap_err();
    assert!(
        half.contains("content-length: 100") && half.ends_with("0123456789\""),
        "{half}"
    );
    assert!(!half.contains("502"), "{half}");

    // An answer that says the app closes: the client's connection ends with
    // it, as the client was told (no new app connection behind its back).
    let mut tls = mtls_conn(&m, m.inbound_raw).await;
    let before = m.raw_connections.load(SeqCst);
    let (head, body) = exchange(&mut tls, "/said-close").await.unwrap();
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert_eq!(body, "bye!");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    assert_eq!(m.raw_connections.load(SeqCst), before + 1);

    // An app slower than the 10 s a client has for its next request head:
    // waiting for an answer is not idling, the answer arrives.
    let mut tls = mtls_conn(&m, m.inbound_raw).await;
    let (head, body) = tokio::time::timeout(Duration::from_secs(20), exchange_slow(&mut tls))
        .await
        .expect("the slow answer within 20 s")
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, "/slow");

    // A client that takes none of a large answer is not waiting for it: after
    // the head timeout without progress its connection is closed (what it
    // reads afterwards is what the buffers held, not the whole answer).
    let mut tls = mtls_conn(&m, m.inbound_raw).await;
    tls.write_all(b"GET /huge HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(22)).await;
    let mut got = 0usize;
    let mut chunk = vec![0u8; 1 << 16];
    let drained = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(n) = tls.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            got += n;
        }
    })
    .await;
    assert!(drained.is_ok(), "the stalled connection was not closed");
    assert!(
        got < HUGE,
        "the whole answer came through a stalled connection"
    );
}

/// `exchange` of `/slow`, without the 10 s read limit of `exchange`.
async fn exchange_slow(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
) -> Result<(String, String), String> {
    tls.write_all(b"GET /slow HTTP/1.1\r\nHost: app\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        match tls.read(&mut chunk).await {
            Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return Err(format!("closed after {:?}", String::from_utf8_lossy(&buf))),
        }
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            if body.len() >= "/slow".len() {
                return Ok((head.to_string(), body.to_string()));
            }
        }
    }
}

/// Regression (issue 16, fault suite): with the backend's sidecar killed and
/// started again a second later, every request the frontend made meanwhile
/// got `502 upstream_unavailable` at once — the outbound connection to the
/// upstream was refused and the refusal went straight back. Nothing has been
/// sent upstream when a connection is refused, so it is retried (with
/// backoff) within `handshake_timeout`: an upstream back within that time
/// costs latency, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_sidecar_restarted_within_the_handshake_timeout_costs_no_request() {
    let mut m = mesh(Duration::from_secs(3600)).await;
    let http = reqwest::Client::new();
    let ok = http
        .get(format!("http://{}/before", m.outbound))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    m.backend.kill();
    let killed = Instant::now();
    // New connections only: this is about connecting while the upstream is
    // down, not about a kept-alive connection the kill cut.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut during = Vec::new();
    for i in 0..3 {
        let (http, url) = (
            fresh.clone(),
            format!("http://{}/during-restart/{i}", m.outbound),
        );
        during.push(tokio::spawn(async move {
            let r = http.get(url).send().await.map_err(|e| e.to_string())?;
            Ok::<_, String>(r.status().as_u16())
        }));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000).saturating_sub(killed.elapsed())).await;
    tokio::task::block_in_place(|| {
        m.backend.restart().unwrap();
        m.backend.wait_ready(Duration::from_secs(30)).unwrap();
    });
    for (i, d) in during.into_iter().enumerate() {
        assert_eq!(
            d.await.unwrap(),
            Ok(200),
            "request {i}, sent while the upstream sidecar was down"
        );
    }
}
