//! `GET /api/zt/status`: the zero-trust page's data.

use actix_web::web;

use crate::auth::AuthUser;
use crate::db::queries;
use crate::errors::{AppError, ErrorBody};
use crate::models::{BackendInfo, DatabaseInfo, ZtStatus};
use crate::state::AppState;

/// The sidecar's `/status`, the database user as PostgreSQL sees it, and the
/// backend's key and credential versions.
#[utoipa::path(
    get, path = "/api/zt/status", tag = "zero-trust",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Status", body = ZtStatus),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 403, description = "`forbidden`: only operators (the seeded demo users) may see it", body = ErrorBody),
        (status = 502, description = "`sidecar_unavailable`", body = ErrorBody),
        (status = 503, description = "`database_unavailable`", body = ErrorBody),
    )
)]
pub async fn status(
    user: AuthUser,
    state: web::Data<AppState>,
) -> Result<web::Json<ZtStatus>, AppError> {
    // Role names, lease IDs and versions are for operators, not for anyone
    // who can register an account.
    if !queries::is_operator(&state.db, user.user_id).await? {
        return Err(AppError::Forbidden("not an operator"));
    }
    let (sidecar, db) = tokio::join!(state.sidecar.status(), queries::whoami(&state.db));
    let (current_user, server_version) = db?;
    let sidecar = sidecar.map_err(AppError::SidecarUnavailable)?;
    Ok(web::Json(ZtStatus {
        sidecar,
        database: DatabaseInfo {
            current_user,
            server_version,
        },
        backend: BackendInfo {
            jwt_key_version: state.keys.version(),
            db_credentials_version: state.db.version(),
            db_pool_swaps: state.metrics.db_pool_swaps.get(),
        },
    }))
}
