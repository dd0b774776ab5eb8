//! Dynamic database credentials: `<name>.json` in the sidecar's secrets dir
//! (docs/contracts.md, contract 1, format `json`).
//!
//! Written by the zt-sidecar on every new lease (a rotation, `version` + 1)
//! and on every renewal (same `version`, new `expires_at`); re-read by the
//! sidecar at start for a leftover lease; read by app-backend, which moves
//! to new credentials when [`DbCredentials::supersedes`] says so.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::sensitive::{serialize_exposed, Sensitive};

/// The credentials file. `Debug` never shows the password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbCredentials {
    /// PostgreSQL user (created by OpenBao for this lease).
    pub username: String,
    /// Its password.
    #[serde(serialize_with = "serialize_exposed")]
    pub password: Sensitive,
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Database name.
    pub database: String,
    /// OpenBao lease id: changes with every new set of credentials.
    pub lease_id: String,
    /// When the lease was issued (RFC 3339 UTC, whole seconds).
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
    /// When the lease expires unless renewed (RFC 3339 UTC, whole seconds).
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// Starts at 1, +1 per rotation; restarts at 1 with a restarted sidecar.
    pub version: u64,
}

impl DbCredentials {
    /// Whether `self` is a different set of credentials than `other` that an
    /// app should move to: a higher version, or another lease (a restarted
    /// sidecar counts from 1 again). A renewal (same lease, same version) is
    /// not.
    pub fn supersedes(&self, other: &DbCredentials) -> bool {
        self.version > other.version || self.lease_id != other.lease_id
    }

    /// The file's bytes as the sidecar writes them: pretty JSON, keys in
    /// alphabetical order, a final newline.
    pub fn to_file_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        // Through `Value`, whose map sorts keys: the order the sidecar has
        // always written.
        let value = crate::sensitive::writing_a_secret_file(|| serde_json::to_value(self))?;
        let mut b = serde_json::to_vec_pretty(&value)?;
        b.push(b'\n');
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PASSWORD: &str = "A1a-hunter2-secret-password";

    fn doc() -> serde_json::Value {
        json!({
            "username": "v-backend-role-abc-1", "password": PASSWORD, "host": "127.0.0.1",
            "port": 15432, "database": "appdb", "lease_id": "database/creds/backend-role/x",
            "issued_at": "2026-11-28T14:08:20Z", "expires_at": "2026-11-28T15:08:20Z", "version": 3
        })
    }

    #[test]
    fn parses_with_typed_timestamps_and_hides_the_password() {
        let c: DbCredentials = serde_json::from_value(doc()).unwrap();
        assert_eq!(c.expires_at - c.issued_at, time::Duration::hours(1));
        assert_eq!(c.password.expose(), PASSWORD);
        assert!(!format!("{c:?}").contains(PASSWORD));
    }

    #[test]
    fn file_bytes_are_what_the_sidecar_writes() {
        let c: DbCredentials = serde_json::from_value(doc()).unwrap();
        // What `serde_json::to_vec_pretty(&json!({..}))` + "\n" produced
        // before this type existed: sorted keys, two-space indent.
        let mut want = serde_json::to_vec_pretty(&doc()).unwrap();
        want.push(b'\n');
        assert_eq!(
            String::from_utf8(c.to_file_bytes().unwrap()).unwrap(),
            String::from_utf8(want).unwrap()
        );
    }

    #[test]
    fn a_missing_field_or_a_wrong_timestamp_is_refused() {
        for field in doc().as_object().unwrap().keys() {
            let mut d = doc();
            d.as_object_mut().unwrap().remove(field);
            assert!(
                serde_json::from_value::<DbCredentials>(d).is_err(),
                "accepted without {field}"
            );
        }
        for bad in [
            "",
            "yesterday",
            "2026-11-28 14:08:20",
            "2026-11-28T14:08:20",
        ] {
            let mut d = doc();
            d["expires_at"] = json!(bad);
            assert!(
                serde_json::from_value::<DbCredentials>(d).is_err(),
                "accepted expires_at {bad:?}"
            );
        }
        let mut d = doc();
        d["port"] = json!(70000);
        assert!(serde_json::from_value::<DbCredentials>(d).is_err());
    }

    #[test]
    fn supersedes_on_higher_version_or_other_lease_only() {
        let at = |version, lease: &str| {
            let mut d = doc();
            d["version"] = json!(version);
            d["lease_id"] = json!(lease);
            serde_json::from_value::<DbCredentials>(d).unwrap()
        };
        let a = at(2, "lease-a");
        assert!(at(3, "lease-b").supersedes(&a));
        assert!(
            !at(2, "lease-a").supersedes(&a),
            "a renewal is not a rotation"
        );
        assert!(
            at(1, "lease-c").supersedes(&a),
            "a restarted sidecar starts at 1 again"
        );
    }
}
