//! The listeners: bound at start-up, served once identity is there, their
//! TLS configs rebuilt on every SVID or bundle update.

use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{inbound, outbound, Material};
use crate::config::Config;
use crate::identity::Identity;
use crate::status::{ListenerStats, State};

/// Listeners bound at start-up (so a busy port fails fast), before identity.
#[derive(Debug, Default)]
pub(crate) struct Listeners {
    inbound: Vec<TcpListener>,
    outbound: Vec<TcpListener>,
}

/// Binds every configured mTLS listener.
pub(crate) async fn bind_all(config: &Config) -> anyhow::Result<Listeners> {
    let mut l = Listeners::default();
    for (i, c) in config.mtls.inbound.iter().enumerate() {
        l.inbound.push(
            TcpListener::bind(c.listen).await.with_context(|| {
                format!("mtls.inbound[{i}].listen: cannot listen on {}", c.listen)
            })?,
        );
    }
    for (i, c) in config.mtls.outbound.iter().enumerate() {
        l.outbound
            .push(TcpListener::bind(c.listen).await.with_context(|| {
                format!("mtls.outbound[{i}].listen: cannot listen on {}", c.listen)
            })?);
    }
    Ok(l)
}

/// Starts the listeners and the task that rebuilds their TLS configs on
/// every SVID or bundle update.
pub(crate) fn spawn_all(
    config: &Config,
    listeners: Listeners,
    identity: &Identity,
    state: &State,
    cancel: &CancellationToken,
    span: &tracing::Span,
) -> anyhow::Result<Vec<JoinHandle<()>>> {
    if listeners.inbound.is_empty() && listeners.outbound.is_empty() {
        return Ok(Vec::new());
    }
    let material = Material::from_source(identity.x509())?;
    let mut servers = Vec::new();
    let mut clients = Vec::new();
    let mut tasks = Vec::new();
    for (i, (c, l)) in config
        .mtls
        .inbound
        .iter()
        .zip(listeners.inbound)
        .enumerate()
    {
        let name = format!("inbound[{i}] {}", c.listen);
        let cfg = Arc::new(ArcSwap::from_pointee(material.server_config(
            &c.allow,
            state.inbound(i),
            &name,
        )?));
        servers.push((cfg.clone(), c.allow.clone(), state.inbound(i), name.clone()));
        tracing::info!(parent: span, listen = %c.listen, forward_to = %c.forward_to, allow = ?c.allow, "mTLS inbound listener up");
        tasks.push(tokio::spawn(
            inbound::serve(l, cfg, c.clone(), state.inbound(i), cancel.clone())
                .instrument(span.clone()),
        ));
    }
    for (i, (c, l)) in config
        .mtls
        .outbound
        .iter()
        .zip(listeners.outbound)
        .enumerate()
    {
        let name = format!("outbound[{i}] {}", c.listen);
        let cfg = Arc::new(ArcSwap::from_pointee(material.client_config(
            &c.server_id,
            state.outbound(i),
            &name,
        )?));
        clients.push((
            cfg.clone(),
            c.server_id.clone(),
            state.outbound(i),
            name.clone(),
        ));
        tracing::info!(parent: span, listen = %c.listen, upstream = %c.upstream, server_id = %c.server_id, "mTLS outbound listener up");
        tasks.push(tokio::spawn(
            outbound::serve(l, cfg, c.clone(), state.outbound(i), cancel.clone())
                .instrument(span.clone()),
        ));
    }
    let source = identity.x509().clone();
    let cancel = cancel.clone();
    tokio::spawn(
        async move {
            let mut updates = source.updated();
            loop {
                tokio::select! {
                    r = updates.changed() => if r.is_err() { return },
                    () = cancel.cancelled() => return,
                }
                let m = match Material::from_source(&source) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "X.509 update unusable; keeping the previous TLS material");
                        continue;
                    }
                };
                for (swap, allow, stats, name) in &servers {
                    match m.server_config(allow, stats.clone(), name) {
                        Ok(c) => swap.store(Arc::new(c)),
                        Err(e) => tracing::warn!(listener = %name, error = %e, "cannot rebuild TLS config"),
                    }
                }
                for (swap, id, stats, name) in &clients {
                    match m.client_config(id, stats.clone(), name) {
                        Ok(c) => swap.store(Arc::new(c)),
                        Err(e) => tracing::warn!(listener = %name, error = %e, "cannot rebuild TLS config"),
                    }
                }
                tracing::info!("new SVID or bundle: new handshakes use it, open connections keep theirs");
            }
        }
        .instrument(span.clone()),
    );
    Ok(tasks)
}

/// Decrements the active-connection gauge when a connection ends.
pub(super) struct ActiveGuard(Arc<ListenerStats>);

impl ActiveGuard {
    pub(super) fn new(stats: &Arc<ListenerStats>) -> Self {
        stats
            .accepted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        stats
            .active
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self(stats.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
