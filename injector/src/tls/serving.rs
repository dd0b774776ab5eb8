//! The certificate every handshake gets: the latest one read from the
//! Secret, swapped in atomically (connections already open keep theirs).

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::pki::{self, TlsError};
use super::state::TlsState;

/// rustls' certificate resolver over the current serving certificate.
#[derive(Debug, Default)]
pub struct ServingCert {
    current: ArcSwapOption<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    generation: u64,
    cert_pem: String,
    key: Arc<CertifiedKey>,
}

impl ServingCert {
    /// Serves the state's certificate from the next handshake on (a no-op
    /// if it is already served).
    pub fn load(&self, state: &TlsState) -> Result<(), TlsError> {
        if let Some(cur) = self.current.load().as_ref() {
            if cur.cert_pem == state.leaf.cert_pem {
                return Ok(());
            }
        }
        let der = pki::cert_der(&state.leaf.cert_pem, "tls.pem")?;
        let key =
            PrivateKeyDer::from_pem_slice(state.leaf.key.expose().as_bytes()).map_err(|_| {
                TlsError::Corrupt {
                    key: "tls-key.pem",
                    what: "private key",
                }
            })?;
        let signer = rustls::crypto::ring::sign::any_supported_type(&key)?;
        let certified = CertifiedKey::new(vec![der], signer);
        // The key must belong to the certificate: serving a mismatched pair
        // would fail every handshake.
        certified.keys_match()?;
        self.current.store(Some(Arc::new(Loaded {
            generation: state.generation,
            cert_pem: state.leaf.cert_pem.clone(),
            key: Arc::new(certified),
        })));
        Ok(())
    }

    /// Whether a certificate is loaded.
    pub fn ready(&self) -> bool {
        self.current.load().is_some()
    }

    /// The generation of the state the served certificate came from.
    pub fn generation(&self) -> Option<u64> {
        self.current.load().as_ref().map(|c| c.generation)
    }
}

impl ResolvesServerCert for ServingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|c| c.key.clone())
    }
}
