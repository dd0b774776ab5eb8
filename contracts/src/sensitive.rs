//! A string that never prints itself.

use std::fmt;

/// A secret value (token, password, key). `Debug` and `Display` print
/// `<redacted>`; the value is only reachable through [`Sensitive::expose`],
/// which makes every use greppable.
///
/// It deserializes from a plain JSON string but deliberately does not
/// implement `Serialize`: a contract file that must carry the secret names
/// [`serialize_exposed`] on that one field, which writes the value only
/// inside that file's `to_file_bytes` — so a secret cannot reach a JSON log
/// or response by accident.
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

std::thread_local! {
    static WRITING_A_SECRET_FILE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `write` (a serialization, synchronous) with the secrets of contract
/// types written as their values: what a secret file's `to_file_bytes` does.
/// Anywhere else — a contract value passed to `serde_json::to_string` for a
/// log line or a response by mistake — they serialize as `"<redacted>"`.
pub(crate) fn writing_a_secret_file<T>(write: impl FnOnce() -> T) -> T {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            WRITING_A_SECRET_FILE.with(|w| w.set(self.0));
        }
    }
    let _reset = Reset(WRITING_A_SECRET_FILE.with(|w| w.replace(true)));
    write()
}

/// Whether the current serialization writes a secret file.
pub(crate) fn exposing() -> bool {
    WRITING_A_SECRET_FILE.with(std::cell::Cell::get)
}

/// For `#[serde(serialize_with = ...)]` on the secret field of a contract
/// file: the secret itself inside that file's `to_file_bytes`, `"<redacted>"`
/// in any other serialization.
pub fn serialize_exposed<S: serde::Serializer>(v: &Sensitive, s: S) -> Result<S::Ok, S::Error> {
    if exposing() {
        s.serialize_str(v.expose())
    } else {
        s.serialize_str("<redacted>")
    }
}

/// [`serialize_exposed`] for an optional secret.
pub fn serialize_exposed_option<S: serde::Serializer>(
    v: &Option<Sensitive>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) if exposing() => s.serialize_some(v.expose()),
        Some(_) => s.serialize_some("<redacted>"),
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

    #[derive(serde::Serialize)]
    struct File {
        #[serde(serialize_with = "serialize_exposed")]
        password: Sensitive,
    }

    #[test]
    fn only_a_secret_file_write_exposes_the_value() {
        let f = File {
            password: Sensitive::new("hunter2"),
        };
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"password":"<redacted>"}"#
        );
        let written = writing_a_secret_file(|| serde_json::to_string(&f).unwrap());
        assert_eq!(written, r#"{"password":"hunter2"}"#);
        assert!(!exposing(), "the flag is reset after the write");
        let _ = std::panic::catch_unwind(|| writing_a_secret_file(|| panic!("mid-write")));
        assert!(!exposing(), "and after a panic during the write");
    }

    #[test]
    fn deserializes_from_a_plain_string_only() {
        let s: Sensitive = serde_json::from_str(r#""hunter2""#).unwrap();
        assert_eq!(s.expose(), "hunter2");
        assert_eq!(Sensitive::default().expose(), "");
        assert!(serde_json::from_str::<Sensitive>("42").is_err());
    }
}
