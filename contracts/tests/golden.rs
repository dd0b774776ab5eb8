//! The examples in docs/contracts.md parse through the contract types and
//! serialize back to exactly themselves (compared as JSON values), so the
//! doc and the code cannot drift apart: a field added to a type and not to
//! the doc (or the other way round) fails here.

use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use zt_contracts::{DbCredentials, KvFile, SidecarStatus, SigningKeyData};

fn contracts_md() -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/contracts.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The first ```json block after the heading that contains `heading`, before
/// the next heading.
fn example(heading: &str) -> Value {
    let doc = contracts_md();
    let mut lines = doc.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with('#') && l.contains(heading))
        .unwrap_or_else(|| panic!("docs/contracts.md has no heading containing {heading:?}"));
    let mut json = None::<String>;
    for line in lines {
        match &mut json {
            None if line.starts_with('#') => break,
            None if line.trim() == "```json" => json = Some(String::new()),
            None => {}
            Some(_) if line.trim() == "```" => break,
            Some(text) => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    let text = json.unwrap_or_else(|| {
        panic!("docs/contracts.md: no ```json example under the heading {heading:?}")
    });
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("docs/contracts.md: the example under {heading:?} is not JSON: {e}")
    })
}

/// Parses the example under `heading` as `T`.
fn parse<T: DeserializeOwned>(heading: &str) -> T {
    serde_json::from_value(example(heading)).unwrap_or_else(|e| {
        panic!(
            "the example under {heading:?} does not parse as {}: {e}",
            std::any::type_name::<T>()
        )
    })
}

/// Parses `example` as `T` and serializes it back; both must succeed and
/// give the example again. (For documents without secrets: a secret file's
/// types write their secrets only through `to_file_bytes`.)
fn round_trip<T: DeserializeOwned + Serialize>(heading: &str) -> T {
    let want = example(heading);
    let parsed: T = parse(heading);
    let got = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        got,
        want,
        "{} written back differs from the example under {heading:?}",
        std::any::type_name::<T>()
    );
    parsed
}

#[test]
fn database_credentials_file() {
    let c: DbCredentials = parse("Dynamic database credentials");
    assert!(c.issued_at < c.expires_at);
    let written: Value = serde_json::from_slice(&c.to_file_bytes().unwrap()).unwrap();
    assert_eq!(written, example("Dynamic database credentials"));
    // Serialized anywhere else (a log line, a response), the password is not there.
    let elsewhere = serde_json::to_value(&c).unwrap();
    assert_eq!(elsewhere["password"], "<redacted>", "{elsewhere}");
}

#[test]
fn kv_secret_file() {
    let f: KvFile = parse("KV v2 secrets");
    assert!(
        f.created_time.is_some(),
        "the example's created_time is RFC 3339"
    );
    let written: Value = serde_json::from_slice(&f.to_file_bytes().unwrap()).unwrap();
    assert_eq!(written, example("KV v2 secrets"));
    let elsewhere = serde_json::to_value(&f).unwrap();
    assert_eq!(elsewhere["data"]["key"], "<redacted>", "{elsewhere}");
    // The signing key's data shape reads and writes the same example.
    let k: KvFile<SigningKeyData> = parse("KV v2 secrets");
    assert!(k.data.key.is_some() && k.data.previous_key.is_some());
    let written: Value = serde_json::from_slice(&k.to_file_bytes().unwrap()).unwrap();
    assert_eq!(written, example("KV v2 secrets"));
    let elsewhere = serde_json::to_value(&k).unwrap();
    assert_eq!(
        elsewhere["data"]["previous_key"], "<redacted>",
        "{elsewhere}"
    );
}

#[test]
fn sidecar_status_document() {
    let s: SidecarStatus = round_trip("Sidecar admin endpoint");
    assert!(s.token.is_some() && s.proxy.is_some() && !s.secrets.is_empty());
    let served: Value = serde_json::from_str(&s.to_json().unwrap()).unwrap();
    assert_eq!(served, example("Sidecar admin endpoint"));
}

#[test]
fn a_missing_example_is_named() {
    let e = std::panic::catch_unwind(|| example("No such contract")).unwrap_err();
    let msg = e.downcast_ref::<String>().unwrap();
    assert!(
        msg.contains("no heading containing \"No such contract\""),
        "{msg}"
    );
}
