//! `make up` on a machine other people use too (issue 16, 6): the real
//! SPIRE and PostgreSQL, started the way `make up` starts them (a persistent
//! state folder that does not exist yet).
//!
//! Before: the backend's registration selected only by binary path (any
//! local user who could run that binary got the backend's SVID), the state
//! folder was created 0755, and PostgreSQL's socket was 0777 with `trust`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use devstack::spire::{Registration, BACKEND_ID};
use devstack::{Devstack, Options};

#[test]
fn state_registrations_and_postgres_are_closed_to_other_local_users() {
    let parent = tempfile::Builder::new()
        .prefix("devstack-shared-")
        .tempdir()
        .unwrap();
    let state = parent.path().join("state");
    let me = std::env::current_exe().unwrap();
    let mut opts = Options::default().register_binary(BACKEND_ID, &me).unwrap();
    opts.state_dir = Some(state.clone());
    let mut stack = Devstack::start(opts).expect("devstack");

    // The state folder: nothing for other users. As root, PostgreSQL runs as
    // its own account, whose group may only traverse it.
    let meta = std::fs::metadata(&state).unwrap();
    let mode = meta.permissions().mode() & 0o777;
    match stack.postgres.os_user() {
        None => assert_eq!(mode, 0o700, "state folder mode {mode:o}"),
        Some(pg) => {
            let pg = nix::unistd::User::from_name(pg).unwrap().unwrap();
            assert_eq!(mode, 0o710, "state folder mode {mode:o}");
            assert_eq!(meta.gid(), pg.gid.as_raw(), "group of the state folder");
        }
    }

    // PostgreSQL: socket 0700, and no `trust` line anywhere.
    let socket = stack
        .postgres
        .socket_dir
        .join(format!(".s.PGSQL.{}", stack.ports.postgres));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "PostgreSQL socket mode {mode:o}");
    let trust = stack
        .postgres
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_hba_file_rules WHERE auth_method = 'trust'",
        )
        .unwrap();
    assert_eq!(trust.trim(), "0", "pg_hba.conf has trust rules");
    let local = stack
        .postgres
        .psql(
            "postgres",
            "SELECT string_agg(DISTINCT auth_method, ',') FROM pg_hba_file_rules WHERE type = 'local'",
        )
        .unwrap();
    assert_eq!(local.trim(), "peer", "local connections use peer auth");

    // SPIRE: the registration selects the binary AND this user.
    let uid = nix::unistd::geteuid().as_raw();
    let entries = |stack: &Devstack| stack.spire.entries(BACKEND_ID).unwrap();
    let found = entries(&stack);
    assert_eq!(found.len(), 1, "{found:?}");
    let mut want = vec![
        format!(
            "unix:path:{}",
            std::fs::canonicalize(&me).unwrap().display()
        ),
        format!("unix:uid:{uid}"),
    ];
    want.sort();
    assert_eq!(found[0].selectors, want);

    // A path-only entry left by an older `make up` in the same state is
    // replaced, not kept next to the new one (it would still match any user).
    stack
        .spire
        .server_cli(&[
            "entry",
            "create",
            "-parentID",
            devstack::spire::NODE_ALIAS,
            "-spiffeID",
            BACKEND_ID,
            "-selector",
            &want[0],
        ])
        .unwrap();
    // Another binary with the same ID (tests register two) stays.
    let other = std::fs::canonicalize("/bin/sh").unwrap();
    stack
        .register(&Registration::for_binary(BACKEND_ID, &other).unwrap())
        .unwrap();
    assert_eq!(entries(&stack).len(), 3);
    stack
        .register(&Registration::for_binary(BACKEND_ID, &me).unwrap())
        .unwrap();
    let found = entries(&stack);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.iter().any(|e| e.selectors == want), "{found:?}");
    assert!(
        found
            .iter()
            .all(|e| e.selectors.iter().any(|s| s.starts_with("unix:uid:"))),
        "the path-only entry is gone: {found:?}"
    );
}
