//! `zt-bench fleet`: N zt-sidecars vs N `bao agent`s on one SPIRE, OpenBao
//! and PostgreSQL (bench/results/fleet.md and fleet.png).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use plotters::prelude::*;
use zt_bench::fleet::{Contender, CpuSample, Fleet, Requests, Timing};
use zt_bench::{
    cores, machine_line, steal_and_total_ticks, steal_percent, write_result, Yardstick,
};

/// What one (contender, N) run measured.
#[derive(Debug, Clone, Default)]
pub(crate) struct Row {
    pub(crate) label: &'static str,
    pub(crate) n: usize,
    /// Start of all N at once → the last one has both files.
    pub(crate) ready: Duration,
    /// CPU seconds per minute of steady state.
    pub(crate) cpu: CpuSample,
    pub(crate) openbao_rss_mib: f64,
    pub(crate) raft_mib: f64,
    pub(crate) audit_mib: f64,
    pub(crate) leases: Range,
    pub(crate) users: Range,
    pub(crate) members_rss_mib: f64,
    /// Their PSS summed: shared pages (the binary's) counted once in all.
    pub(crate) members_pss_mib: f64,
    pub(crate) failures: u64,
    pub(crate) storm: Option<Storm>,
    /// The workloads' OpenBao requests during the steady state.
    pub(crate) requests: Requests,
    /// Length of the steady state, minutes.
    pub(crate) minutes: f64,
    /// The N programs' CPU from a cpuacct cgroup (else /proc ticks).
    pub(crate) exact_cpu: bool,
    /// Share of the machine's CPU time the hypervisor stole during the
    /// steady state (`None` where the kernel does not report it).
    pub(crate) steal_pct: Option<f64>,
}

impl Row {
    /// Requests per minute.
    fn per_min(&self, count: u64) -> f64 {
        count as f64 / self.minutes.max(1e-9)
    }

    /// OpenBao CPU milliseconds per request of the workloads.
    fn openbao_ms_per_request(&self) -> f64 {
        let per_min = self.per_min(self.requests.total());
        if per_min == 0.0 {
            0.0
        } else {
            self.cpu.openbao / per_min * 1000.0
        }
    }
}

/// Min, max and last of samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Range {
    pub(crate) min: usize,
    pub(crate) max: usize,
    pub(crate) last: usize,
}

impl Range {
    fn of(samples: &[usize]) -> Self {
        Self {
            min: samples.iter().copied().min().unwrap_or(0),
            max: samples.iter().copied().max().unwrap_or(0),
            last: samples.last().copied().unwrap_or(0),
        }
    }
}

/// A forced rotation of every zt-sidecar at once.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Storm {
    /// Until every sidecar wrote new credentials.
    pub(crate) rotated: Duration,
    /// Until every lease and user that existed before the storm was revoked.
    pub(crate) converged: Duration,
    pub(crate) peak_leases: usize,
    pub(crate) peak_users: usize,
    /// Live leases and users when it converged (N, plus any sidecar inside
    /// the revoke grace of a rotation of its own).
    pub(crate) then_leases: usize,
    pub(crate) then_users: usize,
}

pub(crate) fn bench_fleet(
    out: &Path,
    sizes: &[usize],
    agent_max: usize,
    steady_secs: u64,
    chart: &Path,
) -> anyhow::Result<()> {
    let timing = Timing::bench();
    let before = Yardstick::measure();
    eprintln!("[fleet] machine speed before: {before:?}");
    let mut rows = Vec::new();
    for contender in [Contender::ZtSidecar, Contender::BaoAgent] {
        for &n in sizes {
            if contender == Contender::BaoAgent && n > agent_max {
                eprintln!(
                    "[fleet] {} × {n}: skipped (--agent-max {agent_max})",
                    contender.label()
                );
                continue;
            }
            eprintln!("[fleet] {} × {n}", contender.label());
            let row = measure(n, contender, timing, steady_secs)
                .with_context(|| format!("{} × {n}", contender.label()))?;
            eprintln!("[fleet] {row:?}");
            rows.push(row);
        }
    }
    draw_chart(chart, &rows)?;
    let yardstick = (before, Yardstick::measure());
    eprintln!("[fleet] machine speed after: {:?}", yardstick.1);
    let md = report(&rows, timing, steady_secs, chart, yardstick);
    write_result(out, &md)
}

fn measure(
    n: usize,
    contender: Contender,
    timing: Timing,
    steady_secs: u64,
) -> anyhow::Result<Row> {
    let mut fleet = Fleet::prepare(n, contender, timing)?;
    // Let the fresh stack's own start-up work settle first.
    std::thread::sleep(Duration::from_secs(3));
    let ready = fleet.launch(Duration::from_secs(300))?;

    let c0 = fleet.cpu();
    let steal0 = steal_and_total_ticks();
    let mark = fleet.audit_mark();
    let t0 = Instant::now();
    let (mut leases, mut users, mut bao_rss) = (Vec::new(), Vec::new(), 0u64);
    while t0.elapsed() < Duration::from_secs(steady_secs) {
        leases.push(fleet.live_leases()?);
        users.push(fleet.live_users()?);
        bao_rss = bao_rss.max(fleet.openbao_rss_kib());
        std::thread::sleep(Duration::from_secs(2));
    }
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let used = fleet.cpu().since(&c0);
    let steal_pct = steal_percent(steal0, steal_and_total_ticks());
    let requests = fleet.requests_since(mark)?;
    let per_min = |s: f64| s / minutes;
    let (raft, audit) = fleet.openbao_disk();
    let mib = |b: u64| b as f64 / 1024.0 / 1024.0;
    let mut row = Row {
        label: contender.label(),
        n,
        ready,
        cpu: CpuSample {
            openbao: per_min(used.openbao),
            spire_server: per_min(used.spire_server),
            spire_agent: per_min(used.spire_agent),
            postgres: per_min(used.postgres),
            members: per_min(used.members),
        },
        openbao_rss_mib: bao_rss as f64 / 1024.0,
        raft_mib: mib(raft),
        audit_mib: mib(audit),
        leases: Range::of(&leases),
        users: Range::of(&users),
        members_rss_mib: fleet.members_rss_kib() as f64 / 1024.0,
        members_pss_mib: fleet.members_pss_kib() as f64 / 1024.0,
        failures: fleet.failures()?,
        storm: None,
        requests,
        minutes,
        exact_cpu: fleet.exact_member_cpu(),
        steal_pct,
    };
    if contender == Contender::ZtSidecar {
        row.storm = Some(storm(&fleet, n)?);
        row.failures = fleet.failures()?;
    }
    Ok(row)
}

/// Forces a rotation in every sidecar at once; how long until all rotated
/// and until every sidecar revoked a lease and every lease and user that
/// existed before the storm is gone, and the peaks of live leases and users
/// meanwhile.
///
/// Converged means the storm's replaced credentials are gone, not that the
/// counts are exactly N at one sample: with the bench's short TTLs each
/// sidecar also rotates on its own about every 30 s (and when its token is
/// replaced), so once the storm's rotations spread over more than that, some
/// sidecar is always inside its revoke grace and a sample of exactly N may
/// never come, though nothing piles up. OpenBao would expire the old leases
/// by itself within the max TTL: the sidecars' revocation counters show that
/// they, not the expiry, removed them.
fn storm(fleet: &Fleet, n: usize) -> anyhow::Result<Storm> {
    let (rotations0, revocations0) = (fleet.rotations()?, fleet.revocations()?);
    let (old_leases, old_users) = (fleet.lease_ids()?, fleet.user_names()?);
    // Empty sets would make the check below pass by itself.
    anyhow::ensure!(
        old_leases.len() >= n && old_users.len() >= n,
        "before the storm: {} leases and {} users for {n} sidecars (at least {n} of each expected)",
        old_leases.len(),
        old_users.len()
    );
    let t0 = Instant::now();
    fleet.force_rotation()?;
    let mut s = Storm::default();
    let mut rotated: Option<Duration> = None;
    let advanced = |before: &[u64], now: &[u64]| {
        now.len() == before.len() && now.iter().zip(before).all(|(a, b)| a > b)
    };
    loop {
        let (leases, users) = (fleet.lease_ids()?, fleet.user_names()?);
        s.peak_leases = s.peak_leases.max(leases.len());
        s.peak_users = s.peak_users.max(users.len());
        if rotated.is_none() && advanced(&rotations0, &fleet.rotations()?) {
            rotated = Some(t0.elapsed());
        }
        let left_leases = leases.intersection(&old_leases).count();
        let left_users = users.intersection(&old_users).count();
        if let Some(r) = rotated {
            if left_leases == 0 && left_users == 0 && advanced(&revocations0, &fleet.revocations()?)
            {
                s.rotated = r;
                s.converged = t0.elapsed();
                s.then_leases = leases.len();
                s.then_users = users.len();
                return Ok(s);
            }
        }
        if t0.elapsed() >= Duration::from_secs(180) {
            let failures = fleet
                .failures()
                .map_or_else(|e| format!("unknown ({e:#})"), |f| f.to_string());
            anyhow::bail!(
                "the rotation storm did not converge in 180 s: {left_leases} of the {} leases and {left_users} \
                 of the {} users from before it are still alive ({} leases, {} users for {n} sidecars; all \
                 rotated: {}; failed sidecar operations so far: {failures})",
                old_leases.len(),
                old_users.len(),
                leases.len(),
                users.len(),
                rotated.is_some(),
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// The first N (after the smallest) at which a zt-sidecar fleet's ready time
/// per workload is at least twice the previous size's, or failures appear:
/// where adding workloads starts to cost more than their share.
pub(crate) fn knee(rows: &[Row], label: &str) -> Option<usize> {
    let ours: Vec<&Row> = rows.iter().filter(|r| r.label == label).collect();
    ours.windows(2)
        .find(|w| {
            let per = |r: &Row| r.ready.as_secs_f64() / r.n as f64;
            w[1].failures > 0 || (w[0].n > 1 && per(w[1]) >= 2.0 * per(w[0]))
        })
        .map(|w| w[1].n)
}

pub(crate) fn report(
    rows: &[Row],
    t: Timing,
    steady_secs: u64,
    chart: &Path,
    yardstick: (Yardstick, Yardstick),
) -> String {
    let mut md = format!(
        "# Fleet: N workloads on one SPIRE, OpenBao and PostgreSQL\n\n{} Release builds; \
         everything (the N programs, SPIRE server and agent, OpenBao, PostgreSQL, the harness) on this machine.\n\n\
         Each workload has its own SPIFFE ID (`spiffe://demo.local/ns/fleet/sa/w-<i>`, one SPIRE registration each) \
         and logs in through one OpenBao jwt role that binds `sub` by a glob. Each keeps one database secret \
         (`database/creds/fleet-role`: TTL {}, max TTL {}; zt-sidecar rotates {} before expiry and revokes the old \
         lease {} later) and one KV secret (re-read every {}) in files. Tokens: TTL {}, max TTL {} — both contenders \
         log in again during the run. **zt-sidecar** fetches its JWT-SVIDs from the SPIRE agent; **bao agent** \
         (JWT file auto-auth, the same two files through templates) reads a JWT-SVID file the harness fetched for \
         its ID. Each row is a fresh stack: all N started at once, then {steady_secs} s of steady state.\n\n",
        machine_line(),
        hs(t.db_ttl),
        hs(t.db_max_ttl),
        hs(t.rotate_before),
        hs(t.revoke_grace),
        hs(t.kv_refresh),
        hs(t.token_ttl),
        hs(t.token_max_ttl),
    );
    md.push_str(
        "| Program | N | All ready (s) | CPU s/min: OpenBao | SPIRE server | SPIRE agent | PostgreSQL | the N programs | \
         OpenBao RSS (MiB) | raft / audit log (MiB) | live leases min–max (last) | `v-` users min–max (last) | \
         memory of the N programs: PSS / RSS (MiB) | failures | host steal (%) |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} | {:.1} / {:.1} | {}–{} ({}) | {}–{} ({}) | {:.0} / {:.0} | {} | {} |\n",
            r.label, r.n, secs(r.ready), r.cpu.openbao, r.cpu.spire_server, r.cpu.spire_agent, r.cpu.postgres,
            r.cpu.members, r.openbao_rss_mib, r.raft_mib, r.audit_mib, r.leases.min, r.leases.max, r.leases.last,
            r.users.min, r.users.max, r.users.last, r.members_pss_mib, r.members_rss_mib, r.failures,
            r.steal_pct.map_or_else(|| "n/a".to_string(), |p| format!("{p:.1}")),
        ));
    }
    md.push_str(&format!(
        "\nCPU is seconds of CPU per minute of steady state (60 = one core busy; this machine has {} cores); \
         the N programs' CPU {}. Memory of the N programs: the sum of their PSS (from /proc/<pid>/smaps_rollup: \
         each shared page, such as the binary's code, divided among the processes that map it, so the sum is what \
         they hold together), and the sum of their VmRSS (each shared page counted once per process: an upper \
         bound), both at the end of the steady state. Host steal: the share of the machine's CPU time the \
         hypervisor gave to others during the steady state (`/proc/stat`). The machine's speed during this run, \
         before and after it: a fixed single-threaded loop (100 M xorshift rounds, best of 3) took {:.0} and \
         {:.0} ms; a walk of 4 M dependent random reads over 64 MiB (memory latency) took {:.0} and {:.0} ms. \
         Compare CPU figures within one run; across runs only when both yardsticks agree (virtual machines behind \
         the same CPU name can differ 2–4× in the CPU cost of the same work).\n\n",
        cores(),
        if rows.iter().all(|r| r.exact_cpu) {
            "comes from a cpuacct cgroup holding them (exact)"
        } else {
            "comes from their /proc ticks (10 ms resolution) in at least one row: no cpuacct cgroup (root, cgroup v1)"
        },
        yardstick.0.alu_ms,
        yardstick.1.alu_ms,
        yardstick.0.memory_ms,
        yardstick.1.memory_ms,
    ));
    md.push_str(
        "## OpenBao requests of the N programs (per minute of steady state, from OpenBao's audit log)\n\n\
         | Program | N | logins | token renewals | credentials (CREATE ROLE) | lease renewals | lease revocations (DROP ROLE) | \
         KV reads | other | all | storage writes per workload per minute | OpenBao CPU per request (ms) |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let q = &r.requests;
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |\n",
            r.label,
            r.n,
            r.per_min(q.logins),
            r.per_min(q.token_renewals),
            r.per_min(q.creds),
            r.per_min(q.lease_renewals),
            r.per_min(q.lease_revocations),
            r.per_min(q.kv_reads),
            r.per_min(q.other + q.token_revocations),
            r.per_min(q.total()),
            r.per_min(q.writes()) / r.n as f64,
            r.openbao_ms_per_request(),
        ));
    }
    md.push_str(
        "\nbao agent never calls `sys/leases/revoke`: the credentials it replaces stay valid until their lease \
         or their parent token expires, and OpenBao's expiration manager then revokes them (not an API request, \
         but the same `DROP ROLE`).\n\n",
    );
    md.push_str(&format!(
        "## Rotation storm (zt-sidecar)\n\nAfter the steady state, every sidecar is told to rotate at once \
         (`POST /rotate/db` on each admin endpoint). Converged: every sidecar has revoked a lease since, and \
         every lease and `v-` user that existed before the storm is gone (OpenBao would expire them by itself \
         only at their max TTL, {}); the leases and users live at that moment are N plus any sidecar inside the \
         revoke grace of a rotation of its own.\n\n\
         | N | all rotated (s) | every old lease and user revoked (s) | peak live leases | peak `v-` users | leases / users then |\n|---|---|---|---|---|---|\n",
        hs(t.db_max_ttl),
    ));
    for r in rows {
        if let Some(s) = r.storm {
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} / {} |\n",
                r.n,
                secs(s.rotated),
                secs(s.converged),
                s.peak_leases,
                s.peak_users,
                s.then_leases,
                s.then_users
            ));
        }
    }
    md.push_str("\n## Reading it\n\n");
    md.push_str(&invariant_line(rows));
    md.push_str(&marginal_line(rows));
    md.push_str(&compare_line(rows));
    md.push_str(&match knee(rows, Contender::ZtSidecar.label()) {
        Some(n) => format!(
            "- **Knee on this machine: N = {n}** — the first size at which the time until every zt-sidecar is ready, \
             per workload, at least doubled from the previous size (or failures appeared).\n"
        ),
        None => "- **No knee up to the largest N measured**: the time until every zt-sidecar is ready grew no more \
                 than twice as fast as N between any two sizes, with no failures.\n"
            .to_string(),
    });
    md.push_str(&format!(
        "\n![fleet chart]({})\n\nReproduce: `make bench-fleet` (`SIZES=1,10` for a quick run). docs/scale.md turns these \
         figures into a 10,000-pod estimate.\n",
        chart.file_name().and_then(|n| n.to_str()).unwrap_or("fleet.png")
    ));
    md
}

fn hs(d: Duration) -> String {
    format!("{} s", d.as_secs())
}

/// Whether zt-sidecar's fleet held N leases and N users (one per workload)
/// whenever no rotation was in flight: the lowest sample is N and the last
/// is at most 2N.
fn invariant_line(rows: &[Row]) -> String {
    let ours: Vec<&Row> = rows
        .iter()
        .filter(|r| r.label == Contender::ZtSidecar.label())
        .collect();
    let held = ours.iter().all(|r| {
        r.leases.min == r.n
            && r.users.min == r.n
            && r.leases.max <= 2 * r.n
            && r.users.max <= 2 * r.n
    });
    if held {
        "- **zt-sidecar: one lease and one PostgreSQL user per workload at every N.** Between rotations the counts \
         are exactly N; during a rotation a replaced lease lives on for its revoke grace, so a sample can show up \
         to 2N; they never grow.\n"
            .into()
    } else {
        "- **zt-sidecar did NOT hold one lease and one user per workload at every N**: see the min–max columns.\n"
            .into()
    }
}

/// OpenBao CPU per request at the margin: the growth of its CPU between the
/// smallest and the largest N over the growth of the requests (its idle
/// work — raft, the expiration manager — cancels out).
pub(crate) fn marginal_ms_per_request(rows: &[Row], label: &str) -> Option<f64> {
    let ours: Vec<&Row> = rows.iter().filter(|r| r.label == label).collect();
    let (first, last) = (ours.first()?, ours.last()?);
    let more = last.per_min(last.requests.total()) - first.per_min(first.requests.total());
    (last.n > first.n && more > 0.0).then(|| (last.cpu.openbao - first.cpu.openbao) / more * 1000.0)
}

fn marginal_line(rows: &[Row]) -> String {
    let mut out = String::new();
    for c in [Contender::ZtSidecar, Contender::BaoAgent] {
        if let Some(ms) = marginal_ms_per_request(rows, c.label()) {
            out.push_str(&format!(
                "- **OpenBao CPU per request of {}** at the margin (CPU growth over request growth from the smallest \
                 to the largest N): **{ms:.2} ms**.\n",
                c.label()
            ));
        }
    }
    out
}

/// zt-sidecar vs bao agent at the largest N both ran, and why bao agent
/// stopped there if zt-sidecar went further.
fn compare_line(rows: &[Row]) -> String {
    let largest = |label: &str| rows.iter().filter(|r| r.label == label).max_by_key(|r| r.n);
    let Some(a) = largest(Contender::BaoAgent.label()) else {
        return String::new();
    };
    let Some(o) = rows
        .iter()
        .find(|r| r.label == Contender::ZtSidecar.label() && r.n == a.n)
    else {
        return String::new();
    };
    let mut out = format!(
        "- **At N = {}**: live leases peak at {} with zt-sidecar and {} with bao agent (which does not revoke the \
         lease it replaces nor, on logging in again, the ones it re-mints); OpenBao spends {:.2} CPU s/min with \
         zt-sidecar and {:.2} with bao agent; PostgreSQL {:.2} and {:.2}; the N programs together hold {:.0} MiB \
         and {:.0} MiB (PSS; summed RSS {:.0} and {:.0} MiB).\n",
        o.n,
        o.leases.max,
        a.leases.max,
        o.cpu.openbao,
        a.cpu.openbao,
        o.cpu.postgres,
        a.cpu.postgres,
        o.members_pss_mib,
        a.members_pss_mib,
        o.members_rss_mib,
        a.members_rss_mib
    );
    if let Some(big) = largest(Contender::ZtSidecar.label()).filter(|r| r.n > a.n) {
        let each = a.members_pss_mib / a.n as f64;
        out.push_str(&format!(
            "- bao agent was not run above N = {}: at the {each:.1} MiB (PSS) per agent it held there, N = {} would \
             hold up to {:.1} GiB of the machine's {:.1} GiB (less by what more agents would share; zt-sidecar: \
             {:.1} MiB each).\n",
            a.n,
            big.n,
            each * big.n as f64 / 1024.0,
            mem_total_gib(),
            big.members_pss_mib / big.n as f64,
        ));
    }
    out
}

/// The machine's memory (GiB), from /proc/meminfo.
fn mem_total_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0)
}

/// Debian's DejaVu Sans (package fonts-dejavu-core): plotters draws text
/// with a font it is given, not one it finds.
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn draw_chart(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let font = std::fs::read(FONT).with_context(|| {
        format!("cannot read {FONT}: install Debian's fonts-dejavu-core (make bench-fleet does)")
    })?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow::anyhow!("{FONT} is not a usable TrueType font"))?;
    let root = BitMapBackend::new(path, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 2));
    type Pick = fn(&Row) -> f64;
    let plots: [(&str, Pick); 4] = [
        ("time until all N are ready (s)", |r| r.ready.as_secs_f64()),
        ("OpenBao CPU (s per minute)", |r| r.cpu.openbao),
        ("peak live leases", |r| r.leases.max as f64),
        ("memory of the N programs, PSS (MiB)", |r| r.members_pss_mib),
    ];
    let max_n = rows.iter().map(|r| r.n).max().unwrap_or(1) as f64;
    for (area, (title, pick)) in panels.iter().zip(plots) {
        let top = rows.iter().map(pick).fold(0.0_f64, f64::max).max(1e-3) * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0.0..max_n * 1.05, 0.0..top)?;
        chart
            .configure_mesh()
            .x_desc("N workloads")
            .label_style(("sans-serif", 14))
            .draw()?;
        for (label, colour) in [
            (Contender::ZtSidecar.label(), BLUE),
            (Contender::BaoAgent.label(), RED),
        ] {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter(|r| r.label == label)
                .map(|r| (r.n as f64, pick(r)))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                });
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, colour.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()?;
    }
    root.present()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yardstick(alu_ms: f64, memory_ms: f64) -> Yardstick {
        Yardstick { alu_ms, memory_ms }
    }

    fn row(label: &'static str, n: usize, ready_s: f64, leases: (usize, usize)) -> Row {
        Row {
            label,
            n,
            ready: Duration::from_secs_f64(ready_s),
            leases: Range {
                min: leases.0,
                max: leases.1,
                last: leases.0,
            },
            users: Range {
                min: leases.0,
                max: leases.1,
                last: leases.0,
            },
            ..Row::default()
        }
    }

    #[test]
    fn the_knee_is_where_ready_time_per_workload_doubles() {
        let z = "zt-sidecar";
        let rows = [
            row(z, 1, 0.5, (1, 1)),
            row(z, 10, 1.0, (10, 10)),
            row(z, 50, 4.0, (50, 60)),
            row(z, 100, 20.0, (100, 120)),
        ];
        // per workload: 0.1 (10), 0.08 (50), 0.2 (100): 100 is the knee.
        assert_eq!(knee(&rows, z), Some(100));
        assert_eq!(knee(&rows[..3], z), None);
        let mut failing = rows[..3].to_vec();
        failing[2].failures = 1;
        assert_eq!(knee(&failing, z), Some(50));
    }

    #[test]
    fn the_report_says_whether_the_lease_invariant_held() {
        let z = "zt-sidecar";
        let good = [
            row(z, 10, 1.0, (10, 14)),
            row("bao agent", 10, 1.0, (10, 25)),
        ];
        let md = report(
            &good,
            Timing::bench(),
            60,
            Path::new("bench/results/fleet.png"),
            (yardstick(150.0, 400.0), yardstick(160.0, 420.0)),
        );
        let render = |rows: &[Row]| {
            let same = yardstick(150.0, 400.0);
            report(
                rows,
                Timing::bench(),
                60,
                Path::new("fleet.png"),
                (same, same),
            )
        };
        assert!(
            md.contains("one lease and one PostgreSQL user per workload at every N"),
            "{md}"
        );
        assert!(
            md.contains("live leases peak at 14 with zt-sidecar and 25 with bao agent"),
            "{md}"
        );
        assert!(md.contains("![fleet chart](fleet.png)"), "{md}");
        assert!(md.contains("took 150 and 160 ms"), "{md}");
        assert!(md.contains("took 400 and 420 ms"), "{md}");
        // Steal: a figure where measured, "n/a" where the kernel gave none.
        assert!(md.contains("| 0 | n/a |\n"), "{md}");
        let mut stolen = good.clone();
        stolen[0].steal_pct = Some(12.34);
        let md = render(&stolen);
        assert!(md.contains("| 0 | 12.3 |\n"), "{md}");
        let bad = [row(z, 10, 1.0, (11, 14))];
        let md = render(&bad);
        assert!(md.contains("did NOT hold"), "{md}");
    }

    #[test]
    fn the_marginal_cost_leaves_out_the_idle_cpu() {
        let z = "zt-sidecar";
        let mut small = row(z, 1, 0.1, (1, 1));
        small.minutes = 1.0;
        small.cpu.openbao = 0.5; // mostly idle work
        small.requests.creds = 10;
        let mut big = row(z, 100, 2.0, (100, 100));
        big.minutes = 2.0;
        big.cpu.openbao = 2.5; // per minute
        big.requests.creds = 2020; // 1010 per minute
                                   // (2.5 - 0.5) s over 1000 more requests per minute = 2 ms each.
        let ms = marginal_ms_per_request(&[small.clone(), big], z).unwrap();
        assert!((ms - 2.0).abs() < 1e-9, "{ms}");
        assert_eq!(marginal_ms_per_request(&[small], z), None);
    }

    #[test]
    fn ranges_take_min_max_and_last() {
        assert_eq!(
            Range::of(&[3, 5, 4]),
            Range {
                min: 3,
                max: 5,
                last: 4
            }
        );
        assert_eq!(Range::of(&[]), Range::default());
    }
}
