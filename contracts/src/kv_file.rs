//! KV v2 secrets: `<name>.json` in the sidecar's secrets dir
//! (docs/contracts.md, contract 1).
//!
//! Written by the zt-sidecar whenever OpenBao's KV version changes; read by
//! app-backend for its JWT signing key (`jwt-signing-key.json`, data shape
//! [`SigningKeyData`]).

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::sensitive::{serialize_exposed_option, Sensitive};

/// The KV file: OpenBao's version and metadata time, and the secret's data
/// as OpenBao holds it. `D` is the data's shape: [`KvData`] (any JSON
/// object, what the sidecar copies) or a known one such as
/// [`SigningKeyData`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KvFile<D = KvData> {
    /// OpenBao's KV version of the secret.
    pub version: u64,
    /// When this KV version was written (OpenBao's metadata). Read as `None`
    /// when absent, empty or not RFC 3339 (a key stays usable without it);
    /// `None` is written as `""`, as the sidecar does when OpenBao's
    /// metadata lacks it.
    #[serde(default, with = "crate::timestamp::lenient")]
    pub created_time: Option<OffsetDateTime>,
    /// The secret's data.
    pub data: D,
}

impl<D: Serialize> KvFile<D> {
    /// The file's bytes as the sidecar writes them: compact JSON in the order
    /// `version`, `created_time`, `data` (its keys sorted), a final newline.
    pub fn to_file_bytes(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut b = crate::sensitive::writing_a_secret_file(|| serde_json::to_vec(self))?;
        b.push(b'\n');
        Ok(b)
    }
}

/// Any KV secret's data: a JSON object of secret values. `Debug` shows the
/// keys, never the values; so does serializing it anywhere but in
/// [`KvFile::to_file_bytes`] (each value `"<redacted>"`).
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct KvData(serde_json::Map<String, serde_json::Value>);

impl Serialize for KvData {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if crate::sensitive::exposing() {
            return self.0.serialize(s);
        }
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for k in self.0.keys() {
            map.serialize_entry(k, "<redacted>")?;
        }
        map.end()
    }
}

impl KvData {
    /// Wraps a secret's data.
    pub fn new(data: serde_json::Map<String, serde_json::Value>) -> Self {
        Self(data)
    }

    /// The data itself. Never pass it to a logger.
    pub fn expose(&self) -> &serde_json::Map<String, serde_json::Value> {
        &self.0
    }
}

impl fmt::Debug for KvData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<redacted>")))
            .finish()
    }
}

/// The data of the backend's JWT signing key (`secret/backend/jwt-signing-key`).
/// Both values are base64 of random bytes; what makes a usable key is the
/// backend's concern.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyData {
    /// Signs new tokens.
    #[serde(
        default,
        serialize_with = "serialize_exposed_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub key: Option<Sensitive>,
    /// Still verifies tokens signed before a key change, for a bounded grace
    /// after `created_time`.
    #[serde(
        default,
        serialize_with = "serialize_exposed_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub previous_key: Option<Sensitive>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "c2VjcmV0LXNpZ25pbmcta2V5LWJ5dGVzLTAxMjM0NTY3ODk=";

    #[test]
    fn file_bytes_are_what_the_sidecar_writes() {
        let data: KvData =
            serde_json::from_value(json!({"previous_key": "p", "key": KEY})).unwrap();
        let f = KvFile {
            version: 2,
            created_time: Some(time::macros::datetime!(2026-11-28 14:08:51.123456 UTC)),
            data,
        };
        // The sidecar's format! writer: `{"version":…,"created_time":…,"data":…}\n`.
        let want = format!(
            "{{\"version\":2,\"created_time\":\"2026-11-28T14:08:51.123456Z\",\"data\":{{\"key\":\"{KEY}\",\"previous_key\":\"p\"}}}}\n"
        );
        assert_eq!(String::from_utf8(f.to_file_bytes().unwrap()).unwrap(), want);
        let none = KvFile {
            created_time: None,
            ..f
        };
        assert!(String::from_utf8(none.to_file_bytes().unwrap())
            .unwrap()
            .contains("\"created_time\":\"\","));
    }

    #[test]
    fn created_time_is_optional_and_lenient() {
        for (t, want) in [
            (json!("2026-11-28T14:08:51Z"), Some(1_795_874_931)),
            (json!(" 2026-11-28T14:08:51Z\n"), Some(1_795_874_931)),
            (json!(""), None),
            (json!("t"), None),
            (json!("2026-11-28"), None),
            (json!(null), None),
        ] {
            let f: KvFile =
                serde_json::from_value(json!({"version": 1, "created_time": t, "data": {}}))
                    .unwrap();
            assert_eq!(f.created_time.map(|t| t.unix_timestamp()), want, "{t}");
        }
        let f: KvFile = serde_json::from_value(json!({"version": 1, "data": {}})).unwrap();
        assert_eq!(f.created_time, None);
    }

    #[test]
    fn version_and_data_are_required_and_typed() {
        for bad in [
            json!({"created_time": "2026-11-28T14:08:51Z", "data": {}}),
            json!({"version": 1, "created_time": "2026-11-28T14:08:51Z"}),
            json!({"version": "1", "data": {}}),
            json!({"version": 1, "data": ["not", "an", "object"]}),
            json!({"version": 1, "created_time": 5, "data": {}}),
        ] {
            assert!(
                serde_json::from_value::<KvFile>(bad.clone()).is_err(),
                "{bad}"
            );
        }
        let bad_key = json!({"version": 1, "data": {"key": 7}});
        assert!(serde_json::from_value::<KvFile<SigningKeyData>>(bad_key).is_err());
    }

    #[test]
    fn debug_shows_keys_never_values() {
        let f: KvFile =
            serde_json::from_value(json!({"version": 1, "data": {"key": KEY}})).unwrap();
        let k: KvFile<SigningKeyData> =
            serde_json::from_value(json!({"version": 1, "data": {"key": KEY}})).unwrap();
        for shown in [format!("{f:?}"), format!("{k:?}")] {
            assert!(
                shown.contains("key") && !shown.contains(&KEY[..12]),
                "{shown}"
            );
        }
        assert_eq!(k.data.key.as_ref().map(Sensitive::expose), Some(KEY));
        assert_eq!(k.data.previous_key, None);
    }
}
