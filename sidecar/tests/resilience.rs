//! Outages of the real OpenBao and the real SPIRE agent.

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::{eventually, parse_time, Harness, Setup};
use serde_json::Value;

fn db_status(h: &Harness) -> Value {
    h.sidecar.status().unwrap()["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db")
        .unwrap()
        .clone()
}

/// `/readyz` must agree with the files on disk: 200 exactly while every
/// database credential file is unexpired (with 1 s of slack for the
/// sampling race). The harness has two database secrets (`db` and
/// `db-migrator`); readiness is about all of them, so the oracle is the
/// earliest expiry among them.
///
/// The sidecar writes a file first and then updates what `/readyz` reads
/// (after the file's directory is synced: milliseconds on a busy disk), so a
/// file can be newer than the answer sampled just before it. `/readyz` is
/// therefore asked before and after the files are read, and a sample is
/// judged only when both answers agree.
fn readyz_truthful(h: &Harness, log: &mut Vec<String>) {
    let (code, body) = h.sidecar.admin_get("/readyz").unwrap();
    let mut earliest: Option<(SystemTime, String)> = None;
    for name in ["db.json", "db-migrator.json"] {
        let path = h.db_file().with_file_name(name);
        let file: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let at = file["expires_at"].as_str().unwrap().to_string();
        let expires = parse_time(&at);
        if earliest.as_ref().is_none_or(|(e, _)| expires < *e) {
            earliest = Some((expires, format!("{name} expires_at {at}")));
        }
    }
    let (expires, which) = earliest.expect("two files read");
    let now = SystemTime::now();
    if h.sidecar.admin_get("/readyz").unwrap().0 != code {
        return;
    }
    let valid = expires > now + Duration::from_secs(1);
    let expired = expires + Duration::from_secs(1) < now;
    if (code == 200 && expired) || (code != 200 && valid) {
        log.push(format!(
            "readyz {code} ({}) but earliest file {which} (now {:?})",
            body, now
        ));
    }
}

#[test]
fn recovers_from_an_openbao_outage_and_readyz_tells_the_truth() {
    // Leases of 8 s, renewable to 2 min: renewed every ~4 s.
    let mut h = Harness::start(Setup {
        db_ttl: Some((Duration::from_secs(8), Duration::from_secs(120))),
        rotate_before: "2s",
        revoke_grace: "1s",
        ..Setup::default()
    });
    let mut lies = Vec::new();
    eventually(Duration::from_secs(15), "a first lease renewal", || {
        (db_status(&h)["renewals"].as_u64().unwrap() >= 1).then_some(())
    });
    let before = h.read_db_file();

    // Down for 12 s: longer than a renewal interval and than the lease TTL.
    h.stack.openbao.stop();
    let down = Instant::now();
    let mut saw_unready = false;
    while down.elapsed() < Duration::from_secs(12) {
        readyz_truthful(&h, &mut lies);
        saw_unready |= h.sidecar.admin_get("/readyz").unwrap().0 == 503;
        // /healthz stays up: the process is fine, only its secrets are not.
        assert_eq!(h.sidecar.admin_get("/healthz").unwrap().0, 200);
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        saw_unready,
        "credentials of 8 s cannot outlive a 12 s outage: /readyz must have said 503"
    );
    assert!(
        h.sidecar.status().unwrap()["failures"]["lease_renew"]
            .as_u64()
            .unwrap_or(0)
            >= 1
    );

    h.stack
        .openbao
        .restart()
        .expect("OpenBao restarts and unseals");
    eventually(
        Duration::from_secs(30),
        "the sidecar to recover by itself",
        || {
            readyz_truthful(&h, &mut lies);
            (h.sidecar.admin_get("/readyz").unwrap().0 == 200).then_some(())
        },
    );
    let after = h.read_db_file();
    assert!(
        after["version"].as_u64() > before["version"].as_u64(),
        "new credentials after the old ones expired"
    );
    for _ in 0..20 {
        readyz_truthful(&h, &mut lies);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        lies.is_empty(),
        "/readyz disagreed with the file: {lies:#?}"
    );
}

#[test]
fn short_outage_keeps_the_current_credentials() {
    // Leases of 20 s renewed every ~10 s; a 6 s outage fits in their TTL.
    let mut h = Harness::start(Setup {
        db_ttl: Some((Duration::from_secs(20), Duration::from_secs(300))),
        rotate_before: "2s",
        revoke_grace: "1s",
        ..Setup::default()
    });
    let mut lies = Vec::new();
    eventually(Duration::from_secs(20), "a first lease renewal", || {
        (db_status(&h)["renewals"].as_u64().unwrap() >= 1).then_some(())
    });
    let before = h.read_db_file();
    h.stack.openbao.stop();
    let down = Instant::now();
    while down.elapsed() < Duration::from_secs(6) {
        readyz_truthful(&h, &mut lies);
        assert_eq!(
            h.sidecar.admin_get("/readyz").unwrap().0,
            200,
            "credentials are still valid"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    h.stack.openbao.restart().unwrap();
    eventually(
        Duration::from_secs(30),
        "a renewal after the outage",
        || (db_status(&h)["renewals"].as_u64().unwrap() >= 2).then_some(()),
    );
    let after = h.read_db_file();
    assert_eq!(after["version"], before["version"], "no needless rotation");
    assert_eq!(after["username"], before["username"]);
    assert!(lies.is_empty(), "{lies:#?}");
}

#[test]
fn reconnects_after_the_spire_agent_restarts() {
    let mut h = Harness::start(Setup::default());
    let serial_before = h.sidecar.status().unwrap()["svid"]["serial"].clone();
    h.stack.spire.restart_agent().expect("agent restarts");
    // The restarted agent (a new node identity) mints new SVIDs: the sidecar's
    // X.509 stream must reconnect to see them.
    eventually(
        Duration::from_secs(40),
        "a new X.509-SVID from the restarted agent",
        || {
            let s = h.sidecar.status().unwrap();
            (s["svid"]["serial"] != serial_before).then_some(())
        },
    );
    // Force a re-login, which needs a fresh JWT-SVID from the restarted agent:
    // revoke every jwt-login token behind the sidecar's back, as an operator would.
    let logins_before = h.sidecar.status().unwrap()["token"]["logins"]
        .as_u64()
        .unwrap();
    h.stack
        .root_bao()
        .write(
            "sys/leases/revoke-prefix/auth/jwt/login",
            &serde_json::json!({}),
        )
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "a re-login through the restarted agent",
        || {
            let s = h.sidecar.status().unwrap();
            (s["token"]["logins"].as_u64().unwrap_or(0) > logins_before && s["ready"] == true)
                .then_some(())
        },
    );
    let s = h.sidecar.status().unwrap();
    assert_eq!(s["spiffe_id"], devstack::spire::BACKEND_ID);
    assert_eq!(h.sidecar.admin_get("/readyz").unwrap().0, 200);
}
