//! `make up` reuses its state: a second start on the same folder finds
//! OpenBao initialised (and unseals it), PostgreSQL's data, SPIRE's
//! registrations and the generated KV secrets as they were.

use std::time::Instant;

use devstack::spire::BACKEND_ID;
use devstack::{Devstack, Options};
use serde_json::json;

#[test]
fn a_second_start_on_the_same_state_keeps_everything() {
    let state = tempfile::tempdir().unwrap();
    let me = std::env::current_exe().unwrap();
    let opts = || {
        let mut o = Options::default().register_binary(BACKEND_ID, &me).unwrap();
        o.state_dir = Some(state.path().to_path_buf());
        o.durable = true;
        o
    };
    let (key, ids) = {
        let stack = Devstack::start(opts()).unwrap();
        let bao = stack.root_bao();
        bao.write(
            "secret/data/github/users/42",
            &json!({"data": {"token": "kept"}}),
        )
        .unwrap();
        stack
            .postgres
            .psql(
                "appdb",
                "CREATE TABLE kept (v text); INSERT INTO kept VALUES ('row')",
            )
            .unwrap();
        let key = bao
            .read("secret/data/backend/jwt-signing-key")
            .unwrap()
            .unwrap()["data"]["data"]["key"]
            .clone();
        let ids = stack
            .spire
            .server_cli(&["entry", "show", "-spiffeID", BACKEND_ID])
            .unwrap();
        (key, ids)
    };
    let started = Instant::now();
    let stack = Devstack::start(opts()).unwrap();
    eprintln!(
        "warm restart of the infrastructure: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let bao = stack.root_bao();
    let kept = bao
        .read("secret/data/github/users/42")
        .unwrap()
        .expect("KV data survives");
    assert_eq!(kept["data"]["data"]["token"], "kept");
    let key2 = bao
        .read("secret/data/backend/jwt-signing-key")
        .unwrap()
        .unwrap()["data"]["data"]["key"]
        .clone();
    assert_eq!(key, key2, "the generated signing key is not regenerated");
    assert_eq!(
        stack
            .postgres
            .psql("appdb", "SELECT v FROM kept")
            .unwrap()
            .trim(),
        "row"
    );
    let ids2 = stack
        .spire
        .server_cli(&["entry", "show", "-spiffeID", BACKEND_ID])
        .unwrap();
    let count = |s: &str| s.matches("Entry ID").count();
    assert_eq!(count(&ids), 1);
    assert_eq!(count(&ids2), 1, "registrations are not duplicated:\n{ids2}");
    // The admin password was rotated by OpenBao and reset by roles.sql: OpenBao can still mint users.
    let creds = bao.read("database/creds/backend-role").unwrap().unwrap();
    assert!(creds["data"]["username"]
        .as_str()
        .unwrap()
        .starts_with("v-backend-role-"));
}
