//! The marker of a released secret, `<secrets dir>/<name>.released`: written
//! before the release is acknowledged, so that neither this sidecar nor one
//! restarted in the same pod issues the secret again, and naming the leases
//! being revoked, so that a restarted sidecar finishes their revocation.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::clock::rfc3339;
use crate::config::Config;
use crate::secrets::{write_atomic, FilePolicy};

/// The marker of secret `name` in `dir`.
pub(crate) fn marker_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.released"))
}

/// Whether the marker is there (a symlink counts, even a dangling one: only
/// the sidecar writes this folder in a pod).
pub(crate) fn marker_present(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// Writes the marker, naming `lease_ids` (revoked next); the time of the
/// release stays the first one's.
pub(crate) fn leave_marker(
    path: &Path,
    lease_ids: &[String],
    policy: FilePolicy,
) -> std::io::Result<()> {
    let first = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.lines().next().map(str::to_string))
        .filter(|l| l.starts_with("released at "));
    let mut text = first.map(|l| l + "\n").unwrap_or_else(|| {
        format!(
            "released at {} on the app's request; it is not issued again in this pod (on Kubernetes: start a new pod; elsewhere: delete this file and restart the sidecar)\n",
            rfc3339(SystemTime::now())
        )
    });
    for id in lease_ids {
        text.push_str(&format!("lease {id}\n"));
    }
    write_atomic(path, text.as_bytes(), policy)
}

/// The admin endpoint accepted a release of database secret `name`: leave
/// its marker, naming the current lease, before answering. A marker already
/// there (a release being carried out) is left as it is: the rotator's
/// names every lease it revokes.
pub(crate) fn acknowledge(
    config: &Config,
    name: &str,
    lease_id: Option<String>,
) -> std::io::Result<()> {
    let dir = config
        .secrets_dir()
        .ok_or_else(|| std::io::Error::other("no secrets.dir"))?;
    let path = marker_path(dir, name);
    if marker_present(&path) {
        return Ok(());
    }
    leave_marker(
        &path,
        &lease_id.into_iter().collect::<Vec<_>>(),
        FilePolicy::of(&config.secrets),
    )
}

/// The leases a marker names that are this secret's (`<mount>/creds/<role>/`
/// and one plain segment): whoever could edit the file must not steer a
/// revocation, which carries our token, anywhere else.
pub(crate) fn marker_leases(text: &str, mount: &str, role: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("lease "))
        .filter_map(|id| our_lease_id(id.trim(), mount, role))
        .collect()
}

/// `lease_id` if it is one of `<mount>/creds/<role>/`'s, else `None`.
pub(crate) fn our_lease_id(lease_id: &str, mount: &str, role: &str) -> Option<String> {
    let id = lease_id.strip_prefix(&format!("{mount}/creds/{role}/"))?;
    (!id.contains('/') && crate::openbao::is_lease_id(lease_id)).then(|| lease_id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_names_only_our_plain_lease_ids() {
        let ours = "database/creds/backend-migrator/AbC123";
        let text = format!(
            "released at 2026-12-02T12:00:00Z on the app's request; delete this file to have it issued again\n\
             lease {ours}\n\
             lease database/creds/backend-migrator/../../../sys/seal\n\
             lease database/creds/backend-role/XyZ\n\
             lease auth/token/revoke-self\n\
             garbage\n"
        );
        assert_eq!(
            marker_leases(&text, "database", "backend-migrator"),
            vec![ours.to_string()]
        );
        assert!(marker_leases("", "database", "backend-migrator").is_empty());
    }

    #[test]
    fn the_marker_written_is_the_marker_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = marker_path(dir.path(), "db-migrator");
        assert!(!marker_present(&path));
        let ids = vec![
            "database/creds/backend-migrator/one".to_string(),
            "database/creds/backend-migrator/two".to_string(),
        ];
        let policy = FilePolicy {
            mode: 0o440,
            owner: None,
            group: None,
        };
        leave_marker(&path, &ids, policy).unwrap();
        assert!(marker_present(&path));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(marker_leases(&text, "database", "backend-migrator"), ids);
        // A dangling symlink counts as present (it cannot be planted in a
        // pod; elsewhere it must not make the secret come back).
        let link = marker_path(dir.path(), "other");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        assert!(marker_present(&link));
    }
}
