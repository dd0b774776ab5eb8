//! The zero-trust page's view: who holds which identity, which credentials
//! are live and when they rotate, and the rules in force — built from the
//! backend's `GET /api/zt/status` (which embeds the backend sidecar's
//! `/status`) and the frontend sidecar's own `/status`.

use time::OffsetDateTime;

use crate::backend::models::{DatabaseSecretStatus, SecretStatus, SidecarStatus, ZtStatus};
use crate::backend::BackendError;
use crate::format::{count, when, when_at, Relative, When};

/// Name of the backend's runtime database secret (sidecar config `name`).
pub const DB_SECRET_NAME: &str = "db";

/// A workload identity.
#[derive(Debug, Clone, Default)]
pub struct IdentityView {
    /// SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// X.509-SVID expiry.
    pub svid_expires: Option<When>,
    /// Certificate serial.
    pub serial: Option<String>,
    /// SVID rotations so far.
    pub rotations: String,
    /// Sidecar readiness.
    pub ready: Option<bool>,
}

/// The database credential in use.
#[derive(Debug, Clone, Default)]
pub struct DatabaseView {
    /// `current_user` as the backend's connection reports it.
    pub current_user: Option<String>,
    /// The sidecar's current lease user (may lead `current_user` briefly
    /// during a rotation).
    pub lease_user: Option<String>,
    /// [`Self::lease_user`] when it differs from [`Self::current_user`].
    pub pending_user: Option<String>,
    /// Lease expiry.
    pub lease_expires: Option<When>,
    /// Credential file version.
    pub version: String,
    /// Rotations so far.
    pub rotations: String,
    /// Renewals so far.
    pub renewals: String,
    /// OpenBao database role.
    pub role: Option<String>,
    /// PostgreSQL version.
    pub server_version: Option<String>,
}

/// The backend sidecar's OpenBao token.
#[derive(Debug, Clone, Default)]
pub struct TokenView {
    /// Expiry.
    pub expires: Option<When>,
    /// Policies.
    pub policies: Vec<String>,
    /// Renewals.
    pub renewals: String,
    /// Logins.
    pub logins: String,
}

/// One rule in force.
#[derive(Debug, Clone)]
pub struct RuleView {
    /// Where it is enforced.
    pub enforced_by: &'static str,
    /// What it says.
    pub rule: String,
    /// The exact values (SPIFFE IDs, paths, methods).
    pub values: Vec<String>,
}

/// Everything the panel shows.
#[derive(Debug, Clone, Default)]
pub struct ZtView {
    /// Backend workload.
    pub backend: IdentityView,
    /// Frontend workload.
    pub frontend: IdentityView,
    /// Database credentials.
    pub database: DatabaseView,
    /// OpenBao token.
    pub token: Option<TokenView>,
    /// JWT signing key version.
    pub jwt_key_version: Option<String>,
    /// Rules in force.
    pub rules: Vec<RuleView>,
    /// mTLS connections accepted by the backend sidecar.
    pub mtls_accepted: String,
    /// mTLS peers refused by the backend sidecar.
    pub mtls_refused: String,
    /// Why the backend part is missing.
    pub backend_error: Option<String>,
    /// Why the frontend sidecar part is missing.
    pub frontend_error: Option<String>,
    /// When this view was built.
    pub generated_at: String,
}

fn n(v: Option<u64>) -> String {
    v.map(|v| count(i64::try_from(v).unwrap_or(i64::MAX)))
        .unwrap_or_else(|| "—".to_string())
}

/// `s` unless empty (a field the sidecar's document did not carry).
fn given(s: &str) -> Option<&str> {
    Some(s).filter(|s| !s.is_empty())
}

/// The identity half of a sidecar's status; `None` when there is none.
fn identity(s: Option<&SidecarStatus>, now: OffsetDateTime) -> IdentityView {
    let Some(s) = s else {
        return IdentityView {
            rotations: n(None),
            ..Default::default()
        };
    };
    let svid = s.svid.as_ref();
    IdentityView {
        spiffe_id: s.spiffe_id.clone(),
        svid_expires: when_at(svid.and_then(|v| v.expires_at), now, Relative::Countdown),
        serial: svid.and_then(|v| given(&v.serial)).map(str::to_string),
        rotations: n(svid.map(|v| v.rotations)),
        ready: Some(s.ready),
    }
}

fn db_secret(s: &SidecarStatus) -> Option<&DatabaseSecretStatus> {
    let databases = || s.secrets.iter().filter_map(SecretStatus::as_database);
    databases()
        .find(|x| x.name == DB_SECRET_NAME)
        .or_else(|| databases().next())
}

/// Why a status could not be fetched, for the panel (never a secret: the
/// error types carry none).
fn reason(e: &BackendError) -> String {
    match e {
        BackendError::Unreachable(_) | BackendError::Timeout(_) => {
            "unreachable right now — retrying".to_string()
        }
        BackendError::Unavailable { status, .. } => {
            format!("unavailable (HTTP {status}) — retrying")
        }
        BackendError::Api { status: 403, .. } => {
            "only shown to the platform's operators (the seeded demo users); your account is not one".to_string()
        }
        BackendError::Api { message, .. } => message.clone(),
        BackendError::Unauthorized => "session refused".to_string(),
        BackendError::Protocol(_) => "sent a status this page could not read".to_string(),
    }
}

impl ZtView {
    /// Builds the view; either half may be missing (the other still shows).
    pub fn build(
        backend: Result<ZtStatus, &BackendError>,
        frontend: Result<SidecarStatus, &BackendError>,
        now: OffsetDateTime,
    ) -> Self {
        let mut v = ZtView {
            generated_at: when(
                now.format(&time::format_description::well_known::Rfc3339)
                    .ok()
                    .as_deref(),
                now,
                Relative::Ago,
            )
            .map(|w| w.utc)
            .unwrap_or_default(),
            mtls_accepted: "—".into(),
            mtls_refused: "—".into(),
            ..Default::default()
        };
        match backend {
            Ok(z) => {
                v.backend = identity(z.sidecar.as_ref(), now);
                let sc = z.sidecar.unwrap_or_default();
                let db = db_secret(&sc);
                let dbs = z.database.unwrap_or_default();
                v.database = DatabaseView {
                    current_user: dbs.current_user,
                    lease_user: db.and_then(|d| d.username.clone()),
                    lease_expires: when_at(db.and_then(|d| d.expires_at), now, Relative::Countdown),
                    version: n(db.map(|d| d.version)),
                    rotations: n(db.map(|d| d.rotations)),
                    renewals: n(db.map(|d| d.renewals)),
                    role: db.and_then(|d| given(&d.role)).map(str::to_string),
                    server_version: dbs.server_version,
                    pending_user: None,
                };
                if v.database.current_user.is_some()
                    && v.database.lease_user != v.database.current_user
                {
                    v.database.pending_user = v.database.lease_user.clone();
                }
                v.jwt_key_version = z.backend.and_then(|b| b.jwt_key_version).map(count);
                v.token = sc.token.as_ref().map(|t| TokenView {
                    expires: when_at(t.expires_at, now, Relative::Countdown),
                    policies: t.policies.clone(),
                    renewals: n(Some(t.renewals)),
                    logins: n(Some(t.logins)),
                });
                let mtls = &sc.mtls;
                for l in &mtls.inbound {
                    v.rules.push(RuleView {
                        enforced_by: "backend sidecar (inbound mTLS)",
                        rule: format!(
                            "Accepts connections on {} only from these SPIFFE IDs, then forwards to the backend on {}",
                            given(&l.listen).unwrap_or("its listener"),
                            given(&l.forward_to).unwrap_or("loopback"),
                        ),
                        values: l.allow.clone(),
                    });
                }
                if !mtls.inbound.is_empty() {
                    v.mtls_accepted =
                        n(Some(mtls.inbound.iter().map(|l| l.counters.accepted).sum()));
                    v.mtls_refused = n(Some(mtls.inbound.iter().map(|l| l.counters.refused).sum()));
                }
                if let Some(t) = &sc.token {
                    v.rules.push(RuleView {
                        enforced_by: "OpenBao",
                        rule: "The backend's token (from its JWT-SVID) carries these policies"
                            .into(),
                        values: t.policies.clone(),
                    });
                }
                if let Some(p) = &sc.proxy {
                    v.rules.push(RuleView {
                        enforced_by: "backend sidecar (OpenBao proxy)",
                        rule: "The backend may call only these OpenBao paths; everything else gets 403".into(),
                        values: p
                            .allow
                            .iter()
                            .map(|r| format!("{} {}", r.methods.join(", "), r.path))
                            .collect(),
                    });
                }
                if let Some(role) = db.and_then(|d| given(&d.role)) {
                    v.rules.push(RuleView {
                        enforced_by: "OpenBao database engine + PostgreSQL",
                        rule: format!(
                            "Database users are created per lease from role {role} (DML only) and dropped when the lease ends"
                        ),
                        values: Vec::new(),
                    });
                }
                // The other database secrets (the migrator's): given back
                // after use, or still held.
                for d in sc.secrets.iter().filter_map(SecretStatus::as_database) {
                    if Some(d.name.as_str()) == db.map(|x| x.name.as_str()) {
                        continue;
                    }
                    let what = format!("{} (role {})", d.name, given(&d.role).unwrap_or("?"));
                    v.rules.push(RuleView {
                        enforced_by: "backend sidecar (releasable secret)",
                        rule: if d.released {
                            format!("{what}: the backend gave these credentials back once it had used them; their user was dropped and they are not issued again in this pod")
                        } else {
                            format!("{what}: kept fresh by the sidecar; the backend has not released them")
                        },
                        values: Vec::new(),
                    });
                }
            }
            Err(e) => v.backend_error = Some(format!("The backend's status is {}", reason(e))),
        }
        match frontend {
            Ok(sc) => {
                v.frontend = identity(Some(&sc), now);
                for l in sc.mtls.outbound {
                    v.rules.push(RuleView {
                        enforced_by: "frontend sidecar (outbound mTLS)",
                        rule: format!(
                            "Calls from the frontend to {} go out only if the server proves this SPIFFE ID",
                            given(&l.upstream).unwrap_or("the backend")
                        ),
                        values: given(&l.server_id).map(str::to_string).into_iter().collect(),
                    });
                }
            }
            Err(e) => {
                v.frontend_error = Some(format!("The frontend sidecar's status is {}", reason(e)))
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn status() -> ZtStatus {
        serde_json::from_value(serde_json::json!({
            "sidecar": {
                "spiffe_id": "spiffe://demo.local/ns/99-apps/sa/backend",
                "ready": true,
                "svid": {"expires_at": "2026-11-28T15:00:00Z", "serial": "5f3a", "rotations": 2},
                "token": {"expires_at": "2026-11-28T14:30:00Z", "ttl_seconds": 1800, "policies": ["backend"], "renewals": 3, "logins": 1},
                "secrets": [
                    {"name": "db-migrator", "kind": "database", "role": "backend-migrator", "username": "v-mig"},
                    {"name": "db", "kind": "database", "role": "backend-role", "username": "v-backend-role-abc",
                     "expires_at": "2026-11-28T14:10:00Z", "version": 3, "rotations": 2, "renewals": 5},
                    {"name": "jwt-signing-key", "kind": "kv", "path": "secret/backend/jwt-signing-key", "version": 1}
                ],
                "proxy": {"listen": ["unix:/x"], "allow": [{"path": "secret/data/github/users/*", "methods": ["GET", "PUT"]}]},
                "mtls": {"inbound": [{"listen": "127.0.0.1:8443", "forward_to": "127.0.0.1:8000",
                                      "allow": ["spiffe://demo.local/ns/99-apps/sa/frontend"], "accepted": 10, "refused": 1}],
                         "outbound": []},
                "some_future_field": {"ignored": true}
            },
            "database": {"current_user": "v-backend-role-abc", "server_version": "15.8"},
            "backend": {"jwt_key_version": 1}
        }))
        .unwrap()
    }

    #[test]
    fn builds_from_both_statuses() {
        let front: SidecarStatus = serde_json::from_value(serde_json::json!({
            "spiffe_id": "spiffe://demo.local/ns/99-apps/sa/frontend",
            "svid": {"expires_at": "2026-11-28T14:05:00Z"},
            "mtls": {"outbound": [{"listen": "127.0.0.1:15001", "upstream": "127.0.0.1:8443",
                                   "server_id": "spiffe://demo.local/ns/99-apps/sa/backend"}]}
        }))
        .unwrap();
        let v = ZtView::build(Ok(status()), Ok(front), datetime!(2026-11-28 14:00:00 UTC));
        assert_eq!(
            v.backend.spiffe_id.as_deref(),
            Some("spiffe://demo.local/ns/99-apps/sa/backend")
        );
        assert_eq!(
            v.frontend.spiffe_id.as_deref(),
            Some("spiffe://demo.local/ns/99-apps/sa/frontend")
        );
        assert_eq!(
            v.frontend.svid_expires.as_ref().unwrap().relative,
            "in 5m 00s"
        );
        assert_eq!(
            v.database.current_user.as_deref(),
            Some("v-backend-role-abc")
        );
        assert_eq!(v.database.lease_user.as_deref(), Some("v-backend-role-abc"));
        assert_eq!(v.database.rotations, "2");
        assert_eq!(
            v.database.lease_expires.as_ref().unwrap().relative,
            "in 10m 00s"
        );
        assert_eq!(v.token.as_ref().unwrap().policies, ["backend"]);
        assert_eq!(v.mtls_accepted, "10");
        let rules: Vec<_> = v.rules.iter().map(|r| r.enforced_by).collect();
        assert_eq!(
            rules,
            [
                "backend sidecar (inbound mTLS)",
                "OpenBao",
                "backend sidecar (OpenBao proxy)",
                "OpenBao database engine + PostgreSQL",
                "backend sidecar (releasable secret)",
                "frontend sidecar (outbound mTLS)"
            ]
        );
        assert_eq!(v.rules[2].values, ["GET, PUT secret/data/github/users/*"]);
        assert!(
            v.rules[4]
                .rule
                .starts_with("db-migrator (role backend-migrator): kept fresh"),
            "{}",
            v.rules[4].rule
        );
        assert!(v.backend_error.is_none() && v.frontend_error.is_none());
        // Once released, the page says so.
        let mut released = status();
        if let Some(sc) = released.sidecar.as_mut() {
            for s in &mut sc.secrets {
                if let SecretStatus::Database(d) = s {
                    d.released = d.name == "db-migrator";
                }
            }
        }
        let v = ZtView::build(
            Ok(released),
            Err(&BackendError::Unreachable("x".into())),
            datetime!(2026-11-28 14:00:00 UTC),
        );
        let rule = &v
            .rules
            .iter()
            .find(|r| r.enforced_by == "backend sidecar (releasable secret)")
            .unwrap()
            .rule;
        assert!(rule.contains("gave these credentials back"), "{rule}");
        assert!(rule.contains("not issued again in this pod"), "{rule}");
    }

    #[test]
    fn either_half_may_be_missing() {
        let down = BackendError::Unreachable("connection refused".into());
        let v = ZtView::build(Err(&down), Err(&down), datetime!(2026-11-28 14:00:00 UTC));
        assert!(v.backend_error.unwrap().contains("unreachable"));
        assert!(v.frontend_error.unwrap().contains("unreachable"));
        assert!(v.rules.is_empty());
        let v = ZtView::build(
            Ok(ZtStatus::default()),
            Err(&down),
            datetime!(2026-11-28 14:00:00 UTC),
        );
        assert!(v.backend_error.is_none());
        assert_eq!(v.database.rotations, "—");
    }

    #[test]
    fn a_user_who_is_not_an_operator_is_told_so() {
        let forbidden = BackendError::Api {
            status: 403,
            code: "forbidden".into(),
            message: "Your account may not see this".into(),
            retry_after: None,
        };
        let v = ZtView::build(
            Err(&forbidden),
            Ok(SidecarStatus::default()),
            datetime!(2026-11-28 14:00:00 UTC),
        );
        assert!(v.backend_error.unwrap().contains("operators"));
    }
}
