//! Where the real component binaries are, and what to do when one is missing.
//!
//! `make tools` installs SPIRE and OpenBao into `<repo>/.tools/bin` and makes
//! sure PostgreSQL's server binaries exist. A missing binary is an error that
//! says how to install it: tests never skip because a component is absent.

use std::path::{Path, PathBuf};

/// Environment variable naming the folder that holds `spire-server`,
/// `spire-agent`, `oidc-discovery-provider` and `bao`. Default: `<repo>/.tools/bin`.
pub const TOOLS_DIR_ENV: &str = "ZT_TOOLS_DIR";
/// Environment variable naming PostgreSQL's bin folder (holding `initdb`,
/// `postgres`, `psql`). Default: found via `pg_config` or `/usr/lib/postgresql/*/bin`.
pub const PG_BIN_DIR_ENV: &str = "ZT_PG_BIN_DIR";

/// A required binary is not installed.
#[derive(Debug, thiserror::Error)]
#[error(
    "{component} is not installed: expected `{}`.\n  Install it with `{install}` (from the repository root); \
     see README.md#prerequisites-and-how-the-real-components-arrive.{}",
    expected.display(),
    if std::env::var("CI").as_deref() == Ok("true") { "\n  (CI=true: tests do not skip missing components.)" } else { "" }
)]
pub struct MissingTool {
    /// Human name of the component, e.g. "SPIRE server".
    pub component: &'static str,
    /// The path that was looked at.
    pub expected: PathBuf,
    /// The command that installs it (`make tools`, `make tools-kube`).
    pub install: &'static str,
}

/// Absolute paths of every binary the stack runs.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `spire-server`
    pub spire_server: PathBuf,
    /// `spire-agent`
    pub spire_agent: PathBuf,
    /// `oidc-discovery-provider`
    pub oidc_provider: PathBuf,
    /// `bao` (OpenBao server and CLI)
    pub bao: PathBuf,
    /// PostgreSQL's bin folder (`initdb`, `postgres`, `psql`, `pg_ctl`).
    pub pg_bin: PathBuf,
}

/// The repository root, derived from this crate's location at build time.
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

impl Tools {
    /// Finds every tool, or reports the first one missing with its install hint.
    pub fn locate() -> Result<Self, MissingTool> {
        let dir = std::env::var_os(TOOLS_DIR_ENV)
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".tools/bin"));
        Self::locate_in(&dir)
    }

    /// Like [`Tools::locate`], with SPIRE and OpenBao looked up in `dir`.
    pub fn locate_in(dir: &Path) -> Result<Self, MissingTool> {
        let need = |name: &str, component: &'static str| {
            let path = dir.join(name);
            if is_executable(&path) {
                Ok(path)
            } else {
                Err(MissingTool {
                    component,
                    expected: path,
                    install: "make tools",
                })
            }
        };
        let pg_bin = pg_bin_dir().ok_or_else(|| MissingTool {
            component: "PostgreSQL server",
            expected: PathBuf::from("/usr/lib/postgresql/<version>/bin/initdb"),
            install: "make tools",
        })?;
        Ok(Self {
            spire_server: need("spire-server", "SPIRE server")?,
            spire_agent: need("spire-agent", "SPIRE agent")?,
            oidc_provider: need("oidc-discovery-provider", "SPIRE OIDC discovery provider")?,
            bao: need("bao", "OpenBao")?,
            pg_bin,
        })
    }

    /// A PostgreSQL binary by name (`initdb`, `postgres`, `psql`).
    pub fn pg(&self, name: &str) -> PathBuf {
        self.pg_bin.join(name)
    }
}

/// The PostgreSQL major version the platform is pinned to
/// (`POSTGRES_MAJOR` in deploy/versions.env; the lab's image is built from
/// it): preferred when several are installed.
pub const POSTGRES_MAJOR: &str = "15";

fn pg_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(PG_BIN_DIR_ENV) {
        return Some(PathBuf::from(dir));
    }
    let pinned = Path::new("/usr/lib/postgresql")
        .join(POSTGRES_MAJOR)
        .join("bin");
    if is_executable(&pinned.join("initdb")) && is_executable(&pinned.join("postgres")) {
        return Some(pinned);
    }
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && is_executable(&dir.join("initdb")) {
            return Some(dir);
        }
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| is_executable(&d.join("initdb")) && is_executable(&d.join("postgres")))
        .collect();
    // The newest version: by number, so 15 comes after 9.6.
    candidates.sort_by_key(|d| pg_version(d));
    candidates.pop()
}

/// The version in `/usr/lib/postgresql/<version>/bin` as numbers (`9.6` →
/// `[9, 6]`); a name that is not one sorts first.
fn pg_version(bin: &Path) -> Vec<u32> {
    bin.parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .map(|n| n.split('.').map_while(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_postgresql_major_is_the_one_in_versions_env() {
        let env = std::fs::read_to_string(repo_root().join("deploy/versions.env")).unwrap();
        assert!(
            env.lines()
                .any(|l| l.trim() == format!("POSTGRES_MAJOR={POSTGRES_MAJOR}")),
            "deploy/versions.env and devstack::tools::POSTGRES_MAJOR disagree"
        );
    }

    #[test]
    fn the_newest_postgresql_is_chosen_by_number() {
        let mut dirs: Vec<PathBuf> = ["15", "9.6", "16", "latest"]
            .iter()
            .map(|v| Path::new("/usr/lib/postgresql").join(v).join("bin"))
            .collect();
        dirs.sort_by_key(|d| pg_version(d));
        let order: Vec<&str> = dirs
            .iter()
            .map(|d| d.parent().unwrap().file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(order, ["latest", "9.6", "15", "16"]);
    }

    #[test]
    fn missing_tool_message_names_component_and_fix() {
        let err = MissingTool {
            component: "OpenBao",
            expected: PathBuf::from("/nowhere/bao"),
            install: "make tools",
        };
        let msg = err.to_string();
        assert!(msg.contains("OpenBao is not installed"), "{msg}");
        assert!(msg.contains("/nowhere/bao"), "{msg}");
        assert!(msg.contains("make tools"), "{msg}");
    }

    #[test]
    fn locate_reports_missing_tools_dir() {
        // A tools dir that does not exist must produce MissingTool, never a panic.
        let dir = tempfile::tempdir().unwrap();
        let err = Tools::locate_in(dir.path()).unwrap_err();
        assert!(err.to_string().contains("make tools"));
    }
}
