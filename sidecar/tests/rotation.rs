//! Dynamic credentials against the real SPIRE, OpenBao and PostgreSQL:
//! rotation make-before-break, no partial or expired file, no current lease
//! ever expiring (also when the token's max TTL is shorter than the lease's),
//! revocation of old users, clean shutdown, and no secret in any log line.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant, SystemTime};

use common::{assert_no_token_material, parse_time, Harness, Setup};
use serde_json::{json, Value};

/// What a reader polling the credentials file saw.
#[derive(Default, Debug)]
struct Observed {
    reads: u64,
    /// version -> (username, password)
    versions: BTreeMap<u64, (String, String)>,
    problems: Vec<String>,
}

/// Polls the file every 10 ms for `duration`, checking each read is a complete,
/// unexpired, 0400 file; every 250 ms checks that the current user exists in
/// PostgreSQL and its lease is alive in OpenBao; records when old users vanish.
async fn watch(
    h: &Harness,
    duration: Duration,
) -> (
    Observed,
    BTreeMap<String, Instant>,
    BTreeMap<String, Instant>,
) {
    let admin = h.pg_admin().await;
    let bao = h.stack.root_bao();
    let file = h.db_file();
    let mut seen = Observed::default();
    let mut replaced_at: BTreeMap<String, Instant> = BTreeMap::new();
    let mut gone_at: BTreeMap<String, Instant> = BTreeMap::new();
    let mut last_user: Option<String> = None;
    let start = Instant::now();
    let mut last_deep = Instant::now() - Duration::from_secs(1);
    while start.elapsed() < duration {
        let bytes = std::fs::read(&file).unwrap();
        seen.reads += 1;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        if mode != 0o400 {
            seen.problems.push(format!("mode {mode:o}"));
        }
        let v: Value = match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(e) => {
                seen.problems
                    .push(format!("partial/invalid file ({e}): {} bytes", bytes.len()));
                continue;
            }
        };
        for k in [
            "username",
            "password",
            "host",
            "port",
            "database",
            "lease_id",
            "issued_at",
            "expires_at",
            "version",
        ] {
            if v.get(k).is_none() {
                seen.problems.push(format!("missing {k}"));
            }
        }
        let expires = parse_time(v["expires_at"].as_str().unwrap_or("1970-01-01T00:00:00Z"));
        if expires <= SystemTime::now() {
            seen.problems.push(format!(
                "expired file seen: version {} expired at {}",
                v["version"], v["expires_at"]
            ));
        }
        let user = v["username"].as_str().unwrap_or_default().to_string();
        let version = v["version"].as_u64().unwrap_or(0);
        seen.versions.entry(version).or_insert_with(|| {
            (
                user.clone(),
                v["password"].as_str().unwrap_or_default().to_string(),
            )
        });
        if let Some(prev) = &last_user {
            if *prev != user {
                replaced_at.insert(prev.clone(), Instant::now());
            }
        }
        last_user = Some(user.clone());

        if last_deep.elapsed() > Duration::from_millis(250) {
            last_deep = Instant::now();
            let exists = common::role_exists(&admin, &user).await;
            // The file may have been replaced a moment ago: re-read before judging.
            let now_user = serde_json::from_slice::<Value>(&std::fs::read(&file).unwrap())
                .ok()
                .and_then(|v| v["username"].as_str().map(str::to_string));
            if !exists && now_user.as_deref() == Some(user.as_str()) {
                seen.problems
                    .push(format!("current user {user} missing from pg_roles"));
            }
            let lease_id = v["lease_id"].as_str().unwrap_or_default();
            match bao.write("sys/leases/lookup", &json!({ "lease_id": lease_id })) {
                Ok(l) if l["data"]["ttl"].as_i64().unwrap_or(0) > 0 => {}
                other if now_user.as_deref() == Some(user.as_str()) => seen.problems.push(format!(
                    "current lease {lease_id} not alive in OpenBao: {other:?}"
                )),
                _ => {}
            }
            for old in replaced_at.keys() {
                if !gone_at.contains_key(old) && !common::role_exists(&admin, old).await {
                    gone_at.insert(old.clone(), Instant::now());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (seen, replaced_at, gone_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotates_make_before_break_and_revokes_old_users_after_the_grace_period() {
    // Leases live 6 s and may be renewed to 12 s; rotate 4 s before the end,
    // revoke the old user 2 s after the new file is written.
    let h = Harness::start(Setup {
        db_ttl: Some((Duration::from_secs(6), Duration::from_secs(12))),
        rotate_before: "4s",
        revoke_grace: "2s",
        ..Setup::default()
    });
    let (seen, replaced_at, gone_at) = watch(&h, Duration::from_secs(32)).await;
    assert!(
        seen.problems.is_empty(),
        "reader saw problems: {:#?}",
        seen.problems
    );
    let versions: Vec<u64> = seen.versions.keys().copied().collect();
    assert!(
        versions.len() >= 4,
        "expected ≥ 3 rotations (4 versions), saw {versions:?}"
    );
    assert!(
        versions.windows(2).all(|w| w[1] == w[0] + 1),
        "versions must increase by one: {versions:?}"
    );
    let users: BTreeSet<&String> = seen.versions.values().map(|(u, _)| u).collect();
    assert_eq!(
        users.len(),
        versions.len(),
        "each version is a new PostgreSQL user"
    );

    // Every replaced user vanished from pg_roles after the grace period (2 s),
    // and not before it (make-before-break). Allow for polling granularity.
    for (user, replaced) in &replaced_at {
        let gone = gone_at
            .get(user)
            .unwrap_or_else(|| panic!("{user} never disappeared from pg_roles"));
        let after = gone.duration_since(*replaced);
        assert!(
            after >= Duration::from_millis(1500),
            "{user} dropped {after:?} after replacement (grace is 2 s)"
        );
        assert!(
            after <= Duration::from_secs(6),
            "{user} dropped only {after:?} after replacement"
        );
    }

    let status = h.sidecar.status().unwrap();
    let db = status["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db")
        .unwrap()
        .clone();
    assert!(db["rotations"].as_u64().unwrap() >= 3, "{db}");
    assert!(db["revocations"].as_u64().unwrap() >= 3, "{db}");
    assert!(db["renewals"].as_u64().unwrap() >= 1, "{db}");
    assert!(db.get("password").is_none());
    let metrics = h.sidecar.admin_get("/metrics").unwrap().1;
    assert!(
        metrics.contains("zt_lease_rotations_total{secret=\"db\"}"),
        "{metrics}"
    );

    // Clean shutdown revokes everything and removes the credentials files.
    let mut h = h;
    let status = h
        .sidecar
        .terminate(Duration::from_secs(15))
        .expect("sidecar exits on SIGTERM");
    assert!(status.success(), "exit status {status}");
    let admin = h.pg_admin().await;
    let left: Vec<String> = admin
        .query(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-backend-%'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(left.is_empty(), "users left after shutdown: {left:?}");
    assert!(
        !h.db_file().exists(),
        "credentials file removed on shutdown"
    );

    // Not one secret in the whole log.
    let log = h.sidecar.log();
    for (v, (_, password)) in &seen.versions {
        assert!(
            !log.contains(password.as_str()),
            "password of version {v} in the log"
        );
    }
    assert_no_token_material(&log);
    let key_file: Value = serde_json::from_slice(
        &std::fs::read(h.layout.secrets_dir.join("jwt-signing-key.json")).unwrap(),
    )
    .unwrap();
    assert!(
        !log.contains(key_file["data"]["key"].as_str().unwrap()),
        "signing key in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_lease_dies_with_its_token_when_the_token_max_ttl_is_short() {
    // The token can live at most 8 s but leases 60 s: naive agents lose the
    // app's credentials when the token that created them expires. We must
    // rotate before the parent token dies, re-login, and keep the file valid.
    let h = Harness::start(Setup {
        db_ttl: Some((Duration::from_secs(60), Duration::from_secs(60))),
        token_ttls: Some((Duration::from_secs(4), Duration::from_secs(8))),
        rotate_before: "3s",
        revoke_grace: "1s",
        ..Setup::default()
    });
    let (seen, _, _) = watch(&h, Duration::from_secs(22)).await;
    assert!(
        seen.problems.is_empty(),
        "reader saw problems: {:#?}",
        seen.problems
    );
    let status = h.sidecar.status().unwrap();
    let logins = status["token"]["logins"].as_u64().unwrap();
    assert!(logins >= 2, "expected re-logins, status {status}");
    let db = status["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db")
        .unwrap()
        .clone();
    let rotations = db["rotations"].as_u64().unwrap();
    assert!(rotations >= 1, "{db}");
    // A login does not mint credentials by itself: at most one rotation per
    // parent token that reached its end.
    assert!(
        rotations <= logins,
        "rotations {rotations} > logins {logins}"
    );
    assert_no_token_material(&h.sidecar.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_rotation_through_the_admin_endpoint() {
    let h = Harness::start(Setup {
        revoke_grace: "1s",
        // The same role also rendered in `env` format for apps that source it.
        extra: "\n[[secrets.database]]\nname = \"db-env\"\nrole = \"backend-role\"\nhost = \"127.0.0.1\"\nport = 5432\ndatabase = \"appdb\"\nformat = \"env\"\n".into(),
        ..Setup::default()
    });
    let env_file = std::fs::read_to_string(h.layout.secrets_dir.join("db-env.env")).unwrap();
    for key in [
        "DB_USERNAME='v-backend-role-",
        "DB_PASSWORD='",
        "DB_HOST='127.0.0.1'",
        "DB_PORT='5432'",
        "DB_DATABASE='appdb'",
        "DB_LEASE_ID='database/creds/backend-role/",
        "DB_EXPIRES_AT='",
        "DB_VERSION='1'",
    ] {
        assert!(env_file.contains(key), "{key} missing from the env file");
    }
    let before = h.read_db_file();
    // Regression (issue 16, 5): a simple POST (what any web page can send to
    // 127.0.0.1:15000 without a preflight) rotated; `Host` and `Origin` were
    // not checked, so DNS rebinding could read /status.
    let admin = h.sidecar.admin;
    let host = admin.to_string();
    for (method, path, headers, why) in [
        (
            "POST",
            "/rotate/db",
            vec![("Host", host.as_str())],
            "x-zt-admin",
        ),
        (
            "POST",
            "/rotate/db",
            vec![
                ("Host", host.as_str()),
                ("X-ZT-Admin", "1"),
                ("Origin", "http://evil.example"),
            ],
            "another origin",
        ),
        (
            "POST",
            "/rotate/db",
            vec![("Host", "evil.example:15000"), ("X-ZT-Admin", "1")],
            "Host",
        ),
        (
            "GET",
            "/status",
            vec![("Host", "evil.example:15000")],
            "Host",
        ),
        (
            "GET",
            "/status",
            vec![("Host", host.as_str()), ("Origin", "http://evil.example")],
            "another origin",
        ),
        ("GET", "/status", vec![], "Host"),
    ] {
        let (code, _, body) = raw_http(admin, method, path, &headers);
        assert_eq!(code, 403, "{method} {path} {headers:?}: {body}");
        assert!(body.contains(why), "{method} {path} {headers:?}: {body}");
    }
    assert_eq!(
        h.read_db_file()["version"],
        before["version"],
        "none of those rotated"
    );
    let (code, _, body) = raw_http(
        admin,
        "GET",
        "/status",
        &[
            ("Host", host.as_str()),
            ("Origin", &format!("http://{host}")),
        ],
    );
    assert_eq!(code, 200, "same origin may read: {body}");
    let (code, body) = admin_post(&h, "/rotate/db");
    assert_eq!(code, 202, "{body}");
    // Forced rotations are rate-limited per secret.
    let (code, head, body) = raw_http(
        admin,
        "POST",
        "/rotate/db",
        &[("Host", host.as_str()), ("X-ZT-Admin", "1")],
    );
    assert_eq!(code, 429, "a second forced rotation at once: {body}");
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    let after = common::eventually(
        Duration::from_secs(15),
        "a new version after POST /rotate/db",
        || {
            let v = h.read_db_file();
            (v["version"].as_u64() > before["version"].as_u64()).then_some(v)
        },
    );
    assert_ne!(after["username"], before["username"]);
    let admin = h.pg_admin().await;
    let old = before["username"].as_str().unwrap().to_string();
    let start = Instant::now();
    loop {
        let gone = !common::role_exists(&admin, &old).await;
        if gone {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "old user {old} still exists"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Unknown secrets and KV secrets cannot be "rotated" this way.
    assert_eq!(admin_post(&h, "/rotate/nope").0, 404);
    assert_eq!(admin_post(&h, "/rotate/jwt-signing-key").0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_releases_the_migrator_credentials_and_they_are_not_issued_again() {
    let mut h = Harness::start(Setup::default());
    let dir = h.layout.secrets_dir.clone();
    let file = dir.join("db-migrator.json");
    let marker = dir.join("db-migrator.released");
    let migrator: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let user = migrator["username"].as_str().unwrap().to_string();
    let lease_id = migrator["lease_id"].as_str().unwrap().to_string();
    let admin_addr = h.sidecar.admin;
    let host = admin_addr.to_string();

    // Refusals change nothing: without the header (what a web page sends),
    // an unknown or KV secret, a secret not marked releasable.
    let (code, _, body) = raw_http(
        admin_addr,
        "POST",
        "/release/db-migrator",
        &[("Host", host.as_str())],
    );
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("x-zt-admin"), "{body}");
    assert_eq!(admin_post(&h, "/release/nope").0, 404);
    assert_eq!(admin_post(&h, "/release/jwt-signing-key").0, 404);
    let (code, body) = admin_post(&h, "/release/db");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("releasable = true"), "{body}");
    assert!(h.db_file().exists() && file.exists() && !marker.exists());

    let (code, body) = admin_post(&h, "/release/db-migrator");
    assert_eq!(code, 202, "{body}");
    let pg = h.pg_admin().await;
    let bao = h.stack.root_bao();
    let start = Instant::now();
    loop {
        let role_gone = !common::role_exists(&pg, &user).await;
        let lease_gone = bao
            .write("sys/leases/lookup", &json!({ "lease_id": lease_id }))
            .is_err();
        if role_gone && lease_gone && !file.exists() && marker.exists() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "after the release: user dropped {role_gone}, lease revoked {lease_gone}, file removed {}, marker {}",
            !file.exists(),
            marker.exists()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secret = |status: &Value, name: &str| {
        status["secrets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap()
    };
    let status = h.sidecar.status().unwrap();
    let s = secret(&status, "db-migrator");
    assert_eq!(s["released"], true, "{s}");
    assert_eq!(s["ready"], true, "{s}");
    assert!(s["username"].is_null() && s["lease_id"].is_null(), "{s}");
    assert_eq!(secret(&status, "db")["released"], false);
    assert_eq!(
        status["ready"], true,
        "a released secret keeps the sidecar ready"
    );
    let (_, metrics) = h.sidecar.admin_get("/metrics").unwrap();
    assert!(
        metrics.contains("zt_secret_released{secret=\"db-migrator\"} 1"),
        "{metrics}"
    );
    // Asking again is answered, and changes nothing.
    let (code, body) = admin_post(&h, "/release/db-migrator");
    assert_eq!(code, 200, "{body}");
    // The runtime credentials are untouched.
    let db_user = h.read_db_file()["username"].as_str().unwrap().to_string();
    assert!(common::role_exists(&pg, &db_user).await);

    // A sidecar restarted in the same pod (the secrets folder stays) does not
    // issue it again, crash or clean stop alike.
    let migrator_users = || async {
        pg.query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%migrator%'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    assert_eq!(migrator_users().await, 0);
    // The revocation done, the marker names no lease: a restart revokes
    // nothing again.
    common::eventually(
        Duration::from_secs(10),
        "the marker cleared of leases",
        || (!std::fs::read_to_string(&marker).unwrap().contains("lease ")).then_some(()),
    );
    h.sidecar.kill();
    h.sidecar.restart().unwrap();
    h.sidecar.wait_ready(Duration::from_secs(60)).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!file.exists(), "issued again after a restart");
    assert_eq!(
        migrator_users().await,
        0,
        "a new migrator user after a restart"
    );
    let s = secret(&h.sidecar.status().unwrap(), "db-migrator");
    assert_eq!(s["released"], true, "{s}");
    assert!(h.sidecar.log().contains("released earlier in this pod"));

    assert_eq!(s["revocations"], 0, "revoked again after a restart: {s}");
    // Rotating a released secret is refused, not pretended.
    let (code, body) = admin_post(&h, "/rotate/db-migrator");
    assert_eq!(code, 409, "{body}");

    // The documented way back: remove the marker, restart the sidecar.
    std::fs::remove_file(&marker).unwrap();
    h.sidecar.restart().unwrap();
    h.sidecar.wait_ready(Duration::from_secs(60)).unwrap();
    assert!(file.exists(), "issued again once the marker is removed");
    assert_eq!(migrator_users().await, 1);

    // Released while OpenBao cannot be reached (sealed), then the sidecar
    // killed before it could revoke: the marker, written before the 202,
    // names the lease, and the restarted sidecar revokes it.
    let again: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let lease = again["lease_id"].as_str().unwrap().to_string();
    h.stack.openbao.seal().unwrap();
    let (code, body) = admin_post(&h, "/release/db-migrator");
    assert_eq!(code, 202, "{body}");
    let named = common::eventually(Duration::from_secs(10), "the file removed", || {
        (!file.exists()).then(|| std::fs::read_to_string(&marker).unwrap())
    });
    assert!(named.contains(&format!("lease {lease}")), "{named}");
    assert_eq!(
        migrator_users().await,
        1,
        "not revoked yet: OpenBao is sealed"
    );
    h.sidecar.kill();
    h.stack.openbao.unseal().unwrap();
    h.sidecar.restart().unwrap();
    h.sidecar.wait_ready(Duration::from_secs(60)).unwrap();
    let start = Instant::now();
    while migrator_users().await != 0
        || bao
            .write("sys/leases/lookup", &json!({ "lease_id": lease }))
            .is_ok()
        || std::fs::read_to_string(&marker).unwrap().contains("lease ")
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the lease the marker names was not revoked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A release sent while the sidecar waits for OpenBao (before it holds
    // any credentials) is kept: nothing is issued once OpenBao answers.
    h.sidecar.kill();
    std::fs::remove_file(&marker).unwrap();
    h.stack.openbao.seal().unwrap();
    h.sidecar.restart().unwrap();
    common::eventually(Duration::from_secs(30), "the admin listener", || {
        h.sidecar
            .admin_get("/healthz")
            .ok()
            .filter(|(c, _)| *c == 200)
    });
    let (code, body) = admin_post(&h, "/release/db-migrator");
    assert_eq!(code, 202, "{body}");
    h.stack.openbao.unseal().unwrap();
    h.sidecar.wait_ready(Duration::from_secs(60)).unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!file.exists(), "issued after a release");
    assert_eq!(migrator_users().await, 0, "a migrator user after a release");
    let s = secret(&h.sidecar.status().unwrap(), "db-migrator");
    assert_eq!(s["released"], true, "{s}");
    assert_eq!(
        s["version"], 0,
        "credentials were written after the 202: {s}"
    );
}

/// A raw HTTP/1.1 request (so `Host` is exactly what is given, or absent):
/// (status, head, body).
fn raw_http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {out:?}"));
    (code, head.to_string(), body.to_string())
}

fn admin_post(h: &Harness, path: &str) -> (u16, String) {
    let mut r = ureq::post(&format!("http://{}{path}", h.sidecar.admin))
        .header("X-ZT-Admin", "1")
        .config()
        .http_status_as_error(false)
        .build()
        .send_empty()
        .unwrap();
    (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
}
