//! Step 4 of the OpenBao bootstrap Job, `deploy/bootstrap/apply-roles.sh`, run
//! as the Job runs it against a real PostgreSQL (devstack's): roles.sql is
//! applied, openbao_admin can log in with the password from its file, a
//! second run (after the backend's migrations) changes nothing and does not
//! undo what the migrations revoked, and no password is ever in psql's argv.

use std::path::Path;
use std::process::Command;

use deploy_checks::repo::root;
use devstack::postgres::{Postgres, PostgresOptions};
use devstack::tools::Tools;

const ADMIN_PASSWORD: &str = "it's-a-test-pa$$word \"quoted\"";

/// Runs apply-roles.sh with a PATH whose `psql` records its argv first.
fn apply_roles(pg: &Postgres, tools: &Tools, dir: &Path, admin_file: &Path) -> (i32, String) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let psql = bin.join("psql");
    std::fs::write(
        &psql,
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            dir.join("argv.log").display(),
            tools.pg("psql").display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&psql, std::fs::Permissions::from_mode(0o755)).unwrap();
    let superuser = dir.join("superuser");
    std::fs::write(&superuser, "unused-with-local-trust").unwrap();
    let out = Command::new("/bin/sh")
        .arg(root().join("deploy/bootstrap/apply-roles.sh"))
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("PG_HOST", &pg.socket_dir)
        .env("PG_PORT", pg.port.to_string())
        .env("PG_SUPERUSER_PASSWORD_FILE", &superuser)
        .env("OPENBAO_PG_ADMIN_PASSWORD_FILE", admin_file)
        .env("POLICIES", root().join("policies"))
        .output()
        .unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Logs in over TCP (scram-sha-256) as openbao_admin with `password`.
fn login_as_admin(pg: &Postgres, tools: &Tools, password: &str) -> Result<String, String> {
    let out = Command::new(tools.pg("psql"))
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p"])
        .arg(pg.port.to_string())
        .args(["-U", "openbao_admin", "-d", "postgres", "-c"])
        .arg("SELECT current_user || ' ' || rolcreaterole FROM pg_roles WHERE rolname = current_user")
        .env("PGPASSWORD", password)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn apply_roles_sets_the_admin_password_without_putting_it_in_argv() {
    let tools = Tools::locate().unwrap_or_else(|e| panic!("{e}"));
    let dir = tempfile::tempdir().unwrap();
    let pg = Postgres::start(
        &tools,
        &PostgresOptions {
            dir: dir.path().join("pg"),
            port: devstack::free_port().unwrap(),
            durable: false,
        },
    )
    .unwrap_or_else(|e| panic!("PostgreSQL: {e:#}"));
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    // A missing password file: refused before psql runs.
    let (code, out) = apply_roles(&pg, &tools, &work, &work.join("absent"));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is missing or empty"), "{out}");
    assert!(!work.join("argv.log").exists(), "psql ran: {out}");

    let admin_file = work.join("admin");
    std::fs::write(&admin_file, ADMIN_PASSWORD).unwrap();
    for run in 1..=2 {
        if run == 2 {
            // The backend's migrations ran in between (as app_owner, like
            // app-backend/src/db/migrate.rs: a table, and the bookkeeping
            // the runtime role may only read).
            pg.psql_script(
                "appdb",
                "SET ROLE app_owner;
                 CREATE TABLE users (id BIGINT PRIMARY KEY);
                 CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY);
                 REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations FROM app_runtime;",
            )
            .unwrap();
        }
        let (code, out) = apply_roles(&pg, &tools, &work, &admin_file);
        assert_eq!(code, 0, "run {run}: {out}");
        assert!(
            !out.contains(ADMIN_PASSWORD),
            "run {run} printed the password"
        );
        assert_eq!(
            login_as_admin(&pg, &tools, ADMIN_PASSWORD).as_deref(),
            Ok("openbao_admin true"),
            "run {run}"
        );
    }
    // The re-run gave the runtime role DML on the new table, and left the
    // bookkeeping read-only to it.
    let privileges = |table: &str| {
        pg.psql(
            "appdb",
            &format!(
                "SELECT string_agg(p, ',' ORDER BY p) FROM unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE']) p \
                 WHERE has_table_privilege('app_runtime', 'public.{table}', p)"
            ),
        )
        .unwrap()
        .trim()
        .to_string()
    };
    assert_eq!(privileges("users"), "DELETE,INSERT,SELECT,UPDATE");
    assert_eq!(privileges("schema_migrations"), "SELECT");
    let wrong = login_as_admin(&pg, &tools, "not-the-password").unwrap_err();
    assert!(wrong.contains("password authentication failed"), "{wrong}");

    let argv = std::fs::read_to_string(work.join("argv.log")).unwrap();
    assert_eq!(argv.lines().count(), 2, "{argv}");
    assert!(!argv.contains("pa$$word"), "a password reached psql's argv");
    assert!(argv.contains("\\getenv openbao_admin_password OPENBAO_ADMIN_PASSWORD"));
}
