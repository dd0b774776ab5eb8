//! Rotation under load, against the real stack: PostgreSQL leases of ~10 s
//! rotated by the real zt-sidecar (make-before-break, old user dropped and its
//! sessions terminated after a 3 s grace) while logged-in clients keep
//! calling the backend — not one request may fail. Then a JWT signing key
//! change in OpenBao KV: old tokens keep working for the previous key's
//! grace (15 s here), then are refused although the file still names the
//! key; after the next change they are refused anyway.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

const LOAD_THREADS: usize = 6;
/// Short, so the test sees the previous key retired (default 10m).
const PREVIOUS_KEY_GRACE: &str = "15s";

#[test]
fn rotations_under_load_and_signing_key_change_fail_no_request() {
    let stack = Stack::start(Setup {
        db_ttl: Some((Duration::from_secs(10), Duration::from_secs(10))),
        rotate_before: "5s",
        revoke_grace: "3s",
        ..Setup::default()
    });
    let backend = stack.start_backend(
        "app-backend",
        &[
            ("RUST_LOG", "info,app_backend=debug"),
            ("BACKEND_JWT_PREVIOUS_KEY_GRACE", PREVIOUS_KEY_GRACE),
        ],
    );
    let mut seen = SecretsSeen::default();
    seen.add_stack(&stack);

    database_rotations_under_load_fail_no_request(&stack, &backend, &mut seen);
    signing_key_change_keeps_old_tokens_until_the_previous_key_goes(&stack, &backend, &mut seen);

    seen.add_stack(&stack);
    seen.assert_absent("the backend's log", &backend.log());
}

fn database_rotations_under_load_fail_no_request(
    stack: &Stack,
    backend: &Backend,
    seen: &mut SecretsSeen,
) {
    let url = backend.url.clone();
    let c = http();
    let tokens: Vec<String> = [("jake", "jake99"), ("amy", "amy99"), ("rosa", "rosa99")]
        .iter()
        .map(|(u, p)| login(&c, &url, u, p))
        .collect();
    for t in &tokens {
        seen.add(t);
    }
    let v0 = stack.db_file()["version"].as_u64().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();

    let mut workers = Vec::new();
    for i in 0..LOAD_THREADS {
        let (stop, ok, failures, url, token) = (
            stop.clone(),
            ok.clone(),
            failures.clone(),
            url.clone(),
            tokens[i % tokens.len()].clone(),
        );
        workers.push(std::thread::spawn(move || {
            let c = http();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // Every request here reads PostgreSQL through the pool.
                let path = match n % 3 {
                    0 => "/api/auth/me",
                    1 => "/api/github/status",
                    _ => "/api/zt/status",
                };
                match c.get(format!("{url}{path}")).bearer_auth(&token).send() {
                    Ok(r) if r.status().is_success() => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.lock().unwrap().push(format!(
                        "{path}: {} {}",
                        r.status(),
                        r.text().unwrap_or_default()
                    )),
                    Err(e) => failures.lock().unwrap().push(format!("{path}: {e}")),
                }
            }
        }));
    }
    // Writes too: registrations (a transaction with an audit row) and logins.
    {
        let (stop, ok, failures, url) = (stop.clone(), ok.clone(), failures.clone(), url.clone());
        workers.push(std::thread::spawn(move || {
            let c = http();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let name = format!("load_user_{n}");
                // Each from its own browser behind the frontend: registrations
                // are limited per client.
                let r = c
                    .post(format!("{url}/api/auth/register"))
                    .header(
                        "x-spiffe-peer-id",
                        "spiffe://demo.local/ns/99-apps/sa/frontend",
                    )
                    .header("x-forwarded-for", format!("198.18.{}.{}", n / 250, n % 250))
                    .json(&json!({"username": name, "password": "rotation-proof"}))
                    .send();
                match r {
                    Ok(r) if r.status() == 201 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(r) => failures.lock().unwrap().push(format!(
                        "register: {} {}",
                        r.status(),
                        r.text().unwrap_or_default()
                    )),
                    Err(e) => failures.lock().unwrap().push(format!("register: {e}")),
                }
            }
        }));
    }

    // Watch: the database user the backend's sessions use, per PostgreSQL.
    let mut users_seen: Vec<String> = Vec::new();
    let mut file_users: BTreeSet<String> = BTreeSet::new();
    let start = Instant::now();
    let target = v0 + 3;
    loop {
        seen.add_stack(stack);
        let f = stack.db_file();
        file_users.insert(f["username"].as_str().unwrap().to_string());
        let (s, z) = call(
            c.get(format!("{url}/api/zt/status"))
                .bearer_auth(&tokens[0]),
        );
        assert_eq!(s, 200, "{z}");
        let u = z["database"]["current_user"].as_str().unwrap().to_string();
        if users_seen.last() != Some(&u) {
            users_seen.push(u);
        }
        // Done when 3 rotations happened and the users they replaced were
        // dropped (their sessions terminated) while the load ran.
        let version = f["version"].as_u64().unwrap();
        if version >= target {
            let old: Vec<&String> = file_users.iter().filter(|u| **u != f["username"]).collect();
            let names = old
                .iter()
                .map(|u| format!("'{u}'"))
                .collect::<Vec<_>>()
                .join(",");
            let left = stack.psql(&format!(
                "SELECT count(*) FROM pg_roles WHERE rolname IN ({names})"
            ));
            if old.len() >= 3 && left == "0" {
                break;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "no 3 rotations within 150 s (version {version}, from {v0})"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    // A little more load on the newest credentials, then stop.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let total = ok.load(Ordering::Relaxed);
    eprintln!(
        "rotation under load: {total} requests ok, {} failed, {:.0} s, database users seen by the backend: {users_seen:?}",
        failures.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} requests failed during rotation, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(total > 200, "the load was real ({total} requests)");
    assert!(
        users_seen.len() >= 4,
        "GET /api/zt/status showed the database user changing 3 times: {users_seen:?}"
    );
    for u in &users_seen {
        assert!(u.starts_with("v-backend-role-"), "{u}");
    }
    let metrics = c
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let swaps: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("backend_db_pool_swaps_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(swaps >= 3, "{swaps} pool swaps");
    let retries = metrics
        .lines()
        .find_map(|l| l.strip_prefix("backend_db_query_retries_total "))
        .unwrap_or("?");
    eprintln!("pool swaps: {swaps}, queries retried after a lost session: {retries}");
    let log = backend.log();
    assert!(
        log.contains("database credentials rotated"),
        "the log records each swap"
    );
}

fn random_key() -> String {
    use rand::RngCore as _;
    let mut k = [0u8; 64];
    rand::rngs::OsRng.fill_bytes(&mut k);
    STANDARD.encode(k)
}

fn verifies_with(token: &str, key_b64: &str) -> bool {
    let key = STANDARD.decode(key_b64).unwrap();
    jsonwebtoken::decode::<Value>(
        token,
        &DecodingKey::from_secret(&key),
        &Validation::new(Algorithm::HS256),
    )
    .is_ok()
}

fn signing_key_change_keeps_old_tokens_until_the_previous_key_goes(
    stack: &Stack,
    backend: &Backend,
    seen: &mut SecretsSeen,
) {
    let url = &backend.url;
    let c = http();
    let bao = stack.infra.root_bao();
    let path = "secret/data/backend/jwt-signing-key";
    let k1 = bao.read(path).unwrap().unwrap()["data"]["data"]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let t1 = login(&c, url, "jake", "jake99");
    assert!(verifies_with(&t1, &k1));
    let key_version = |c: &reqwest::blocking::Client| {
        let (_, z) = call(c.get(format!("{url}/api/zt/status")).bearer_auth(&t1));
        z["backend"]["jwt_key_version"].as_u64()
    };
    assert_eq!(key_version(&c), Some(1));

    // Version 2: a new key; the old one stays as previous_key.
    let k2 = random_key();
    seen.add(&k2);
    bao.write(path, &json!({"data": {"key": k2, "previous_key": k1}}))
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the backend uses key version 2",
        || (key_version(&c) == Some(2)).then_some(()),
    );
    assert_eq!(
        call(c.get(format!("{url}/api/auth/me")).bearer_auth(&t1)).0,
        200,
        "a token signed with the previous key still works"
    );
    let t2 = login(&c, url, "jake", "jake99");
    assert!(
        verifies_with(&t2, &k2) && !verifies_with(&t2, &k1),
        "new tokens are signed with the new key"
    );
    // Regression (issue 16, 7): the previous key verified until the next key
    // change, however late. Now only for the grace after the change, though
    // the file still names it.
    let changed = Instant::now();
    eventually(
        Duration::from_secs(60),
        "a token of the previous key is refused once the grace is over",
        || (call(c.get(format!("{url}/api/auth/me")).bearer_auth(&t1)).0 == 401).then_some(()),
    );
    assert!(
        changed.elapsed() >= Duration::from_secs(5),
        "not refused before the grace: {:?}",
        changed.elapsed()
    );
    assert_eq!(
        read_json(&stack.layout.secrets_dir.join("jwt-signing-key.json"))["data"]["previous_key"],
        json!(k1),
        "the file still names the previous key"
    );
    assert_eq!(
        call(c.get(format!("{url}/api/auth/me")).bearer_auth(&t2)).0,
        200
    );

    // Version 3: the first key is gone altogether.
    let k3 = random_key();
    seen.add(&k3);
    bao.write(path, &json!({"data": {"key": k3, "previous_key": k2}}))
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the backend uses key version 3",
        || {
            let (_, z) = call(c.get(format!("{url}/api/zt/status")).bearer_auth(&t2));
            (z["backend"]["jwt_key_version"].as_u64() == Some(3)).then_some(())
        },
    );
    let (s, b) = call(c.get(format!("{url}/api/auth/me")).bearer_auth(&t1));
    assert_eq!(s, 401, "a token of a dropped key is refused: {b}");
    // t2 is now the previous key's: fine within the grace of version 3.
    assert_eq!(
        call(c.get(format!("{url}/api/auth/me")).bearer_auth(&t2)).0,
        200
    );
    let metrics = c
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("backend_jwt_key_version 3"), "{metrics}");
}
