//! A real Kubernetes control plane on this machine: etcd and kube-apiserver
//! built from their Go modules at pinned versions (`make tools-kube`),
//! started with the flags a kind cluster's API server has.
//!
//! ```text
//!   kube::shared()            one per test binary, started on first use,
//!     └─ ControlPlane           stopped when the binary exits
//!          ├─ etcd              http://127.0.0.1:<port>, data in a temp dir
//!          └─ kube-apiserver    https://127.0.0.1:<port>, kubeadm's PKI layout,
//!                               Node,RBAC; PodSecurity, webhooks, VAP, …
//!   ControlPlane::kubeconfig()  admin kubeconfig for kubectl, helm, scripts
//!   ControlPlane::client()      kube::Client for the test's own runtime
//! ```
//!
//! Tests share one control plane per test binary ([`shared`]): starting one
//! takes seconds, and objects live in namespaces the tests name.

mod control_plane;
pub mod images;
pub mod lab;
mod pki;

use std::sync::OnceLock;

pub use control_plane::{
    write_kubeconfig, ControlPlane, ControlPlaneOptions, KubeTools, EXTRA_ADMISSION_PLUGINS,
    SERVICE_ACCOUNT_ISSUER, SERVICE_CIDR,
};
pub use pki::{Pki, NODE_NAME};

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The control plane shared by every test of this test binary, started on
/// first use and stopped (its temp dir removed) when the process exits.
///
/// The processes are started from a thread that lives as long as the
/// process: `PR_SET_PDEATHSIG` fires when the *thread* that spawned a child
/// ends, and a test's thread ends with the test.
pub fn shared() -> anyhow::Result<&'static ControlPlane> {
    let started = SHARED.get_or_init(|| {
        let result = start_on_lasting_thread(
            "kube-control-plane",
            "the control plane's thread",
            start_in_temp_dir,
        );
        if result.is_ok() {
            at_exit(stop_shared);
        }
        result
    });
    started
        .as_ref()
        .map_err(|e| anyhow::anyhow!("the shared Kubernetes control plane did not start: {e}"))
}

fn start_in_temp_dir() -> Result<ControlPlane, String> {
    let tools = KubeTools::locate().map_err(|e| e.to_string())?;
    let dir = tempfile::Builder::new()
        .prefix("devstack-kube-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    ControlPlane::start(&tools, &ControlPlaneOptions::in_dir(&dir)).map_err(|e| format!("{e:#}"))
}

extern "C" fn stop_shared() {
    // Runs from exit(): no test thread is using the control plane any more.
    // Only look: never start one from the exit handler.
    let Some(Ok(cp)) = SHARED.get() else {
        return;
    };
    cp.stop();
    let _ = std::fs::remove_dir_all(cp.dir());
}

/// Runs `start` on a thread named `name` that then lives as long as the
/// process (see [`shared`]: children die with the thread that spawned them),
/// and returns what it returned; `what` names the thread in errors.
pub(crate) fn start_on_lasting_thread<T: Send + 'static>(
    name: &str,
    what: &str,
    start: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(start());
            loop {
                std::thread::park();
            }
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start {what}: {e}"));
    }
    rx.recv().unwrap_or_else(|_| Err(format!("{what} died")))
}

/// Registers `handler` to run when the process exits (atexit(3)).
#[allow(unsafe_code)]
pub(crate) fn at_exit(handler: extern "C" fn()) {
    // SAFETY: `handler` is a plain extern "C" function with no arguments, as
    // atexit(3) requires; registering it has no other effect.
    unsafe {
        nix::libc::atexit(handler);
    }
}
