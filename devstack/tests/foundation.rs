//! Acceptance of the foundation against the real SPIRE, OpenBao and
//! PostgreSQL: identity → OpenBao login → dynamic PostgreSQL credentials with
//! DML-only rights → revocation, plus the refusals.

use std::time::Duration;

use devstack::openbao::Bao;
use devstack::spire::{BACKEND_ID, FRONTEND_ID};
use devstack::{Devstack, Options};
use serde_json::{json, Value};
use spiffe::{SpiffeId, WorkloadApiClient};

/// The test binary itself is the workload: it is registered as both the
/// backend and the frontend so it can ask for either JWT-SVID by ID.
fn stack() -> Devstack {
    let me = std::env::current_exe().unwrap();
    let opts = Options::default()
        .register_binary(BACKEND_ID, &me)
        .unwrap()
        .register_binary(FRONTEND_ID, &me)
        .unwrap();
    Devstack::start(opts).expect("devstack failed to start")
}

/// Every component listens only on ports devstack reserved for it. OpenBao
/// without `cluster_address` bound its cluster listener to the API port + 1,
/// which devstack may have handed to another component: a sidecar's admin
/// listener then failed with "Address already in use" (the fault suite, once
/// in about 100 runs of 10 reserved ports each).
fn every_listener_is_on_a_reserved_port(stack: &Devstack) {
    use devstack::process::listening_ports;
    let p = &stack.ports;
    let reserved = [
        p.postgres,
        p.spire_server,
        p.oidc,
        p.openbao,
        p.openbao_cluster,
    ];
    for process in stack.processes() {
        let ports = listening_ports(process.pid()).unwrap();
        let stray: Vec<&u16> = ports.iter().filter(|p| !reserved.contains(p)).collect();
        assert!(
            stray.is_empty(),
            "{} listens on {stray:?}, which devstack did not reserve (reserved: {reserved:?})",
            process.name()
        );
    }
    // And OpenBao's cluster listener is where its configuration says (it
    // opens once OpenBao is unsealed and raft has a leader).
    let bao = stack.openbao.process().pid();
    let start = std::time::Instant::now();
    while !listening_ports(bao).unwrap().contains(&p.openbao_cluster) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "OpenBao does not listen on its cluster port {}: {:?}",
            p.openbao_cluster,
            listening_ports(bao)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn workload_client(stack: &Devstack) -> WorkloadApiClient {
    WorkloadApiClient::connect_to(stack.workload_endpoint())
        .await
        .expect("connect to the SPIRE agent's Workload API")
}

/// The agent needs a moment after start to have synced the entries.
async fn jwt_svid(client: &WorkloadApiClient, audience: &str, id: &str) -> String {
    let id = SpiffeId::new(id).unwrap();
    let mut last = None;
    for _ in 0..50 {
        match client.fetch_jwt_svid([audience], Some(&id)).await {
            Ok(svid) => return svid.token().to_string(),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no JWT-SVID for {id}: {last:?}");
}

fn login(bao: &Bao, jwt: &str) -> anyhow::Result<Value> {
    bao.write("auth/jwt/login", &json!({"role": "backend", "jwt": jwt}))
}

/// Applies the backend's real migration as app_owner, like the backend's
/// migrator does, so `users` exists.
async fn create_schema(stack: &Devstack) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(&stack.pg_superuser(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let sql = include_str!("../../app-backend/migrations/0001_initial_schema.sql");
    client
        .batch_execute(&format!("SET ROLE app_owner; {sql}; RESET ROLE;"))
        .await
        .unwrap();
    client
}

fn assert_insufficient_privilege(err: tokio_postgres::Error) {
    let code = err.as_db_error().map(|e| e.code().clone());
    assert_eq!(
        code,
        Some(tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
        "{err:?}"
    );
}

async fn role_exists(admin: &tokio_postgres::Client, name: &str) -> bool {
    admin
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_identity_logs_in_and_gets_dml_only_database_credentials() {
    let stack = stack();
    every_listener_is_on_a_reserved_port(&stack);
    let admin = create_schema(&stack).await;
    let client = workload_client(&stack).await;

    // X.509-SVID with the backend's SPIFFE ID from the real agent.
    let svids = client.fetch_all_x509_svids().await.unwrap();
    let ids: Vec<String> = svids.iter().map(|s| s.spiffe_id().to_string()).collect();
    assert!(
        ids.contains(&BACKEND_ID.to_string()),
        "X.509-SVIDs: {ids:?}"
    );

    // JWT-SVID for audience `openbao`.
    let jwt = jwt_svid(&client, "openbao", BACKEND_ID).await;
    let parsed = spiffe::JwtSvid::parse_insecure(&jwt).unwrap();
    assert_eq!(parsed.spiffe_id().to_string(), BACKEND_ID);
    assert_eq!(parsed.audience(), ["openbao".to_string()]);

    // It logs in to OpenBao and carries the `backend` policy.
    let bao = Bao::new(&stack.openbao_addr(), None);
    let auth = login(&bao, &jwt).unwrap();
    let policies: Vec<&str> = auth["auth"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(policies, ["backend"], "only its own policy, not `default`");
    let token = auth["auth"]["client_token"].as_str().unwrap().to_string();
    let bao = bao.with_token(&token);
    // What `default` would have allowed is refused; its own upkeep is not.
    let refused = bao
        .write("cubbyhole/probe", &json!({"x": "y"}))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("403"), "{refused}");
    bao.write("auth/token/renew-self", &json!({}))
        .expect("the token renews itself");

    // Dynamic credentials: a new PostgreSQL role.
    let creds = bao.read("database/creds/backend-role").unwrap().unwrap();
    let user = creds["data"]["username"].as_str().unwrap().to_string();
    let password = creds["data"]["password"].as_str().unwrap().to_string();
    let lease_id = creds["lease_id"].as_str().unwrap().to_string();
    assert!(user.starts_with("v-backend-role-"), "user {user}");
    assert!(role_exists(&admin, &user).await);

    let conn_str = format!(
        "host=127.0.0.1 port={} dbname=appdb user={user} password={password}",
        stack.ports.postgres
    );
    let (db, conn) = tokio_postgres::connect(&conn_str, tokio_postgres::NoTls)
        .await
        .expect("the issued credentials connect to appdb");
    let conn_task = tokio::spawn(conn);
    db.execute(
        "INSERT INTO users (username, password_hash) VALUES ('probe', 'x')",
        &[],
    )
    .await
    .expect("runtime role may INSERT into users");
    let n: i64 = db
        .query_one("SELECT count(*) FROM users WHERE username = 'probe'", &[])
        .await
        .expect("runtime role may SELECT users")
        .get(0);
    assert_eq!(n, 1);
    let ddl = db.execute("CREATE TABLE intruder (id int)", &[]).await;
    assert_insufficient_privilege(ddl.expect_err("runtime role must not CREATE TABLE"));
    let authid = db.query("SELECT rolpassword FROM pg_authid", &[]).await;
    assert_insufficient_privilege(authid.expect_err("runtime role must not read pg_authid"));
    drop(db);
    let _ = conn_task.await;

    // Looking up a lease by its id in the body (`default` allows it for any
    // lease) is refused.
    let refused = bao
        .write("sys/leases/lookup", &json!({"lease_id": lease_id}))
        .unwrap_err()
        .to_string();
    assert!(refused.contains("403"), "{refused}");

    // Revoking the lease drops the role.
    bao.write(&format!("sys/leases/revoke/{lease_id}"), &json!({}))
        .unwrap();
    assert!(
        !role_exists(&admin, &user).await,
        "{user} still in pg_roles after revoke"
    );
    bao.write("auth/token/revoke-self", &json!({}))
        .expect("the token revokes itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openbao_refuses_wrong_subject_wrong_audience_and_foreign_signer() {
    let stack = stack();
    let client = workload_client(&stack).await;
    let bao = Bao::new(&stack.openbao_addr(), None);

    // The frontend's JWT-SVID, right audience: wrong subject for role backend.
    let frontend = jwt_svid(&client, "openbao", FRONTEND_ID).await;
    let err = login(&bao, &frontend).unwrap_err().to_string();
    assert!(err.contains("400") || err.contains("403"), "{err}");
    assert!(
        err.contains("sub"),
        "refusal should name the subject claim: {err}"
    );

    // The backend's JWT-SVID minted for another audience.
    let other_aud = jwt_svid(&client, "not-openbao", BACKEND_ID).await;
    let err = login(&bao, &other_aud).unwrap_err().to_string();
    assert!(
        err.contains("aud"),
        "refusal should name the audience: {err}"
    );

    // Same claims, signed by a key outside the trust domain's bundle.
    let genuine =
        spiffe::JwtSvid::parse_insecure(&jwt_svid(&client, "openbao", BACKEND_ID).await).unwrap();
    let forged = forge_jwt(&genuine);
    let err = login(&bao, &forged).unwrap_err().to_string();
    assert!(
        err.contains("signature") || err.contains("verify") || err.contains("key"),
        "refusal should be about the signature: {err}"
    );

    // The control: the genuine backend JWT-SVID is accepted.
    login(&bao, genuine.token()).expect("genuine backend JWT-SVID logs in");
}

/// A JWT with the genuine claims and key id, signed by a fresh P-256 key.
fn forge_jwt(genuine: &spiffe::JwtSvid) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = genuine.token().split('.').collect();
    let claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(genuine.key_id().to_string());
    let enc = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &enc).unwrap()
}

#[test]
fn a_missing_component_fails_with_the_install_hint() {
    let empty = tempfile::tempdir().unwrap();
    let opts = Options {
        tools_dir: Some(empty.path().to_path_buf()),
        ..Options::default()
    };
    let err = Devstack::start(opts).unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("is not installed"), "{msg}");
    assert!(msg.contains("make tools"), "{msg}");
}
