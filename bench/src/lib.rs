//! # zt-bench
//!
//! Shared pieces of the `make bench-*` programs (the `zt-bench` binary, the
//! injector's admission bench, the fault suite's table): the machine line
//! every result file in `bench/results/` starts with, process CPU and memory
//! accounting, `wrk`, percentiles with bootstrap intervals ([`stats`]), and the fleet harness ([`fleet`]) that `make
//! bench-fleet` and the fleet invariant test share.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};

pub mod fleet;
pub mod stats;

/// Logical cores of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// `Machine: <n> cores (<CPU model>), <UTC date>.` for result files.
pub fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("Machine: {} cores ({cpu}), {date}.", cores())
}

/// The machine's speed at the time of a run, so that runs made in different
/// states of a shared machine (or on different virtual machines behind the
/// same masked CPU name) can be compared. Meaningful in release builds only.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Yardstick {
    /// Milliseconds a fixed single-threaded integer loop (100 M xorshift
    /// rounds) takes, best of 3: the core's speed.
    pub alu_ms: f64,
    /// Milliseconds a walk of 4 M dependent random reads over 64 MiB takes,
    /// best of 3: memory latency, which neighbours on a host slow down while
    /// the integer loop, living in registers, does not notice.
    pub memory_ms: f64,
}

impl Yardstick {
    /// Runs both loops (about 3 s in all).
    pub fn measure() -> Self {
        Self {
            alu_ms: best_of_3(alu_loop),
            memory_ms: memory_walk(),
        }
    }
}

fn best_of_3(mut f: impl FnMut()) -> f64 {
    (0..3)
        .map(|_| {
            let start = std::time::Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .fold(f64::INFINITY, f64::min)
}

fn alu_loop() {
    let rounds = std::hint::black_box(100_000_000u64);
    let mut x = std::hint::black_box(SEED);
    for _ in 0..rounds {
        xorshift(&mut x);
    }
    std::hint::black_box(x);
}

const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// One xorshift64 step: the integer loop's work and the walk's random source.
#[inline(always)]
fn xorshift(x: &mut u64) {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
}

/// One random cycle through 16 M slots (64 MiB, past any L3 cache of this
/// class of machine), built by Sattolo's algorithm from a fixed seed, then
/// 4 M steps along it: each read's address is the previous read's value.
fn memory_walk() -> f64 {
    const SLOTS: u32 = 1 << 24;
    const STEPS: u32 = 1 << 22;
    let mut next: Vec<u32> = (0..SLOTS).collect();
    let mut x = SEED;
    for i in (1..SLOTS as usize).rev() {
        xorshift(&mut x);
        let j = (x % i as u64) as usize;
        next.swap(i, j);
    }
    let next = std::hint::black_box(next);
    best_of_3(|| {
        let mut at = 0u32;
        for _ in 0..STEPS {
            at = next[at as usize];
        }
        std::hint::black_box(at);
    })
}

/// The host's steal time so far (ticks of `/proc/stat`'s `cpu` line, all
/// cores): time a virtual CPU was ready to run but the hypervisor ran
/// something else. `None` where the kernel does not report it.
pub fn steal_and_total_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]:
    // guest time is already inside user, so the total stops at steal.
    let steal = *f.get(7)?;
    Some((steal, f.iter().take(8).sum()))
}

/// Percent of all CPU time between two [`steal_and_total_ticks`] readings
/// that was stolen by the hypervisor.
pub fn steal_percent(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((s0, t0), (s1, t1)) = (before?, after?);
    let total = t1.checked_sub(t0).filter(|&t| t > 0)?;
    Some(s1.saturating_sub(s0) as f64 * 100.0 / total as f64)
}

/// utime + stime of a process in seconds (0 if it is gone).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds of a process and its direct children (e.g. the postmaster and
/// its sessions).
pub fn tree_cpu_secs(parent: u32) -> f64 {
    let mut total = cpu_secs(parent);
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(") ")
                .and_then(|(_, r)| r.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok());
            if ppid == Some(parent) {
                total += cpu_secs(pid);
            }
        }
    }
    total
}

/// Resident set size of a process in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    proc_kib(&format!("/proc/{pid}/status"), "VmRSS:")
}

/// Proportional set size of a process in KiB (`Pss` of
/// /proc/<pid>/smaps_rollup): each shared page divided among the processes
/// that map it, so the PSS of several processes adds up to what they hold
/// together, where their RSS counts a shared page once per process.
pub fn pss_kib(pid: u32) -> anyhow::Result<u64> {
    proc_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

/// The number after `key` (kB) in a /proc file of `key: value kB` lines.
fn proc_kib(path: &str, key: &str) -> anyhow::Result<u64> {
    std::fs::read_to_string(path)?
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {key} in {path}"))
}

/// An executable on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Writes a result file (creating its folder) and prints it.
pub fn write_result(out: &Path, md: &str) -> anyhow::Result<()> {
    if let Some(d) = out.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(out, md)?;
    println!("{md}\nwritten to {}", out.display());
    Ok(())
}

/// One `wrk --latency` run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wrk {
    /// Requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
    /// Requests completed.
    pub requests: u64,
    /// Responses that were not 2xx/3xx.
    pub non_2xx: u64,
    /// Socket errors (connect, read, write, timeout).
    pub errors: u64,
}

fn latency(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

impl Wrk {
    /// Parses `wrk --latency` output.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut w = Wrk::default();
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("50%") {
                w.p50 = latency(v).context("50%")?;
            } else if let Some(v) = line.strip_prefix("99%") {
                w.p99 = latency(v).context("99%")?;
            } else if let Some(v) = line.strip_prefix("Requests/sec:") {
                w.rps = v.trim().parse()?;
            } else if line.contains("requests in") {
                w.requests = line.split_whitespace().next().unwrap_or("0").parse()?;
            } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
                w.non_2xx = v.trim().parse()?;
            } else if let Some(v) = line.strip_prefix("Socket errors:") {
                w.errors = v
                    .split(',')
                    .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                    .sum();
            }
        }
        if w.rps == 0.0 {
            bail!("no Requests/sec in wrk output:\n{text}");
        }
        Ok(w)
    }

    /// Runs `wrk -t threads -c conns -d secs --latency [extra…] url`.
    pub fn run(
        wrk: &Path,
        url: &str,
        threads: u32,
        conns: u32,
        secs: u64,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let out = Command::new(wrk)
            .args([
                "-t",
                &threads.to_string(),
                "-c",
                &conns.to_string(),
                "-d",
                &format!("{secs}s"),
                "--latency",
            ])
            .args(extra)
            .arg(url)
            .output()
            .with_context(|| format!("cannot run {}", wrk.display()))?;
        Self::parse(&String::from_utf8_lossy(&out.stdout))
    }

    /// Median latency in microseconds.
    pub fn p50_us(&self) -> f64 {
        self.p50.as_secs_f64() * 1e6
    }

    /// p99 latency in microseconds.
    pub fn p99_us(&self) -> f64 {
        self.p99.as_secs_f64() * 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let text = "Running 10s test @ http://127.0.0.1:1/\n  1 threads and 1 connections\n  Latency Distribution\n     50%   21.00us\n     75%   30.00us\n     90%   40.00us\n     99%    1.20ms\n  431070 requests in 10.00s, 33.30MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 5\nRequests/sec:  43107.00\n";
        let w = Wrk::parse(text).unwrap();
        assert_eq!(w.rps, 43107.0);
        assert_eq!(w.p50_us().round(), 21.0);
        assert_eq!(w.p99_us().round(), 1200.0);
        assert_eq!((w.requests, w.non_2xx, w.errors), (431070, 5, 3));
        assert!(Wrk::parse("garbage").is_err());
    }

    #[test]
    fn steal_is_a_share_of_the_time_between_two_readings() {
        assert_eq!(
            steal_percent(Some((10, 1000)), Some((20, 1100))),
            Some(10.0)
        );
        // No time passed, a reading missing, or counters that went back: no figure.
        assert_eq!(steal_percent(Some((10, 1000)), Some((10, 1000))), None);
        assert_eq!(steal_percent(None, Some((10, 1000))), None);
        assert_eq!(steal_percent(Some((10, 1000)), Some((10, 900))), None);
        // This kernel reports it: steal can never exceed the total.
        let (steal, total) = steal_and_total_ticks().expect("/proc/stat's cpu line");
        assert!(steal <= total, "steal {steal} > total {total}");
    }

    #[test]
    fn reads_pss_and_rss_of_a_process() {
        let me = std::process::id();
        let (pss, rss) = (pss_kib(me).unwrap(), rss_kib(me).unwrap());
        assert!(pss > 0 && pss <= rss, "PSS {pss} KiB, RSS {rss} KiB");
        // Past the kernel's largest PID: no such process.
        assert!(pss_kib(u32::MAX).is_err());
    }
}
