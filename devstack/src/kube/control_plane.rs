//! etcd and kube-apiserver on loopback, started the way kind's kubeadm starts
//! them: the same authorization modes, admission plugins and certificate
//! layout, `--allow-privileged=true`, a service-account issuer and key.

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use base64::Engine;

use super::pki::Pki;
use crate::process::{ProcessGroup, Supervised};
use crate::stack::free_port;
use crate::tools::{repo_root, MissingTool, TOOLS_DIR_ENV};

/// The service CIDR (kind's default); the `kubernetes` Service takes its first address.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The service-account token issuer (kubeadm's default).
pub const SERVICE_ACCOUNT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Admission plugins enabled on top of the API server's defaults, as kubeadm
/// (and so kind) does. The defaults already include NamespaceLifecycle,
/// LimitRanger, ServiceAccount, PodSecurity, MutatingAdmissionWebhook,
/// ValidatingAdmissionWebhook, ValidatingAdmissionPolicy, ResourceQuota and
/// the rest of upstream's recommended set.
pub const EXTRA_ADMISSION_PLUGINS: &str = "NodeRestriction";

/// The Kubernetes binaries `make tools-kube` installs.
#[derive(Debug, Clone)]
pub struct KubeTools {
    /// `etcd`
    pub etcd: PathBuf,
    /// `kube-apiserver`
    pub apiserver: PathBuf,
    /// `kubectl` (the pinned client, same version as the server)
    pub kubectl: PathBuf,
    /// The folder holding them (also where `helm` lives).
    pub bin_dir: PathBuf,
}

impl KubeTools {
    /// Finds the binaries in `$ZT_TOOLS_DIR` (default `<repo>/.tools/bin`).
    pub fn locate() -> Result<Self, MissingTool> {
        let dir = kube_tools_dir();
        Ok(Self {
            etcd: kube_tool(dir.join("etcd"), "etcd")?,
            apiserver: kube_tool(dir.join("kube-apiserver"), "kube-apiserver")?,
            kubectl: kube_tool(dir.join("kubectl"), "kubectl (pinned)")?,
            bin_dir: dir,
        })
    }
}

/// Where `make tools-kube` puts its binaries: `$ZT_TOOLS_DIR`, default
/// `<repo>/.tools/bin`.
pub(crate) fn kube_tools_dir() -> PathBuf {
    std::env::var_os(TOOLS_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/bin"))
}

/// `path` if it is a file, else the error naming `component` and `make tools-kube`.
pub(crate) fn kube_tool(path: PathBuf, component: &'static str) -> Result<PathBuf, MissingTool> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(MissingTool {
            component,
            expected: path,
            install: "make tools-kube",
        })
    }
}

/// How to start the control plane.
#[derive(Debug, Clone)]
pub struct ControlPlaneOptions {
    /// Folder for certificates, etcd's data, the kubeconfig and logs.
    pub dir: PathBuf,
    /// The address kube-apiserver listens on and advertises.
    pub address: IpAddr,
    /// fsync in etcd (off in tests for speed).
    pub durable: bool,
}

impl ControlPlaneOptions {
    /// Loopback, no fsync: what tests want.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            durable: false,
        }
    }
}

/// A running etcd + kube-apiserver with an admin kubeconfig.
#[derive(Debug)]
pub struct ControlPlane {
    processes: ProcessGroup,
    server: String,
    pki: Pki,
    kubeconfig: PathBuf,
    dir: PathBuf,
    tools: KubeTools,
}

impl ControlPlane {
    /// Starts etcd, then kube-apiserver, and returns once `/readyz` answers
    /// `ok` (every post-start hook done, RBAC bootstrap roles in place).
    pub fn start(tools: &KubeTools, opts: &ControlPlaneOptions) -> anyhow::Result<Self> {
        let dir = &opts.dir;
        std::fs::create_dir_all(dir.join("logs"))?;
        let pki = Pki::generate(
            &dir.join("pki"),
            &[
                opts.address,
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                first_service_ip(),
            ],
            &[],
        )
        .context("generating the control plane's certificates")?;

        let (client_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = Command::new(&tools.etcd);
        etcd.arg("--name=devstack")
            .arg(format!("--data-dir={}", dir.join("etcd").display()))
            .arg(format!("--listen-client-urls={client_url}"))
            .arg(format!("--advertise-client-urls={client_url}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=devstack={peer_url}"))
            .arg("--log-level=warn");
        if !opts.durable {
            etcd.arg("--unsafe-no-fsync");
        }
        let mut etcd = Supervised::spawn("etcd", etcd, &dir.join("logs/etcd.log"))?;
        let http = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .build()
            .new_agent();
        etcd.wait_ready(Duration::from_secs(30), || {
            let body = http
                .get(format!("{client_url}/health"))
                .call()
                .map_err(|e| e.to_string())?
                .body_mut()
                .read_to_string()
                .map_err(|e| e.to_string())?;
            body.contains("\"health\":\"true\"")
                .then_some(())
                .ok_or(body)
        })?;

        let server = format!("https://{}", socket(opts.address, api_port));
        let mut api = Command::new(&tools.apiserver);
        let p = |path: PathBuf| path.display().to_string();
        api.arg(format!("--advertise-address={}", opts.address))
            .arg(format!("--bind-address={}", opts.address))
            .arg(format!("--secure-port={api_port}"))
            .arg("--allow-privileged=true")
            .arg("--authorization-mode=Node,RBAC")
            .arg(format!(
                "--enable-admission-plugins={EXTRA_ADMISSION_PLUGINS}"
            ))
            .arg("--enable-bootstrap-token-auth=true")
            .arg(format!("--etcd-servers={client_url}"))
            .arg(format!("--client-ca-file={}", p(pki.ca_cert())))
            .arg(format!("--tls-cert-file={}", p(pki.cert("apiserver"))))
            .arg(format!(
                "--tls-private-key-file={}",
                p(pki.key("apiserver"))
            ))
            .arg(format!(
                "--kubelet-client-certificate={}",
                p(pki.cert("apiserver-kubelet-client"))
            ))
            .arg(format!(
                "--kubelet-client-key={}",
                p(pki.key("apiserver-kubelet-client"))
            ))
            .arg("--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname")
            .arg(format!(
                "--proxy-client-cert-file={}",
                p(pki.cert("front-proxy-client"))
            ))
            .arg(format!(
                "--proxy-client-key-file={}",
                p(pki.key("front-proxy-client"))
            ))
            .arg(format!(
                "--requestheader-client-ca-file={}",
                p(pki.front_proxy_ca())
            ))
            .arg("--requestheader-allowed-names=front-proxy-client")
            .arg("--requestheader-extra-headers-prefix=X-Remote-Extra-")
            .arg("--requestheader-group-headers=X-Remote-Group")
            .arg("--requestheader-username-headers=X-Remote-User")
            .arg(format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"))
            .arg(format!(
                "--service-account-key-file={}",
                p(pki.service_account_pub())
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                p(pki.service_account_key())
            ))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .arg("--profiling=false")
            .arg("-v=1");
        let mut api =
            Supervised::spawn("kube-apiserver", api, &dir.join("logs/kube-apiserver.log"))?;
        let ca = ureq::tls::Certificate::from_pem(&std::fs::read(pki.ca_cert())?)?.to_owned();
        let https = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(2)))
            .http_status_as_error(false)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
                    .build(),
            )
            .build()
            .new_agent();
        // /readyz is open to anonymous callers (system:public-info-viewer).
        api.wait_ready(Duration::from_secs(120), || {
            let mut resp = https
                .get(format!("{server}/readyz"))
                .call()
                .map_err(|e| e.to_string())?;
            let status = resp.status();
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            (status == 200 && body.trim() == "ok")
                .then_some(())
                .ok_or_else(|| format!("/readyz: {status} {}", body.trim()))
        })?;

        let kubeconfig = dir.join("kubeconfig");
        write_kubeconfig(&kubeconfig, &server, &pki, "admin")?;
        Ok(Self {
            processes: ProcessGroup::of(vec![etcd, api]),
            server,
            pki,
            kubeconfig,
            dir: dir.clone(),
            tools: tools.clone(),
        })
    }

    /// `https://<address>:<port>` of kube-apiserver.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// An admin (`system:masters`) kubeconfig for kubectl, helm and tests.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The certificates (the cluster CA signs more client certificates).
    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The control plane's folder (logs under `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The binaries in use.
    pub fn tools(&self) -> &KubeTools {
        &self.tools
    }

    /// A `kube::Client` with the admin credentials. Make one per tokio
    /// runtime (per test): a client lives on the runtime that built it.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&self.kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// `kubectl --kubeconfig <admin>` with the pinned kubectl.
    pub fn kubectl(&self) -> Command {
        let mut cmd = Command::new(&self.tools.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd
    }

    /// Waits until the CustomResourceDefinition `crd` (e.g.
    /// `ciliumnetworkpolicies.cilium.io`) is Established, so resources of its
    /// kind can be created. Not `kubectl wait --for=condition=established`:
    /// that fails at once (".status.conditions accessor error: <nil>") while
    /// a CRD just applied has no status yet.
    ///
    /// # Panics
    /// After 60 s (stretched by `ZT_TEST_PATIENCE`), naming the CRD.
    pub fn wait_crd_established(&self, crd: &str) {
        let what = format!("CRD {crd} to be Established (kubectl get crd/{crd})");
        crate::eventually::eventually(Duration::from_secs(60), &what, || {
            let out = self
                .kubectl()
                .args([
                    "get",
                    &format!("crd/{crd}"),
                    "-o",
                    r#"jsonpath={.status.conditions[?(@.type=="Established")].status}"#,
                ])
                .output()
                .expect("run kubectl");
            (out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "True")
                .then_some(())
        });
    }

    /// Writes (mode 0600) a kubeconfig at `path` that authenticates as the
    /// ServiceAccount `namespace/name` with a 2-hour token from the
    /// TokenRequest API: a process using it has exactly that account's RBAC.
    pub fn service_account_kubeconfig(
        &self,
        namespace: &str,
        name: &str,
        path: &Path,
    ) -> anyhow::Result<()> {
        let out = self
            .kubectl()
            .args(["-n", namespace, "create", "token", name, "--duration=2h"])
            .output()
            .context("running kubectl create token")?;
        anyhow::ensure!(
            out.status.success(),
            "kubectl -n {namespace} create token {name}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let token = String::from_utf8(out.stdout).context("token is not UTF-8")?;
        let ca = std::fs::read(self.pki.ca_cert()).context("reading the cluster CA")?;
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "devstack", "cluster": {
                "server": self.server(),
                "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(ca),
            }}],
            "users": [{"name": name, "user": {"token": token.trim()}}],
            "contexts": [{"name": "devstack", "context": {"cluster": "devstack", "user": name, "namespace": namespace}}],
            "current-context": "devstack",
        });
        crate::openbao::write_private(path, serde_json::to_string_pretty(&config)?.as_bytes())
    }

    /// Each process's name and last log lines (for failure messages).
    pub fn log_tails(&self, lines: usize) -> String {
        self.processes.log_tails(lines)
    }

    /// Stops kube-apiserver, then etcd.
    pub fn stop(&self) {
        self.processes.stop(Duration::from_secs(5));
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `10.96.0.1`: the `kubernetes` Service's ClusterIP, a name in the serving certificate.
fn first_service_ip() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 96, 0, 1))
}

fn socket(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

/// Writes a kubeconfig for `server` with the client pair `<user>.crt/.key`,
/// everything embedded (so the file works wherever it is copied).
pub fn write_kubeconfig(path: &Path, server: &str, pki: &Pki, user: &str) -> anyhow::Result<()> {
    let b64 = |p: PathBuf| -> anyhow::Result<String> {
        Ok(base64::engine::general_purpose::STANDARD
            .encode(std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?))
    };
    // JSON is YAML: kubectl, helm and the kube crate all read it.
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "devstack", "cluster": {
            "server": server,
            "certificate-authority-data": b64(pki.ca_cert())?,
        }}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(pki.cert(user))?,
            "client-key-data": b64(pki.key(user))?,
        }}],
        "contexts": [{"name": "devstack", "context": {"cluster": "devstack", "user": user}}],
        "current-context": "devstack",
    });
    crate::openbao::write_private(path, serde_json::to_string_pretty(&config)?.as_bytes())
}
