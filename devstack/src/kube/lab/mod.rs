//! The lab: a real one-node Kubernetes cluster on this machine — the control
//! plane of [`super::ControlPlane`] plus kube-controller-manager,
//! kube-scheduler, and a node (containerd, runc, a bridge CNI, the kubelet,
//! kube-proxy in iptables mode) with CoreDNS and local-path-provisioner (kind's
//! default StorageClass) as add-ons. Images come from [`super::images`]:
//! nothing is pulled. Needs root.
//!
//! ```text
//!   host netns: etcd, kube-apiserver (10.250.0.1), controller-manager, scheduler
//!   lab netns (see net.rs): containerd ─ shims ─ pods on bridge zt-lab0
//!                           kubelet (node zt-lab, 10.250.0.2), kube-proxy
//!   <tmp>/zt-lab/           every file, mount and socket of the lab
//! ```
//!
//! One lab per machine at a time (a lock file), one per test binary
//! ([`shared`]); a lab left by a crashed run is removed when the next starts.

mod cleanup;
mod net;
mod platform;

pub use platform::platform_images;

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub use net::{CLUSTER_CIDR, HOST_IP, NETNS, NODE_IP, POD_CIDR};

use super::control_plane::{
    kube_tool, kube_tools_dir, write_kubeconfig, ControlPlane, ControlPlaneOptions, KubeTools,
};
use super::images::{self, Image};
use super::pki::NODE_NAME;
use crate::process::{run, ProcessGroup, Supervised};
use crate::stack::free_port;
use crate::tools::{repo_root, MissingTool};
use net::LabNet;

/// The cluster DNS Service's IP (kind's).
pub const DNS_IP: &str = "10.96.0.10";
/// The sandbox image containerd runs each pod's `pause` in.
pub const PAUSE_IMAGE: &str = "registry.k8s.io/pause:3.10";
/// Host paths the lab's workloads create outside the lab folder (the SPIRE
/// agent's socket directory), removed at teardown.
const HOST_PATHS: [&str; 1] = ["/run/spire/agent-sockets"];

/// The binaries of the lab (`make tools-kube`), besides the control plane's.
#[derive(Debug, Clone)]
pub struct LabTools {
    /// etcd, kube-apiserver, kubectl.
    pub kube: KubeTools,
    /// `kubelet`
    pub kubelet: PathBuf,
    /// `kube-controller-manager`
    pub controller_manager: PathBuf,
    /// `kube-scheduler`
    pub scheduler: PathBuf,
    /// `kube-proxy`
    pub proxy: PathBuf,
    /// `coredns` (tools/coredns)
    pub coredns: PathBuf,
    /// `local-path-provisioner`
    pub local_path: PathBuf,
    /// `pause` (the pod sandbox)
    pub pause: PathBuf,
    /// Debian's `containerd`.
    pub containerd: PathBuf,
    /// Debian's `ctr`.
    pub ctr: PathBuf,
}

impl LabTools {
    /// Finds every binary, or names the first one missing with `make tools-kube`.
    pub fn locate() -> Result<Self, MissingTool> {
        let kube = KubeTools::locate()?;
        let dir = kube_tools_dir();
        Ok(Self {
            kubelet: kube_tool(dir.join("kubelet"), "kubelet")?,
            controller_manager: kube_tool(
                dir.join("kube-controller-manager"),
                "kube-controller-manager",
            )?,
            scheduler: kube_tool(dir.join("kube-scheduler"), "kube-scheduler")?,
            proxy: kube_tool(dir.join("kube-proxy"), "kube-proxy")?,
            coredns: kube_tool(dir.join("coredns"), "CoreDNS")?,
            local_path: kube_tool(dir.join("local-path-provisioner"), "local-path-provisioner")?,
            pause: kube_tool(dir.join("pause"), "pause")?,
            containerd: kube_tool(PathBuf::from("/usr/bin/containerd"), "containerd (Debian)")?,
            ctr: kube_tool(PathBuf::from("/usr/bin/ctr"), "ctr (Debian's containerd)")?,
            kube,
        })
    }
}

/// A running lab cluster.
#[derive(Debug)]
pub struct Lab {
    cp: ControlPlane,
    net: LabNet,
    processes: ProcessGroup,
    dir: PathBuf,
    tools: LabTools,
    _lock: nix::fcntl::Flock<File>,
}

/// A running `kubectl port-forward`, stopped when dropped.
#[derive(Debug)]
pub struct PortForward {
    _process: Supervised,
    /// The port on 127.0.0.1 that leads into the pod.
    pub local_port: u16,
}

/// The lab's folder: fixed, so a crashed run's leftovers are found.
pub fn lab_dir() -> PathBuf {
    std::env::temp_dir().join("zt-lab")
}

impl Lab {
    /// Boots the cluster and returns once the node is Ready and CoreDNS and
    /// the StorageClass serve. Waits for another lab on this machine to end.
    pub fn start() -> anyhow::Result<Self> {
        if !nix::unistd::Uid::effective().is_root() {
            bail!("the lab cluster needs root (network namespace, containerd, kubelet); run the tests as root");
        }
        let tools = LabTools::locate()?;
        let lock = File::create(std::env::temp_dir().join("zt-lab.lock"))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("locking the lab: {e}"))?;
        let dir = lab_dir();
        let host_paths: Vec<&Path> = HOST_PATHS.iter().map(Path::new).collect();
        if dir.exists() {
            eprintln!(
                "lab: removing what an earlier run left in {}",
                dir.display()
            );
            cleanup::teardown(&dir, None, &host_paths);
        }
        for sub in [
            "logs",
            "images",
            "cni/net.d",
            "cni/ipam",
            "kubelet",
            "local-path",
            "containerd",
        ] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        cleanup::record_sysctls(&dir)?;
        let net = LabNet::create()?;
        let cp = ControlPlane::start(
            &tools.kube,
            &ControlPlaneOptions {
                dir: dir.join("control-plane"),
                address: IpAddr::V4(HOST_IP),
                durable: false,
            },
        )?;
        let lab = Self {
            cp,
            net,
            processes: ProcessGroup::default(),
            dir,
            tools,
            _lock: lock,
        };
        lab.boot().map_err(|e| {
            let tails = lab.log_tails(25);
            e.context(format!("the lab did not come up; logs:\n{tails}"))
        })?;
        Ok(lab)
    }

    fn spawn(&self, name: &str, mut cmd: Command, in_lab: bool) -> anyhow::Result<()> {
        if in_lab {
            self.net.enter(&mut cmd)?;
        }
        let p = Supervised::spawn(
            name,
            cmd,
            &self.dir.join("logs").join(format!("{name}.log")),
        )?;
        self.processes.push(p);
        Ok(())
    }

    fn kubeconfig_for(&self, user: &str) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("{user}.kubeconfig"));
        write_kubeconfig(&path, self.cp.server(), self.cp.pki(), user)?;
        Ok(path)
    }

    fn boot(&self) -> anyhow::Result<()> {
        let pki = self.cp.pki();
        let p = |path: PathBuf| path.display().to_string();

        // containerd (in the lab netns: its CNI plugins wire pods to the bridge there).
        let socket = self.containerd_socket();
        let config = self.dir.join("containerd/config.toml");
        std::fs::write(&config, containerd_config(&self.dir))?;
        std::fs::write(
            self.dir.join("cni/net.d/10-zt-lab.conflist"),
            cni_config(&self.dir),
        )?;
        let mut cmd = Command::new(&self.tools.containerd);
        cmd.arg("--config").arg(&config);
        self.spawn("containerd", cmd, true)?;
        wait_for("containerd's socket", Duration::from_secs(30), || {
            socket.exists().then_some(()).ok_or("no socket yet".into())
        })?;
        let mut pause = Image::new(PAUSE_IMAGE);
        pause
            .file(&self.tools.pause, "/pause", 0o755)
            .entrypoint(&["/pause"])
            .user("65535:65535");
        self.import(&[pause])?;

        // The controllers, in the host netns (they only talk to the API server).
        let kcm_config = self.kubeconfig_for("controller-manager")?;
        let mut kcm = Command::new(&self.tools.controller_manager);
        kcm.arg(format!("--kubeconfig={}", kcm_config.display()))
            .arg(format!(
                "--authentication-kubeconfig={}",
                kcm_config.display()
            ))
            .arg(format!(
                "--authorization-kubeconfig={}",
                kcm_config.display()
            ))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", free_port()?))
            .arg(format!("--cluster-signing-cert-file={}", p(pki.ca_cert())))
            .arg(format!("--cluster-signing-key-file={}", p(pki.ca_key())))
            .arg(format!("--root-ca-file={}", p(pki.ca_cert())))
            .arg(format!(
                "--service-account-private-key-file={}",
                p(pki.service_account_key())
            ))
            .arg(format!("--client-ca-file={}", p(pki.ca_cert())))
            .arg(format!(
                "--requestheader-client-ca-file={}",
                p(pki.front_proxy_ca())
            ))
            .arg("--use-service-account-credentials=true")
            .arg("--controllers=*,bootstrapsigner,tokencleaner")
            .arg("--leader-elect=false")
            .arg("--allocate-node-cidrs=false")
            .arg("--v=1");
        self.spawn("kube-controller-manager", kcm, false)?;
        let sched_config = self.kubeconfig_for("scheduler")?;
        let mut sched = Command::new(&self.tools.scheduler);
        sched
            .arg(format!("--kubeconfig={}", sched_config.display()))
            .arg(format!(
                "--authentication-kubeconfig={}",
                sched_config.display()
            ))
            .arg(format!(
                "--authorization-kubeconfig={}",
                sched_config.display()
            ))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", free_port()?))
            .arg("--leader-elect=false")
            .arg("--v=1");
        self.spawn("kube-scheduler", sched, false)?;

        // The node.
        let kubelet_config = self.dir.join("kubelet/config.yaml");
        std::fs::write(
            &kubelet_config,
            kubelet_config_yaml(&self.dir, pki.ca_cert(), &socket),
        )?;
        std::fs::write(
            self.dir.join("kubelet/resolv.conf"),
            "nameserver 127.0.0.1\n",
        )?;
        let mut kubelet = Command::new(&self.tools.kubelet);
        kubelet
            .arg(format!("--config={}", kubelet_config.display()))
            .arg(format!(
                "--kubeconfig={}",
                self.kubeconfig_for("kubelet")?.display()
            ))
            .arg(format!(
                "--root-dir={}",
                self.dir.join("kubelet/root").display()
            ))
            .arg(format!(
                "--cert-dir={}",
                self.dir.join("kubelet/pki").display()
            ))
            .arg(format!("--node-ip={NODE_IP}"))
            .arg(format!("--hostname-override={NODE_NAME}"))
            .arg("--v=1");
        self.spawn("kubelet", kubelet, true)?;
        let proxy_config = self.dir.join("kube-proxy.yaml");
        std::fs::write(
            &proxy_config,
            kube_proxy_config(&self.kubeconfig_for("kube-proxy")?),
        )?;
        let mut proxy = Command::new(&self.tools.proxy);
        proxy
            .arg(format!("--config={}", proxy_config.display()))
            .arg("--v=1");
        self.spawn("kube-proxy", proxy, true)?;

        wait_for("the node to be Ready", Duration::from_secs(120), || {
            let out = self
                .kubectl(&[
                    "get",
                    "node",
                    NODE_NAME,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .map_err(|e| e.to_string())?;
            (out.trim() == "True")
                .then_some(())
                .ok_or(format!("Ready={out}"))
        })?;
        self.add_ons()
    }

    /// CoreDNS and local-path-provisioner, from deploy/lab/, with their images.
    fn add_ons(&self) -> anyhow::Result<()> {
        let mut coredns = Image::new(&format!(
            "registry.k8s.io/coredns/coredns:v{}",
            version("COREDNS_VERSION")?
        ));
        coredns
            .binary(&self.tools.coredns, "/coredns")?
            .entrypoint(&["/coredns"])
            .user("65532:65532");
        let mut lpp = Image::new(&format!(
            "docker.io/rancher/local-path-provisioner:v{}",
            version("LOCAL_PATH_PROVISIONER_VERSION")?
        ));
        lpp.binary(&self.tools.local_path, "/usr/bin/local-path-provisioner")?
            .entrypoint(&["local-path-provisioner"]);
        self.import(&[coredns, lpp, busybox()])?;
        let manifests = repo_root().join("deploy/lab");
        self.kubectl(&[
            "apply",
            "-f",
            &manifests.join("coredns.yaml").display().to_string(),
        ])?;
        let local_path = std::fs::read_to_string(manifests.join("local-path.yaml"))?.replace(
            "@LAB_LOCAL_PATH@",
            &self.dir.join("local-path").display().to_string(),
        );
        let file = self.dir.join("local-path.yaml");
        std::fs::write(&file, local_path)?;
        self.kubectl(&["apply", "-f", &file.display().to_string()])?;
        for (ns, deploy) in [
            ("kube-system", "coredns"),
            ("local-path-storage", "local-path-provisioner"),
        ] {
            self.kubectl(&[
                "-n",
                ns,
                "rollout",
                "status",
                &format!("deployment/{deploy}"),
                "--timeout=180s",
            ])
            .with_context(|| format!("waiting for {ns}/{deploy}"))?;
        }
        Ok(())
    }

    /// Writes each image as an OCI archive and imports it into the node's containerd.
    pub fn import(&self, images: &[Image]) -> anyhow::Result<()> {
        for image in images {
            let file = self
                .dir
                .join("images")
                .join(format!("{}.tar", image.name().replace(['/', ':'], "_")));
            image.write_archive(&file)?;
            images::import(&self.tools.ctr, &self.containerd_socket(), &file)?;
            std::fs::remove_file(&file)?;
        }
        Ok(())
    }

    /// Imports every image of the platform ([`platform_images`]) and runs
    /// `deploy/scripts/install.sh` with the lab profile (`ZT_LAB=1`) and its
    /// waits: what `make install` does on a real cluster. Returns its output.
    pub fn install_platform(&self) -> anyhow::Result<String> {
        let base = crate::tools::Tools::locate()?;
        self.import(&platform_images(&base, &self.tools.kube.kubectl)?)?;
        self.install(&repo_root())
    }

    /// Runs `<tree>/deploy/scripts/install.sh` (a repository or a copy of
    /// it) with the lab profile against this cluster; its output, or an
    /// error carrying it.
    pub fn install(&self, tree: &Path) -> anyhow::Result<String> {
        let out = Command::new("bash")
            .arg(tree.join("deploy/scripts/install.sh"))
            .env("KUBECONFIG", self.cp.kubeconfig())
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.tools.kube.bin_dir.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("ZT_LAB", "1")
            .env("WAIT", "1")
            .env("NO_COLOR", "1")
            .env_remove("ZT_CONTEXT")
            .output()
            .context("running install.sh")?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!(
                "make install (lab profile) failed ({}):\n{text}",
                out.status
            );
        }
        Ok(text)
    }

    /// `kubectl port-forward` to `port` of `pod` in `namespace` (loopback
    /// listeners inside the pod included): the local port, until dropped.
    pub fn port_forward(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> anyhow::Result<PortForward> {
        let log = self
            .dir
            .join("logs")
            .join(format!("port-forward-{namespace}-{pod}-{port}.log"));
        let _ = std::fs::remove_file(&log);
        let mut cmd = self.cp.kubectl();
        cmd.args([
            "-n",
            namespace,
            "port-forward",
            &format!("pod/{pod}"),
            &format!(":{port}"),
        ]);
        let mut process = Supervised::spawn("kubectl port-forward", cmd, &log)?;
        let mut local = 0;
        process.wait_ready(Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            local = text
                .lines()
                .find_map(|l| l.strip_prefix("Forwarding from 127.0.0.1:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            (local != 0)
                .then_some(())
                .ok_or("not forwarding yet".into())
        })?;
        Ok(PortForward {
            _process: process,
            local_port: local,
        })
    }

    /// `kubectl <args>` as the admin; stdout, or an error with stderr.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        run(self.cp.kubectl().args(args))
    }

    /// The control plane (kubeconfig, client, PKI).
    pub fn control_plane(&self) -> &ControlPlane {
        &self.cp
    }

    /// The lab's folder (logs under `logs/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The binaries in use.
    pub fn tools(&self) -> &LabTools {
        &self.tools
    }

    /// containerd's socket (for `ctr`).
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("containerd/containerd.sock")
    }

    /// Runs a short command inside the lab's network namespace (e.g. `curl`
    /// to a ClusterIP, or `iptables -S`).
    pub fn run_in_node(&self, args: &[&str]) -> anyhow::Result<String> {
        self.net.run(args)
    }

    /// The last lines of every component's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = self.cp.log_tails(lines);
        let ours = self.processes.log_tails(lines);
        if !ours.is_empty() {
            out.push('\n');
            out.push_str(&ours);
        }
        out
    }

    /// Stops everything and leaves nothing behind (see cleanup.rs).
    pub fn stop(&self) {
        self.processes.stop(Duration::from_secs(5));
        self.cp.stop();
        let host_paths: Vec<&Path> = HOST_PATHS.iter().map(Path::new).collect();
        cleanup::teardown(&self.dir, Some(self.net.inode()), &host_paths);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.stop();
    }
}

fn version(key: &str) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(repo_root().join("deploy/versions.env"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim().to_string())
        .with_context(|| format!("{key} is not set in deploy/versions.env"))
}

/// A busybox image from Debian's busybox-static: local-path-provisioner's
/// helper pods (and a shell for tests).
pub fn busybox() -> Image {
    let mut image = Image::new("docker.io/library/busybox:1.37");
    image.file(Path::new("/bin/busybox"), "/bin/busybox", 0o755);
    for applet in [
        "sh", "mkdir", "rm", "chmod", "ls", "cat", "sleep", "wget", "nc", "echo", "test",
    ] {
        image.symlink(&format!("/bin/{applet}"), "busybox");
    }
    image.cmd(&["sh"]);
    image
}

fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<(), String>,
) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut last;
    loop {
        match check() {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if start.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn containerd_config(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{d}/containerd/containerd.sock"
[ttrpc]
  address = "{d}/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # Without it runc fails every sandbox here ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  # Pod network namespaces under the lab's folder, not /var/run/netns.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{d}/cni/net.d"
"#
    )
}

fn cni_config(dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "zt-lab",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "zt-lab0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_CIDR}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": dir.join("cni/ipam"),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
    .to_string()
}

fn kubelet_config_yaml(dir: &Path, ca: PathBuf, socket: &Path) -> String {
    let d = dir.display();
    format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine: cgroup v1, cgroupfs, no systemd.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
localStorageCapacityIsolation: false
containerRuntimeEndpoint: unix://{socket}
podLogsDir: {d}/pod-logs
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {ca}}}
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: [{DNS_IP}]
resolvConf: {d}/kubelet/resolv.conf
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
rotateCertificates: false
serverTLSBootstrap: false
serializeImagePulls: false
maxPods: 60
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
"#,
        socket = socket.display(),
        ca = ca.display(),
    )
}

fn kube_proxy_config(kubeconfig: &Path) -> String {
    format!(
        r#"apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: {}
mode: iptables
clusterCIDR: {CLUSTER_CIDR}
hostnameOverride: {NODE_NAME}
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
# Leave the machine's conntrack limits and timeouts alone.
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
"#,
        kubeconfig.display()
    )
}

static SHARED: OnceLock<Result<Lab, String>> = OnceLock::new();

/// The lab shared by every test of this test binary, started on first use and
/// torn down when the process exits (started from a thread that lives as
/// long as the process, as [`super::shared`] explains). Lab tests should
/// also hold [`serial`] so they run one at a time.
pub fn shared() -> anyhow::Result<&'static Lab> {
    let started = SHARED.get_or_init(|| {
        let result = super::start_on_lasting_thread("kube-lab", "the lab's thread", || {
            Lab::start().map_err(|e| format!("{e:#}"))
        });
        if result.is_ok() {
            super::at_exit(stop_shared);
        }
        result
    });
    started
        .as_ref()
        .map_err(|e| anyhow::anyhow!("the lab cluster did not start: {e}"))
}

/// Held by each lab test: they share one cluster and run one at a time.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

extern "C" fn stop_shared() {
    if let Some(Ok(lab)) = SHARED.get() {
        lab.stop();
    }
}
