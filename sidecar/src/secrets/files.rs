//! Secret files: written atomically with their final mode and owner, so a
//! reader sees the previous complete file or the new complete file, never a
//! partial one, and never a moment where the file is readable by others.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rand::distributions::{Alphanumeric, DistString};

/// Mode and ownership of written files.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FilePolicy {
    /// Permission bits, e.g. 0o400.
    pub mode: u32,
    /// Owner uid (needs CAP_CHOWN unless it is ours).
    pub owner: Option<u32>,
    /// Group gid.
    pub group: Option<u32>,
}

impl FilePolicy {
    /// The policy `[secrets]` gives its files.
    pub(crate) fn of(secrets: &crate::config::SecretsConfig) -> Self {
        Self {
            mode: secrets.file_mode,
            owner: secrets.owner,
            group: secrets.group,
        }
    }
}

/// Writes `bytes` to `path`: a temp file in the same folder created with
/// `mode` (0600 while writing), chowned, fsynced, renamed over `path`, and
/// the folder fsynced so the rename survives a crash.
///
/// The two fsyncs can take milliseconds on a real disk (on the tmpfs the
/// sidecar is meant for they are free), so on the sidecar's multi-thread
/// runtime the write tells tokio it blocks: the other tasks of this worker
/// (proxied requests, renewals) move to another worker meanwhile.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], policy: FilePolicy) -> std::io::Result<()> {
    blocking(|| write_atomic_now(path, bytes, policy))
}

/// Runs blocking file I/O without stalling the async tasks sharing this
/// thread: `block_in_place` on a multi-thread runtime; directly elsewhere
/// (outside a runtime, or on a current-thread one, where it would panic).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

fn write_atomic_now(path: &Path, bytes: &[u8], policy: FilePolicy) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("secret");
    let tmp: PathBuf = dir.join(format!(
        ".{name}.tmp-{}",
        Alphanumeric.sample_string(&mut rand::thread_rng(), 8)
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        if policy.owner.is_some() || policy.group.is_some() {
            std::os::unix::fs::fchown(&f, policy.owner, policy.group)?;
        }
        // Final mode after writing: a 0400 file cannot be written by its owner.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(policy.mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes a file, ignoring "not found".
pub(crate) fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const P: FilePolicy = FilePolicy {
        mode: 0o400,
        owner: None,
        group: None,
    };

    #[test]
    fn replaces_readonly_file_with_final_mode_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        write_atomic(&path, b"one", P).unwrap();
        write_atomic(&path, b"two", P).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o400
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("db.json")]);
    }

    #[test]
    fn owner_and_group_are_applied() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        // Our own ids always work; as root, hand the file to another account
        // the way a sidecar hands secrets to the app's uid/gid.
        let (uid, gid) = if nix::unistd::Uid::effective().is_root() {
            (65534, 65534)
        } else {
            (
                nix::unistd::getuid().as_raw(),
                nix::unistd::getgid().as_raw(),
            )
        };
        let policy = FilePolicy {
            mode: 0o440,
            owner: Some(uid),
            group: Some(gid),
        };
        write_atomic(&path, b"x", policy).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid));
        assert_eq!(meta.permissions().mode() & 0o777, 0o440);
    }

    #[test]
    fn failure_leaves_the_old_file_intact() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.json");
        write_atomic(&path, b"old", P).unwrap();
        // Renaming onto a directory fails: the old file must survive untouched.
        let bad = dir.path().join("sub");
        std::fs::create_dir(&bad).unwrap();
        std::fs::write(bad.join("x"), b"").unwrap();
        assert!(write_atomic(&bad, b"new", P).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            2,
            "no temp file left behind"
        );
    }

    #[test]
    fn blocking_io_lets_the_other_tasks_of_its_worker_run() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let got = rt.block_on(async {
            tokio::spawn(async {
                let (tx, rx) = std::sync::mpsc::channel();
                // Queued on the only worker, which then blocks: it can run
                // only if the blocking call hands the worker over.
                tokio::spawn(async move { tx.send(()).unwrap() });
                blocking(|| rx.recv_timeout(std::time::Duration::from_secs(20)))
            })
            .await
            .unwrap()
        });
        assert!(
            got.is_ok(),
            "the other task never ran while this one blocked"
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn writes_from_a_current_thread_runtime_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.json");
        write_atomic(&path, b"{}", P).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
    }
}
