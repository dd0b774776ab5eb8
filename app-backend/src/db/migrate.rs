//! Versioned schema migrations (run as `app_owner` with the short-lived
//! migrator credentials, never as the runtime user) and the idempotent seed
//! of the six Brooklyn Nine-Nine users (DML, through the runtime pool).
//!
//! Migrations are embedded at build time from `app-backend/migrations/`,
//! applied in one transaction under an advisory lock (two replicas starting
//! together do not race) and recorded in `schema_migrations` with a SHA-256
//! of their text: an applied migration that was edited afterwards is an error.

use sha2::{Digest, Sha256};
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::auth::password::PasswordHasher;
use crate::db::{Database, DbError};
use crate::secrets::{DbCredentials, DbCredentialsFile};

/// One migration file.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Version (the file's numeric prefix).
    pub version: i64,
    /// Name (the rest of the file name).
    pub name: &'static str,
    /// The SQL.
    pub sql: &'static str,
}

/// Every migration, in order. A unit test checks this list against the folder.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "initial_schema",
        sql: include_str!("../../migrations/0001_initial_schema.sql"),
    },
    Migration {
        version: 2,
        name: "sessions_and_operators",
        sql: include_str!("../../migrations/0002_sessions_and_operators.sql"),
    },
];

/// The schema version this binary needs.
pub fn latest_version() -> i64 {
    MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Key of the advisory lock held while migrating.
const LOCK_KEY: i64 = 0x7a74_6d69_6772; // "ztmigr"

/// The role that owns the schema (policies/postgres/roles.sql).
pub const OWNER_ROLE: &str = "app_owner";

const BOOKKEEPING: &str = "
CREATE TABLE IF NOT EXISTS schema_migrations (
    version BIGINT PRIMARY KEY,
    name TEXT NOT NULL,
    checksum TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- The runtime role may read the schema version (readiness), never change it.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON schema_migrations FROM app_runtime;
";

/// Why migrating failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MigrateError {
    /// Connecting or a statement failed.
    #[error("migration failed: {}", crate::db::pg_message(.0))]
    Db(#[from] tokio_postgres::Error),
    /// An applied migration's text differs from the embedded one.
    #[error("migration {version} ({name}) was changed after it was applied (checksum {applied} in the database, {embedded} in this binary); add a new migration instead")]
    Changed {
        /// Version.
        version: i64,
        /// Name.
        name: &'static str,
        /// Checksum recorded in the database.
        applied: String,
        /// Checksum of the embedded file.
        embedded: String,
    },
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Versions applied now.
    pub applied: Vec<i64>,
    /// Versions found already applied.
    pub already: Vec<i64>,
}

fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Connects with the migrator credentials, `SET ROLE app_owner`, applies
/// what is pending. Idempotent.
pub async fn migrate(creds: &DbCredentials) -> Result<MigrationReport, MigrateError> {
    let (mut client, conn) = creds
        .pg_config("app-backend-migrator")
        .connect(NoTls)
        .await?;
    let conn = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "migrator connection ended");
        }
    });
    let result = run_migrations(&mut client).await;
    drop(client);
    let _ = conn.await;
    result
}

async fn run_migrations(
    client: &mut tokio_postgres::Client,
) -> Result<MigrationReport, MigrateError> {
    client
        .batch_execute(&format!("SET ROLE {OWNER_ROLE}"))
        .await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await?;
    tx.batch_execute(BOOKKEEPING).await?;
    let rows = tx
        .query(
            "SELECT version, checksum FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?;
    let mut already = Vec::new();
    for row in &rows {
        let version: i64 = row.get(0);
        let applied: String = row.get(1);
        match MIGRATIONS.iter().find(|m| m.version == version) {
            Some(m) => {
                let embedded = checksum(m.sql);
                if embedded != applied {
                    return Err(MigrateError::Changed {
                        version,
                        name: m.name,
                        applied,
                        embedded,
                    });
                }
            }
            None => tracing::warn!(
                version,
                "the database has a migration this binary does not know (a newer release ran); continuing"
            ),
        }
        already.push(version);
    }
    let mut applied = Vec::new();
    for m in MIGRATIONS.iter().filter(|m| !already.contains(&m.version)) {
        tx.batch_execute(m.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&m.version, &m.name, &checksum(m.sql)],
        )
        .await?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        applied.push(m.version);
    }
    tx.commit().await?;
    Ok(MigrationReport { applied, already })
}

/// The schema version as the runtime user sees it (0 = no migrations table).
pub async fn schema_version(db: &Database) -> Result<i64, DbError> {
    let r = db
        .run(|c| async move {
            c.query_one(
                "SELECT COALESCE(max(version), 0) FROM schema_migrations",
                &[],
            )
            .await
        })
        .await;
    match r {
        Ok(row) => Ok(row.get(0)),
        Err(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Ok(0),
        Err(e) => Err(e),
    }
}

/// The seed's demo users: (username, email, password).
pub const SEED_USERS: [(&str, &str, &str); 6] = [
    ("jake", "jake.peralta@99.precinct", "jake99"),
    ("amy", "amy.santiago@99.precinct", "amy99"),
    ("rosa", "rosa.diaz@99.precinct", "rosa99"),
    ("terry", "terry.jeffords@99.precinct", "terry99"),
    ("charles", "charles.boyle@99.precinct", "charles99"),
    ("gina", "gina.linetti@99.precinct", "gina99"),
];

/// Inserts the seed users that are missing (`ON CONFLICT DO NOTHING`), with
/// argon2id hashes computed now, as operators (they may read
/// `/api/zt/status`; the demo's zero-trust page needs it). A user already
/// there with a seed username and email is an operator exactly when it also
/// has the seed's password: an account someone registered under a seed name
/// and email before the seed ran, with a password of their own, is an
/// ordinary user (and stops being an operator if an earlier version made it
/// one). Returns the usernames inserted.
pub async fn seed_users(db: &Database, hasher: &PasswordHasher) -> Result<Vec<String>, SeedError> {
    let names: Vec<String> = SEED_USERS.iter().map(|(u, _, _)| u.to_string()).collect();
    let names = &names;
    let present: Vec<String> = db
        .run(|c| async move {
            let rows = c
                .query(
                    "SELECT username FROM users WHERE username = ANY($1)",
                    &[names],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
        })
        .await?;
    let mut inserted = Vec::new();
    for (user, email, password) in SEED_USERS
        .iter()
        .filter(|(u, _, _)| !present.iter().any(|p| p == u))
    {
        let hash = hasher
            .hash(password.to_string())
            .await
            .map_err(SeedError::Hash)?;
        let hash = &hash;
        let n = db
            .run(|c| async move {
                c.execute(
                    "INSERT INTO users (username, email, password_hash, is_operator) VALUES ($1, $2, $3, TRUE) ON CONFLICT DO NOTHING",
                    &[user, email, hash],
                )
                .await
            })
            .await?;
        if n == 1 {
            inserted.push(user.to_string());
        }
    }
    // The others with a seed name and email are operators exactly when
    // they have the seed's password: one a version before operators
    // existed inserted is made one; one that an earlier version made an
    // operator for its name and email alone (someone registered it first,
    // with a password of their own) is no longer one.
    let emails: Vec<String> = SEED_USERS.iter().map(|(_, e, _)| e.to_string()).collect();
    let emails = &emails;
    let candidates: Vec<(i32, String, String, bool)> = db
        .run(|c| async move {
            let rows = c
                .query(
                    "SELECT id, username, password_hash, is_operator FROM users
                     WHERE (username, email) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
                    &[names, emails],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                .collect())
        })
        .await?;
    for (id, user, hash, operator) in candidates {
        if inserted.contains(&user) {
            continue;
        }
        let Some((_, _, password)) = SEED_USERS.iter().find(|(u, _, _)| *u == user) else {
            continue;
        };
        let seeded = hasher
            .verify(password.to_string(), Some(hash))
            .await
            .map_err(SeedError::Hash)?;
        if !seeded {
            tracing::warn!(user = %user, "an account with a seed user's name and email but another password exists: it is not an operator");
        }
        if seeded == operator {
            continue;
        }
        db.run(|c| async move {
            c.execute(
                "UPDATE users SET is_operator = $2 WHERE id = $1",
                &[&id, &seeded],
            )
            .await
        })
        .await?;
    }
    Ok(inserted)
}

/// The seed users (seed username **and** email) present in the database.
pub async fn demo_users_present(db: &Database) -> Result<Vec<String>, DbError> {
    let names: Vec<String> = SEED_USERS.iter().map(|(u, _, _)| u.to_string()).collect();
    let emails: Vec<String> = SEED_USERS.iter().map(|(_, e, _)| e.to_string()).collect();
    let (names, emails) = (&names, &emails);
    db.run(|c| async move {
        let rows = c
            .query(
                "SELECT username FROM users
                 WHERE (username, email) IN (SELECT * FROM unnest($1::text[], $2::text[]))
                 ORDER BY username",
                &[names, emails],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    })
    .await
}

/// Why seeding failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeedError {
    /// A query failed.
    #[error("seeding users failed: {0}")]
    Db(#[from] DbError),
    /// Hashing failed.
    #[error("hashing a seed password failed: {0}")]
    Hash(crate::auth::password::HashError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_embedded_in_order() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        let listed: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, listed, "add new migration files to MIGRATIONS");
        for w in MIGRATIONS.windows(2) {
            assert!(w[0].version < w[1].version);
        }
    }

    #[test]
    fn checksums_are_stable_sha256() {
        assert_eq!(
            checksum(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_ne!(
            checksum(MIGRATIONS[0].sql),
            checksum(&format!("{} ", MIGRATIONS[0].sql))
        );
    }
}
