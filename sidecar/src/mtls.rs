//! SPIFFE mTLS listeners (filled in by the mTLS issue).

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::identity::Identity;
use crate::state::State;

/// Bound listeners, before identity is available.
#[derive(Debug, Default)]
pub struct Listeners;

/// Binds every configured mTLS listener.
pub async fn bind_all(_config: &Config) -> anyhow::Result<Listeners> {
    Ok(Listeners)
}

/// Starts serving on the bound listeners.
pub fn spawn_all(
    _config: &Config,
    _listeners: Listeners,
    _identity: &Identity,
    _state: &State,
    _cancel: &CancellationToken,
    _span: &tracing::Span,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    Ok(Vec::new())
}
