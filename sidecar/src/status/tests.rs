//! The board's documents on a board with every kind of fact on it.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use zt_contracts::SidecarStatus;

use super::*;
use crate::config::Config;

/// The example configuration (proxy, an inbound listener) with an outbound
/// listener.
fn config() -> Config {
    let text = [
        include_str!("../../examples/backend.toml"),
        "[[mtls.outbound]]",
        "listen = \"127.0.0.1:15001\"",
        "upstream = \"backend.99-apps.svc:8443\"",
        "server_id = \"spiffe://demo.local/ns/99-apps/sa/backend\"",
    ]
    .join("\n");
    Config::parse(&text, &BTreeMap::<String, String>::new()).unwrap()
}

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
    SecretStatus::declared(kind, source.into(), file.into(), true)
}

/// A board with an SVID (rotated once), a token, a written and renewed
/// database secret, one not yet written, a KV secret, proxy requests,
/// failures and busy listeners.
pub(super) fn populated() -> State {
    let state = State::new(Arc::new(config()));
    let svid = |serial: &str| SvidInfo {
        spiffe_id: "spiffe://demo.local/ns/99-apps/sa/backend".into(),
        expires_at: at(3600) + Duration::from_millis(750),
        serial: serial.into(),
    };
    state.set_svid(svid("5f3a"));
    state.set_svid(svid("5f3b"));
    state.token_login(TokenInfo {
        expires_at: at(1800),
        policies: vec!["backend".into()],
    });
    state.token_renewed(TokenInfo {
        expires_at: at(2400) + Duration::from_millis(250),
        policies: vec!["backend".into()],
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
        "db-migrator",
        secret(
            SecretKind::Database,
            "backend-role",
            "/run/zt/secrets/db-migrator.json",
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
    assert_eq!(v["ready"], false, "db-migrator is required and not written");
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
    assert_eq!(v["token"]["policies"], serde_json::json!(["backend"]));
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
        serde_json::json!(["unix:/run/zt/openbao.sock"])
    );
    assert_eq!(
        v["proxy"]["allow"][1],
        serde_json::json!({"path": "secret/metadata/github/users/*", "methods": ["GET", "DELETE"], "query": []})
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
    assert_eq!(inbound["forward_to"], "127.0.0.1:8000");
    assert_eq!(inbound["active_connections"], 2);
    assert_eq!(inbound["requests"], 9);
    let outbound = &v["mtls"]["outbound"][0];
    assert_eq!(outbound["upstream"], "backend.99-apps.svc:8443");
    assert_eq!(outbound["handshake_failures"], 2);
}

/// The metrics page of [`populated`], its clock-dependent values as `<t>`.
const METRICS: &str = r#"# HELP zt_ready 1 when every required secret is on disk and unexpired
# TYPE zt_ready gauge
zt_ready 0
# HELP zt_svid_expiry_timestamp_seconds notAfter of the current X.509-SVID
# TYPE zt_svid_expiry_timestamp_seconds gauge
zt_svid_expiry_timestamp_seconds <t>
# HELP zt_svid_rotations_total X.509-SVID rotations seen
# TYPE zt_svid_rotations_total counter
zt_svid_rotations_total 1
# HELP zt_token_ttl_seconds seconds until the OpenBao token expires unless renewed
# TYPE zt_token_ttl_seconds gauge
zt_token_ttl_seconds <t>
# HELP zt_token_renewals_total OpenBao token renewals
# TYPE zt_token_renewals_total counter
zt_token_renewals_total 1
# HELP zt_token_logins_total OpenBao logins with a JWT-SVID
# TYPE zt_token_logins_total counter
zt_token_logins_total 1
# HELP zt_secret_lease_ttl_seconds seconds until the current credentials expire
# TYPE zt_secret_lease_ttl_seconds gauge
zt_secret_lease_ttl_seconds{secret="db"} <t>
# HELP zt_secret_version version of the secret file
# TYPE zt_secret_version gauge
zt_secret_version{secret="db"} 3
zt_secret_version{secret="db-migrator"} 0
zt_secret_version{secret="jwt-signing-key"} 7
# HELP zt_secret_released 1 once the app released the secret (its lease revoked, its file removed)
# TYPE zt_secret_released gauge
zt_secret_released{secret="db"} 0
zt_secret_released{secret="db-migrator"} 0
# HELP zt_lease_renewals_total lease renewals
# TYPE zt_lease_renewals_total counter
zt_lease_renewals_total{secret="db"} 5
zt_lease_renewals_total{secret="db-migrator"} 0
# HELP zt_lease_rotations_total credential rotations
# TYPE zt_lease_rotations_total counter
zt_lease_rotations_total{secret="db"} 2
zt_lease_rotations_total{secret="db-migrator"} 0
# HELP zt_lease_revocations_total old leases revoked
# TYPE zt_lease_revocations_total counter
zt_lease_revocations_total{secret="db"} 1
zt_lease_revocations_total{secret="db-migrator"} 0
# HELP zt_failures_total failed operations by kind
# TYPE zt_failures_total counter
zt_failures_total{kind="creds"} 1
zt_failures_total{kind="kv"} 2
zt_failures_total{kind="login"} 1
# HELP zt_proxy_requests_total OpenBao proxy requests by status
# TYPE zt_proxy_requests_total counter
zt_proxy_requests_total{status="200"} 2
zt_proxy_requests_total{status="403"} 1
zt_proxy_requests_total{status="502"} 1
# HELP zt_mtls_connections_total mTLS connections established
# TYPE zt_mtls_connections_total counter
zt_mtls_connections_total{direction="inbound",listener="0"} 4
zt_mtls_connections_total{direction="outbound",listener="0"} 3
# HELP zt_mtls_peers_refused_total peers refused (no cert, untrusted, ID not allowed)
# TYPE zt_mtls_peers_refused_total counter
zt_mtls_peers_refused_total{direction="inbound",listener="0"} 1
zt_mtls_peers_refused_total{direction="outbound",listener="0"} 0
# HELP zt_mtls_handshake_failures_total failed TLS handshakes
# TYPE zt_mtls_handshake_failures_total counter
zt_mtls_handshake_failures_total{direction="inbound",listener="0"} 0
zt_mtls_handshake_failures_total{direction="outbound",listener="0"} 2
# HELP zt_mtls_active_connections open mTLS connections
# TYPE zt_mtls_active_connections gauge
zt_mtls_active_connections{direction="inbound",listener="0"} 2
zt_mtls_active_connections{direction="outbound",listener="0"} 1
# HELP zt_mtls_requests_total HTTP requests carried over mTLS
# TYPE zt_mtls_requests_total counter
zt_mtls_requests_total{direction="inbound",listener="0"} 9
zt_mtls_requests_total{direction="outbound",listener="0"} 0
"#;

#[test]
fn the_metrics_page_is_pinned() {
    let page = populated().metrics_text();
    let masked: String = page
        .lines()
        .map(|l| {
            let timed = [
                "zt_svid_expiry_timestamp_seconds ",
                "zt_token_ttl_seconds ",
                "zt_secret_lease_ttl_seconds{",
            ]
            .iter()
            .any(|p| l.starts_with(p));
            match l.rsplit_once(' ') {
                Some((head, value)) if timed => {
                    assert!(value.parse::<f64>().is_ok(), "{l}");
                    format!("{head} <t>\n")
                }
                _ => format!("{l}\n"),
            }
        })
        .collect();
    assert_eq!(masked, METRICS);
    let ttl = |name: &str| {
        page.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap()
    };
    assert!((2390..=2400).contains(&ttl("zt_token_ttl_seconds ")));
    assert!((590..=600).contains(&ttl("zt_secret_lease_ttl_seconds{secret=\"db\"} ")));
}

#[test]
fn a_release_is_accepted_once_only_for_a_releasable_database_secret_and_keeps_readiness() {
    // The example configuration marks `db-migrator` releasable, not `db`;
    // its secrets folder does not exist here: nothing can be recorded.
    let state = populated();
    assert!(
        matches!(state.request_release("db-migrator"), ReleaseRequest::NotRecorded(e) if !e.is_empty())
    );
    let dir = tempfile::tempdir().unwrap();
    let mut config = config();
    config.secrets.dir = Some(dir.path().to_path_buf());
    let config = Arc::new(config);
    // A sidecar still waiting for its identity has declared no secret yet:
    // the configuration decides, and the release is kept in the marker.
    let early = State::new(config.clone());
    assert_eq!(early.request_release("nope"), ReleaseRequest::Unknown);
    assert_eq!(early.request_release("db"), ReleaseRequest::NotReleasable);
    assert_eq!(
        early.request_release("db-migrator"),
        ReleaseRequest::Accepted
    );
    let marker = dir.path().join("db-migrator.released");
    assert!(std::fs::read_to_string(&marker)
        .unwrap()
        .starts_with("released at "));
    std::fs::remove_file(&marker).unwrap();
    let state = State::new(config);
    for (name, kind, file) in [
        ("db", SecretKind::Database, "db.json"),
        ("db-migrator", SecretKind::Database, "db-migrator.json"),
        ("jwt-signing-key", SecretKind::Kv, "jwt-signing-key.json"),
    ] {
        state.declare_secret(name, secret(kind, "src", file));
    }
    state.update_secret("db-migrator", |s| {
        s.lease_id = Some("database/creds/backend-migrator/Mig1".into());
    });
    assert_eq!(state.request_release("nope"), ReleaseRequest::Unknown);
    assert_eq!(
        state.request_release("jwt-signing-key"),
        ReleaseRequest::Unknown
    );
    assert_eq!(state.request_release("db"), ReleaseRequest::NotReleasable);
    assert!(
        state
            .readiness()
            .unwrap_err()
            .contains(&"secret db-migrator not written yet".to_string()),
        "{:?}",
        state.readiness()
    );
    assert_eq!(
        state.request_release("db-migrator"),
        ReleaseRequest::Accepted
    );
    // The marker is there before the answer, naming the current lease.
    let marker = std::fs::read_to_string(dir.path().join("db-migrator.released")).unwrap();
    assert!(
        marker.contains("lease database/creds/backend-migrator/Mig1"),
        "{marker}"
    );
    // The rotator carries it out and marks it; then a request is answered
    // as done, and the secret no longer holds readiness back.
    state.update_secret("db-migrator", |s| s.released = true);
    assert_eq!(
        state.request_release("db-migrator"),
        ReleaseRequest::AlreadyReleased
    );
    assert_eq!(
        state.request_rotation("db-migrator", std::time::Instant::now()),
        RotationRequest::Released
    );
    let missing = state.readiness().err().unwrap_or_default();
    assert!(
        !missing.iter().any(|m| m.contains("db-migrator")),
        "{missing:?}"
    );
    let v = serde_json::to_value(state.status()).unwrap();
    let migrator = v["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "db-migrator")
        .unwrap();
    assert_eq!(migrator["released"], true);
    assert_eq!(migrator["ready"], true);
    assert!(state
        .metrics_text()
        .contains("zt_secret_released{secret=\"db-migrator\"} 1"));
}
