//! The fuzz target's invariants in `cargo test`, without nightly or an
//! instrumented build: the committed corpus (fuzz/corpus/backend_secret_files/)
//! replayed through `app_backend::fuzzing::secret_files`, and proptest
//! properties of the secret-file parsers.

use std::path::Path;

use app_backend::fuzzing;
use app_backend::secrets::{DbCredentials, DbCredentialsFile, SigningKeyFile, DB_FILE};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

#[test]
fn secret_files_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/backend_secret_files");
    let (mut n, mut ok) = (0, 0);
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        if std::panic::catch_unwind(|| fuzzing::secret_files(&data)).is_err() {
            panic!("{} breaks an invariant (message above)", path.display());
        }
        n += 1;
        ok += usize::from(
            DbCredentials::from_json(DB_FILE, &data).is_ok()
                || SigningKeyFile::from_json(&data).is_ok(),
        );
    }
    assert!(n >= 5, "{}: only {n} inputs", dir.display());
    assert!(ok >= 2, "{}: only {ok} inputs parse", dir.display());
}

/// A secret-looking string: always has a character no error message uses.
fn secret() -> impl Strategy<Value = String> {
    "[A-Za-z0-9+/=!@#%]{0,40}".prop_map(|s| format!("S3cr#t{s}"))
}

/// Any JSON value, biased towards what the fields expect.
fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        secret().prop_map(Value::from),
        "\\PC{0,70}".prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (0u64..70000).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(Value::Null),
        Just(json!(true)),
        Just(json!([])),
        Just(json!({})),
    ]
}

/// An object with each field of `fields` present (a random value or its
/// usual kind) or absent, plus maybe an unknown one.
fn object(fields: &'static [&'static str]) -> impl Strategy<Value = Map<String, Value>> {
    prop::collection::vec(prop::option::of(value()), fields.len()).prop_map(move |vals| {
        fields
            .iter()
            .zip(vals)
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
            .collect()
    })
}

const DB_FIELDS: &[&str] = &[
    "username",
    "password",
    "host",
    "port",
    "database",
    "lease_id",
    "issued_at",
    "expires_at",
    "version",
];

fn kv_file() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        secret(),
        // Base64 of 0..64 bytes: around the 32-byte minimum.
        prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(b)
        }),
    ];
    (
        object(&["version", "created_time"]),
        prop::option::of(key.clone()),
        prop::option::of(key),
    )
        .prop_map(|(mut top, key, previous)| {
            let mut data = Map::new();
            if let Some(k) = key {
                data.insert("key".into(), k.into());
            }
            if let Some(p) = previous {
                data.insert("previous_key".into(), p.into());
            }
            top.insert("data".into(), Value::Object(data));
            Value::Object(top)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn db_files_parse_or_fail_without_quoting((obj, pw) in (object(DB_FIELDS), secret())) {
        let mut obj = obj;
        obj.insert("password".into(), pw.clone().into());
        let bytes = serde_json::to_vec(&obj).unwrap();
        fuzzing::secret_files(&bytes);
        if let Err(e) = DbCredentials::from_json(DB_FILE, &bytes) {
            prop_assert!(!e.to_string().contains(&pw));
        }
    }

    #[test]
    fn kv_files_parse_or_fail_without_quoting(file in kv_file()) {
        let bytes = serde_json::to_vec(&file).unwrap();
        fuzzing::secret_files(&bytes);
        if let Err(e) = SigningKeyFile::from_json(&bytes) {
            for k in ["key", "previous_key"] {
                if let Some(v) = file["data"][k].as_str().filter(|v| v.len() >= 4) {
                    prop_assert!(!e.to_string().contains(v));
                }
            }
        }
    }

    #[test]
    fn truncated_or_corrupted_files_never_panic(cut in 0usize..400, flip in any::<(usize, u8)>()) {
        let good = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/backend_secret_files/db-json"),
        )
        .unwrap();
        let mut bytes = good[..cut.min(good.len())].to_vec();
        if !bytes.is_empty() {
            let i = flip.0 % bytes.len();
            bytes[i] ^= flip.1;
        }
        fuzzing::secret_files(&bytes);
    }
}
