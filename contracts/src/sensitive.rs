//! A string that never prints itself.

use std::fmt;

/// A secret value (token, password, key). `Debug` and `Display` print
/// `<redacted>`; the value is only reachable through [`Sensitive::expose`],
/// which makes every use greppable.
///
/// It deserializes from a plain JSON string but deliberately does not
/// implement `Serialize`: a contract file that must carry the secret names
/// [`serialize_exposed`] on that one field, so a secret cannot reach a JSON
/// log or response by accident.
#[derive(Clone, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(transparent)]
pub struct Sensitive(String);

impl Sensitive {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// The secret itself. Never pass it to a logger.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Writes the secret itself, for `#[serde(serialize_with = ...)]` on the
/// field of a file whose purpose is to hand the secret over.
pub fn serialize_exposed<S: serde::Serializer>(v: &Sensitive, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.expose())
}

/// [`serialize_exposed`] for an optional secret.
pub fn serialize_exposed_option<S: serde::Serializer>(
    v: &Option<Sensitive>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(v.expose()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_the_value() {
        let s = Sensitive::new("hunter2");
        assert_eq!(
            format!("{s} {s:?} {:?}", Some(&s)),
            "<redacted> <redacted> Some(<redacted>)"
        );
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn deserializes_from_a_plain_string_only() {
        let s: Sensitive = serde_json::from_str(r#""hunter2""#).unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(Sensitive::default().expose(), "");
        assert!(serde_json::from_str::<Sensitive>("42").is_err());
    }
}
