//! Child processes that never outlive the stack that started them.
//!
//! Each component runs in its own process group with its output in a log file.
//! Stopping sends SIGTERM to the group, then SIGKILL after a grace period.
//! `PR_SET_PDEATHSIG` makes the kernel kill a child if its parent dies without
//! running destructors (SIGKILL, abort), so a crashed test leaks nothing.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// A running component process.
#[derive(Debug)]
pub struct Supervised {
    name: String,
    child: Child,
    log_path: PathBuf,
}

/// Why a wait for a component failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// The process exited before it became ready.
    #[error("{name} exited ({status}) before it was ready; last log lines from {log}:\n{tail}")]
    Exited {
        /// Component name.
        name: String,
        /// Exit status text.
        status: String,
        /// Log file path.
        log: String,
        /// Last lines of the log.
        tail: String,
    },
    /// The readiness check did not pass in time.
    #[error("{name} was not ready after {waited:?}: {last}; last log lines from {log}:\n{tail}")]
    Timeout {
        /// Component name.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// The last readiness-check failure.
        last: String,
        /// Log file path.
        log: String,
        /// Last lines of the log.
        tail: String,
    },
}

impl Supervised {
    /// Starts `cmd` with stdout and stderr appended to `log_path`.
    pub fn spawn(name: &str, mut cmd: Command, log_path: &Path) -> std::io::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        set_parent_death_signal(&mut cmd);
        let child = cmd.spawn().map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot start {name} ({:?}): {e}", cmd.get_program()),
            )
        })?;
        Ok(Self {
            name: name.to_string(),
            child,
            log_path: log_path.to_path_buf(),
        })
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where the component's output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Polls `ready` every 50 ms until it returns `Ok(())`, the process exits,
    /// or `timeout` (stretched by `ZT_TEST_PATIENCE`, see
    /// [`crate::eventually::patient`]) passes.
    pub fn wait_ready(
        &mut self,
        timeout: Duration,
        mut ready: impl FnMut() -> Result<(), String>,
    ) -> Result<(), WaitError> {
        let timeout = crate::eventually::patient(timeout);
        let start = Instant::now();
        let mut last;
        loop {
            if let Some(status) = self.exited() {
                return Err(WaitError::Exited {
                    name: self.name.clone(),
                    status: status.to_string(),
                    log: self.log_path.display().to_string(),
                    tail: self.log_tail(30),
                });
            }
            match ready() {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            if start.elapsed() > timeout {
                return Err(WaitError::Timeout {
                    name: self.name.clone(),
                    waited: timeout,
                    last,
                    log: self.log_path.display().to_string(),
                    tail: self.log_tail(30),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last `lines` lines of the log (at most 64 KiB are read).
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: Signal) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), signal);
    }

    /// SIGKILL to the whole group, without warning (a crash, an OOM kill),
    /// and waits for the leader to be reaped.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }

    /// `signal` to the leader only, then SIGKILL to the group if it has not
    /// exited after `grace` (servers whose own shutdown ends their workers,
    /// e.g. PostgreSQL's fast shutdown on SIGINT).
    pub fn stop_with(&mut self, signal: Signal, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        let _ = nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), signal);
        let start = Instant::now();
        while start.elapsed() < grace {
            if self.exited().is_some() {
                self.signal(Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// SIGTERM to the group, then SIGKILL if it is still running after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        self.signal(Signal::SIGTERM);
        let start = Instant::now();
        while start.elapsed() < grace {
            if self.exited().is_some() {
                // The leader is gone; make sure nothing else in its group survives.
                self.signal(Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.signal(Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// The TCP ports `pid` listens on (IPv4 and IPv6): its socket inodes
/// (`/proc/<pid>/fd`) looked up in `/proc/net/tcp` and `tcp6` in state
/// LISTEN.
pub fn listening_ports(pid: u32) -> std::io::Result<std::collections::BTreeSet<u16>> {
    let mut inodes = std::collections::HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(fd?.path()) else {
            continue;
        };
        if let Some(inode) = target
            .to_str()
            .and_then(|t| t.strip_prefix("socket:["))
            .and_then(|t| t.strip_suffix(']'))
        {
            inodes.insert(inode.to_string());
        }
    }
    let mut ports = std::collections::BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 9 && f[3] == "0A" && inodes.contains(f[9]) {
                if let Some(port) = f[1]
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                {
                    ports.insert(port);
                }
            }
        }
    }
    Ok(ports)
}

/// The last `lines` lines of a log file (reads at most its last 64 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a short command to completion, returning stdout, or an error that
/// carries its stderr.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run {:?}: {e}", cmd.get_program()))?;
    if !out.status.success() {
        anyhow::bail!(
            "{:?} {:?} failed ({}): {}{}",
            cmd.get_program(),
            cmd.get_args().collect::<Vec<_>>(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[allow(unsafe_code)]
fn set_parent_death_signal(cmd: &mut Command) {
    // SAFETY: the closure runs in the forked child before exec and only makes
    // one async-signal-safe syscall (prctl); it touches no shared state.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        // The shell starts a grandchild that ignores SIGTERM.
        cmd.arg("-c")
            .arg("trap '' TERM; sleep 300 & echo $! > grandchild; wait");
        cmd.current_dir(dir.path());
        let mut p = Supervised::spawn("sh", cmd, &dir.path().join("log")).unwrap();
        let pidfile = dir.path().join("grandchild");
        p.wait_ready(Duration::from_secs(5), || {
            std::fs::read_to_string(&pidfile)
                .ok()
                .filter(|s| !s.trim().is_empty())
                .map(|_| ())
                .ok_or_else(|| "no pid yet".into())
        })
        .unwrap();
        let grandchild: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        p.stop(Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(100));
        let alive = nix::sys::signal::kill(Pid::from_raw(grandchild), None).is_ok()
            && !std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .unwrap_or_default()
                .contains(") Z ");
        assert!(!alive, "grandchild {grandchild} survived stop()");
    }

    #[test]
    fn wait_ready_reports_early_exit_with_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg("echo boom-marker; exit 3");
        let mut p = Supervised::spawn("failing", cmd, &dir.path().join("log")).unwrap();
        let err = p
            .wait_ready(Duration::from_secs(5), || Err("never".into()))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("failing exited"), "{msg}");
        assert!(msg.contains("boom-marker"), "{msg}");
    }
}

/// Processes started one after another that stop together, newest first
/// (etcd then kube-apiserver; the lab's node components): shared by
/// the control plane and the lab (`kube` feature).
#[cfg(feature = "kube")]
#[derive(Debug, Default)]
pub(crate) struct ProcessGroup(std::sync::Mutex<Vec<Supervised>>);

#[cfg(feature = "kube")]
impl ProcessGroup {
    /// A group of processes already started, in start order.
    pub(crate) fn of(processes: Vec<Supervised>) -> Self {
        Self(std::sync::Mutex::new(processes))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Supervised>> {
        // A panic while holding the lock leaves the list intact.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a started process (stopped before those started earlier).
    pub(crate) fn push(&self, process: Supervised) {
        self.lock().push(process);
    }

    /// Each process's name, log path and last `lines` log lines.
    pub(crate) fn log_tails(&self, lines: usize) -> String {
        self.lock()
            .iter()
            .map(|p| {
                format!(
                    "== {} ({})\n{}",
                    p.name(),
                    p.log_path().display(),
                    p.log_tail(lines)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops every process, the newest first, each within `grace`.
    pub(crate) fn stop(&self, grace: Duration) {
        let mut procs = self.lock();
        while let Some(mut p) = procs.pop() {
            p.stop(grace);
        }
    }
}
