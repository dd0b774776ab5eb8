//! The fleet's lease invariant at small N, on the real SPIRE, OpenBao and
//! PostgreSQL (`make bench-fleet` measures the same harness at N up to 200):
//! after every zt-sidecar has rotated its database credentials at least
//! three times, OpenBao holds exactly one lease and PostgreSQL exactly one
//! `v-` user per sidecar — replaced credentials are revoked, nothing piles up.

use std::time::Duration;

use devstack::eventually::patient;
use zt_bench::fleet::{Contender, Fleet, Timing};

const N: usize = 3;

#[test]
fn a_small_fleet_holds_one_lease_and_one_user_per_sidecar_after_three_rotations() {
    let timing = Timing {
        db_ttl: Duration::from_secs(6),
        db_max_ttl: Duration::from_secs(12),
        rotate_before: Duration::from_secs(5),
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

    // Rotations every ~7 s (max TTL 12 s, rotate 5 s before): three take ~25 s.
    let mut max_leases = 0;
    let mut max_users = 0;
    wait_for(
        Duration::from_secs(90),
        "three rotations in every sidecar",
        || {
            max_leases = max_leases.max(fleet.live_leases()?);
            max_users = max_users.max(fleet.live_users()?);
            let rotations = fleet.rotations()?;
            anyhow::ensure!(
                rotations.iter().all(|&r| r >= 3),
                "rotations so far: {rotations:?}"
            );
            Ok(())
        },
    );
    // Between rotations (old leases revoked after their 1 s grace) the
    // counts come back to exactly one per sidecar.
    wait_for(
        Duration::from_secs(30),
        "one lease and one user per sidecar",
        || {
            let (leases, users) = (fleet.live_leases()?, fleet.live_users()?);
            max_leases = max_leases.max(leases);
            max_users = max_users.max(users);
            anyhow::ensure!(
                leases == N && users == N,
                "{leases} leases and {users} v- users for {N} sidecars"
            );
            Ok(())
        },
    );
    // And they never piled up meanwhile: at most the new and the replaced
    // one per sidecar.
    assert!(
        max_leases <= 2 * N && max_users <= 2 * N,
        "up to {max_leases} leases and {max_users} users for {N} sidecars"
    );
    assert_eq!(fleet.failures().unwrap(), 0, "no failed operation");

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
