//! Entry points for the fuzz targets in `fuzz/` and the tests that replay
//! their corpus (`tests/fuzz_replay.rs`): raw bytes in, the real parser run,
//! a panic when an invariant breaks. Not an API.

use crate::secrets::{
    DbCredentials, DbCredentialsFile, FileError, Sensitive, SigningKeyFile, DB_FILE,
};

/// Every character the secrets-file errors are made of: their fixed text,
/// the file names and numbers. An error with any other character quotes
/// the file (which may hold a password or a key).
const ERROR_ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz0123456789 .,;:()-_/HSIOJN";

fn assert_does_not_quote(e: &FileError) {
    let msg = e.to_string();
    assert!(
        msg.chars().all(|c| ERROR_ALPHABET.contains(c)),
        "the error quotes the file: {msg:?}"
    );
    assert!(msg.len() < 200, "error of {} bytes", msg.len());
}

/// The parsers of `db.json` and `jwt-signing-key.json` on any bytes.
/// Invariants: no panic; errors are built from fixed text and numbers
/// only; `Debug` of what parses never shows the password or a key; a key
/// is at least [`MIN_KEY_BYTES`](crate::secrets::files::MIN_KEY_BYTES).
pub fn secret_files(data: &[u8]) {
    match DbCredentials::from_json(DB_FILE, data) {
        Err(e) => assert_does_not_quote(&e),
        Ok(c) => {
            assert!(!c.username.is_empty() && c.username.len() <= 63);
            assert!(c.port != 0 && !c.host.is_empty() && !c.database.is_empty());
            let pw = c.password.expose();
            let shown = format!("{c:?}");
            // Unless another field holds the same text, the password is not shown.
            let without = format!(
                "{:?}",
                DbCredentials {
                    password: Sensitive::new(""),
                    ..c.clone()
                }
            );
            if !pw.is_empty() && !without.contains(pw) && !"<redacted>".contains(pw) {
                assert!(!shown.contains(pw), "Debug shows the password");
            }
        }
    }
    match SigningKeyFile::from_json(data) {
        Err(e) => assert_does_not_quote(&e),
        Ok(f) => {
            let min = crate::secrets::files::MIN_KEY_BYTES;
            assert!(f.key.len() >= min);
            assert!(f.previous_key.as_ref().is_none_or(|k| k.len() >= min));
            let shown = format!("{f:?}");
            assert!(
                !shown.contains(&format!("{:?}", f.key)),
                "Debug shows the key"
            );
        }
    }
}
