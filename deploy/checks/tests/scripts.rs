//! make deploy / teardown / demo as a new user meets them: they fail at once,
//! naming every missing tool and running nothing, and every command deploy.sh
//! runs is explained in docs/deploy.md.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use deploy_checks::repo::root;

/// A PATH holding only stubs for `present`; each stub records that it ran.
fn stub_path(dir: &Path, present: &[&str]) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in present {
        let path = bin.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> \"{}\"\nexit 1\n",
                dir.join("ran.log").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn bash() -> String {
    ["/bin/bash", "/usr/bin/bash"]
        .iter()
        .find(|p| Path::new(p).exists())
        .expect("bash")
        .to_string()
}

fn run_script(script: &str, present: &[&str]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = stub_path(dir.path(), present);
    let out = Command::new(bash())
        .arg(root().join("deploy/scripts").join(script))
        .env_clear()
        .env("PATH", &path)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    let ran = std::fs::read_to_string(dir.path().join("ran.log")).unwrap_or_default();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        ran,
    )
}

#[test]
fn deploy_without_any_tool_names_all_four_and_changes_nothing() {
    let (code, err, ran) = run_script("deploy.sh", &[]);
    assert_eq!(code, 69, "exit code (EX_UNAVAILABLE); stderr:\n{err}");
    for tool in ["docker", "kind", "kubectl", "helm"] {
        assert!(
            err.contains(&format!("    - {tool}")),
            "{tool} not named with an install hint:\n{err}"
        );
    }
    assert!(err.contains("Nothing was changed"), "{err}");
    assert!(err.contains("docs/deploy.md"), "{err}");
    assert!(ran.is_empty(), "something ran: {ran}");
}

#[test]
fn deploy_without_helm_names_only_helm_and_runs_nothing() {
    let (code, err, ran) = run_script("deploy.sh", &["docker", "kind", "kubectl"]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("missing required tool(s): helm\n"), "{err}");
    assert!(err.contains("https://helm.sh/"), "{err}");
    assert!(
        !err.contains("    - docker")
            && !err.contains("    - kind")
            && !err.contains("    - kubectl"),
        "{err}"
    );
    assert!(
        ran.is_empty(),
        "a tool ran before the check finished: {ran}"
    );
}

#[test]
fn deploy_with_a_stopped_docker_daemon_says_so() {
    // All four present, but `docker info` fails (the stub exits 1).
    let (code, err, ran) = run_script("deploy.sh", &["docker", "kind", "kubectl", "helm"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("daemon is not reachable"), "{err}");
    assert_eq!(
        ran.trim(),
        "docker info",
        "only `docker info` may run before the daemon check"
    );
}

#[test]
fn deploy_refuses_unknown_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bash())
        .arg(root().join("deploy/scripts/deploy.sh"))
        .arg("--skip-buld")
        .env_clear()
        .env("PATH", stub_path(dir.path(), &[]))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument: --skip-buld"));
}

#[test]
fn teardown_and_demo_name_their_missing_tool() {
    let (code, err, _) = run_script("teardown.sh", &[]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("missing required tool(s): kind\n"), "{err}");
    let (code, err, _) = run_script("demo-cluster.sh", &[]);
    assert_eq!(code, 69, "{err}");
    assert!(err.contains("missing required tool(s): kubectl\n"), "{err}");
}

/// `tool subcommand` pairs deploy.sh runs (flags and their values skipped).
fn commands_in(script: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut heredoc: Option<String> = None;
    for line in script.lines().map(str::trim) {
        // Messages to the user are not commands: comments, say/die, heredocs.
        if let Some(end) = &heredoc {
            if line == end {
                heredoc = None;
            }
            continue;
        }
        if let Some((_, tag)) = line.split_once("<<") {
            heredoc = Some(
                tag.trim_start_matches('-')
                    .trim_matches(['\'', '"'])
                    .to_string(),
            );
            continue;
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if line.starts_with('#') || ["say", "die", "require_tools"].contains(&first) {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let tool = w
                .trim_start_matches("$(")
                .trim_start_matches('(')
                .trim_start_matches("DOCKER_BUILDKIT=1");
            if !["docker", "kind", "kubectl", "helm"].contains(&tool)
                || (i > 0 && words[i - 1].ends_with('='))
            {
                continue;
            }
            let mut rest = words[i + 1..].iter();
            let mut sub = None;
            while let Some(w) = rest.next() {
                if w.starts_with('-') {
                    if !w.contains('=')
                        && matches!(
                            *w,
                            "--context" | "--kube-context" | "-n" | "--namespace" | "--name"
                        )
                    {
                        rest.next();
                    }
                    continue;
                }
                sub = Some(w.trim_matches('"'));
                break;
            }
            if let Some(sub) = sub {
                found.insert(format!("{tool} {sub}"));
            }
        }
    }
    found
}

#[test]
fn every_command_deploy_runs_is_explained_in_the_docs() {
    let script = std::fs::read_to_string(root().join("deploy/scripts/deploy.sh")).unwrap();
    let docs = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    let commands = commands_in(&script);
    println!("commands deploy.sh runs: {commands:#?}");
    for must in [
        "kind create",
        "helm upgrade",
        "docker build",
        "kind load",
        "kubectl apply",
        "kubectl wait",
    ] {
        assert!(
            commands.contains(must),
            "the command scanner missed {must}: {commands:?}"
        );
    }
    let missing: Vec<_> = commands
        .iter()
        .filter(|c| !docs.contains(&format!("`{c}")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/deploy.md does not explain: {missing:?}"
    );
}
