//! SPIFFE mTLS: an inbound listener that authorises peers by SPIFFE ID and
//! forwards HTTP to the app with the verified ID in a header, and an outbound
//! listener that takes plain HTTP from the app and originates mTLS to a peer
//! whose SPIFFE ID is pinned.
//!
//! Rotation: every X.509 update from the Workload API builds fresh
//! `Arc<ServerConfig>`/`Arc<ClientConfig>`s and publishes them in an
//! `ArcSwap`; each new handshake loads the latest, established connections
//! keep the one they started with until they close on their own.
//! TLS 1.3 only; no session resumption (a resumed session would skip the
//! peer check and outlive the SVID it was made with).

mod inbound;
mod outbound;
pub mod verify;

use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, PeerPattern};
use crate::identity::Identity;
use crate::status::{ListenerStats, State};

pub use verify::{presented_id, SpiffeClientVerifier, SpiffeServerVerifier};

/// The crypto provider for every mTLS config (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Our certificate chain, key and trust bundle at one moment.
#[derive(Clone)]
pub struct Material {
    /// SVID chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// SVID private key (PKCS#8).
    pub key: Arc<PrivatePkcs8KeyDer<'static>>,
    /// Our trust domain's authorities.
    pub roots: Arc<RootCertStore>,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material")
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Material {
    /// The current material of an X.509 source.
    pub fn from_source(source: &spiffe::X509Source) -> anyhow::Result<Self> {
        let svid = source.svid().context("no X.509-SVID")?;
        let td = svid.spiffe_id().trust_domain().clone();
        let bundle = source
            .bundle_set()
            .context("no trust bundles")?
            .get(&td)
            .with_context(|| format!("no bundle for trust domain {td}"))?;
        let mut roots = RootCertStore::empty();
        for a in bundle.authorities() {
            roots
                .add(CertificateDer::from(a.as_bytes().to_vec()))
                .context("bad authority in the trust bundle")?;
        }
        Ok(Self {
            chain: svid
                .cert_chain()
                .iter()
                .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
                .collect(),
            key: Arc::new(PrivatePkcs8KeyDer::from(
                svid.private_key().as_bytes().to_vec(),
            )),
            roots: Arc::new(roots),
        })
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.as_ref().clone_key())
    }

    /// Server config: TLS 1.3, client certificate required and authorised.
    pub fn server_config(
        &self,
        allow: &[PeerPattern],
        stats: Arc<ListenerStats>,
        listener: &str,
    ) -> anyhow::Result<ServerConfig> {
        let provider = provider();
        let inner =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider.clone())
                .build()?;
        let verifier = Arc::new(SpiffeClientVerifier {
            inner,
            allow: allow.to_vec(),
            stats,
            listener: listener.to_string(),
        });
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key())?;
        cfg.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        cfg.send_tls13_tickets = 0;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }

    /// Client config: TLS 1.3, our SVID as client cert, server ID pinned.
    pub fn client_config(
        &self,
        server_id: &str,
        stats: Arc<ListenerStats>,
        listener: &str,
    ) -> anyhow::Result<ClientConfig> {
        let provider = provider();
        let verifier = Arc::new(SpiffeServerVerifier::new(
            self.roots.clone(),
            server_id,
            stats,
            listener,
        ));
        let mut cfg = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key())?;
        cfg.resumption = rustls::client::Resumption::disabled();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

/// Listeners bound at start-up (so a busy port fails fast), before identity.
#[derive(Debug, Default)]
pub struct Listeners {
    inbound: Vec<TcpListener>,
    outbound: Vec<TcpListener>,
}

/// Binds every configured mTLS listener.
pub async fn bind_all(config: &Config) -> anyhow::Result<Listeners> {
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
pub fn spawn_all(
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
struct ActiveGuard(Arc<ListenerStats>);

impl ActiveGuard {
    fn new(stats: &Arc<ListenerStats>) -> Self {
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
