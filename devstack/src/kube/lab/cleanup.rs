//! Leaving nothing behind: the lab's processes (including containers, whose
//! shims daemonise out of our process groups), its mounts, the network
//! namespace, the files the kubelet writes outside its root, and the kernel
//! settings it changes. Runs at teardown and, for a run that crashed, at
//! the next start.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Kernel settings the kubelet sets on start (`setupKernelTunables`), which
/// the lab puts back as they were.
pub const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
const SYSCTLS_FILE: &str = "sysctls-before-lab";

/// Records the kernel settings the kubelet will change, unless a crashed
/// run already recorded the originals.
pub fn record_sysctls(dir: &Path) -> std::io::Result<()> {
    let file = dir.join(SYSCTLS_FILE);
    if file.exists() {
        return Ok(());
    }
    let mut text = String::new();
    for key in KUBELET_SYSCTLS {
        if let Ok(v) = std::fs::read_to_string(Path::new("/proc/sys").join(key)) {
            text.push_str(&format!("{key}={}\n", v.trim()));
        }
    }
    std::fs::write(file, text)
}

fn restore_sysctls(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join(SYSCTLS_FILE)) else {
        return;
    };
    for line in text.lines() {
        if let Some((key, value)) = line.split_once('=') {
            let _ = std::fs::write(Path::new("/proc/sys").join(key), value);
        }
    }
}

/// pid → (parent pid, whether it belongs to the lab).
fn processes(dir: &Path, netns_inode: Option<u64>) -> BTreeMap<i32, (i32, bool)> {
    use std::os::unix::fs::MetadataExt;
    let needle = dir.to_string_lossy().into_owned();
    let mut all = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return all;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let base = entry.path();
        let ppid = std::fs::read_to_string(base.join("stat"))
            .ok()
            .and_then(|s| {
                // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_string))
            })
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read(base.join("cmdline")).unwrap_or_default();
        let mut ours = String::from_utf8_lossy(&cmdline).contains(&needle);
        if let (Some(inode), Ok(meta)) = (netns_inode, std::fs::metadata(base.join("ns/net"))) {
            ours |= meta.ino() == inode;
        }
        all.insert(pid, (ppid, ours));
    }
    all
}

/// SIGKILLs every process of the lab and all their descendants (containers
/// are children of their shims), until none is left or 10 s have passed.
pub fn kill_processes(dir: &Path, netns_inode: Option<u64>) {
    let me = std::process::id() as i32;
    for _ in 0..50 {
        let all = processes(dir, netns_inode);
        let mut doomed: BTreeSet<i32> = all
            .iter()
            .filter(|(pid, (_, ours))| *ours && **pid != me)
            .map(|(pid, _)| *pid)
            .collect();
        loop {
            let more: Vec<i32> = all
                .iter()
                .filter(|(pid, (ppid, _))| {
                    doomed.contains(ppid) && !doomed.contains(pid) && **pid != me
                })
                .map(|(pid, _)| *pid)
                .collect();
            if more.is_empty() {
                break;
            }
            doomed.extend(more);
        }
        if doomed.is_empty() {
            return;
        }
        for pid in &doomed {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Unmounts everything mounted below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let prefix = dir.to_string_lossy().into_owned();
    for _ in 0..3 {
        let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mut points: Vec<String> = info
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4))
            .map(unescape_mount_path)
            .filter(|p| p == &prefix || p.starts_with(&format!("{prefix}/")))
            .collect();
        if points.is_empty() {
            return;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn unescape_mount_path(raw: &str) -> String {
    raw.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\134", "\\")
}

/// Files the kubelet writes outside its root directory: one symlink per
/// container in /var/log/containers, pointing into the lab.
fn remove_container_log_links(dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/var/log/containers") else {
        return;
    };
    for entry in entries.flatten() {
        if std::fs::read_link(entry.path()).is_ok_and(|t| t.starts_with(dir)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The ids of every container and sandbox containerd ran for the lab.
fn runtime_ids(dir: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    // containerd's state and root folders inside the lab's folder.
    let (state, root) = (
        dir.join("containerd").join("state"),
        dir.join("containerd").join("root"),
    );
    for sub in [
        state.join("io.containerd.runtime.v2.task/k8s.io"),
        root.join("io.containerd.grpc.v1.cri/sandboxes"),
        root.join("io.containerd.grpc.v1.cri/containers"),
    ] {
        if let Ok(entries) = std::fs::read_dir(sub) {
            ids.extend(
                entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    ids
}

/// What containerd and the CNI plugins keep outside their configured
/// folders, per container: shim sockets (/run/containerd/s/<sha256 of the
/// socket path>), runc state, and libcni's result cache.
fn remove_runtime_leftovers(dir: &Path) {
    use sha2::{Digest, Sha256};
    let ids = runtime_ids(dir);
    let address = dir.join("containerd/containerd.sock");
    for id in &ids {
        let key = address.join("k8s.io").join(id);
        let hash = format!("{:x}", Sha256::digest(key.to_string_lossy().as_bytes()));
        let _ = std::fs::remove_file(Path::new("/run/containerd/s").join(hash));
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc/k8s.io").join(id));
        for network in ["zt-lab", "cni-loopback"] {
            for ifname in ["eth0", "lo"] {
                let _ = std::fs::remove_file(
                    Path::new("/var/lib/cni/results").join(format!("{network}-{id}-{ifname}")),
                );
            }
        }
    }
    // The folders themselves, when nothing else uses them.
    for d in [
        "/run/containerd/runc/k8s.io",
        "/run/containerd/runc",
        "/run/containerd/s",
        "/run/containerd",
        "/var/lib/cni/results",
        "/var/lib/cni",
    ] {
        let _ = std::fs::remove_dir(d);
    }
}

/// Tears down whatever a lab in `dir` left: processes, mounts, the network
/// namespace, kubelet files outside `dir`, kernel settings; then `dir`.
pub fn teardown(dir: &Path, netns_inode: Option<u64>, host_paths: &[&Path]) {
    kill_processes(dir, netns_inode);
    unmount_below(dir);
    remove_runtime_leftovers(dir);
    super::net::remove_stale();
    remove_container_log_links(dir);
    restore_sysctls(dir);
    for p in host_paths {
        let _ = std::fs::remove_dir_all(p);
    }
    let _ = std::fs::remove_dir_all(dir);
}
