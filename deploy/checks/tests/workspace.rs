//! Workspace hygiene: the declared `rust-version` is what the lockfile really
//! needs, a dependency two crates use is declared once in
//! `[workspace.dependencies]`, and every crate follows `[workspace.lints]`.

use std::collections::BTreeMap;
use std::process::Command;

use deploy_checks::repo;

fn root_manifest() -> toml::Table {
    let text = std::fs::read_to_string(repo::root().join("Cargo.toml")).expect("read Cargo.toml");
    text.parse().expect("Cargo.toml parses")
}

fn table<'a>(t: &'a toml::Table, key: &str) -> &'a toml::Table {
    t.get(key)
        .and_then(|v| v.as_table())
        .unwrap_or_else(|| panic!("no [{key}] table"))
}

/// `(member path, its Cargo.toml)` for every workspace member.
fn members() -> Vec<(String, toml::Table)> {
    let root = root_manifest();
    let ws = table(&root, "workspace");
    let members = ws["members"]
        .as_array()
        .expect("workspace.members is a list");
    members
        .iter()
        .map(|m| {
            let m = m.as_str().expect("member is a string").to_string();
            let path = repo::root().join(&m).join("Cargo.toml");
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (m, text.parse().expect("member Cargo.toml parses"))
        })
        .collect()
}

fn version_tuple(v: &str) -> (u64, u64, u64) {
    let mut parts = v.split('.').map(|p| {
        p.parse::<u64>()
            .unwrap_or_else(|_| panic!("rust-version {v:?} is not a version"))
    });
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[test]
fn rust_version_is_the_newest_any_locked_dependency_declares() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(repo::root())
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata is JSON");
    let ours: Vec<&str> = meta["workspace_members"]
        .as_array()
        .expect("workspace_members")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let needed = meta["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .filter(|p| !ours.contains(&p["id"].as_str().unwrap_or_default()))
        .filter_map(|p| {
            let rv = p["rust_version"].as_str()?;
            Some((
                version_tuple(rv),
                format!(
                    "{} {}",
                    p["name"].as_str().unwrap_or("?"),
                    p["version"].as_str().unwrap_or("?")
                ),
            ))
        })
        .max()
        .expect("some locked dependency declares a rust-version");

    let root = root_manifest();
    let declared = table(table(&root, "workspace"), "package")["rust-version"]
        .as_str()
        .expect("workspace.package.rust-version is set");
    let (major, minor, patch) = needed.0;
    assert_eq!(
        version_tuple(declared),
        needed.0,
        "[workspace.package] rust-version = {declared:?}, but the lockfile needs \
         {major}.{minor}.{patch} ({} declares it): set rust-version to that",
        needed.1
    );
}

#[test]
fn a_dependency_two_crates_use_is_declared_once_in_the_workspace() {
    let root = root_manifest();
    let declared = table(table(&root, "workspace"), "dependencies");
    // dependency name -> [(member, section, from the workspace?)]
    let mut uses: BTreeMap<String, Vec<(String, &'static str, bool)>> = BTreeMap::new();
    for (member, manifest) in members() {
        for section in ["dependencies", "dev-dependencies", "build-dependencies"] {
            let Some(deps) = manifest.get(section).and_then(|v| v.as_table()) else {
                continue;
            };
            for (name, spec) in deps {
                let from_ws = spec
                    .as_table()
                    .and_then(|t| t.get("workspace"))
                    .and_then(|w| w.as_bool())
                    .unwrap_or(false);
                uses.entry(name.clone())
                    .or_default()
                    .push((member.clone(), section, from_ws));
            }
        }
    }
    let mut problems = Vec::new();
    for (name, users) in &uses {
        let crates: std::collections::BTreeSet<_> = users.iter().map(|u| &u.0).collect();
        for (member, section, from_ws) in users {
            if crates.len() >= 2 && !from_ws {
                problems.push(format!(
                    "{member}/Cargo.toml [{section}] {name}: used by {} crates, so declare it in \
                     [workspace.dependencies] and write `{name}.workspace = true`",
                    crates.len()
                ));
            }
        }
    }
    for name in declared.keys() {
        if !uses.contains_key(name) {
            problems.push(format!(
                "[workspace.dependencies] {name}: no crate uses it; remove it"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_crate_follows_the_workspace_lints() {
    let root = root_manifest();
    let lints = table(table(&root, "workspace"), "lints");
    assert!(
        lints.contains_key("rust") && lints.contains_key("clippy"),
        "[workspace.lints] needs rust and clippy tables"
    );
    let missing: Vec<String> = members()
        .into_iter()
        .filter(|(_, m)| {
            m.get("lints")
                .and_then(|l| l.get("workspace"))
                .and_then(|w| w.as_bool())
                != Some(true)
        })
        .map(|(name, _)| format!("{name}/Cargo.toml: add `[lints]\\nworkspace = true`"))
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn the_fuzz_workspace_lockfile_is_current() {
    // fuzz/ is a workspace of its own (nightly, `make fuzz`); its lockfile
    // must follow the crates it fuzzes, or `make fuzz` re-resolves from the
    // network and rewrites a tracked file. Not `--offline`: on a fresh
    // machine the crates only fuzz/ uses (libfuzzer-sys) are not in the
    // local registry cache yet, and that is not a stale lockfile.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(repo::root().join("fuzz"))
        .output()
        .expect("run cargo metadata in fuzz/");
    assert!(
        out.status.success(),
        "fuzz/Cargo.lock is stale (or crates.io is unreachable): run `cargo metadata \
         --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null` and commit fuzz/Cargo.lock\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
