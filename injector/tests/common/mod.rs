//! Test harness: the real kube-apiserver of `devstack::kube`, the chart
//! rendered by the pinned helm and applied server-side, and zt-injector run
//! as a process under the chart's own ServiceAccount and RBAC.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use devstack::kube::ControlPlane;
use devstack::process::Supervised;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ObjectMeta, PostParams};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shared control plane of this test binary (fails with the install hint).
pub fn control_plane() -> &'static ControlPlane {
    devstack::kube::shared().unwrap_or_else(|e| panic!("{e:#}"))
}

/// The pinned helm next to the pinned kubectl (`make tools`).
pub fn helm() -> PathBuf {
    let tools = devstack::kube::KubeTools::locate().unwrap_or_else(|e| panic!("{e}"));
    let helm = tools.bin_dir.join("helm");
    assert!(
        helm.is_file(),
        "helm is not installed at {}: run `make tools`",
        helm.display()
    );
    helm
}

/// What a command printed.
#[derive(Debug)]
pub struct Run {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Run {
    pub fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Lines where kubectl passed on a warning from the server.
    pub fn warnings(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .chain(self.stderr.lines())
            .filter(|l| l.trim_start().starts_with("Warning:"))
            .collect()
    }

    /// Panics unless it succeeded without a single warning.
    pub fn assert_clean(&self, what: &str) {
        assert_eq!(
            self.code, 0,
            "{what} failed:\n{}\n{}",
            self.stdout, self.stderr
        );
        assert!(
            self.warnings().is_empty(),
            "{what}: the API server warned (every warning is a defect):\n{}",
            self.warnings().join("\n")
        );
    }
}

/// `kubectl <args>` with the admin kubeconfig.
pub fn kubectl(cp: &ControlPlane, args: &[&str]) -> Run {
    Run::from(cp.kubectl().args(args).output().expect("run kubectl"))
}

/// `kubectl <args> -f -` with `stdin` as the manifest.
pub fn kubectl_stdin(cp: &ControlPlane, args: &[&str], stdin: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("manifest.yaml");
    std::fs::write(&file, stdin).unwrap();
    let mut all: Vec<&str> = args.to_vec();
    let f = file.display().to_string();
    all.extend(["-f", &f]);
    kubectl(cp, &all)
}

/// `helm template <release> deploy/charts/zt-injector --namespace <ns>` with `--set`s.
pub fn helm_template(release: &str, namespace: &str, sets: &[String]) -> Run {
    let mut cmd = Command::new(helm());
    cmd.args(["template", release])
        .arg(repo().join("deploy/charts/zt-injector"))
        .args(["--namespace", namespace, "--kube-version", "1.36.3"]);
    for s in sets {
        cmd.args(["--set", s]);
    }
    Run::from(cmd.output().expect("run helm"))
}

/// The annotations of a backend-like workload: every kind of setting (the
/// same as deploy/k8s/apps/backend.yaml's, which tests/equality.rs reads).
pub const BACKEND: &[(&str, &str)] = &[
    ("inject", "true"),
    ("openbao-role", "backend"),
    ("database-db", "backend-role"),
    (
        "database-db-migrator",
        "backend-migrator, rotate_before=2m, revoke_grace=10s, releasable=true",
    ),
    ("kv-jwt-signing-key", "backend/jwt-signing-key"),
    (
        "proxy-allow",
        "GET,PUT,POST,DELETE secret/data/github/users/*; GET,DELETE secret/metadata/github/users/*",
    ),
    (
        "mtls-inbound-8443",
        "8000, allow=spiffe://demo.local/ns/99-apps/sa/frontend",
    ),
    ("secrets-group", "10001"),
];

/// A file of injector/tests/fixtures.
pub fn fixture(name: &str) -> String {
    let path = repo().join("injector/tests/fixtures").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The pod template annotations of the Deployment `name` in `file`.
pub fn template_annotations(file: &str, name: &str) -> BTreeMap<String, String> {
    let d = deploy_checks::manifest::load(&repo().join(file))
        .unwrap()
        .into_iter()
        .find(|m| m.kind() == "Deployment" && m.name() == name)
        .unwrap_or_else(|| panic!("{file} has no Deployment {name}"));
    serde_json::from_value(d.value["spec"]["template"]["metadata"]["annotations"].clone())
        .unwrap_or_else(|e| panic!("{file}: Deployment {name}: annotations: {e}"))
}

/// The rendered chart's documents, as JSON values.
pub fn documents(yaml: &str) -> Vec<Value> {
    deploy_checks::manifest::parse(yaml, "helm template")
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|m| m.value)
        .collect()
}

/// A namespace with labels (Pod Security "restricted" unless `labels` says otherwise).
pub async fn namespace(client: &kube::Client, name: &str, labels: &[(&str, &str)]) {
    let mut l: BTreeMap<String, String> = BTreeMap::from([(
        "pod-security.kubernetes.io/enforce".to_string(),
        "restricted".to_string(),
    )]);
    for (k, v) in labels {
        l.insert(k.to_string(), v.to_string());
    }
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(l),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {
            let patch = serde_json::json!({"metadata": {"labels": ns.metadata.labels}});
            api.patch(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(patch),
            )
            .await
            .unwrap();
        }
        Err(e) => panic!("namespace {name}: {e}"),
    }
    default_service_account(client, name).await;
}

/// No controller-manager here: make the `default` ServiceAccount it would.
pub async fn default_service_account(client: &kube::Client, name: &str) {
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), name);
    let sa = k8s_openapi::api::core::v1::ServiceAccount {
        metadata: ObjectMeta {
            name: Some("default".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match sas.create(&PostParams::default(), &sa).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.is_already_exists() => {}
        Err(e) => panic!("serviceaccount {name}/default: {e}"),
    }
}

/// A kubeconfig that authenticates as the ServiceAccount `namespace/name`
/// (TokenRequest API): the injector then runs with exactly the permissions
/// the chart's RBAC gives it.
pub fn service_account_kubeconfig(
    cp: &ControlPlane,
    namespace: &str,
    name: &str,
    dir: &Path,
) -> PathBuf {
    let path = dir.join(format!("kubeconfig-{name}"));
    cp.service_account_kubeconfig(namespace, name, &path)
        .unwrap_or_else(|e| panic!("{e:#}"));
    path
}

/// One zt-injector process.
pub struct InjectorProcess {
    pub process: Supervised,
    pub https: u16,
    pub health: u16,
    pub name: String,
}

impl InjectorProcess {
    /// Starts `zt-injector run` with `settings` (TOML text), as `POD_NAME`
    /// in `namespace`, authenticating with `kubeconfig`.
    pub fn start(
        name: &str,
        settings: &str,
        namespace: &str,
        kubeconfig: &Path,
        dir: &Path,
        https: u16,
        health: u16,
    ) -> Self {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, settings).unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_zt-injector"));
        cmd.args(["run", "--config"])
            .arg(&config)
            .env("POD_NAME", name)
            .env("POD_NAMESPACE", namespace)
            .env("KUBECONFIG", kubeconfig)
            .env("ZT_LOG", "info,zt_injector=debug");
        let process = Supervised::spawn(name, cmd, &dir.join(format!("{name}.log"))).unwrap();
        Self {
            process,
            https,
            health,
            name: name.into(),
        }
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.process.log_path()).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let url = format!("http://127.0.0.1:{}/readyz", self.health);
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        let health = self.health;
        let r = self.process.wait_ready(timeout, || {
            let mut resp = agent.get(&url).call().map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            (status == 200)
                .then_some(())
                .ok_or_else(|| format!("127.0.0.1:{health}/readyz: {status} {body}"))
        });
        if let Err(e) = r {
            panic!(
                "{} not ready: {e:#}\n--- log ---\n{}",
                self.name,
                self.log()
            );
        }
    }

    /// Stops it (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(10));
    }
}

/// Retries `f` until it returns `Some` (patience from `ZT_TEST_PATIENCE`):
/// devstack's one helper.
#[allow(unused_imports)] // not every test file that includes this module waits
pub use devstack::eventually_async as eventually;

/// The caBundle of every webhook of the configuration (`None` while any is empty).
pub async fn ca_bundle(client: &kube::Client, name: &str) -> Option<Vec<u8>> {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    let config = api.get(name).await.ok()?;
    let bundles: Vec<Vec<u8>> = config
        .webhooks
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.client_config.ca_bundle.map(|b| b.0).unwrap_or_default())
        .collect();
    let first = bundles.first()?.clone();
    (!first.is_empty() && bundles.iter().all(|b| *b == first)).then_some(first)
}

/// Records the certificate a server presents, then judges it with a
/// verifier built from the roots it was given.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ServerCertVerifier>,
    seen: std::sync::Mutex<Option<CertificateDer<'static>>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn verifier(bundle_pem: &[u8]) -> Result<Arc<dyn ServerCertVerifier>, String> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle_pem) {
        roots
            .add(c.map_err(|e| format!("caBundle: {e}"))?)
            .map_err(|e| format!("caBundle: {e}"))?;
    }
    rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .map(|v| v as Arc<dyn ServerCertVerifier>)
    .map_err(|e| e.to_string())
}

/// A fresh TLS handshake with 127.0.0.1:`port`, verified the way the API
/// server verifies it: against `bundle_pem`, for the IP 127.0.0.1. On
/// failure, the certificate that was presented (DER) and why.
pub async fn handshake(port: u16, bundle_pem: &[u8]) -> Result<(), (Option<Vec<u8>>, String)> {
    let inner = verifier(bundle_pem).map_err(|e| (None, e))?;
    let recording = Arc::new(Recording {
        inner,
        seen: Default::default(),
    });
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .dangerous()
    .with_custom_certificate_verifier(recording.clone())
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| (None, format!("connect: {e}")))?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    match tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err((
            recording.seen.lock().unwrap().clone().map(|c| c.to_vec()),
            e.to_string(),
        )),
        Err(_) => Err((None, "handshake timed out".into())),
    }
}

/// Whether the certificate (DER) chains to `bundle_pem` for 127.0.0.1 now.
pub fn trusted_by(cert: &[u8], bundle_pem: &[u8]) -> bool {
    let Ok(v) = verifier(bundle_pem) else {
        return false;
    };
    v.verify_server_cert(
        &CertificateDer::from(cert.to_vec()),
        &[],
        &ServerName::try_from("127.0.0.1").unwrap(),
        &[],
        UnixTime::now(),
    )
    .is_ok()
}

/// A Pod manifest (JSON) with these annotations and one app container
/// that runs as uid 10001 under the "restricted" profile.
pub fn pod_manifest(name: &str, namespace: &str, annotations: &[(&str, &str)]) -> Value {
    let annotations: serde_json::Map<String, Value> = annotations
        .iter()
        .map(|(k, v)| (format!("zt.demo.local/{k}"), Value::String(v.to_string())))
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
        "spec": {
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "app",
                "image": "zt-platform/app-backend:dev",
                "securityContext": {
                    "runAsUser": 10001,
                    "runAsGroup": 10001,
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]},
                },
            }],
        },
    })
}

/// Creates a Pod from `manifest` through the API server (and so the webhook).
pub async fn create_pod(client: &kube::Client, manifest: &Value) -> Result<Pod, kube::Error> {
    let pod: Pod = serde_json::from_value(manifest.clone()).unwrap();
    let ns = pod.metadata.namespace.clone().unwrap();
    Api::<Pod>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &pod)
        .await
}

/// The message of an API error (what kubectl prints after "Error from server").
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}
