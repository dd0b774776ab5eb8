//! The zt-sidecar's `GET /status` document (docs/contracts.md, contract 3).
//! It holds no secret values: usernames, lease ids and counters only.
//!
//! Served by the zt-sidecar's admin endpoint; read by app-backend (which
//! embeds the backend sidecar's document in `GET /api/zt/status`) and by
//! app-frontend (its own sidecar's, and the backend's through the API).
//!
//! Readers are lenient about *absent* fields, which take their defaults: a
//! sidecar and its app roll out independently, so a page must still render
//! with a sidecar one version older or newer. The sidecar always writes
//! every field. A field that is present must have its type, and a
//! timestamp must be RFC 3339.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The whole document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SidecarStatus {
    /// The workload's SPIFFE ID; `null` until the first X.509-SVID arrives.
    pub spiffe_id: Option<String>,
    /// Whether every required secret is on disk and unexpired and the SVID
    /// is present (what `/readyz` answers).
    pub ready: bool,
    /// The current X.509-SVID; `null` until the first arrives.
    pub svid: Option<SvidStatus>,
    /// The OpenBao token; `null` without `[openbao]` or while logged out.
    pub token: Option<TokenStatus>,
    /// The rendered secrets, by name.
    pub secrets: Vec<SecretStatus>,
    /// The OpenBao API proxy; `null` without `[proxy]`.
    pub proxy: Option<ProxyStatus>,
    /// The mTLS listeners.
    pub mtls: MtlsStatus,
    /// Failed operations so far by kind (`login`, `token_renew`, `creds`,
    /// `lease_renew`, `revoke`, `kv`, `file`, `jwt_svid`).
    pub failures: BTreeMap<String, u64>,
}

/// `svid`: the current X.509-SVID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SvidStatus {
    /// Leaf `notAfter` (RFC 3339 UTC, whole seconds).
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Leaf serial number, hex.
    pub serial: String,
    /// SVID rotations seen.
    pub rotations: u64,
}

/// `token`: the OpenBao token (never the token itself).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TokenStatus {
    /// When it expires unless renewed (RFC 3339 UTC, whole seconds).
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Whole seconds until `expires_at` when the document was made;
    /// negative once past.
    pub ttl_seconds: i64,
    /// Its policies.
    pub policies: Vec<String>,
    /// Renewals so far.
    pub renewals: u64,
    /// Logins so far.
    pub logins: u64,
}

/// One entry of `secrets`, told apart by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SecretStatus {
    /// `"kind": "database"`: dynamic database credentials.
    Database(DatabaseSecretStatus),
    /// `"kind": "kv"`: a KV v2 secret.
    Kv(KvSecretStatus),
}

impl SecretStatus {
    /// The secret's name (its file stem).
    pub fn name(&self) -> &str {
        match self {
            Self::Database(s) => &s.name,
            Self::Kv(s) => &s.name,
        }
    }

    /// The database secret, if this is one.
    pub fn as_database(&self) -> Option<&DatabaseSecretStatus> {
        match self {
            Self::Database(s) => Some(s),
            Self::Kv(_) => None,
        }
    }
}

/// A database secret's public facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DatabaseSecretStatus {
    /// Name (the file stem).
    pub name: String,
    /// OpenBao database role.
    pub role: String,
    /// Current PostgreSQL user; `null` before the first lease.
    pub username: Option<String>,
    /// Current lease id; `null` before the first lease.
    pub lease_id: Option<String>,
    /// When the current credentials expire; `null` before the first lease.
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// Version of the credentials file (contract 1).
    pub version: u64,
    /// Rotations so far.
    pub rotations: u64,
    /// Lease renewals so far.
    pub renewals: u64,
    /// Old leases revoked so far.
    pub revocations: u64,
    /// The file apps read.
    pub file: PathBuf,
    /// Written and unexpired, or released.
    pub ready: bool,
    /// The app released it (`POST /release/<name>`): its lease is revoked,
    /// its file removed, and it is not issued again in this pod.
    pub released: bool,
}

/// A KV secret's public facts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct KvSecretStatus {
    /// Name (the file stem).
    pub name: String,
    /// `<mount>/<path>` in OpenBao.
    pub path: String,
    /// OpenBao's KV version written.
    pub version: u64,
    /// The file apps read.
    pub file: PathBuf,
    /// Written.
    pub ready: bool,
}

/// `proxy`: the OpenBao API proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyStatus {
    /// Its listeners (`unix:<path>`, `tcp:<ip:port>`).
    pub listen: Vec<String>,
    /// The allow-list.
    pub allow: Vec<ProxyRuleStatus>,
    /// Requests answered so far, by HTTP status.
    pub requests: BTreeMap<u16, u64>,
}

/// One allow-list rule of the proxy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProxyRuleStatus {
    /// Path below `/v1/`, optionally ending in `/*`.
    pub path: String,
    /// Upper-case operations.
    pub methods: Vec<String>,
    /// Query keys forwarded.
    pub query: Vec<String>,
}

/// `mtls`: the listeners.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MtlsStatus {
    /// Inbound listeners (mTLS in, plain HTTP to the app).
    pub inbound: Vec<InboundStatus>,
    /// Outbound listeners (plain from the app, mTLS out).
    pub outbound: Vec<OutboundStatus>,
}

/// The counters every mTLS listener has.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ListenerCounters {
    /// Connections established (outbound: mTLS connections to the upstream).
    pub accepted: u64,
    /// Peers refused (inbound) or upstreams with the wrong identity (outbound).
    pub refused: u64,
    /// Handshakes that failed for other reasons.
    pub handshake_failures: u64,
    /// Connections open now.
    pub active_connections: u64,
    /// HTTP requests forwarded (inbound only; outbound relays bytes).
    pub requests: u64,
}

/// An inbound mTLS listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct InboundStatus {
    /// Listen address.
    pub listen: String,
    /// Where requests go (the app).
    pub forward_to: String,
    /// SPIFFE IDs allowed to connect.
    pub allow: Vec<String>,
    /// Its counters.
    #[serde(flatten)]
    pub counters: ListenerCounters,
}

/// An outbound mTLS listener.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutboundStatus {
    /// Listen address.
    pub listen: String,
    /// Upstream address.
    pub upstream: String,
    /// The SPIFFE ID the upstream must present.
    pub server_id: String,
    /// Its counters.
    #[serde(flatten)]
    pub counters: ListenerCounters,
}

impl SidecarStatus {
    /// The document as the sidecar serves it: compact JSON, keys sorted at
    /// every level.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        // Through `Value`, whose map sorts keys: the order the sidecar has
        // always served.
        Ok(serde_json::to_value(self)?.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> serde_json::Value {
        json!({
            "spiffe_id": "spiffe://demo.local/ns/99-apps/sa/backend",
            "ready": true,
            "svid": {"expires_at": "2026-11-28T15:00:00Z", "serial": "5f3a", "rotations": 2},
            "token": null,
            "secrets": [
                {"name": "db", "kind": "database", "role": "backend-role", "username": null,
                 "lease_id": null, "expires_at": null, "version": 0, "rotations": 0,
                 "renewals": 0, "revocations": 0, "file": "/run/zt/secrets/db.json", "ready": false,
                 "released": false},
                {"name": "k", "kind": "kv", "path": "secret/k", "version": 1,
                 "file": "/run/zt/secrets/k.json", "ready": true}
            ],
            "proxy": {"listen": ["unix:/x"], "allow": [], "requests": {"200": 4, "403": 1}},
            "mtls": {"inbound": [], "outbound": [{"listen": "127.0.0.1:15001", "upstream": "127.0.0.1:8443",
                     "server_id": "spiffe://demo.local/ns/99-apps/sa/backend", "accepted": 1, "refused": 0,
                     "handshake_failures": 0, "active_connections": 1, "requests": 0}]},
            "failures": {"kv": 2}
        })
    }

    #[test]
    fn round_trips_a_sidecar_before_its_first_lease() {
        let s: SidecarStatus = serde_json::from_value(doc()).unwrap();
        assert_eq!(s.secrets[0].name(), "db");
        assert!(s.secrets[0].as_database().unwrap().expires_at.is_none());
        assert_eq!(s.proxy.as_ref().unwrap().requests[&403], 1);
        assert_eq!(s.mtls.outbound[0].counters.active_connections, 1);
        let again: serde_json::Value = serde_json::from_str(&s.to_json().unwrap()).unwrap();
        assert_eq!(again, doc());
    }

    #[test]
    fn served_json_has_sorted_keys_like_the_sidecar_always_did() {
        let s: SidecarStatus = serde_json::from_value(doc()).unwrap();
        assert_eq!(s.to_json().unwrap(), doc().to_string());
    }

    #[test]
    fn absent_fields_take_defaults() {
        let s: SidecarStatus = serde_json::from_value(json!({
            "spiffe_id": "spiffe://x/y",
            "svid": {"expires_at": "2026-11-28T15:00:00Z"},
            "secrets": [{"name": "db", "kind": "database"}],
            "some_future_field": {"ignored": true}
        }))
        .unwrap();
        assert!(!s.ready);
        assert_eq!(s.svid.unwrap().rotations, 0);
        assert_eq!(s.secrets[0].as_database().unwrap().version, 0);
        // A sidecar older than `released` never released anything.
        assert!(!s.secrets[0].as_database().unwrap().released);
        assert!(s.token.is_none() && s.proxy.is_none() && s.mtls.inbound.is_empty());
    }

    #[test]
    fn wrong_timestamps_types_and_kinds_are_refused() {
        let set = |path: &[&str], v: serde_json::Value| {
            let mut d = doc();
            let mut at = &mut d;
            for p in path {
                at = match p.parse::<usize>() {
                    Ok(i) => &mut at[i],
                    Err(_) => &mut at[*p],
                };
            }
            *at = v;
            d
        };
        for bad in [
            set(&["svid", "expires_at"], json!("2026-11-28 15:00:00")),
            set(&["svid", "expires_at"], json!("…")),
            set(&["secrets", "0", "expires_at"], json!(1795874910)),
            set(&["ready"], json!("yes")),
            set(&["secrets", "1", "kind"], json!("file")),
            set(&["secrets", "1"], json!({"name": "no kind"})),
            set(&["mtls", "outbound", "0", "accepted"], json!(-1)),
            set(&["proxy", "requests"], json!({"ok": 1})),
        ] {
            assert!(
                serde_json::from_value::<SidecarStatus>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}
