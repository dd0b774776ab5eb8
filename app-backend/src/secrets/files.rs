//! The files the zt-sidecar writes (docs/contracts.md, contract 1), read
//! through their one definition in `zt-contracts` and checked for what the
//! backend needs of them. Their contents never reach logs: passwords and
//! keys are [`Sensitive`], and errors name a position, never a value.

use std::path::Path;

use zt_contracts::{KvFile, SigningKeyData};

pub use zt_contracts::{DbCredentials, Sensitive};

/// File name of the runtime database credentials.
pub const DB_FILE: &str = "db.json";
/// File name of the migrator (schema owner) credentials.
pub const MIGRATOR_FILE: &str = "db-migrator.json";
/// The secret name of [`MIGRATOR_FILE`] in the sidecar (`POST /release/<name>`).
pub const MIGRATOR_SECRET: &str = "db-migrator";
/// Left by the sidecar once the migrator credentials were released: they
/// will not come again in this pod.
pub const MIGRATOR_RELEASED_FILE: &str = "db-migrator.released";
/// File name of the JWT signing key.
pub const SIGNING_KEY_FILE: &str = "jwt-signing-key.json";
/// Largest secrets file read (they are a few hundred bytes).
const MAX_FILE_BYTES: u64 = 64 * 1024;

/// Why a secrets file could not be used. Messages never contain file contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The file does not exist (yet).
    #[error("{file} does not exist")]
    Missing {
        /// File name.
        file: String,
    },
    /// Reading failed (permissions, I/O).
    #[error("cannot read {file}: {source}")]
    Read {
        /// File name.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than any valid secrets file.
    #[error("{file} is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge {
        /// File name.
        file: String,
    },
    /// The JSON does not have the contract's shape. Only the position and
    /// category are reported: serde's message could quote a secret value.
    #[error("{file} is not valid ({what} at line {line}, column {column})")]
    Invalid {
        /// File name.
        file: String,
        /// Category (syntax, data, …).
        what: &'static str,
        /// Line of the problem.
        line: usize,
        /// Column of the problem.
        column: usize,
    },
    /// The JSON parsed but a value is unusable.
    #[error("{file}: {problem}")]
    Unusable {
        /// File name.
        file: String,
        /// What is wrong.
        problem: String,
    },
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, FileError> {
    let path = dir.join(name);
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(FileError::Missing { file: name.into() })
        }
        Err(e) => {
            return Err(FileError::Read {
                file: name.into(),
                source: e,
            })
        }
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(FileError::TooLarge { file: name.into() });
    }
    std::fs::read(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FileError::Missing { file: name.into() },
        _ => FileError::Read {
            file: name.into(),
            source: e,
        },
    })
}

fn parse<T: serde::de::DeserializeOwned>(name: &str, bytes: &[u8]) -> Result<T, FileError> {
    serde_json::from_slice(bytes).map_err(|e| FileError::Invalid {
        file: name.into(),
        what: match e.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "JSON syntax error",
            serde_json::error::Category::Data => "missing field or wrong type",
            serde_json::error::Category::Eof => "unexpected end",
        },
        line: e.line(),
        column: e.column(),
    })
}

/// Reading `db.json` and `db-migrator.json` ([`DbCredentials`], defined in
/// `zt-contracts`) and connecting with them.
pub trait DbCredentialsFile: Sized {
    /// Reads `<dir>/<name>`.
    fn load(dir: &Path, name: &str) -> Result<Self, FileError>;

    /// Parses the contents of the file `name`.
    fn from_json(name: &str, bytes: &[u8]) -> Result<Self, FileError>;

    /// A tokio-postgres configuration for these credentials (UTC session time
    /// zone, so `TIMESTAMP DEFAULT NOW()` columns hold UTC).
    fn pg_config(&self, application_name: &str) -> tokio_postgres::Config;
}

impl DbCredentialsFile for DbCredentials {
    fn load(dir: &Path, name: &str) -> Result<Self, FileError> {
        Self::from_json(name, &read(dir, name)?)
    }

    fn from_json(name: &str, bytes: &[u8]) -> Result<Self, FileError> {
        let c: Self = parse(name, bytes)?;
        let unusable = |problem: &str| FileError::Unusable {
            file: name.into(),
            problem: problem.into(),
        };
        if c.username.is_empty() || c.username.len() > 63 {
            return Err(unusable("username is empty or longer than 63 bytes"));
        }
        if c.host.is_empty() || c.database.is_empty() {
            return Err(unusable("host and database must not be empty"));
        }
        if c.port == 0 {
            return Err(unusable("port must not be 0"));
        }
        Ok(c)
    }

    fn pg_config(&self, application_name: &str) -> tokio_postgres::Config {
        let mut c = tokio_postgres::Config::new();
        c.host(&self.host)
            .port(self.port)
            .user(&self.username)
            .password(self.password.expose())
            .dbname(&self.database)
            .application_name(application_name)
            .options("-c TimeZone=UTC")
            .connect_timeout(std::time::Duration::from_secs(5));
        c
    }
}

/// Shortest accepted HMAC key (RFC 7518 §3.2: at least the hash size).
pub const MIN_KEY_BYTES: usize = 32;

/// The JWT signing key (`jwt-signing-key.json`, KV v2 rendering).
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyFile {
    /// OpenBao's KV version of the secret.
    pub version: u64,
    /// Signs new tokens (base64-decoded `data.key`).
    pub key: Vec<u8>,
    /// Still verifies tokens signed before a key change (`data.previous_key`),
    /// for a bounded grace after `created_at`.
    pub previous_key: Option<Vec<u8>>,
    /// When this KV version was written (Unix seconds; the file's
    /// `created_time`), i.e. when the key changed. `None` if absent or unreadable.
    pub created_at: Option<i64>,
}

impl std::fmt::Debug for SigningKeyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyFile")
            .field("version", &self.version)
            .field("key", &"<redacted>")
            .field(
                "previous_key",
                &self.previous_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn decode_key(file: &str, field: &str, v: &Sensitive) -> Result<Vec<u8>, FileError> {
    use base64::Engine as _;
    let s = v.expose().trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s))
        .map_err(|_| FileError::Unusable {
            file: file.into(),
            problem: format!("data.{field} is not base64"),
        })?;
    if bytes.len() < MIN_KEY_BYTES {
        return Err(FileError::Unusable {
            file: file.into(),
            problem: format!(
                "data.{field} decodes to {} bytes; an HS256 key needs at least {MIN_KEY_BYTES}",
                bytes.len()
            ),
        });
    }
    Ok(bytes)
}

impl SigningKeyFile {
    /// Reads `<dir>/jwt-signing-key.json`. `data.key` is base64 of at least
    /// [`MIN_KEY_BYTES`] random bytes (what `policies/openbao/setup.toml` generates).
    pub fn load(dir: &Path) -> Result<Self, FileError> {
        Self::from_json(&read(dir, SIGNING_KEY_FILE)?)
    }

    /// Parses the contents of `jwt-signing-key.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, FileError> {
        let name = SIGNING_KEY_FILE;
        let f: KvFile<SigningKeyData> = parse(name, bytes)?;
        let key = f.data.key.as_ref().ok_or_else(|| FileError::Unusable {
            file: name.into(),
            problem: "data.key is missing".into(),
        })?;
        let key = decode_key(name, "key", key)?;
        let previous_key = match &f.data.previous_key {
            Some(p) if !p.expose().trim().is_empty() => Some(decode_key(name, "previous_key", p)?),
            _ => None,
        };
        // An empty or unreadable created_time reads as None (zt-contracts).
        let created_at = f.created_time.map(|t| t.unix_timestamp());
        Ok(Self {
            version: f.version,
            key,
            previous_key,
            created_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "A1a-hunter2-secret-password";

    fn db_json(version: u64, lease: &str) -> String {
        format!(
            r#"{{"username":"v-backend-role-abc-1","password":"{PASSWORD}","host":"127.0.0.1","port":15432,
"database":"appdb","lease_id":"{lease}","issued_at":"2026-11-28T14:08:20Z","expires_at":"2026-11-28T15:08:20Z","version":{version}}}"#
        )
    }

    #[test]
    fn db_credentials_parse_and_never_print_the_password() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(DB_FILE),
            db_json(3, "database/creds/backend-role/x"),
        )
        .unwrap();
        let c = DbCredentials::load(dir.path(), DB_FILE).unwrap();
        assert_eq!(c.version, 3);
        assert_eq!(c.password.expose(), PASSWORD);
        assert!(!format!("{c:?}").contains(PASSWORD));
        assert!(!format!("{:?}", c.pg_config("t")).contains(PASSWORD));
    }

    #[test]
    fn broken_files_are_errors_that_do_not_quote_contents() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            format!("{{\"username\": \"u\", \"password\": \"{PASSWORD}\""),
            format!("{{\"password\": \"{PASSWORD}\", \"port\": \"{PASSWORD}\"}}"),
            PASSWORD.to_string(),
            String::new(),
            db_json(1, "l").replace("15432", "0"),
        ];
        for body in cases {
            std::fs::write(dir.path().join(DB_FILE), &body).unwrap();
            let e = DbCredentials::load(dir.path(), DB_FILE).unwrap_err();
            assert!(!e.to_string().contains(PASSWORD), "{e}");
            assert!(e.to_string().contains(DB_FILE), "{e}");
        }
        assert!(matches!(
            DbCredentials::load(dir.path(), "absent.json"),
            Err(FileError::Missing { .. })
        ));
        std::fs::write(dir.path().join(DB_FILE), vec![b' '; 100_000]).unwrap();
        assert!(matches!(
            DbCredentials::load(dir.path(), DB_FILE),
            Err(FileError::TooLarge { .. })
        ));
    }

    #[test]
    fn signing_keys_are_base64_of_at_least_32_bytes() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let k = base64::engine::general_purpose::STANDARD.encode([7u8; 64]);
        let p = base64::engine::general_purpose::STANDARD.encode([9u8; 64]);
        let write = |body: String| std::fs::write(dir.path().join(SIGNING_KEY_FILE), body).unwrap();
        write(format!(
            r#"{{"version":2,"created_time":"t","data":{{"key":"{k}","previous_key":"{p}"}}}}"#
        ));
        let f = SigningKeyFile::load(dir.path()).unwrap();
        assert_eq!(
            (
                f.version,
                f.key.len(),
                f.previous_key.as_ref().map(Vec::len)
            ),
            (2, 64, Some(64))
        );
        assert!(!format!("{f:?}").contains(&k[..10]));
        write(format!(r#"{{"version":1,"data":{{"key":"{k}"}}}}"#));
        assert!(SigningKeyFile::load(dir.path())
            .unwrap()
            .previous_key
            .is_none());
        let short = base64::engine::general_purpose::STANDARD.encode([1u8; 16]);
        for bad in [
            format!(r#"{{"version":1,"data":{{"key":"{short}"}}}}"#),
            r#"{"version":1,"data":{"key":"not base64 at all!"}}"#.to_string(),
            r#"{"version":1,"data":{}}"#.to_string(),
            format!(r#"{{"version":1,"data":{{"key":"{k}","previous_key":"%%%"}}}}"#),
        ] {
            write(bad.clone());
            let e = SigningKeyFile::load(dir.path()).unwrap_err();
            assert!(matches!(e, FileError::Unusable { .. }), "{bad}: {e}");
        }
    }
}
