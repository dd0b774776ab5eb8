//! Timestamps on the wire: RFC 3339, UTC, whole seconds where the sidecar
//! writes them.

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `t` in UTC with the sub-second part dropped: how the sidecar writes its
/// own timestamps (`2026-11-28T14:08:20Z`).
pub fn whole_seconds(t: SystemTime) -> OffsetDateTime {
    let dt = OffsetDateTime::from(t);
    // replace_nanosecond(0) cannot fail: 0 is always a valid nanosecond.
    dt.replace_nanosecond(0).unwrap_or(dt)
}

/// An RFC 3339 timestamp that reads as `None` when it is absent, empty or
/// unreadable, and writes `None` as `""` (the KV file's `created_time`,
/// copied from OpenBao's metadata, which may lack it).
pub(crate) mod lenient {
    use super::*;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<OffsetDateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => {
                let text = t.format(&Rfc3339).map_err(serde::ser::Error::custom)?;
                s.serialize_str(&text)
            }
            None => s.serialize_str(""),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let text = Option::<String>::deserialize(d)?;
        Ok(text.and_then(|t| OffsetDateTime::parse(t.trim(), &Rfc3339).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_drops_the_fraction_and_is_utc() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_795_874_910_750);
        assert_eq!(
            whole_seconds(t).format(&Rfc3339).unwrap(),
            "2026-11-28T14:08:30Z"
        );
    }
}
