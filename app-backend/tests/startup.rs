//! Start-up and configuration: exit 64 on bad configuration, readiness
//! before and after the sidecar's files appear, migrations as the owner role
//! (idempotent, tamper-evident), starting without migrator credentials, the
//! runtime role's limits, graceful shutdown — on the real stack.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

fn run_with(env: &[(&str, &str)]) -> std::process::Output {
    run_args(&[], env)
}

fn run_args(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_app-backend"));
    cmd.args(args).env_clear();
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn bad_configuration_exits_64_naming_the_variable() {
    for (key, value) in [
        ("BACKEND_LISTEN", "not-an-address"),
        ("BACKEND_LISTEN", "0.0.0.0:8000"),
        ("BACKEND_FRONTEND_SPIFFE_ID", "frontend"),
        ("BACKEND_ALLOWED_HOSTS", "backend:8000"),
        ("ZT_OPENBAO_PROXY", "http://192.0.2.1:8200"),
        ("ZT_SIDECAR_ADMIN_URL", "file:///etc/passwd"),
        ("GITHUB_API_URL", "api.github.com"),
        ("GITHUB_TIMEOUT", "forever"),
        ("BACKEND_DB_POOL_SIZE", "0"),
        ("BACKEND_LOGIN_MAX_FAILURES", "-1"),
        ("BACKEND_LOG_FORMAT", "yaml"),
    ] {
        let out = run_with(&[(key, value)]);
        assert_eq!(out.status.code(), Some(64), "{key}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.starts_with(&format!("invalid configuration: {key}: ")),
            "{key}={value}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
}

#[test]
fn a_taken_listen_address_exits_1_naming_the_variable() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = run_with(&[
        ("BACKEND_LISTEN", &addr),
        ("ZT_SECRETS_DIR", dir.path().to_str().unwrap()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on {addr} (BACKEND_LISTEN)")),
        "{err}"
    );
}

#[test]
fn probe_refuses_other_paths_and_reports_an_absent_backend() {
    for args in [
        &["probe", "/etc/passwd"][..],
        &["probe", "/readyz", "extra"],
        &["serve"],
    ] {
        let out = run_args(args, &[]);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("app-backend probe [/readyz|/healthz]"),
            "{err}"
        );
    }
    let port = devstack::free_port().unwrap();
    let out = run_args(
        &["probe"],
        &[("BACKEND_LISTEN", &format!("127.0.0.1:{port}"))],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with(&format!("/readyz: cannot reach 127.0.0.1:{port}: ")),
        "{err}"
    );
}

/// `app-backend probe <path>` against `b`, as the kubelet runs it.
fn probe(b: &Backend, path: &str) -> (Option<i32>, String) {
    let listen = b.url.trim_start_matches("http://");
    let out = run_args(&["probe", path], &[("BACKEND_LISTEN", listen)]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn readyz(b: &Backend) -> (u16, Value) {
    call(http().get(format!("{}/readyz", b.url)))
}

fn pg<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

#[test]
fn startup_waits_for_the_sidecar_migrates_once_and_reports_readiness() {
    let mut stack = Stack::start(Setup {
        start_sidecar: false,
        ..Setup::default()
    });

    // 1. Before the sidecar: alive, not ready, and says why.
    let early = stack.spawn_backend("early", &[("BACKEND_MIGRATOR_WAIT", "120s")]);
    eventually(
        Duration::from_secs(30),
        "the early backend answers /healthz",
        || {
            http()
                .get(format!("{}/healthz", early.url))
                .send()
                .ok()
                .filter(|r| r.status() == 200)
        },
    );
    let (s, r) = readyz(&early);
    assert_eq!(s, 503, "{r}");
    assert_eq!(r["ready"], false);
    assert_eq!(
        r["checks"]["jwt_signing_key"],
        "waiting for jwt-signing-key.json"
    );
    assert_eq!(r["checks"]["startup"], "waiting for db-migrator.json");
    assert_eq!(
        r["checks"]["database"],
        "no database credentials loaded yet"
    );
    // The exec probe says the same.
    assert_eq!(probe(&early, "/healthz").0, Some(0));
    let (code, err) = probe(&early, "/readyz");
    assert_eq!(code, Some(1), "{err}");
    assert!(err.starts_with("/readyz: HTTP/1.1 503"), "{err}");
    assert!(err.contains("waiting for db-migrator.json"), "{err}");

    // 2. The sidecar writes the files (into a folder that did not exist):
    //    migrations run as app_owner, the seed goes in, the backend is ready.
    stack.start_sidecar();
    let mut early = early;
    wait_ready(&mut early, Duration::from_secs(120));
    assert_eq!(probe(&early, "/readyz"), (Some(0), String::new()));
    let log = early.log();
    assert!(log.contains("applied migration"), "{log}");
    assert!(log.contains("seeded demo users"), "{log}");
    assert_eq!(stack.psql("SELECT string_agg(tableowner, ',') FROM (SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public') t"), "app_owner");
    assert_eq!(stack.psql("SELECT count(*) FROM users WHERE username IN ('jake','amy','rosa','terry','charles','gina')"), "6");
    assert_eq!(
        stack.psql("SELECT string_agg(version || ':' || name, ',' ORDER BY version) FROM schema_migrations"),
        "1:initial_schema,2:sessions_and_operators"
    );

    // 3. The runtime user has DML only: no DDL, no writes to schema_migrations.
    let db = stack.db_file();
    pg(async {
        let conn = format!(
            "host={} port={} user={} password={} dbname={}",
            db["host"].as_str().unwrap(),
            db["port"],
            db["username"].as_str().unwrap(),
            db["password"].as_str().unwrap(),
            db["database"].as_str().unwrap()
        );
        let (c, task) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(task);
        assert!(c.query_one("SELECT count(*) FROM users", &[]).await.is_ok());
        assert!(c
            .query_one("SELECT max(version) FROM schema_migrations", &[])
            .await
            .is_ok());
        for ddl in [
            "CREATE TABLE evil (id int)",
            "DROP TABLE users",
            "ALTER TABLE users ADD COLUMN x int",
            "DELETE FROM schema_migrations",
            "UPDATE schema_migrations SET checksum = 'x'",
        ] {
            let e = c.batch_execute(ddl).await.unwrap_err();
            assert_eq!(
                e.code(),
                Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
                "{ddl}: {e:?}"
            );
        }
    });

    // 4. The migrations done, the backend gave the schema owner's
    //    credentials back: the sidecar revoked them and removed the file,
    //    and a restart in the same pod starts at once without them.
    let secrets = stack.layout.secrets_dir.clone();
    eventually(
        Duration::from_secs(10),
        "the backend released db-migrator: file removed, user dropped",
        || {
            (early.log().contains("released the migrator credentials")
                && !secrets.join("db-migrator.json").exists()
                && secrets.join("db-migrator.released").exists()
                && stack.psql("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'v-%migrator%'")
                    == "0")
                .then_some(())
        },
    );
    let restarted = stack.start_backend("restarted", &[("BACKEND_MIGRATOR_WAIT", "300s")]);
    assert!(
        restarted
            .log()
            .contains("released by an earlier start in this pod"),
        "{}",
        restarted.log()
    );
    drop(restarted);

    // A second start (in a new pod: its sidecar issues the migrator's
    // credentials again) on the same database changes nothing.
    stack.new_pod_sidecar();
    let mut second = stack.start_backend("second", &[]);
    let log = second.log();
    assert!(log.contains("applied=[] already=[1, 2]"), "{log}");
    assert!(log.contains("demo users already present"), "{log}");
    assert_eq!(stack.psql("SELECT count(*) FROM schema_migrations"), "2");
    assert_eq!(stack.psql("SELECT count(*) FROM users"), "6");

    // 5. No migrator credentials and a schema that is behind: not ready,
    //    saying so; ready as soon as the schema is there. (A new pod's
    //    sidecar holds migrator credentials this backend does not see.)
    stack.new_pod_sidecar();
    let saved = stack.psql(
        "SELECT string_agg(version || '|' || name || '|' || checksum, ';' ORDER BY version) FROM schema_migrations",
    );
    let saved: Vec<Vec<String>> = saved
        .split(';')
        .map(|row| row.split('|').map(str::to_string).collect())
        .collect();
    let nomig = stack.dir.join("nomig");
    std::fs::create_dir_all(&nomig).unwrap();
    for f in ["db.json", "jwt-signing-key.json"] {
        std::fs::copy(stack.layout.secrets_dir.join(f), nomig.join(f)).unwrap();
    }
    stack.psql("DELETE FROM schema_migrations");
    let mut behind = stack.spawn_backend(
        "behind",
        &[
            ("ZT_SECRETS_DIR", nomig.to_str().unwrap()),
            ("BACKEND_MIGRATOR_WAIT", "1s"),
        ],
    );
    let r = eventually(
        Duration::from_secs(60),
        "readyz reports the schema version",
        || {
            let (s, r) = try_call(http().get(format!("{}/readyz", behind.url)))?;
            (s == 503
                && r["checks"]["startup"]
                    .as_str()
                    .is_some_and(|m| m.contains("schema is at version 0, this binary needs 2")))
            .then_some(r)
        },
    );
    assert_eq!(r["checks"]["database"], "ok");
    assert!(behind.log().contains("db-migrator.json did not appear"));
    // Credentials that came too late would only stay readable: released
    // all the same.
    eventually(
        Duration::from_secs(30),
        "the late migrator credentials released",
        || {
            (behind.log().contains("released the migrator credentials")
                && !secrets.join("db-migrator.json").exists()
                && secrets.join("db-migrator.released").exists())
            .then_some(())
        },
    );
    // A restart in that pod: no wait, and /readyz says why only a new pod
    // will migrate.
    std::fs::copy(
        secrets.join("db-migrator.released"),
        nomig.join("db-migrator.released"),
    )
    .unwrap();
    let mut released = stack.spawn_backend(
        "released",
        &[
            ("ZT_SECRETS_DIR", nomig.to_str().unwrap()),
            ("BACKEND_MIGRATOR_WAIT", "300s"),
        ],
    );
    eventually(
        Duration::from_secs(60),
        "readyz says the migrator was released in this pod",
        || {
            let (s, r) = try_call(http().get(format!("{}/readyz", released.url)))?;
            (s == 503
                && r["checks"]["startup"].as_str().is_some_and(|m| {
                    m.contains("schema is at version 0, this binary needs 2")
                        && m.contains("released earlier in this pod")
                        && m.contains("rollout restart")
                }))
            .then_some(())
        },
    );
    for row in &saved {
        stack.psql(&format!(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ({}, '{}', '{}')",
            row[0], row[1], row[2]
        ));
    }
    wait_ready(&mut behind, Duration::from_secs(30));
    wait_ready(&mut released, Duration::from_secs(30));
    drop(behind);
    drop(released);

    // 5b. Credentials PostgreSQL stops taking: /readyz says the database
    //     cannot be reached, and only the log has PostgreSQL's words, which
    //     name the runtime role.
    let mut refused = stack.spawn_backend("refused", &[]);
    wait_ready(&mut refused, Duration::from_secs(60));
    let role = stack.db_file()["username"].as_str().unwrap().to_string();
    stack.psql(&format!(
        "ALTER ROLE \"{role}\" PASSWORD 'not-the-password'; \
         SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = '{role}'"
    ));
    let r = eventually(
        Duration::from_secs(60),
        "readyz reports the refused database login",
        || {
            let (s, r) = try_call(http().get(format!("{}/readyz", refused.url)))?;
            (s == 503 && r["checks"]["database"] != "ok").then_some(r)
        },
    );
    let said = r.to_string();
    assert_eq!(
        r["checks"]["database"], "no database connection (the cause is in the backend's log)",
        "{said}"
    );
    assert!(!said.contains(&role) && !said.contains("v-"), "{said}");
    eventually(Duration::from_secs(10), "the log has the cause", || {
        refused
            .log()
            .contains("password authentication failed")
            .then_some(())
    });
    drop(refused);

    // 6. An applied migration edited afterwards: refuse to start (exit 1).
    stack.new_pod_sidecar();
    stack.psql("UPDATE schema_migrations SET checksum = 'tampered' WHERE version = 1");
    let mut tampered = stack.spawn_backend("tampered", &[]);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = tampered.process.exited() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "a tampered migration did not stop the backend"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status.code(), Some(1));
    assert!(
        tampered.log().contains("was changed after it was applied"),
        "{}",
        tampered.log()
    );
    stack.psql(&format!(
        "UPDATE schema_migrations SET checksum = '{}' WHERE version = 1",
        saved[0][2]
    ));

    // 7. SIGTERM: a clean exit.
    second.process.signal(Signal::SIGTERM);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = second.process.exited() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no exit within the shutdown grace"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert!(second.log().contains("app-backend stopped"));
    drop(early);
}

/// Regression (issue 16, 8): the six demo users with publicly known
/// passwords were created wherever the backend ran. Off unless asked for.
#[test]
fn demo_users_exist_only_when_asked_for() {
    let stack = Stack::start(Setup::default());
    let seed_users = || {
        stack.psql(
            "SELECT count(*) FROM users WHERE username IN ('jake','amy','rosa','terry','charles','gina')",
        )
    };
    // Default: off (an empty value means the default).
    let mut off = stack.start_backend("seed-off", &[("BACKEND_SEED_DEMO_USERS", "")]);
    assert_eq!(seed_users(), "0", "no demo users unless asked for");
    let (s, _) = call(
        http()
            .post(format!("{}/api/auth/login", off.url))
            .json(&serde_json::json!({"username": "jake", "password": "jake99"})),
    );
    assert_eq!(s, 401, "jake99 opens nothing");
    assert!(off.log().contains("demo users not seeded"), "{}", off.log());
    // Meanwhile someone registers a seed user's name and (public) email
    // with a password of their own.
    let (s, b) = call(http().post(format!("{}/api/auth/register", off.url)).json(
        &serde_json::json!({"username": "gina", "email": "gina.linetti@99.precinct", "password": "not-gina99"}),
    ));
    assert_eq!(s, 201, "{b}");
    off.process.stop(Duration::from_secs(5));

    // On (what `make up` and `make deploy` set): the six, as operators, but
    // not the account registered under a seed name: it never had the seed's
    // password.
    let mut on = stack.start_backend("seed-on", &[("BACKEND_SEED_DEMO_USERS", "true")]);
    assert_eq!(seed_users(), "6");
    let operators = || {
        stack
            .psql("SELECT string_agg(username, ',' ORDER BY username) FROM users WHERE is_operator")
    };
    assert_eq!(operators(), "amy,charles,jake,rosa,terry");
    assert!(
        on.log()
            .contains("seed user's name and email but another password"),
        "{}",
        on.log()
    );
    let gina = login(&http(), &on.url, "gina", "not-gina99");
    let (s, b) = call(
        http()
            .get(format!("{}/api/zt/status", on.url))
            .bearer_auth(&gina),
    );
    assert_eq!(s, 403, "{b}");
    login(&http(), &on.url, "jake", "jake99");
    on.process.stop(Duration::from_secs(5));
    // A seed user a version before operators existed inserted (the seed's
    // name, email and password) is made one; the squatter an earlier
    // version made an operator for its name and email alone is not one any
    // more.
    stack.psql("UPDATE users SET is_operator = FALSE WHERE username = 'jake'");
    stack.psql("UPDATE users SET is_operator = TRUE WHERE username = 'gina'");
    let mut on = stack.start_backend("seed-on-again", &[("BACKEND_SEED_DEMO_USERS", "true")]);
    assert_eq!(operators(), "amy,charles,jake,rosa,terry");
    on.process.stop(Duration::from_secs(5));

    // Off again on a database a demo used: the leftovers are named, loudly.
    let again = stack.start_backend("seed-off-again", &[("BACKEND_SEED_DEMO_USERS", "off")]);
    let log = again.log();
    assert!(
        log.contains("demo users with publicly known passwords exist"),
        "{log}"
    );
}
