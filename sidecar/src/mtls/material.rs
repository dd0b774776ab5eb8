//! Our SVID and trust bundle at one moment, turned into rustls configs:
//! TLS 1.3 only, peers checked by SPIFFE ID, no session resumption.

use std::sync::Arc;

use anyhow::Context;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::{SpiffeClientVerifier, SpiffeServerVerifier};
use crate::config::PeerPattern;
use crate::status::ListenerStats;

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
