//! Request handlers, one module per resource.

pub mod auth;
pub mod github;
pub mod health;
pub mod openapi;
pub mod zt;

use crate::db::queries::{self, AuditEntry};
use crate::state::AppState;

/// Writes an audit row; a failure is logged, not returned (the action itself
/// succeeded or failed on its own merits).
pub(crate) async fn audit(state: &AppState, entry: AuditEntry) {
    if let Err(e) = queries::audit(&state.db, &entry).await {
        tracing::warn!(action = entry.action, error = %e, "cannot write audit log row");
    }
}
