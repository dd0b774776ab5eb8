//! Certificate verification the SPIFFE way: the chain must lead to our trust
//! domain's bundle, and the identity is the URI SAN (the SPIFFE ID), never a
//! host name. Refusals are logged with the presented ID and counted.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    SignatureScheme,
};

use crate::config::PeerPattern;
use crate::status::ListenerStats;

/// The SPIFFE ID in a certificate, or a description of why there is none.
pub(crate) fn presented_id(der: &[u8]) -> Result<String, String> {
    spiffe::cert::spiffe_id_from_der(der)
        .map(|id| id.to_string())
        .map_err(|e| format!("no SPIFFE ID ({e})"))
}

/// Inbound: client certificates must chain to the bundle and carry an allowed ID.
#[derive(Debug)]
pub(crate) struct SpiffeClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) allow: Vec<PeerPattern>,
    pub(crate) stats: Arc<ListenerStats>,
    pub(crate) listener: String,
}

impl SpiffeClientVerifier {
    fn refuse(&self, id: &str, reason: &str) {
        self.stats
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(listener = %self.listener, presented_id = %id, reason, "refused mTLS peer");
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let id = presented_id(end_entity);
        let shown = id.clone().unwrap_or_else(|e| e);
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            self.refuse(&shown, &format!("untrusted certificate: {e}"));
            return Err(e);
        }
        let Ok(id) = id else {
            self.refuse(&shown, "certificate has no SPIFFE ID");
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        };
        if !self.allow.iter().any(|p| p.matches(&id)) {
            self.refuse(&id, "SPIFFE ID not in the allow-list");
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Outbound: the server's chain must lead to the bundle and its SPIFFE ID
/// must be exactly the configured one. The host name is not checked.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    pub(crate) roots: Arc<RootCertStore>,
    pub(crate) expected: String,
    pub(crate) provider: Arc<CryptoProvider>,
    pub(crate) stats: Arc<ListenerStats>,
    pub(crate) listener: String,
}

impl SpiffeServerVerifier {
    /// Trusts `roots` and accepts only a server presenting `expected`.
    pub fn new(
        roots: Arc<RootCertStore>,
        expected: &str,
        stats: Arc<ListenerStats>,
        listener: &str,
    ) -> Self {
        Self {
            roots,
            expected: expected.to_string(),
            provider: super::provider(),
            stats,
            listener: listener.to_string(),
        }
    }

    fn refuse(&self, id: &str, reason: &str) {
        self.stats
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(listener = %self.listener, presented_id = %id, expected = %self.expected, reason, "refused mTLS upstream");
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let id = presented_id(end_entity);
        let shown = id.clone().unwrap_or_else(|e| e);
        let parsed = ParsedCertificate::try_from(end_entity)?;
        if let Err(e) = rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        ) {
            self.refuse(&shown, &format!("untrusted certificate: {e}"));
            return Err(e);
        }
        if id.as_deref() != Ok(self.expected.as_str()) {
            self.refuse(&shown, "server SPIFFE ID is not the expected one");
            return Err(Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
