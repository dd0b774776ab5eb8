//! `zt-bench mtls-instructions`: the inbound sidecar's user-space
//! instructions per proxied request, counted by valgrind's callgrind, for
//! one or more zt-sidecar builds in one run.
//!
//! CPU time per request moves by ±0.1 of the relay's from one `bench-mtls`
//! run to the next on a shared 2-core machine; an instruction count does
//! not (the same binary measures the same to a few tenths of a percent),
//! so this is how two builds are compared. It counts user space only: the
//! kernel's share (most of a proxy's CPU per request) is not in it, and
//! neither are cache misses; `bench-mtls` stays the measure of the goal.
//!
//! The inbound runs under callgrind; its identity is registered for
//! callgrind's tool binary, which is what SPIRE's unix attestor sees as the
//! executable of a process running under valgrind. The outbound, the
//! handler and wrk run natively. Each build is measured in runs of `secs`
//! and `2 × secs` of wrk load: the difference of the two counts divided by
//! the difference of the requests leaves out what every run costs once (the
//! TLS handshakes of wrk's new connections).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use devstack::sidecar::{install_copy, workspace_binary, Sidecar};
use devstack::spire::{BACKEND_ID, FRONTEND_ID};
use devstack::{free_port, Devstack, Options};
use zt_bench::{machine_line, which, write_result, Wrk};

/// wrk's connections (and threads) during a measured run.
const CONNS: u32 = 8;
/// Functions listed per build, and per comparison with the first build.
const TOP: usize = 12;

/// A build to measure: a name for the table and a zt-sidecar binary.
#[derive(Debug, Clone)]
pub(crate) struct Build {
    name: String,
    binary: PathBuf,
}

/// `NAME=PATH`.
pub(crate) fn parse_build(s: &str) -> Result<Build, String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PATH to a zt-sidecar binary, got {s:?}"))?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(format!(
            "the build's name {name:?} must be letters, digits and '-' (it names files)"
        ));
    }
    let binary = PathBuf::from(path);
    if !binary.is_file() {
        return Err(format!("{path} is not a file"));
    }
    Ok(Build {
        name: name.to_string(),
        binary,
    })
}

/// One build's counts: self instructions per function, and in all, per
/// request.
struct Measured {
    name: String,
    /// Per run pair: instructions per request.
    per_request: Vec<f64>,
    /// Requests counted in the long runs.
    requests: u64,
    /// Self instructions per request by function (the last pair).
    functions: HashMap<String, f64>,
}

pub(crate) fn bench_instructions(
    out: &Path,
    builds: Vec<Build>,
    secs: u64,
    runs: usize,
) -> anyhow::Result<()> {
    let wrk = which("wrk")
        .context("wrk is not installed: make bench-mtls-instructions installs Debian's wrk")?;
    let valgrind = which("valgrind")
        .context("valgrind is not installed: `apt-get install valgrind` (Debian's package)")?;
    let control = which("callgrind_control")
        .context("callgrind_control is not installed: it comes with Debian's valgrind package")?;
    let tool = callgrind_tool(&valgrind)?;
    let workspace = workspace_binary("zt-sidecar", devstack::sidecar::SIDECAR_BIN_ENV)?;
    let builds = if builds.is_empty() {
        // Named for where it came from: this workspace's build, or the
        // binary the environment variable names.
        let name = if std::env::var_os(devstack::sidecar::SIDECAR_BIN_ENV).is_some() {
            devstack::sidecar::SIDECAR_BIN_ENV
        } else {
            "this-build"
        };
        vec![Build {
            name: name.into(),
            binary: workspace.clone(),
        }]
    } else {
        builds
    };
    let work = tempfile::Builder::new().prefix("zt-bench-").tempdir()?;
    let frontend_bin = install_copy(&workspace, work.path(), "frontend")?;
    let opts = Options::default()
        .register_binary(BACKEND_ID, &tool)?
        .register_binary(FRONTEND_ID, &frontend_bin)?;
    let stack = Devstack::start(opts)?;
    let port =
        || -> anyhow::Result<SocketAddr> { Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?))) };
    let (app, inbound, outbound) = (port()?, port()?, port()?);
    let _app = crate::spawn_handler(app)?;
    let w = stack.workload_endpoint();
    let a = port()?;
    let mut frontend = Sidecar::start(
        "frontend",
        &frontend_bin,
        work.path(),
        &format!("[identity]\nworkload_api = \"{w}\"\n[admin]\nlisten = \"{a}\"\n[log]\nlevel = \"warn\"\n[[mtls.outbound]]\nlisten = \"{outbound}\"\nupstream = \"{inbound}\"\nserver_id = \"{BACKEND_ID}\"\n"),
        a,
    )?;
    frontend.wait_ready(Duration::from_secs(30))?;
    let load = Load {
        wrk,
        control,
        url: format!("http://{outbound}/"),
        secs,
        runs,
    };
    let mut measured = Vec::new();
    for b in &builds {
        println!("[mtls-instructions] {}: {}", b.name, b.binary.display());
        let wrapper = work.path().join(format!("{}.sh", b.name));
        let dumps = work.path().join(format!("{}.callgrind", b.name));
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec {} --tool=callgrind --callgrind-out-file={} {} \"$@\"\n",
                sh_quote(&valgrind),
                sh_quote(&PathBuf::from(format!("{}.%p", dumps.display()))),
                sh_quote(&b.binary)
            ),
        )?;
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        let admin = port()?;
        let mut backend = Sidecar::start(
            &b.name,
            &wrapper,
            work.path(),
            &format!("[identity]\nworkload_api = \"{w}\"\n[admin]\nlisten = \"{admin}\"\n[log]\nlevel = \"warn\"\n[[mtls.inbound]]\nlisten = \"{inbound}\"\nforward_to = \"{app}\"\nallow = [\"{FRONTEND_ID}\"]\n"),
            admin,
        )?;
        // Everything runs some 50 times slower under callgrind.
        let counted = backend
            .wait_ready(Duration::from_secs(300))
            .and_then(|()| load.measure(&backend, &b.name, &dumps));
        backend.terminate(Duration::from_secs(60));
        let m = counted.with_context(|| {
            let log = backend.log();
            let mut tail: Vec<&str> = log.lines().rev().take(20).collect();
            tail.reverse();
            format!(
                "measuring {} failed; the inbound's last log lines:\n{}",
                b.name,
                tail.join("\n")
            )
        })?;
        measured.push(m);
    }
    let md = render(&measured, secs, &workspace);
    write_result(out, &format!("{}{md}", header()))
}

/// The load and the counting, the same for every build.
struct Load {
    wrk: PathBuf,
    control: PathBuf,
    url: String,
    secs: u64,
    runs: usize,
}

impl Load {
    /// The pairs of runs of one build, running under callgrind as
    /// `backend` and dumping to `<dumps>.<pid>.<n>`.
    fn measure(&self, backend: &Sidecar, name: &str, dumps: &Path) -> anyhow::Result<Measured> {
        let pid = backend.process().pid();
        let mut dump_no = 0;
        let mut run = |secs: u64| -> anyhow::Result<(Counts, u64)> {
            let before = inbound_requests(backend)?;
            callgrind(&self.control, "-z", pid)?;
            let w = Wrk::run(&self.wrk, &self.url, 1, CONNS, secs, &[])?;
            anyhow::ensure!(
                w.non_2xx == 0 && w.errors == 0,
                "{name} did not answer cleanly: {} non-2xx, {} socket errors",
                w.non_2xx,
                w.errors
            );
            callgrind(&self.control, "-d", pid)?;
            dump_no += 1;
            let counts = read_dump(&PathBuf::from(format!(
                "{}.{pid}.{dump_no}",
                dumps.display()
            )))?;
            Ok((counts, inbound_requests(backend)? - before))
        };
        run(2)?;
        let mut m = Measured {
            name: name.to_string(),
            per_request: Vec::new(),
            requests: 0,
            functions: HashMap::new(),
        };
        for _ in 0..self.runs {
            let (short, short_req) = run(self.secs)?;
            let (long, long_req) = run(2 * self.secs)?;
            anyhow::ensure!(
                long_req > short_req,
                "{name}: the long run counted {long_req} requests, the short one {short_req}"
            );
            let extra = (long_req - short_req) as f64;
            m.per_request
                .push((long.total as f64 - short.total as f64) / extra);
            m.requests = long_req;
            m.functions = long
                .functions
                .iter()
                .map(|(f, c)| {
                    let s = short.functions.get(f).copied().unwrap_or(0);
                    (f.clone(), (*c as f64 - s as f64) / extra)
                })
                .collect();
        }
        Ok(m)
    }
}

/// `path` quoted for sh: in single quotes, each `'` written as `'\''`.
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

fn header() -> String {
    format!(
        "# Inbound mTLS: user-space instructions per request (callgrind)\n\n{} Release builds. Everything on loopback.\n\n",
        machine_line()
    )
}

/// callgrind's tool binary: what `/proc/<pid>/exe` of a process running
/// under valgrind names.
fn callgrind_tool(valgrind: &Path) -> anyhow::Result<PathBuf> {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let lib = match std::env::var_os("VALGRIND_LIB") {
        Some(d) => PathBuf::from(d),
        None => std::fs::canonicalize(valgrind)?
            .parent()
            .and_then(Path::parent)
            .map(|p| p.join("libexec/valgrind"))
            .context("cannot find valgrind's libexec directory")?,
    };
    let tool = lib.join(format!("callgrind-{arch}-linux"));
    if !tool.is_file() {
        bail!(
            "callgrind's tool binary is not at {} (set VALGRIND_LIB to valgrind's libexec directory)",
            tool.display()
        );
    }
    Ok(tool)
}

fn callgrind(control: &Path, flag: &str, pid: u32) -> anyhow::Result<()> {
    let out = Command::new(control)
        .arg(flag)
        .arg(pid.to_string())
        .output()
        .with_context(|| format!("cannot run {}", control.display()))?;
    if !out.status.success() {
        bail!(
            "callgrind_control {flag} {pid} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn inbound_requests(sidecar: &Sidecar) -> anyhow::Result<u64> {
    let (status, body) = sidecar.admin_get("/status")?;
    anyhow::ensure!(status == 200, "GET /status: {status}");
    let v: serde_json::Value = serde_json::from_str(&body)?;
    v["mtls"]["inbound"][0]["requests"]
        .as_u64()
        .context("no mtls.inbound[0].requests in /status")
}

/// A callgrind dump's instructions: in all, and each function's own.
#[derive(Debug, Default)]
struct Counts {
    total: u64,
    functions: HashMap<String, u64>,
}

/// Waits for the dump `path` to be written whole (its `totals:` line
/// written to the end of the line), then reads it.
fn read_dump(path: &Path) -> anyhow::Result<Counts> {
    for _ in 0..600 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') && text.lines().any(|l| l.starts_with("totals:")) {
                return parse_dump(&text);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "callgrind wrote no complete dump at {} within 60 s",
        path.display()
    )
}

/// Parses callgrind's format: `fn=(id) name` opens a function (later
/// `fn=(id)` alone), position lines `<line> <cost>` are its own cost, and
/// the position line after `calls=` is the inclusive cost of that call,
/// which is the callee's, not this function's.
fn parse_dump(text: &str) -> anyhow::Result<Counts> {
    let mut names: HashMap<String, String> = HashMap::new();
    let mut name = |spec: &str| -> String {
        let spec = spec.trim();
        match spec.strip_prefix('(').and_then(|s| s.split_once(')')) {
            Some((id, rest)) => {
                let rest = rest.trim();
                if !rest.is_empty() {
                    names.insert(id.to_string(), rest.to_string());
                }
                names.get(id).cloned().unwrap_or_else(|| spec.to_string())
            }
            None => spec.to_string(),
        }
    };
    let mut counts = Counts::default();
    let (mut current, mut after_call) = (None::<String>, false);
    for line in text.lines() {
        if let Some(f) = line.strip_prefix("fn=") {
            current = Some(name(f));
        } else if let Some(f) = line.strip_prefix("cfn=") {
            name(f);
        } else if line.starts_with("calls=") {
            after_call = true;
        } else if let Some(t) = line.strip_prefix("totals:") {
            counts.total = t.split_whitespace().next().unwrap_or("0").parse()?;
        } else if line
            .bytes()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || b"+-*".contains(&c))
        {
            if std::mem::take(&mut after_call) {
                continue;
            }
            let cost: u64 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            if let Some(f) = &current {
                *counts.functions.entry(f.clone()).or_default() += cost;
            }
        }
    }
    anyhow::ensure!(counts.total > 0, "no totals: line in the callgrind dump");
    Ok(counts)
}

fn render(measured: &[Measured], secs: u64, outbound: &Path) -> String {
    let mut md = format!(
        "The inbound sidecar runs under valgrind's callgrind behind a native outbound sidecar (`{}`), with wrk (1 thread, {CONNS} connections) on the outbound and the `bench-mtls` handler behind the inbound. Each figure is the difference of two runs ({secs} s and {} s of load) divided by the difference of their requests, which leaves out what each run costs once (the TLS handshakes of wrk's connections). User space only: the kernel's share, most of a proxy's CPU per request, is not counted, nor are cache misses; `make bench-mtls` is the measure of the CPU-per-request goal, this one compares builds.\n\n| Build | instructions per request | vs the first build | requests in the long run |\n|---|---|---|---|\n",
        outbound.file_name().map_or(outbound.display().to_string(), |f| f.to_string_lossy().into_owned()),
        2 * secs
    );
    let first = measured.first().map(|m| mean(&m.per_request));
    for m in measured {
        let runs: Vec<String> = m.per_request.iter().map(|v| format!("{v:.0}")).collect();
        let rel = first.map_or(String::new(), |f| {
            format!("{:+.1} %", 100.0 * (mean(&m.per_request) / f - 1.0))
        });
        md += &format!(
            "| {} | {} | {rel} | {} |\n",
            m.name,
            runs.join(", "),
            m.requests
        );
    }
    for m in measured {
        md += &format!(
            "\n**{}**, the functions with most instructions of their own per request (last pair):\n\n| instructions | function |\n|---|---|\n",
            m.name
        );
        for (f, c) in top(m.functions.iter().map(|(f, c)| (f, *c)), |c| c) {
            md += &format!("| {c:.0} | `{}` |\n", short(f));
        }
    }
    if let Some((base, rest)) = measured.split_first() {
        for m in rest {
            md += &format!(
                "\n**{} against {}**, what moved most (instructions per request):\n\n| change | {} | {} | function |\n|---|---|---|---|\n",
                m.name, base.name, base.name, m.name
            );
            let names: std::collections::HashSet<&String> =
                base.functions.keys().chain(m.functions.keys()).collect();
            let moved = names.into_iter().map(|f| {
                let (a, b) = (
                    base.functions.get(f).copied().unwrap_or(0.0),
                    m.functions.get(f).copied().unwrap_or(0.0),
                );
                (f, (b - a, a, b))
            });
            for (f, (d, a, b)) in top(moved, |(d, _, _)| d.abs()) {
                md += &format!("| {d:+.0} | {a:.0} | {b:.0} | `{}` |\n", short(f));
            }
        }
    }
    md += "\nReproduce: `make bench-mtls-instructions BASE_REV=<commit>` (this build against a build of that commit) or `BASE=<a zt-sidecar binary>`; `zt-bench mtls-instructions --build NAME=PATH …` measures any list of binaries.\n";
    md
}

/// The `TOP` entries with the largest `key`.
fn top<'a, T: Copy>(
    items: impl Iterator<Item = (&'a String, T)>,
    key: impl Fn(T) -> f64,
) -> Vec<(&'a String, T)> {
    let mut v: Vec<_> = items.collect();
    v.sort_by(|a, b| key(b.1).total_cmp(&key(a.1)).then_with(|| a.0.cmp(b.0)));
    v.truncate(TOP);
    v
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// A function's name cut to 110 characters, `|` escaped, for the table.
fn short(f: &str) -> String {
    let s: String = f.chars().take(110).collect();
    s.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_gives_self_costs_without_the_inclusive_cost_of_calls() {
        let dump = "events: Ir\nfn=(1) main\n10 5\ncfn=(2) work\ncalls=3 20\n20 700\n21 2\n\
                    fn=(2)\n30 600\n31 100\nfn=(3) other\n+1 7\ntotals: 714\n";
        let c = parse_dump(dump).unwrap();
        assert_eq!(c.total, 714);
        // main: 5 + 2 of its own; the 700 after calls= is work's.
        assert_eq!(c.functions["main"], 7);
        assert_eq!(c.functions["work"], 700);
        assert_eq!(c.functions["other"], 7);
        assert!(parse_dump("fn=(1) main\n1 5\n").is_err(), "no totals");
    }

    #[test]
    fn builds_are_name_equals_an_existing_file() {
        let exe = std::env::current_exe().unwrap();
        let ok = parse_build(&format!("old-1={}", exe.display())).unwrap();
        assert_eq!((ok.name.as_str(), ok.binary), ("old-1", exe.clone()));
        assert!(parse_build("old").unwrap_err().contains("NAME=PATH"));
        assert!(parse_build(&format!("a/b={}", exe.display()))
            .unwrap_err()
            .contains("names files"));
        assert!(parse_build("x=/nonexistent/zt-sidecar")
            .unwrap_err()
            .contains("not a file"));
    }

    #[test]
    fn the_table_compares_each_build_with_the_first() {
        let m = |name: &str, v: f64, f: f64| Measured {
            name: name.into(),
            per_request: vec![v, v + 10.0],
            requests: 1000,
            functions: [("parse".to_string(), f)].into_iter().collect(),
        };
        let md = render(
            &[m("old", 1000.0, 100.0), m("new", 1100.0, 150.0)],
            10,
            Path::new("/x/zt-sidecar"),
        );
        assert!(md.contains("| old | 1000, 1010 | +0.0 % | 1000 |"), "{md}");
        assert!(md.contains("| new | 1100, 1110 | +10.0 % | 1000 |"), "{md}");
        assert!(md.contains("| +50 | 100 | 150 | `parse` |"), "{md}");
        assert!(md.contains("10 s and 20 s"), "{md}");
    }
}
