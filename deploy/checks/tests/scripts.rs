//! make deploy / install / teardown / demo as a new user meets them: they
//! fail at once, naming every missing or too old tool and running nothing,
//! and every command deploy.sh and install.sh run is explained in
//! docs/deploy.md.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use deploy_checks::repo::root;

/// A PATH holding only stubs for `present`; each stub records that it ran,
/// then fails.
fn stub_path(dir: &Path, present: &[&str]) -> std::path::PathBuf {
    let stubs: Vec<(&str, &str)> = present.iter().map(|t| (*t, "exit 1")).collect();
    scripted_path(dir, &stubs)
}

/// A PATH holding stubs that record their arguments, then run their shell
/// `body` (`$*` are the arguments), plus the coreutils the scripts use.
fn scripted_path(dir: &Path, stubs: &[(&str, &str)]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for (tool, body) in stubs {
        let path = bin.join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\necho \"{tool} $*\" >> \"{}\"\n{body}\n",
                dir.join("ran.log").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for tool in [
        "awk", "cut", "grep", "sed", "cat", "head", "tr", "yes", "seq",
    ] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} not found"));
        let _ = std::os::unix::fs::symlink(real, bin.join(tool));
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

/// Stubs of the four tools at the given versions, with a running daemon.
fn tools_at(docker: &str, kind: &str, kubectl: &str, helm: &str) -> Vec<(&'static str, String)> {
    vec![
        ("docker", format!("case \"$1\" in info) exit 0 ;; version) echo {docker} ;; esac; exit 1")),
        ("kind", format!("case \"$1\" in version) echo 'kind v{kind} go1.24.6 linux/amd64' ;; *) exit 1 ;; esac")),
        ("kubectl", format!("case \"$1\" in version) echo 'Client Version: v{kubectl}'; echo 'Kustomize Version: v5.7.1' ;; *) exit 1 ;; esac")),
        ("helm", format!("case \"$1\" in version) echo v{helm} ;; *) exit 1 ;; esac")),
    ]
}

fn run_deploy_with(stubs: &[(&str, String)]) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let stubs: Vec<(&str, &str)> = stubs.iter().map(|(t, b)| (*t, b.as_str())).collect();
    let path = scripted_path(dir.path(), &stubs);
    let out = Command::new(bash())
        .arg(root().join("deploy/scripts/deploy.sh"))
        .env_clear()
        .env("PATH", &path)
        .env("HOME", dir.path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(dir.path().join("ran.log")).unwrap_or_default(),
    )
}

#[test]
fn deploy_names_the_minimum_version_of_each_tool_before_changing_anything() {
    for (stubs, want) in [
        (
            tools_at("20.10.24", "0.33.0", "1.36.4", "3.22.0"),
            "docker 20.10.24 is too old: make deploy needs docker >= 23.0.0",
        ),
        (
            tools_at("28.2.2", "0.31.0", "1.36.4", "3.22.0"),
            "kind 0.31.0 is too old: make deploy needs kind >= 0.32.0",
        ),
        (
            tools_at("28.2.2", "0.33.0", "1.34.2", "3.22.0"),
            "kubectl 1.34.2 is too old: make deploy needs kubectl >= 1.35.0",
        ),
        (
            tools_at("28.2.2", "0.33.0", "1.38.0", "3.22.0"),
            "kubectl 1.38.0 is too new for Kubernetes 1.36.4: use kubectl <= 1.37.999.x",
        ),
        (
            tools_at("28.2.2", "0.33.0", "1.36.4", "3.10.3"),
            "helm 3.10.3 is too old: make deploy needs helm >= 3.12.0",
        ),
    ] {
        let (code, err, ran) = run_deploy_with(&stubs);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains(want), "wanted {want:?} in:\n{err}");
        assert!(
            !ran.contains("kind create")
                && !ran.contains("helm upgrade")
                && !ran.contains("docker build"),
            "something was changed before the version checks passed: {ran}"
        );
    }
}

/// `kind get clusters | grep -qx` under pipefail: grep stops at the first
/// match, kind dies of SIGPIPE, and the pipeline "fails" — so deploy.sh
/// created a cluster that already existed. Pinned with many clusters.
#[test]
fn deploy_sees_an_existing_cluster_among_many() {
    let mut stubs = tools_at("28.2.2", "0.33.0", "1.36.4", "3.22.0");
    stubs[1].1 = "case \"$1 $2\" in 'version ') echo 'kind v0.33.0' ;; 'get clusters') echo zt-demo; yes other-cluster | head -n 200000 ;; *) exit 1 ;; esac".into();
    let (_, err, ran) = run_deploy_with(&stubs);
    assert!(err.contains("1/4 kind cluster zt-demo exists"), "{err}");
    assert!(
        !ran.contains("kind create"),
        "created a cluster that exists: {ran}"
    );
}

#[test]
fn install_refuses_garbage_and_missing_tools_before_touching_the_cluster() {
    let (code, err, _) = run_script("install.sh", &[]);
    assert_eq!(code, 69, "{err}");
    assert!(
        err.contains("missing required tool(s): kubectl helm\n"),
        "{err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = scripted_path(dir.path(), &[("kubectl", "exit 1"), ("helm", "exit 1")]);
    let run = |env: &[(&str, &str)]| {
        let mut cmd = Command::new(bash());
        cmd.arg(root().join("deploy/scripts/install.sh"))
            .env_clear()
            .env("PATH", &path)
            .env("HOME", dir.path());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[("WAIT", "yes")]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("WAIT must be 0 or 1, got 'yes'"), "{err}");
    let (code, err) = run(&[("ZT_DEMO_USERS", "yes")]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("ZT_DEMO_USERS must be 0 or 1, got 'yes'"),
        "{err}"
    );
    // kubectl answers nothing: no context.
    let (code, err) = run(&[]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no kube context"), "{err}");
    let ran = std::fs::read_to_string(dir.path().join("ran.log")).unwrap_or_default();
    assert!(!ran.contains("apply") && !ran.contains("create"), "{ran}");
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
    assert!(
        err.contains("missing required tool(s): kubectl curl\n"),
        "{err}"
    );
    assert!(
        err.contains("    - curl: "),
        "no install hint for curl:\n{err}"
    );
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
        if let Some((_, tag)) = line.split_once("<<").filter(|_| !line.contains("<<<")) {
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
        // Messages after `|| die "..."` or `&& say "..."` are not commands either.
        let line = [" die ", " say "]
            .iter()
            .filter_map(|m| line.find(m))
            .min()
            .map_or(line, |i| &line[..i]);
        let words: Vec<&str> = line.split_whitespace().collect();
        for (i, w) in words.iter().enumerate() {
            let tool = w
                .trim_start_matches('"')
                .trim_start_matches("$(")
                .trim_start_matches('(')
                .trim_start_matches("DOCKER_BUILDKIT=1");
            if !["docker", "kind", "kubectl", "helm"].contains(&tool)
                || (i > 0 && (words[i - 1].ends_with('=') || words[i - 1] == "check_version"))
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
fn every_command_deploy_and_install_run_is_explained_in_the_docs() {
    let script = ["deploy.sh", "install.sh"]
        .map(|f| std::fs::read_to_string(root().join("deploy/scripts").join(f)).unwrap())
        .join("\n")
        .lines()
        // install.sh calls kubectl through k(), pinned to ZT_CONTEXT when set.
        .filter(|l| !l.trim_start().starts_with("k() {"))
        .map(|l| {
            let l = l.replace("$(k ", "$(kubectl ");
            match l.trim_start().strip_prefix("k ") {
                Some(rest) => format!("kubectl {rest}"),
                None => l,
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let docs = std::fs::read_to_string(root().join("docs/deploy.md")).unwrap();
    let commands = commands_in(&script);
    println!("commands deploy.sh and install.sh run: {commands:#?}");
    for must in [
        "kind create",
        "helm upgrade",
        "docker build",
        "kind load",
        "kubectl apply",
        "kubectl get",
        "kubectl rollout",
        "kubectl delete",
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

/// `wait_job` (lib.sh) against a kubectl that answers poll `n` from the
/// files `job.<n>` (after the Job's uid `u1`) and `pods.<n>` (`FAIL`: the
/// query fails), the last one given holding after it, as install.sh's watch
/// of the OpenBao bootstrap Job uses it. Returns the exit code and
/// `ZT_JOB_POD ZT_JOB_REASON ZT_JOB_PREVIOUS` (without empty ones).
fn wait_job(mode: &str, limit: u32, polls: &[(&str, &str)]) -> (i32, String) {
    wait_job_with(mode, limit, polls, &[])
}

/// [`wait_job`] with more environment variables.
fn wait_job_with(
    mode: &str,
    limit: u32,
    polls: &[(&str, &str)],
    env: &[(&str, &str)],
) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (i, (job, pods)) in polls.iter().enumerate() {
        std::fs::write(d.join(format!("job.{}", i + 1)), format!("u1 {job}")).unwrap();
        std::fs::write(d.join(format!("pods.{}", i + 1)), pods).unwrap();
    }
    let last = polls.len();
    let body = format!(
        r#"d="{d}"; n=$(cat "$d/n" 2>/dev/null || echo 0)
case "$*" in
  *"get job"*) n=$((n + 1)); [ $n -le {last} ] || n={last}; echo $n > "$d/n"; cat "$d/job.$n" ;;
  *"get pods -l batch.kubernetes.io/controller-uid=u1 "*) [ "$(cat "$d/pods.$n")" != FAIL ] || exit 1; cat "$d/pods.$n" ;;
  *) exit 1 ;;
esac"#,
        d = d.display()
    );
    let path = scripted_path(d, &[("kubectl", &body)]);
    let out = Command::new(bash())
        .arg("-c")
        .arg(format!(
            r#". "{}"; rc=0; wait_job openbao-bootstrap {limit} {mode} kubectl -n openbao || rc=$?; echo $rc $ZT_JOB_POD $ZT_JOB_REASON $ZT_JOB_PREVIOUS"#,
            root().join("deploy/scripts/lib.sh").display()
        ))
        .env_clear()
        .envs(env.iter().copied())
        .env("PATH", &path)
        .env("HOME", d)
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (rc, rest) = line.split_once(' ').unwrap_or((&line, ""));
    (
        rc.parse().unwrap_or_else(|_| {
            panic!(
                "no exit code: {line:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        }),
        rest.trim().to_string(),
    )
}

/// A pod line as `wait_job`'s jsonpath prints it: name, the current and the
/// last termination (exit code/finish time, "/" for none), waiting reason.
fn pod(name: &str, now: &str, last: &str, waiting: &str) -> String {
    format!("{name} {now} {last} {waiting}\n")
}

#[test]
fn the_bootstrap_watch_stops_on_a_new_failure_only() {
    let failed_before = pod("b-1", "/", "1/2026-12-02T01:00:00Z", "CrashLoopBackOff");
    let running_again = pod("b-1", "/", "1/2026-12-02T01:00:00Z", "");
    let failed_again = pod("b-1", "/", "1/2026-12-02T01:05:00Z", "CrashLoopBackOff");

    // A Job kept from an earlier run whose attempt failed before this run:
    // the fixed attempt starts (the restart count rises) and completes.
    let (rc, _) = wait_job(
        "kept",
        10,
        &[
            ("", &failed_before),
            ("", &running_again),
            ("Complete ", &running_again),
        ],
    );
    assert_eq!(rc, 0, "a kept Job's old failure stopped the watch");
    // The same when the first query of its pods fails: the baseline is
    // taken at the first one that answers.
    let (rc, _) = wait_job(
        "kept",
        10,
        &[
            ("", "FAIL"),
            ("", &failed_before),
            ("Complete ", &running_again),
        ],
    );
    assert_eq!(rc, 0, "a failed first query lost the baseline");

    // The same Job failing once more during the watch: stop, naming the
    // pod; the failed attempt is the previous container (logs --previous).
    let (rc, what) = wait_job("kept", 10, &[("", &failed_before), ("", &failed_again)]);
    assert_eq!((rc, what.as_str()), (2, "b-1 --previous"));

    // A new Job (fresh): any failure counts, even one seen at the first poll.
    let (rc, what) = wait_job("fresh", 10, &[("", &failed_before)]);
    assert_eq!((rc, what.as_str()), (2, "b-1 --previous"));
    // A failure that is the current container: its own log, not --previous.
    let (rc, what) = wait_job(
        "fresh",
        10,
        &[
            ("", &pod("b-2", "/", "/", "ContainerCreating")),
            ("", &pod("b-2", "1/2026-12-02T01:06:00Z", "/", "")),
        ],
    );
    assert_eq!((rc, what.as_str()), (2, "b-2"));

    // A successful exit before the Job says Complete is no failure.
    let (rc, _) = wait_job(
        "fresh",
        10,
        &[
            ("", &pod("b-3", "0/2026-12-02T01:07:00Z", "/", "")),
            ("Complete ", &pod("b-3", "0/2026-12-02T01:07:00Z", "/", "")),
        ],
    );
    assert_eq!(rc, 0);

    // Failed, cannot start, and the deadline.
    assert_eq!(wait_job("fresh", 10, &[("Failed ", "")]).0, 1);
    let pull = pod("b-4", "/", "/", "ImagePullBackOff");
    let (rc, what) = wait_job("fresh", 10, &[("", &pull)]);
    assert_eq!((rc, what.as_str()), (3, "b-4 ImagePullBackOff"));
    // A kept Job's pod gets the kubelet's pull back-off to find an image
    // loaded since: no stop within it, here until the deadline...
    assert_eq!(wait_job("kept", 3, &[("", &pull)]).0, 4);
    // ...but a stop after it (ZT_JOB_PULL_GRACE shortened to 1 s here).
    let (rc, what) = wait_job_with("kept", 10, &[("", &pull)], &[("ZT_JOB_PULL_GRACE", "1")]);
    assert_eq!((rc, what.as_str()), (3, "b-4 ImagePullBackOff"));
    // ...and one that pulls it completes.
    let (rc, _) = wait_job(
        "kept",
        10,
        &[
            ("", &pull),
            ("Complete ", &pod("b-4", "0/2026-12-02T01:08:00Z", "/", "")),
        ],
    );
    assert_eq!(rc, 0);
    assert_eq!(
        wait_job("fresh", 0, &[("", &pod("b-5", "/", "/", ""))]).0,
        4
    );
}

/// install.sh's step 0 on a cluster whose StorageClasses are `classes` (the
/// lines its jsonpath prints: GA and beta default annotations), or whose
/// listing fails (`None`), with kubectl stubbed for the checks before it.
/// Returns the exit code and stderr; nothing after step 0 can succeed (any
/// other kubectl call fails).
fn install_step0(wait: &str, classes: Option<&str>) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let listing = match classes {
        Some(c) => format!("printf '{c}'"),
        None => {
            "echo 'Error from server (Forbidden): storageclasses is forbidden' >&2; exit 1".into()
        }
    };
    let kubectl = format!(
        r#"case "$*" in
  "config current-context") echo real-cluster ;;
  "version -o json") echo '{{"clientVersion": {{"minor": "33"}}, "serverVersion": {{"minor": "33"}}}}' ;;
  "get crd ciliumnetworkpolicies.cilium.io") echo ok ;;
  *"get configmap cilium-config"*) printf true ;;
  "get storageclass "*) {listing} ;;
  *) echo "stub: no answer for $*" >&2; exit 1 ;;
esac"#
    );
    let path = scripted_path(dir.path(), &[("kubectl", &kubectl), ("helm", "exit 1")]);
    let out = Command::new(bash())
        .arg(root().join("deploy/scripts/install.sh"))
        .env_clear()
        .env("PATH", &path)
        .env("HOME", dir.path())
        .env("WAIT", wait)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn install_needs_a_default_storage_class_by_either_annotation() {
    const NONE: &str = "no default StorageClass";
    // None is default: stop before applying anything, saying how to mark one.
    let (code, err) = install_step0("1", Some("false \\n \\n"));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(NONE) && err.contains("kubectl patch storageclass"),
        "{err}"
    );
    assert!(!err.contains("1/8"), "went on: {err}");
    // The GA or the beta annotation: step 0 passes (step 1 then fails on
    // the stub).
    for classes in ["true \\n", " true\\nfalse \\n"] {
        let (_, err) = install_step0("1", Some(classes));
        assert!(
            !err.contains(NONE) && err.contains("1/8"),
            "{classes:?}: {err}"
        );
    }
    // WAIT=0 only says so; a listing the account may not do is said as such.
    let (_, err) = install_step0("0", Some(""));
    assert!(
        err.contains(&format!("note: this cluster has {NONE}")) && err.contains("1/8"),
        "{err}"
    );
    let (_, err) = install_step0("1", None);
    assert!(
        err.contains("cannot list the StorageClasses")
            && err.contains("Forbidden")
            && err.contains("1/8"),
        "{err}"
    );
}
