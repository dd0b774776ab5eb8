//! Every statement the request handlers run, typed. All values travel as
//! bind parameters; no SQL is ever built from input.

use serde_json::Value;
use time::PrimitiveDateTime;
use tokio_postgres::Row;

use crate::db::{Database, DbError};

/// A user as the API shows it (no password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    /// `users.id`
    pub id: i32,
    /// `users.username`
    pub username: String,
    /// `users.email`
    pub email: Option<String>,
    /// `users.created_at` (UTC: sessions run with `TimeZone=UTC`).
    pub created_at: Option<PrimitiveDateTime>,
}

impl UserRow {
    fn from_row(r: &Row) -> Self {
        Self {
            id: r.get("id"),
            username: r.get("username"),
            email: r.get("email"),
            created_at: r.get("created_at"),
        }
    }
}

/// The GitHub integration row of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationRow {
    /// `is_configured`
    pub is_configured: bool,
    /// `configured_at`
    pub configured_at: Option<PrimitiveDateTime>,
    /// `last_accessed`
    pub last_accessed: Option<PrimitiveDateTime>,
}

/// One audit log entry to write.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    /// The acting user, when known.
    pub user_id: Option<i32>,
    /// What happened, e.g. `auth.login.failure` (≤ 100 chars).
    pub action: &'static str,
    /// What it happened to, e.g. `user:7` (≤ 100 chars).
    pub resource: String,
    /// Free-form JSON details (never a secret).
    pub details: Value,
}

const INSERT_AUDIT: &str =
    "INSERT INTO audit_log (user_id, action, resource, details) VALUES ($1, $2, $3, $4)";

/// Inserts a user and its `auth.register` audit row in one transaction.
pub async fn insert_user(
    db: &Database,
    username: &str,
    email: Option<&str>,
    password_hash: &str,
    audit_details: &Value,
) -> Result<UserRow, DbError> {
    db.run(|mut c| async move {
        let tx = c.transaction().await?;
        let row = tx
            .query_one(
                "INSERT INTO users (username, email, password_hash) VALUES ($1, $2, $3)
                 RETURNING id, username, email, created_at",
                &[&username, &email, &password_hash],
            )
            .await?;
        let user = UserRow::from_row(&row);
        let resource = format!("user:{}", user.id);
        tx.execute(
            INSERT_AUDIT,
            &[&Some(user.id), &"auth.register", &resource, audit_details],
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    })
    .await
}

/// The user with `id`.
pub async fn user_by_id(db: &Database, id: i32) -> Result<Option<UserRow>, DbError> {
    db.run(|c| async move {
        let stmt = c
            .prepare_cached("SELECT id, username, email, created_at FROM users WHERE id = $1")
            .await?;
        Ok(c.query_opt(&stmt, &[&id])
            .await?
            .as_ref()
            .map(UserRow::from_row))
    })
    .await
}

/// The user named `username` and its password hash.
pub async fn user_for_login(
    db: &Database,
    username: &str,
) -> Result<Option<(UserRow, String)>, DbError> {
    db.run(|c| async move {
        let stmt = c
            .prepare_cached(
                "SELECT id, username, email, created_at, password_hash FROM users WHERE username = $1",
            )
            .await?;
        Ok(c
            .query_opt(&stmt, &[&username])
            .await?
            .map(|r| (UserRow::from_row(&r), r.get("password_hash"))))
    })
    .await
}

/// The integration row of `user_id`.
pub async fn integration(db: &Database, user_id: i32) -> Result<Option<IntegrationRow>, DbError> {
    db.run(|c| async move {
        let stmt = c
            .prepare_cached(
                "SELECT is_configured, configured_at, last_accessed FROM github_integrations WHERE user_id = $1",
            )
            .await?;
        Ok(c.query_opt(&stmt, &[&user_id]).await?.map(|r| IntegrationRow {
            is_configured: r.get::<_, Option<bool>>(0).unwrap_or(false),
            configured_at: r.get(1),
            last_accessed: r.get(2),
        }))
    })
    .await
}

/// Marks the integration configured now.
pub async fn mark_configured(db: &Database, user_id: i32) -> Result<(), DbError> {
    db.run(|c| async move {
        c.execute(
            "INSERT INTO github_integrations (user_id, is_configured, configured_at)
             VALUES ($1, TRUE, now())
             ON CONFLICT (user_id) DO UPDATE SET is_configured = TRUE, configured_at = now()",
            &[&user_id],
        )
        .await
    })
    .await
    .map(|_| ())
}

/// Marks the integration removed; `false` if it was not configured.
pub async fn mark_removed(db: &Database, user_id: i32) -> Result<bool, DbError> {
    db.run(|c| async move {
        c.execute(
            "UPDATE github_integrations SET is_configured = FALSE, configured_at = NULL, last_accessed = NULL
             WHERE user_id = $1 AND is_configured",
            &[&user_id],
        )
        .await
    })
    .await
    .map(|n| n > 0)
}

/// Records that the user's token was used now.
pub async fn touch_last_accessed(db: &Database, user_id: i32) -> Result<(), DbError> {
    db.run(|c| async move {
        c.execute(
            "UPDATE github_integrations SET last_accessed = now() WHERE user_id = $1",
            &[&user_id],
        )
        .await
    })
    .await
    .map(|_| ())
}

/// Writes an audit row.
pub async fn audit(db: &Database, e: &AuditEntry) -> Result<(), DbError> {
    db.run(|c| async move {
        let stmt = c.prepare_cached(INSERT_AUDIT).await?;
        c.execute(&stmt, &[&e.user_id, &e.action, &e.resource, &e.details])
            .await
    })
    .await
    .map(|_| ())
}

/// `current_user` and `server_version` as PostgreSQL reports them.
pub async fn whoami(db: &Database) -> Result<(String, String), DbError> {
    db.run(|c| async move {
        let r = c
            .query_one(
                "SELECT current_user::text, current_setting('server_version')",
                &[],
            )
            .await?;
        Ok((r.get(0), r.get(1)))
    })
    .await
}

/// Records that the token `jti` of `user_id` was ended by a logout; it stays
/// refused until `expires_at` (Unix seconds), when it would have expired
/// anyway. Rows past their expiry are deleted on the way (the table stays
/// as small as the number of logouts in the last token lifetime).
pub async fn revoke_token(
    db: &Database,
    jti: &str,
    user_id: i32,
    expires_at: i64,
) -> Result<(), DbError> {
    db.run(|mut c| async move {
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO revoked_tokens (jti, user_id, expires_at)
             VALUES ($1, $2, to_timestamp($3::double precision) AT TIME ZONE 'UTC')
             ON CONFLICT (jti) DO NOTHING",
            &[&jti, &user_id, &(expires_at as f64)],
        )
        .await?;
        tx.execute(
            "DELETE FROM revoked_tokens WHERE expires_at < (now() AT TIME ZONE 'UTC') - interval '1 minute'",
            &[],
        )
        .await?;
        tx.commit().await
    })
    .await
}

/// Whether the token `jti` was ended by a logout.
pub async fn is_revoked(db: &Database, jti: &str) -> Result<bool, DbError> {
    db.run(|c| async move {
        let stmt = c
            .prepare_cached("SELECT 1 FROM revoked_tokens WHERE jti = $1")
            .await?;
        Ok(c.query_opt(&stmt, &[&jti]).await?.is_some())
    })
    .await
}

/// Whether `user_id` is an operator (may read `/api/zt/status`).
pub async fn is_operator(db: &Database, user_id: i32) -> Result<bool, DbError> {
    db.run(|c| async move {
        let stmt = c
            .prepare_cached("SELECT is_operator FROM users WHERE id = $1")
            .await?;
        Ok(c.query_opt(&stmt, &[&user_id])
            .await?
            .is_some_and(|r| r.get::<_, bool>(0)))
    })
    .await
}
