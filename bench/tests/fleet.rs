//! The fleet's lease invariant at small N, on the real SPIRE, OpenBao and
//! PostgreSQL (`make bench-fleet` measures the same harness at N up to 200):
//! after each of three rotations in every zt-sidecar, OpenBao holds exactly
//! one lease and PostgreSQL exactly one `v-` user per sidecar — replaced
//! credentials are revoked by the sidecar (long before OpenBao would expire
//! them), nothing piles up.

use std::time::Duration;

use devstack::eventually::patient;
use zt_bench::fleet::{Contender, Fleet, Timing};

const N: usize = 3;

#[test]
fn a_small_fleet_holds_one_lease_and_one_user_per_sidecar_after_three_rotations() {
    // Leases live far longer than the test: a replaced lease that was not
    // revoked would still be counted (OpenBao's own expiry cannot hide it).
    let timing = Timing {
        db_ttl: Duration::from_secs(120),
        db_max_ttl: Duration::from_secs(600),
        rotate_before: Duration::from_secs(30),
        revoke_grace: Duration::from_secs(1),
        token_ttl: Duration::from_secs(300),
        token_max_ttl: Duration::from_secs(600),
        kv_refresh: Duration::from_secs(30),
    };
    let mut fleet = Fleet::prepare(N, Contender::ZtSidecar, timing).expect("fleet stack");
    fleet
        .launch(patient(Duration::from_secs(60)))
        .expect("every sidecar ready");
    assert_eq!(
        fleet.live_leases().unwrap(),
        N,
        "one lease per sidecar at start"
    );

    let mut max_leases = 0;
    let mut max_users = 0;
    for round in 1..=3u64 {
        // (zt-sidecar takes one forced rotation per secret per 10 s;
        // force_rotation waits out its Retry-After.)
        fleet.force_rotation().expect("POST /rotate/db");
        wait_for(
            Duration::from_secs(30),
            "a rotation in every sidecar",
            || {
                max_leases = max_leases.max(fleet.live_leases()?);
                max_users = max_users.max(fleet.live_users()?);
                let rotations = fleet.rotations()?;
                anyhow::ensure!(
                    rotations.iter().all(|&r| r >= round),
                    "rotations so far: {rotations:?} (round {round})"
                );
                Ok(())
            },
        );
        // The replaced credentials go after their 1 s grace: back to
        // exactly one lease and one user per sidecar.
        wait_for(
            Duration::from_secs(20),
            "one lease and one user per sidecar",
            || {
                let (leases, users) = (fleet.live_leases()?, fleet.live_users()?);
                max_leases = max_leases.max(leases);
                max_users = max_users.max(users);
                anyhow::ensure!(
                    leases == N && users == N,
                    "{leases} leases and {users} v- users for {N} sidecars after rotation {round}"
                );
                Ok(())
            },
        );
    }
    // Never more than the new and the replaced one per sidecar meanwhile.
    assert!(
        max_leases <= 2 * N && max_users <= 2 * N,
        "up to {max_leases} leases and {max_users} users for {N} sidecars"
    );
    assert_eq!(fleet.failures().unwrap(), 0, "no failed operation");
    // The sidecars share their binary's pages: together they hold less
    // than the sum of their RSS, which counts those once per process.
    let (pss, rss) = (fleet.members_pss_kib(), fleet.members_rss_kib());
    assert!(
        pss > 0 && pss < rss,
        "PSS {pss} KiB, RSS {rss} KiB of {N} sidecars"
    );

    // Stopping revokes: nothing is left behind.
    fleet.stop_members();
    assert_eq!(fleet.live_leases().unwrap(), 0, "leases left after stop");
    assert_eq!(fleet.live_users().unwrap(), 0, "users left after stop");
}

/// Polls `check` every 250 ms until it passes; panics after `timeout`
/// (stretched by ZT_TEST_PATIENCE) with what it last saw.
fn wait_for(timeout: Duration, what: &str, mut check: impl FnMut() -> anyhow::Result<()>) {
    let limit = patient(timeout);
    let start = std::time::Instant::now();
    loop {
        match check() {
            Ok(()) => return,
            Err(e) if start.elapsed() > limit => {
                panic!("timed out after {limit:?} waiting for {what}; last: {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}
