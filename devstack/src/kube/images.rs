//! Container images without a registry or a Docker engine: a root
//! filesystem assembled from files on this machine (our binaries, Go-built
//! tools, Debian's packages) and their shared libraries, written as an OCI
//! image-layout archive (one uncompressed layer) that `ctr images import`
//! loads into containerd.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use serde_json::json;
use sha2::{Digest, Sha256};

/// One entry of the image's root filesystem.
#[derive(Debug, Clone)]
enum Entry {
    File { from: PathBuf, mode: u32 },
    Bytes { data: Vec<u8>, mode: u32 },
    Dir { mode: u32 },
    Symlink { target: String },
}

/// An image to build: its name (as the manifests reference it), its files
/// and its runtime configuration.
#[derive(Debug, Clone)]
pub struct Image {
    name: String,
    entries: BTreeMap<String, Entry>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
    user: Option<String>,
    env: Vec<String>,
    workdir: Option<String>,
}

fn clean(path: &str) -> String {
    path.trim_start_matches('/')
        .trim_end_matches('/')
        .to_string()
}

impl Image {
    /// An empty image named `name` (e.g. `docker.io/library/postgres:15.18-bookworm`),
    /// with `/tmp` (1777) and a PATH.
    pub fn new(name: &str) -> Self {
        let mut image = Self {
            name: normalize(name),
            entries: BTreeMap::new(),
            entrypoint: Vec::new(),
            cmd: Vec::new(),
            user: None,
            env: vec!["PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into()],
            workdir: None,
        };
        image.dir_mode("/tmp", 0o1777);
        image
    }

    /// The image's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn parents(&mut self, at: &str) {
        let mut p = Path::new(at).parent();
        while let Some(dir) = p {
            let key = clean(&dir.to_string_lossy());
            if key.is_empty() {
                break;
            }
            self.entries
                .entry(key)
                .or_insert(Entry::Dir { mode: 0o755 });
            p = dir.parent();
        }
    }

    /// A directory with `mode`.
    pub fn dir_mode(&mut self, at: &str, mode: u32) -> &mut Self {
        self.parents(at);
        self.entries.insert(clean(at), Entry::Dir { mode });
        self
    }

    /// `from` (a file on this machine) at `at`, with `mode`.
    pub fn file(&mut self, from: &Path, at: &str, mode: u32) -> &mut Self {
        self.parents(at);
        self.entries.insert(
            clean(at),
            Entry::File {
                from: from.to_path_buf(),
                mode,
            },
        );
        self
    }

    /// `data` at `at`, with `mode`.
    pub fn bytes(&mut self, at: &str, data: impl Into<Vec<u8>>, mode: u32) -> &mut Self {
        self.parents(at);
        self.entries.insert(
            clean(at),
            Entry::Bytes {
                data: data.into(),
                mode,
            },
        );
        self
    }

    /// A symbolic link `at` → `target`.
    pub fn symlink(&mut self, at: &str, target: &str) -> &mut Self {
        self.parents(at);
        self.entries.insert(
            clean(at),
            Entry::Symlink {
                target: target.to_string(),
            },
        );
        self
    }

    /// An executable at `at` and every shared library it loads (found with
    /// `ldd`), at the paths the dynamic loader will look for them.
    pub fn binary(&mut self, from: &Path, at: &str) -> anyhow::Result<&mut Self> {
        self.file(from, at, 0o755);
        for lib in shared_libraries(from)? {
            let at = lib.display().to_string();
            let real = std::fs::canonicalize(&lib)?;
            self.file(&real, &at, 0o755);
        }
        Ok(self)
    }

    /// Every file below `from` (a directory), at the same relative paths below `at`.
    pub fn tree(&mut self, from: &Path, at: &str) -> anyhow::Result<&mut Self> {
        for entry in
            std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))?
        {
            let entry = entry?;
            let target = format!(
                "{}/{}",
                at.trim_end_matches('/'),
                entry.file_name().to_string_lossy()
            );
            let meta = std::fs::symlink_metadata(entry.path())?;
            if meta.is_dir() {
                self.dir_mode(&target, 0o755);
                self.tree(&entry.path(), &target)?;
            } else if meta.file_type().is_symlink() {
                let link = std::fs::read_link(entry.path())?;
                self.symlink(&target, &link.to_string_lossy());
            } else {
                use std::os::unix::fs::PermissionsExt;
                self.file(&entry.path(), &target, meta.permissions().mode() & 0o7777);
            }
        }
        Ok(self)
    }

    /// `ENTRYPOINT`.
    pub fn entrypoint(&mut self, args: &[&str]) -> &mut Self {
        self.entrypoint = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `CMD`.
    pub fn cmd(&mut self, args: &[&str]) -> &mut Self {
        self.cmd = args.iter().map(|s| s.to_string()).collect();
        self
    }

    /// `USER` (e.g. `10001:10001`).
    pub fn user(&mut self, user: &str) -> &mut Self {
        self.user = Some(user.to_string());
        self
    }

    /// One `ENV` entry (`KEY=VALUE`); a later `PATH=` replaces the default.
    pub fn env(&mut self, kv: &str) -> &mut Self {
        let key = kv.split('=').next().unwrap_or("");
        self.env.retain(|e| e.split('=').next() != Some(key));
        self.env.push(kv.to_string());
        self
    }

    /// `WORKDIR`.
    pub fn workdir(&mut self, dir: &str) -> &mut Self {
        self.workdir = Some(dir.to_string());
        self
    }

    /// The configured `ENTRYPOINT`.
    pub fn config_entrypoint(&self) -> &[String] {
        &self.entrypoint
    }

    /// The configured `CMD`.
    pub fn config_cmd(&self) -> &[String] {
        &self.cmd
    }

    /// The configured `USER`.
    pub fn config_user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The configured `ENV` entries (`KEY=VALUE`).
    pub fn config_env(&self) -> &[String] {
        &self.env
    }

    /// Whether the root filesystem has an entry at `path`.
    pub fn has(&self, path: &str) -> bool {
        self.entries.contains_key(&clean(path))
    }

    /// Writes the OCI image-layout archive for `ctr images import` to `out`.
    pub fn write_archive(&self, out: &Path) -> anyhow::Result<()> {
        let layer_path = out.with_extension("layer");
        let layer_digest = {
            let file = std::fs::File::create(&layer_path)?;
            let mut hashing = HashingWriter::new(BufWriter::new(file));
            self.write_layer(&mut hashing)
                .with_context(|| format!("writing the layer of {}", self.name))?;
            hashing.finish()?
        };
        let layer_size = std::fs::metadata(&layer_path)?.len();
        let mut config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Env": self.env,
                "Entrypoint": self.entrypoint,
            },
            "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{layer_digest}")]},
            "history": [{"created_by": "devstack::kube::images (assembled from files on this machine)"}],
        });
        if !self.cmd.is_empty() {
            config["config"]["Cmd"] = json!(self.cmd);
        }
        if let Some(u) = &self.user {
            config["config"]["User"] = json!(u);
        }
        if let Some(w) = &self.workdir {
            config["config"]["WorkingDir"] = json!(w);
        }
        let config = serde_json::to_vec(&config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": format!("sha256:{}", hex(&config)),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": format!("sha256:{layer_digest}"),
                "size": layer_size,
            }],
        }))?;
        let tag = self.name.rsplit_once(':').map_or("latest", |(_, t)| t);
        let index = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": format!("sha256:{}", hex(&manifest)),
                "size": manifest.len(),
                "annotations": {
                    "io.containerd.image.name": self.name,
                    "org.opencontainers.image.ref.name": tag,
                },
            }],
        }))?;

        let mut archive = tar::Builder::new(BufWriter::new(std::fs::File::create(out)?));
        let mut add = |path: &str, data: &[u8]| -> std::io::Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            archive.append_data(&mut h, path, data)
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        add("index.json", &index)?;
        add(&format!("blobs/sha256/{}", hex(&config)), &config)?;
        add(&format!("blobs/sha256/{}", hex(&manifest)), &manifest)?;
        let mut h = tar::Header::new_ustar();
        h.set_size(layer_size);
        h.set_mode(0o644);
        h.set_cksum();
        archive.append_data(
            &mut h,
            format!("blobs/sha256/{layer_digest}"),
            std::fs::File::open(&layer_path)?,
        )?;
        archive.into_inner()?.flush()?;
        std::fs::remove_file(&layer_path)?;
        Ok(())
    }

    fn write_layer(&self, out: &mut impl Write) -> anyhow::Result<()> {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        for (path, entry) in &self.entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match entry {
                Entry::Dir { mode } => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(*mode);
                    h.set_size(0);
                    tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
                }
                Entry::Symlink { target } => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    tar.append_link(&mut h, path, target)?;
                }
                Entry::Bytes { data, mode } => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(data.len() as u64);
                    tar.append_data(&mut h, path, data.as_slice())?;
                }
                Entry::File { from, mode } => {
                    let mut f = std::fs::File::open(from)
                        .with_context(|| format!("{} (for {path})", from.display()))?;
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(*mode);
                    h.set_size(f.metadata()?.len());
                    tar.append_data(&mut h, path, &mut f as &mut dyn Read)?;
                }
            }
        }
        tar.finish()?;
        Ok(())
    }
}

/// The fully qualified name the CRI looks images up by, as Docker
/// normalises it: `zt-platform/x:dev` → `docker.io/zt-platform/x:dev`,
/// `busybox:1` → `docker.io/library/busybox:1`.
pub fn normalize(name: &str) -> String {
    match name.split_once('/') {
        None => format!("docker.io/library/{name}"),
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => name.to_string(),
        Some(_) => format!("docker.io/{name}"),
    }
}

fn hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hash: Sha256::new(),
        }
    }
    fn finish(mut self) -> std::io::Result<String> {
        self.inner.flush()?;
        Ok(format!("{:x}", self.hash.finalize()))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The shared libraries `binary` loads, as `ldd` resolves them (empty for a
/// static binary).
pub fn shared_libraries(binary: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .context("running ldd")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        match path {
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            Some("not") => bail!("{}: a library is missing: {line}", binary.display()),
            _ => {}
        }
    }
    Ok(libs)
}

/// Imports `archive` into containerd's `k8s.io` namespace (the CRI's).
pub fn import(ctr: &Path, socket: &Path, archive: &Path) -> anyhow::Result<()> {
    crate::process::run(
        Command::new(ctr)
            .arg("--address")
            .arg(socket)
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(archive),
    )
    .with_context(|| format!("ctr images import {}", archive.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalised_as_the_cri_looks_them_up() {
        assert_eq!(
            normalize("zt-platform/app-backend:dev"),
            "docker.io/zt-platform/app-backend:dev"
        );
        assert_eq!(normalize("busybox:1.37"), "docker.io/library/busybox:1.37");
        assert_eq!(
            normalize("ghcr.io/spiffe/spire-agent:1.15.3"),
            "ghcr.io/spiffe/spire-agent:1.15.3"
        );
        assert_eq!(normalize("localhost/x:1"), "localhost/x:1");
        assert_eq!(
            normalize("registry.k8s.io/pause:3.10"),
            "registry.k8s.io/pause:3.10"
        );
    }

    #[test]
    fn shared_libraries_of_a_dynamic_and_a_static_binary() {
        let libs = shared_libraries(Path::new("/bin/sh")).unwrap();
        assert!(
            libs.iter().any(|l| l.to_string_lossy().contains("libc.so")),
            "{libs:?}"
        );
        assert!(
            libs.iter()
                .any(|l| l.to_string_lossy().contains("ld-linux")),
            "{libs:?}"
        );
        if Path::new("/bin/busybox").exists() {
            assert!(shared_libraries(Path::new("/bin/busybox"))
                .unwrap()
                .is_empty());
        }
    }
}
