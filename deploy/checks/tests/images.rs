//! Images: every Dockerfile builds from files that exist and produces the
//! binary its crate declares; every image a manifest runs is ours or pinned in
//! deploy/versions.env; pods are locked down.

mod common;

use std::collections::BTreeSet;

use deploy_checks::dockerfile;
use deploy_checks::repo::{root, Versions};
use serde_json::Value;

const OURS: &[&str] = &[
    "zt-sidecar",
    "zt-injector",
    "app-backend",
    "app-frontend",
    "zt-bootstrap",
];

/// Images of deploy/examples (built by deploy.sh from their own Dockerfiles,
/// nothing of ours inside).
const EXAMPLES: &[&str] = &["psql"];

fn workspace_members() -> Vec<String> {
    let cargo: toml::Value =
        toml::from_str(&std::fs::read_to_string(root().join("Cargo.toml")).unwrap()).unwrap();
    cargo["workspace"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_string())
        .collect()
}

/// (package name, binary names cargo builds for it) of a workspace member.
fn package(member: &str) -> (String, Vec<String>) {
    let dir = root().join(member);
    let cargo: toml::Value =
        toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
    let name = cargo["package"]["name"].as_str().unwrap().to_string();
    let mut bins: Vec<String> = cargo
        .get("bin")
        .and_then(|b| b.as_array())
        .map(|b| {
            b.iter()
                .filter_map(|b| b["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    // Cargo's default binary target is named after the package.
    if bins.is_empty() || dir.join("src/main.rs").exists() {
        bins.push(name.clone());
    }
    (name, bins)
}

#[test]
fn dockerfiles_copy_existing_paths_and_build_declared_binaries() {
    let v = Versions::load().unwrap();
    let members = workspace_members();
    for image in OURS {
        let path = root().join(format!("deploy/docker/{image}.Dockerfile"));
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let ins = dockerfile::parse(&text);
        let label = format!("deploy/docker/{image}.Dockerfile");
        let mut copied = BTreeSet::new();
        for i in &ins {
            if let Some((from, sources, _)) = i.copy_parts() {
                if from.is_some() {
                    continue;
                }
                for s in sources {
                    assert!(
                        !s.contains(['*', '?', '$']),
                        "{label}:{}: COPY source {s} must be a plain path",
                        i.line
                    );
                    assert!(
                        root().join(&s).exists(),
                        "{label}:{}: COPY source {s} does not exist in the repository",
                        i.line
                    );
                    copied.insert(s.trim_end_matches('/').to_string());
                }
            }
        }
        for m in &members {
            assert!(copied.contains(m.as_str()), "{label}: workspace member {m} is not copied (cargo would fail to load the workspace)");
        }
        // BuildKit reads <Dockerfile>.dockerignore: it must exist (or the
        // context would carry target/ and .git) and exclude nothing COPY needs.
        let ignore_path = root().join(format!("deploy/docker/{image}.Dockerfile.dockerignore"));
        let ignore = std::fs::read_to_string(&ignore_path)
            .unwrap_or_else(|e| panic!("{}: {e}", ignore_path.display()));
        for pattern in ignore
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.contains('*'))
        {
            let pattern = pattern.trim_matches('/');
            for s in &copied {
                assert!(
                    s != pattern && !s.starts_with(&format!("{pattern}/")),
                    "{}: `{pattern}` excludes {s}, which {label} copies \
                     (the build would fail: \"{s}\": not found)",
                    ignore_path.display()
                );
            }
        }
        assert!(
            copied.contains("Cargo.lock"),
            "{label}: Cargo.lock must be copied for --locked"
        );
        // cargo build -p <package> --bin <bin>: a real package and one of its binaries.
        let run = ins
            .iter()
            .find(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
            .unwrap_or_else(|| panic!("{label}: no cargo build"));
        let words = run.words();
        let after = |flag: &str| {
            words
                .windows(2)
                .find(|w| w[0] == flag)
                .map(|w| w[1].to_string())
                .unwrap_or_else(|| panic!("{label}: cargo build without {flag}"))
        };
        let (pkg, bin) = (after("-p"), after("--bin"));
        assert!(
            words.contains(&"--locked") && words.contains(&"--release"),
            "{label}: build --release --locked"
        );
        let (_, bins) = members
            .iter()
            .map(|m| package(m))
            .find(|(n, _)| *n == pkg)
            .unwrap_or_else(|| panic!("{label}: no workspace package {pkg}"));
        assert!(
            bins.contains(&bin),
            "{label}: package {pkg} has no binary {bin} (it has {bins:?})"
        );
        assert!(
            text.contains(&format!("/out/{bin}")),
            "{label}: the runtime stage must copy /out/{bin}"
        );
        // Runtime: non-root, pinned builder.
        let last_user = ins
            .iter()
            .rev()
            .find(|i| i.keyword == "USER")
            .unwrap_or_else(|| panic!("{label}: no USER"));
        assert!(
            !last_user.args.starts_with('0') && !last_user.args.starts_with("root"),
            "{label}: runs as root"
        );
        for (arg, default) in dockerfile::arg_defaults(&ins) {
            assert_eq!(
                v.get(&arg)
                    .unwrap_or_else(|_| panic!("{label}: ARG {arg} is not pinned in versions.env")),
                default,
                "{label}: ARG {arg} default"
            );
        }
        let froms: Vec<&str> = ins
            .iter()
            .filter(|i| i.keyword == "FROM")
            .map(|i| i.words()[0])
            .collect();
        assert!(froms.len() >= 2, "{label}: multi-stage build expected");
        for f in froms {
            assert!(
                f.contains(':') && !f.ends_with(":latest"),
                "{label}: base image {f} is not pinned to a tag"
            );
        }
    }
}

#[test]
fn dockerfile_parser_joins_continuations_and_splits_copy() {
    let ins = dockerfile::parse("# c\nFROM a:1 AS b\nRUN x \\\n  # inner comment\n  y\nCOPY --chmod=0755 --from=b /o/x /usr/bin/x\nCOPY p q /d/\n");
    assert_eq!(ins.len(), 4);
    assert_eq!(ins[1].args, "x y");
    assert_eq!(
        ins[2].copy_parts(),
        Some((Some("b".into()), vec!["/o/x".into()], "/usr/bin/x".into()))
    );
    assert_eq!(
        ins[3].copy_parts(),
        Some((None, vec!["p".into(), "q".into()], "/d/".into()))
    );
}

/// Every container image of the manifests: ours (built by deploy.sh) or a
/// third-party image whose tag comes from deploy/versions.env.
#[test]
fn every_image_is_ours_or_pinned_in_versions_env() {
    let v = Versions::load().unwrap();
    let pin = |k: &str| v.get(k).unwrap().to_string();
    let pinned = [
        ("ghcr.io/spiffe/spire-server", pin("SPIRE_VERSION")),
        ("ghcr.io/spiffe/spire-agent", pin("SPIRE_VERSION")),
        (
            "ghcr.io/spiffe/oidc-discovery-provider",
            pin("SPIRE_VERSION"),
        ),
        (
            "ghcr.io/spiffe/spire-controller-manager",
            pin("SPIRE_CONTROLLER_MANAGER_VERSION"),
        ),
        (
            "ghcr.io/spiffe/spiffe-csi-driver",
            pin("SPIFFE_CSI_DRIVER_VERSION"),
        ),
        (
            "registry.k8s.io/sig-storage/csi-node-driver-registrar",
            format!("v{}", pin("CSI_NODE_DRIVER_REGISTRAR_VERSION")),
        ),
        ("quay.io/openbao/openbao", pin("OPENBAO_VERSION")),
        ("docker.io/library/postgres", pin("POSTGRES_IMAGE_TAG")),
    ];
    assert!(
        pin("POSTGRES_IMAGE_TAG").starts_with(&format!("{}.", pin("POSTGRES_MAJOR"))),
        "POSTGRES_IMAGE_TAG must be of POSTGRES_MAJOR"
    );
    let deploy_sh = std::fs::read_to_string(root().join("deploy/scripts/deploy.sh")).unwrap();
    let mut seen = BTreeSet::new();
    for m in common::deployed() {
        let Some(t) = m.pod_template() else { continue };
        for c in ["containers", "initContainers"]
            .iter()
            .filter_map(|k| t.pointer(&format!("/spec/{k}")))
            .flat_map(|c| c.as_array().unwrap())
        {
            let image = c["image"].as_str().unwrap();
            seen.insert(image.to_string());
            if let Some(rest) = image.strip_prefix("zt-platform/") {
                let (name, tag) = rest.split_once(':').unwrap();
                assert!(
                    (OURS.contains(&name) || EXAMPLES.contains(&name)) && tag == "dev",
                    "{}: unknown own image {image}",
                    m.describe()
                );
                assert!(
                    deploy_sh.contains(&format!(" {name}=deploy/"))
                        || deploy_sh.contains(&format!("({name}=deploy/")),
                    "deploy.sh must build and load {image}"
                );
                assert_eq!(
                    c["imagePullPolicy"],
                    "IfNotPresent",
                    "{}: {image} is loaded with kind load, never pulled",
                    m.describe()
                );
                continue;
            }
            let (repo, tag) = image
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("{}: {image} has no tag", m.describe()));
            let want = pinned.iter().find(|(r, _)| *r == repo).unwrap_or_else(|| panic!("{}: {image} is not pinned in deploy/versions.env (add it to this test's table)", m.describe()));
            assert_eq!(tag, want.1, "{}: {image}", m.describe());
        }
    }
    println!("images: {seen:#?}");
}

fn containers(t: &Value) -> Vec<&Value> {
    ["containers", "initContainers"]
        .iter()
        .filter_map(|k| t.pointer(&format!("/spec/{k}")))
        .flat_map(|c| c.as_array().unwrap().iter())
        .collect()
}

/// Apps (with their injected sidecars), OpenBao, PostgreSQL and the SPIRE
/// server: non-root, read-only root filesystem, no privilege escalation, all
/// capabilities dropped, requests and limits. (The SPIRE agent and the CSI
/// driver are the documented exceptions: host PID / mount propagation.)
#[test]
fn pods_are_locked_down() {
    let exceptions = ["spire-agent", "spiffe-csi-driver"];
    let settings = common::injector_settings();
    for m in common::deployed() {
        let Some(t) = m.pod_template() else { continue };
        let t = &common::injected_template(t, &settings);
        let all_c = containers(t);
        for c in &all_c {
            let who = format!("{} container {}", m.describe(), c["name"]);
            assert!(
                c.pointer("/resources/requests/cpu").is_some()
                    && c.pointer("/resources/limits/memory").is_some(),
                "{who}: requests and limits"
            );
            assert_eq!(
                c.pointer("/securityContext/readOnlyRootFilesystem"),
                Some(&Value::Bool(true)),
                "{who}: read-only root filesystem"
            );
            if exceptions.contains(&m.name()) {
                continue;
            }
            assert_eq!(
                c.pointer("/securityContext/allowPrivilegeEscalation"),
                Some(&Value::Bool(false)),
                "{who}"
            );
            assert_eq!(
                c.pointer("/securityContext/capabilities/drop"),
                Some(&serde_json::json!(["ALL"])),
                "{who}: drop ALL capabilities"
            );
            assert!(
                c.pointer("/securityContext/capabilities/add").is_none(),
                "{who}: adds capabilities"
            );
        }
        if exceptions.contains(&m.name()) {
            continue;
        }
        assert_eq!(
            t.pointer("/spec/securityContext/runAsNonRoot"),
            Some(&Value::Bool(true)),
            "{}: runAsNonRoot",
            m.describe()
        );
        assert_eq!(
            t.pointer("/spec/securityContext/seccompProfile/type")
                .and_then(Value::as_str),
            Some("RuntimeDefault"),
            "{}",
            m.describe()
        );
        for v in t
            .pointer("/spec/volumes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert!(
                v.get("hostPath").is_none(),
                "{}: hostPath volume {}",
                m.describe(),
                v["name"]
            );
        }
    }
}

/// The annotated pods as they run (their sidecar injected): identity from
/// the SPIFFE CSI driver, no API token, secrets in memory and read-only for
/// the apps.
#[test]
fn annotated_pods_get_identity_from_the_csi_driver_and_secrets_in_memory() {
    let all = common::deployed();
    let settings = common::injector_settings();
    for (kind, ns, name, secrets) in [
        ("Deployment", "99-apps", "backend", true),
        ("Deployment", "99-apps", "frontend", false),
        ("CronJob", "zt-examples", "psql-report", true),
    ] {
        let m = common::find(&all, kind, ns, name);
        let t = common::injected_template(m.pod_template().unwrap(), &settings);
        let vols = t.pointer("/spec/volumes").unwrap().as_array().unwrap();
        let csi = vols
            .iter()
            .find(|v| v.get("csi").is_some())
            .unwrap_or_else(|| panic!("{name}: no CSI volume"));
        assert_eq!(csi["csi"]["driver"], "csi.spiffe.io");
        assert_eq!(csi["csi"]["readOnly"], true);
        assert_eq!(
            t.pointer("/spec/automountServiceAccountToken"),
            Some(&Value::Bool(false)),
            "{name}: no API token in app pods"
        );
        assert_eq!(
            t.pointer("/spec/initContainers/0/name")
                .and_then(Value::as_str),
            Some("zt-sidecar"),
            "{name}: the sidecar is injected first"
        );
        let run = vols.iter().find(|v| v["name"] == "zt-run");
        assert_eq!(
            run.is_some(),
            secrets,
            "{name}: a secrets volume only with secrets"
        );
        if !secrets {
            continue;
        }
        assert_eq!(
            run.unwrap()["emptyDir"]["medium"],
            "Memory",
            "secrets must live in memory"
        );
        let app = t.pointer("/spec/containers/0").unwrap();
        let mount = app["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "zt-run")
            .unwrap();
        assert_eq!(
            mount["readOnly"], true,
            "{name}: the app only reads secrets"
        );
        // The files' group is the app's group: readable without fsGroup.
        let groups = t
            .pointer("/spec/securityContext/supplementalGroups")
            .and_then(Value::as_array)
            .unwrap_or_else(|| panic!("{name}: no supplementalGroups"));
        assert!(
            groups.contains(&app["securityContext"]["runAsGroup"]),
            "{name}: the secrets group {groups:?} is not the app's group"
        );
        assert!(
            t.pointer("/spec/securityContext/fsGroup").is_none(),
            "{name}: no fsGroup is needed"
        );
    }
}

#[test]
fn every_dockerignore_belongs_to_one_of_our_dockerfiles() {
    let dir = root().join("deploy/docker");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if let Some(image) = name.strip_suffix(".Dockerfile.dockerignore") {
            assert!(
                OURS.contains(&image),
                "deploy/docker/{name}: no deploy/docker/{image}.Dockerfile uses it (renamed image?)"
            );
        }
    }
}
