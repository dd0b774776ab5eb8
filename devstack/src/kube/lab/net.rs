//! The lab node's network: a network namespace of its own, joined to this
//! machine by one veth pair. containerd, the kubelet, kube-proxy and every
//! pod live behind it, so their iptables rules, bridge and routes vanish with
//! the namespace; the API server listens on the host end of the pair.
//!
//! ```text
//!   host netns                         lab netns "zt-lab"
//!   kube-apiserver 10.250.0.1 ── veth ── 10.250.0.2 (node IP): kubelet :10250,
//!   tests → NodePorts on 10.250.0.2        kube-proxy (iptables), containerd
//!   routes 10.96/16, 10.244/16 → .2        (webhook calls reach ClusterIPs)
//!                                          └─ bridge zt-lab0 10.244.0.1/24 ── pods
//! ```

use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use anyhow::Context;

use crate::process::run;

/// Name of the lab's network namespace (`ip netns`).
pub const NETNS: &str = "zt-lab";
/// Host end of the veth pair: the API server's address.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// Lab end of the veth pair: the node's IP (NodePorts, the kubelet).
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
/// The pod subnet of the one node (CNI bridge + host-local IPAM).
pub const POD_CIDR: &str = "10.244.0.0/24";
/// kube-proxy's cluster CIDR (traffic from outside it is masqueraded).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
const HOST_VETH: &str = "zt-lab-h";
const NODE_VETH: &str = "zt-lab-n";

/// The lab's network namespace; deleting it removes the veth pair, the
/// bridge and every iptables rule made inside it.
#[derive(Debug)]
pub struct LabNet {
    ns: OwnedFd,
}

fn ip(args: &[&str]) -> anyhow::Result<String> {
    run(Command::new("ip").args(args))
}

fn in_ns(args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["netns", "exec", NETNS];
    all.extend_from_slice(args);
    run(Command::new("ip").args(&all))
}

impl LabNet {
    /// Creates the namespace and the veth pair (removing any left by a
    /// crashed run first).
    pub fn create() -> anyhow::Result<Self> {
        remove_stale();
        ip(&["netns", "add", NETNS]).context("ip netns add (the lab needs root)")?;
        let net = Self {
            ns: File::open(format!("/var/run/netns/{NETNS}"))?.into(),
        };
        ip(&[
            "link", "add", HOST_VETH, "type", "veth", "peer", "name", NODE_VETH,
        ])?;
        ip(&["link", "set", NODE_VETH, "netns", NETNS])?;
        ip(&["addr", "add", &format!("{HOST_IP}/30"), "dev", HOST_VETH])?;
        ip(&["link", "set", HOST_VETH, "up"])?;
        in_ns(&["ip", "link", "set", "lo", "up"])?;
        in_ns(&[
            "ip",
            "addr",
            "add",
            &format!("{NODE_IP}/30"),
            "dev",
            NODE_VETH,
        ])?;
        in_ns(&["ip", "link", "set", NODE_VETH, "up"])?;
        in_ns(&["ip", "route", "add", "default", "via", &HOST_IP.to_string()])?;
        // The API server calls admission webhooks (zt-injector) at their
        // Service's ClusterIP; kube-proxy's rules inside the namespace take
        // it to the pod. Routes on the host veth vanish with it.
        for cidr in [crate::kube::SERVICE_CIDR, CLUSTER_CIDR] {
            ip(&[
                "route",
                "add",
                cidr,
                "via",
                &NODE_IP.to_string(),
                "dev",
                HOST_VETH,
            ])?;
        }
        // Only inside the namespace: the host's forwarding setting is untouched.
        in_ns(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        Ok(net)
    }

    /// Makes `cmd` start inside the namespace (network only: it keeps the
    /// host's mount namespace, so the kubelet's and containerd's mounts are
    /// visible to each other).
    pub fn enter(&self, cmd: &mut Command) -> anyhow::Result<()> {
        let fd = self.ns.try_clone()?;
        // SAFETY: the closure runs in the forked child before exec and makes
        // one async-signal-safe syscall (setns) on an fd opened before fork.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || {
                nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
                    .map_err(std::io::Error::from)
            });
        }
        Ok(())
    }

    /// Runs a short command inside the namespace.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        in_ns(args)
    }

    /// The namespace's inode: processes whose `/proc/<pid>/ns/net` has it live in the lab.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/self/fd/{}", self.ns.as_raw_fd()))
            .map(|m| m.ino())
            .unwrap_or(0)
    }
}

impl Drop for LabNet {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", NETNS]);
    }
}

/// Removes a namespace and host veth left by a run that could not clean up.
pub fn remove_stale() {
    if Path::new(&format!("/var/run/netns/{NETNS}")).exists() {
        let _ = ip(&["netns", "del", NETNS]);
    }
    if Path::new(&format!("/sys/class/net/{HOST_VETH}")).exists() {
        let _ = ip(&["link", "del", HOST_VETH]);
    }
}
