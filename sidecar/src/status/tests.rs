//! The board's documents on a board with every kind of fact on it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use zt_contracts::SidecarStatus;

use super::*;
use crate::config::Config;

const CONFIG: &str = r#"
[openbao]
address = "http://127.0.0.1:8200"
role = "backend"
[secrets]
dir = "/run/zt/secrets"
[[secrets.database]]
name = "db"
role = "backend-role"
host = "127.0.0.1"
port = 5432
database = "appdb"
[[secrets.database]]
name = "db-fresh"
role = "backend-role"
host = "127.0.0.1"
port = 5432
database = "appdb"
[[secrets.kv]]
name = "jwt-signing-key"
mount = "secret"
path = "backend/jwt-signing-key"
[proxy]
listen = ["unix:/run/zt/openbao.sock", "tcp:127.0.0.1:18200"]
[[proxy.allow]]
path = "secret/data/github/users/*"
methods = ["GET", "PUT"]
query = ["version"]
[[proxy.allow]]
path = "secret/metadata/github/users/*"
methods = ["GET", "DELETE"]
[[mtls.inbound]]
listen = "127.0.0.1:18443"
forward_to = "127.0.0.1:18000"
allow = ["spiffe://demo.local/ns/99-apps/sa/frontend"]
[[mtls.outbound]]
listen = "127.0.0.1:15001"
upstream = "backend.99-apps.svc:8443"
server_id = "spiffe://demo.local/ns/99-apps/sa/backend"
"#;

/// `secs_from_now` seconds from now (negative: ago).
fn at(secs_from_now: i64) -> SystemTime {
    let now = SystemTime::now();
    if secs_from_now >= 0 {
        now + Duration::from_secs(secs_from_now as u64)
    } else {
        now - Duration::from_secs(secs_from_now.unsigned_abs())
    }
}

fn secret(kind: SecretKind, source: &str, file: &str) -> SecretStatus {
    SecretStatus {
        kind,
        source: source.into(),
        file: file.into(),
        required: true,
        written: false,
        username: None,
        lease_id: None,
        expires_at: None,
        version: 0,
        rotations: 0,
        renewals: 0,
        revocations: 0,
    }
}

/// A board with an SVID (rotated once), a token, a written and renewed
/// database secret, one not yet written, a KV secret, proxy requests,
/// failures and busy listeners.
pub(super) fn populated() -> State {
    let config = Config::parse(CONFIG, &BTreeMap::<String, String>::new()).unwrap();
    let state = State::new(Arc::new(config));
    let svid = |serial: &str| SvidInfo {
        spiffe_id: "spiffe://demo.local/ns/99-apps/sa/backend".into(),
        expires_at: at(3600) + Duration::from_millis(750),
        serial: serial.into(),
    };
    state.set_svid(svid("5f3a"));
    state.set_svid(svid("5f3b"));
    state.token_login(TokenInfo {
        expires_at: at(1800),
        policies: vec!["backend".into(), "default".into()],
    });
    state.token_renewed(TokenInfo {
        expires_at: at(2400) + Duration::from_millis(250),
        policies: vec!["backend".into(), "default".into()],
    });
    state.declare_secret(
        "db",
        secret(
            SecretKind::Database,
            "backend-role",
            "/run/zt/secrets/db.json",
        ),
    );
    state.declare_secret(
        "db-fresh",
        secret(
            SecretKind::Database,
            "backend-role",
            "/run/zt/secrets/db-fresh.json",
        ),
    );
    state.declare_secret(
        "jwt-signing-key",
        secret(
            SecretKind::Kv,
            "secret/backend/jwt-signing-key",
            "/run/zt/secrets/jwt-signing-key.json",
        ),
    );
    state.update_secret("db", |s| {
        s.written = true;
        s.username = Some("v-backend-role-abc-1".into());
        s.lease_id = Some("database/creds/backend-role/x1".into());
        s.expires_at = Some(at(600) + Duration::from_millis(500));
        s.version = 3;
        s.rotations = 2;
        s.renewals = 5;
        s.revocations = 1;
    });
    state.update_secret("jwt-signing-key", |s| {
        s.written = true;
        s.version = 7;
    });
    for status in [200, 200, 403, 502] {
        state.proxy_request(status);
    }
    for kind in ["kv", "kv", "login", "creds"] {
        state.failure(kind);
    }
    let inbound = state.inbound(0);
    inbound.accepted.fetch_add(4, Ordering::Relaxed);
    inbound.refused.fetch_add(1, Ordering::Relaxed);
    inbound.active.fetch_add(2, Ordering::Relaxed);
    inbound.requests.fetch_add(9, Ordering::Relaxed);
    let outbound = state.outbound(0);
    outbound.accepted.fetch_add(3, Ordering::Relaxed);
    outbound.handshake_failures.fetch_add(2, Ordering::Relaxed);
    outbound.active.fetch_add(1, Ordering::Relaxed);
    state
}

#[test]
fn the_served_status_parses_as_the_contract_and_round_trips_with_no_field_lost() {
    for state in [
        populated(),
        State::new(Arc::new(
            Config::parse("", &BTreeMap::<String, String>::new()).unwrap(),
        )),
    ] {
        let served = state.status().to_json().unwrap();
        let as_value: serde_json::Value = serde_json::from_str(&served).unwrap();
        let parsed: SidecarStatus = serde_json::from_str(&served).unwrap();
        assert_eq!(serde_json::to_value(&parsed).unwrap(), as_value, "{served}");
        assert_eq!(parsed.to_json().unwrap(), served);
    }
}

#[test]
fn the_status_document_has_its_shape() {
    let v = serde_json::to_value(populated().status()).unwrap();
    assert_eq!(v["spiffe_id"], "spiffe://demo.local/ns/99-apps/sa/backend");
    assert_eq!(v["ready"], false, "db-fresh is required and not written");
    assert_eq!(v["svid"]["serial"], "5f3b");
    assert_eq!(v["svid"]["rotations"], 1);
    let expires = v["svid"]["expires_at"].as_str().unwrap();
    assert!(
        expires.ends_with('Z') && !expires.contains('.'),
        "{expires}"
    );
    assert_eq!(v["token"]["renewals"], 1);
    assert_eq!(v["token"]["logins"], 1);
    let ttl = v["token"]["ttl_seconds"].as_i64().unwrap();
    assert!((2390..=2400).contains(&ttl), "{ttl}");
    assert_eq!(
        v["token"]["policies"],
        serde_json::json!(["backend", "default"])
    );
    let db = &v["secrets"][0];
    assert_eq!(db["kind"], "database");
    assert_eq!(db["name"], "db");
    assert_eq!(db["role"], "backend-role");
    assert_eq!(db["ready"], true);
    assert_eq!(db["revocations"], 1);
    assert_eq!(v["secrets"][1]["ready"], false);
    assert_eq!(v["secrets"][1]["username"], serde_json::Value::Null);
    let kv = &v["secrets"][2];
    assert_eq!(kv["kind"], "kv");
    assert_eq!(kv["path"], "secret/backend/jwt-signing-key");
    assert_eq!(kv["version"], 7);
    assert_eq!(
        v["proxy"]["listen"],
        serde_json::json!(["unix:/run/zt/openbao.sock", "tcp:127.0.0.1:18200"])
    );
    assert_eq!(
        v["proxy"]["allow"][0]["query"],
        serde_json::json!(["version"])
    );
    assert_eq!(
        v["proxy"]["requests"],
        serde_json::json!({"200": 2, "403": 1, "502": 1})
    );
    assert_eq!(
        v["failures"],
        serde_json::json!({"creds": 1, "kv": 2, "login": 1})
    );
    let inbound = &v["mtls"]["inbound"][0];
    assert_eq!(inbound["forward_to"], "127.0.0.1:18000");
    assert_eq!(inbound["active_connections"], 2);
    assert_eq!(inbound["requests"], 9);
    let outbound = &v["mtls"]["outbound"][0];
    assert_eq!(outbound["upstream"], "backend.99-apps.svc:8443");
    assert_eq!(outbound["handshake_failures"], 2);
}

#[test]
fn temporary_metrics_text_is_byte_identical_to_the_old_writer() {
    for state in [
        populated(),
        State::new(Arc::new(
            Config::parse("", &BTreeMap::<String, String>::new()).unwrap(),
        )),
    ] {
        let (new, old) = (state.metrics_text(), state.metrics_text_old());
        assert_eq!(new, old);
    }
}
