//! Every image the platform's manifests name, assembled for the lab from
//! what this machine has: our binaries (the test build's), SPIRE's and
//! OpenBao's from `make tools`, the pinned kubectl, and Debian's packages
//! for the parts that need a userland (PostgreSQL; the bootstrap's shell
//! and psql). Names, entrypoints, users and paths are those of the
//! Dockerfiles in deploy/docker and of the upstream images, so the
//! manifests run unchanged; `deploy/checks/tests/lab_images.rs` keeps the
//! two in step.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::super::images::Image;
use crate::sidecar::workspace_binary;
// The PostgreSQL major the lab's `postgres` image carries (Debian 12's).
use crate::tools::{repo_root, Tools, POSTGRES_MAJOR as PG_MAJOR};

/// Our images' tag (deploy/docker, deploy/k8s).
pub const OUR_TAG: &str = "dev";

fn versions() -> anyhow::Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(repo_root().join("deploy/versions.env"))?;
    Ok(text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

fn version(all: &[(String, String)], key: &str) -> anyhow::Result<String> {
    all.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .with_context(|| format!("{key} is not set in deploy/versions.env"))
}

/// A workspace binary of the test build (`cargo build` made it), or `$env`.
fn ours(name: &str) -> anyhow::Result<PathBuf> {
    let env = format!("ZT_{}_BIN", name.to_uppercase().replace('-', "_"));
    workspace_binary(name, &env)
}

/// What gcr.io/distroless/cc-debian12:nonroot gives our Rust binaries: a
/// passwd with nonroot, CA certificates, /tmp.
fn distroless(name: &str) -> Image {
    let mut image = Image::new(name);
    image
        .bytes(
            "/etc/passwd",
            "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
            0o644,
        )
        .bytes("/etc/group", "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n", 0o644);
    let certs = Path::new("/etc/ssl/certs/ca-certificates.crt");
    if certs.exists() {
        image.file(certs, "/etc/ssl/certs/ca-certificates.crt", 0o644);
    }
    image
}

/// Adds Debian's binaries by name (from /usr/bin or /bin), with their libraries.
fn debian_tools(image: &mut Image, names: &[&str]) -> anyhow::Result<()> {
    for name in names {
        let from = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(name))
            .find(|p| p.exists())
            .with_context(|| format!("{name} not found in /usr/bin or /bin"))?;
        image.binary(&from, &format!("/usr/bin/{name}"))?;
    }
    Ok(())
}

/// Every image `make install` needs in the lab, plus the lab-only GitHub stand-in.
pub fn platform_images(base: &Tools, kubectl: &Path) -> anyhow::Result<Vec<Image>> {
    let v = versions()?;
    let spire = version(&v, "SPIRE_VERSION")?;
    let mut images = Vec::new();

    // Ours: deploy/docker/*.Dockerfile (distroless cc, numeric users).
    for (name, user, cmd) in [
        (
            "zt-sidecar",
            "10000:10000",
            Some(["run", "--config", "/etc/zt/sidecar.toml"]),
        ),
        ("app-backend", "10001:10001", None),
        ("app-frontend", "10001:10001", None),
        (
            "zt-injector",
            "10003:10003",
            Some(["run", "--config", "/etc/zt-injector/injector.toml"]),
        ),
    ] {
        let mut image = distroless(&format!("zt-platform/{name}:{OUR_TAG}"));
        let at = format!("/usr/local/bin/{name}");
        image
            .binary(&ours(name)?, &at)?
            .entrypoint(&[&at])
            .user(user);
        if let Some(cmd) = cmd {
            image.cmd(&cmd);
        }
        images.push(image);
    }
    // The lab's GitHub API (github.com cannot be reached from here).
    let mut standin = distroless(&format!("zt-platform/github-standin:{OUR_TAG}"));
    standin
        .binary(&ours("github-standin")?, "/usr/local/bin/github-standin")?
        .entrypoint(&["/usr/local/bin/github-standin"])
        .user("65532:65532");
    images.push(standin);

    // The bootstrap image: deploy/docker/zt-bootstrap.Dockerfile (Debian: a
    // shell, coreutils, psql; no passwd entry for uid 10002, as there).
    let mut bootstrap = Image::new(&format!("zt-platform/zt-bootstrap:{OUR_TAG}"));
    bootstrap
        .binary(&ours("zt-bootstrap")?, "/usr/local/bin/zt-bootstrap")?
        .binary(kubectl, "/usr/local/bin/kubectl")?
        .binary(Path::new("/bin/dash"), "/bin/sh")?
        .bytes("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .bytes("/etc/group", "root:x:0:\n", 0o644);
    debian_tools(&mut bootstrap, &["cat", "rm", "base64", "sleep", "id"])?;
    for tool in ["psql", "pg_isready"] {
        bootstrap.binary(
            &base.pg(tool),
            &format!("/usr/lib/postgresql/{PG_MAJOR}/bin/{tool}"),
        )?;
        bootstrap.symlink(
            &format!("/usr/bin/{tool}"),
            &format!("../lib/postgresql/{PG_MAJOR}/bin/{tool}"),
        );
    }
    let root = repo_root();
    bootstrap
        .tree(&root.join("policies"), "/opt/zt/policies")?
        .file(
            &root.join("deploy/bootstrap/bootstrap.sh"),
            "/opt/zt/bootstrap.sh",
            0o755,
        )
        .file(
            &root.join("deploy/bootstrap/apply-roles.sh"),
            "/opt/zt/apply-roles.sh",
            0o755,
        )
        .user("10002:10002")
        .entrypoint(&["/opt/zt/bootstrap.sh"]);
    images.push(bootstrap);

    // The example's image (deploy/examples/psql-report/Dockerfile): Debian's
    // psql and a shell, nothing of ours; uid 10005 has no passwd entry.
    let mut psql = Image::new(&format!("zt-platform/psql:{OUR_TAG}"));
    psql.binary(Path::new("/bin/dash"), "/bin/sh")?
        .bytes("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .bytes("/etc/group", "root:x:0:\n", 0o644)
        .binary(
            &base.pg("psql"),
            &format!("/usr/lib/postgresql/{PG_MAJOR}/bin/psql"),
        )?
        .symlink(
            "/usr/bin/psql",
            &format!("../lib/postgresql/{PG_MAJOR}/bin/psql"),
        )
        .user("10005:10005");
    images.push(psql);

    // SPIRE: ghcr.io/spiffe/* (binaries in /opt/spire/bin).
    for (name, bin, entry) in [
        (
            "spire-server",
            &base.spire_server,
            vec!["/opt/spire/bin/spire-server", "run"],
        ),
        (
            "spire-agent",
            &base.spire_agent,
            vec!["/opt/spire/bin/spire-agent", "run"],
        ),
        (
            "oidc-discovery-provider",
            &base.oidc_provider,
            vec!["/opt/spire/bin/oidc-discovery-provider"],
        ),
    ] {
        let mut image = Image::new(&format!("ghcr.io/spiffe/{name}:{spire}"));
        image
            .binary(bin, &format!("/opt/spire/bin/{name}"))?
            .entrypoint(&entry)
            .workdir("/opt/spire");
        images.push(image);
    }

    // OpenBao: quay.io/openbao/openbao (bao on the PATH, user openbao = 100).
    let mut bao = Image::new(&format!(
        "quay.io/openbao/openbao:{}",
        version(&v, "OPENBAO_VERSION")?
    ));
    bao.binary(&base.bao, "/bin/bao")?
        .bytes("/etc/passwd", "root:x:0:0:root:/root:/sbin/nologin\nopenbao:x:100:1000::/home/openbao:/sbin/nologin\n", 0o644)
        .bytes("/etc/group", "root:x:0:\nopenbao:x:1000:openbao\n", 0o644)
        // The upstream image is Alpine's busybox userland (kubectl exec sh, grep, tail).
        .file(Path::new("/bin/busybox"), "/bin/busybox", 0o755)
        .dir_mode("/openbao/config", 0o755)
        .dir_mode("/openbao/data", 0o755)
        .entrypoint(&["bao"])
        .cmd(&["server", "-dev"]);
    for applet in ["sh", "grep", "tail", "cat", "ls"] {
        bao.symlink(&format!("/bin/{applet}"), "busybox");
    }
    images.push(bao);

    images.push(postgres(base, &version(&v, "POSTGRES_IMAGE_TAG")?)?);
    Ok(images)
}

/// docker.io/library/postgres from Debian 12's PostgreSQL, with a lab
/// stand-in for the official image's entrypoint (deploy/lab/postgres/).
fn postgres(base: &Tools, tag: &str) -> anyhow::Result<Image> {
    let bin = format!("/usr/lib/postgresql/{PG_MAJOR}/bin");
    let mut image = Image::new(&format!("docker.io/library/postgres:{tag}"));
    for tool in ["postgres", "initdb", "pg_ctl", "pg_isready", "psql"] {
        image.binary(&base.pg(tool), &format!("{bin}/{tool}"))?;
    }
    let lib = format!("/usr/lib/postgresql/{PG_MAJOR}/lib");
    image.tree(Path::new(&lib), &lib)?;
    for so in std::fs::read_dir(&lib)?.flatten() {
        if so.path().extension().is_some_and(|e| e == "so") {
            for dep in super::super::images::shared_libraries(&so.path())? {
                let real = std::fs::canonicalize(&dep)?;
                image.file(&real, &dep.display().to_string(), 0o755);
            }
        }
    }
    let share = format!("/usr/share/postgresql/{PG_MAJOR}");
    image
        .tree(Path::new(&share), &share)?
        .tree(Path::new("/usr/share/zoneinfo"), "/usr/share/zoneinfo")?
        .file(Path::new("/bin/busybox"), "/bin/busybox", 0o755);
    for applet in ["sh", "mkdir", "chmod", "cat", "printf"] {
        image.symlink(&format!("/bin/{applet}"), "busybox");
    }
    image
        .file(
            &repo_root().join("deploy/lab/postgres/docker-entrypoint.sh"),
            "/usr/local/bin/docker-entrypoint.sh",
            0o755,
        )
        .bytes(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\npostgres:x:999:999::/var/lib/postgresql:/bin/sh\n",
            0o644,
        )
        .bytes("/etc/group", "root:x:0:\npostgres:x:999:\n", 0o644)
        .dir_mode("/var/run/postgresql", 0o2777)
        .dir_mode("/var/lib/postgresql/data", 0o777)
        .env(&format!("PATH={bin}:/usr/local/bin:/usr/bin:/bin"))
        .env("PGDATA=/var/lib/postgresql/data")
        .entrypoint(&["docker-entrypoint.sh"])
        .cmd(&["postgres"])
        .user("999:999");
    Ok(image)
}
