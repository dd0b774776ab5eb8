//! `/healthz`, `/readyz`, `/metrics`.

use std::time::Duration;

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::db::DbError;
use crate::state::{AppState, Phase};

/// How long the readiness database probe may take.
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// 200 while the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("ok\n")
}

/// 200 only when the signing key is loaded, start-up (migrations, schema
/// check, seed) is done and the database pool answers `SELECT 1`; else 503
/// with what is missing.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses(
    (status = 200, description = "Ready"),
    (status = 503, description = "Not ready; the body lists the failing checks"),
))]
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let key = state.keys.loaded();
    let phase = state.phase();
    let db = match tokio::time::timeout(
        DB_PROBE_TIMEOUT,
        state
            .db
            .run(|c| async move { c.simple_query("SELECT 1").await.map(|_| ()) }),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            // PostgreSQL's own words name the runtime role ("password
            // authentication failed for user v-…"): the log gets them, the
            // answer (which the frontend's identity can read through the
            // sidecar) only what kind of failure it is.
            tracing::warn!(error = %e, "readiness: the database probe failed");
            Err(public_cause(&e))
        }
        Err(_) => Err(format!("no answer within {DB_PROBE_TIMEOUT:?}")),
    };
    let ready = key && phase == Phase::Ready && db.is_ok();
    state.metrics.ready.set(u64::from(ready));
    let body = json!({
        "ready": ready,
        "checks": {
            "jwt_signing_key": if key { "ok".to_string() } else { "waiting for jwt-signing-key.json".to_string() },
            "startup": phase.describe(),
            "database": match &db { Ok(()) => "ok".to_string(), Err(e) => e.clone() },
        },
        "db_credentials_version": state.db.version(),
        "jwt_key_version": state.keys.version(),
    });
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// What `/readyz` says of a failed database probe: the kind of failure and
/// the SQLSTATE, never PostgreSQL's message.
fn public_cause(e: &DbError) -> String {
    match e {
        DbError::NotReady => e.to_string(),
        DbError::Pool(_) | DbError::Build(_) => {
            "no database connection (the cause is in the backend's log)".into()
        }
        DbError::Query(q) => match q.code() {
            Some(code) => format!(
                "SELECT 1 failed with SQLSTATE {} (the cause is in the backend's log)",
                code.code()
            ),
            None => "SELECT 1 failed (the cause is in the backend's log)".into(),
        },
    }
}

/// Prometheus text.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text format")))]
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render(state.db.sample()))
}
