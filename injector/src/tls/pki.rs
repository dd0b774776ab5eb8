//! The serving CA and certificates: ECDSA P-256 keys, made with rcgen.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::settings::San;

/// Certificates are valid from this long before they are made: the API
/// server's clock may be a little behind ours.
pub const BACKDATE: Duration = Duration::from_secs(300);

/// Why a certificate could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rcgen refused to make a key or certificate.
    #[error("cannot make {what}: {source}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// rcgen's error.
        source: rcgen::Error,
    },
    /// A PEM in the Secret is not what it should be (its content is never shown).
    #[error("the Secret's {key} is not a valid {what}")]
    Corrupt {
        /// The Secret's data key.
        key: &'static str,
        /// What it should hold.
        what: &'static str,
    },
    /// rustls refused the key.
    #[error("rustls cannot use the serving key: {0}")]
    Key(#[from] rustls::Error),
}

/// A PEM private key: `Debug` and `Display` never show it.
/// (The workspace's one redacting wrapper, [`zt_contracts::Sensitive`].)
pub type PrivatePem = zt_contracts::Sensitive;

/// A CA certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ca {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The key.
    pub key: PrivatePem,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// A serving certificate and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The key.
    pub key: PrivatePem,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

fn generate(what: &'static str) -> impl Fn(rcgen::Error) -> TlsError {
    move |source| TlsError::Generate { what, source }
}

impl Ca {
    /// A new self-signed CA valid for `validity` from `now`.
    pub fn generate(validity: Duration, now: OffsetDateTime) -> Result<Self, TlsError> {
        let key = KeyPair::generate().map_err(generate("a CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        // Unique per CA: during a rotation two CAs with the same name would
        // confuse anyone reading the bundle.
        dn.push(
            DnType::CommonName,
            format!("zt-injector CA {}", now.unix_timestamp_nanos() / 1_000_000),
        );
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = now - BACKDATE;
        params.not_after = now + validity;
        let cert = params.self_signed(&key).map_err(generate("the CA"))?;
        Ok(Self {
            cert_pem: cert.pem(),
            key: PrivatePem::new(key.serialize_pem()),
            not_after: params.not_after,
        })
    }

    /// A serving certificate for `names`, valid for `validity` from `now`
    /// but never beyond this CA.
    pub fn issue(
        &self,
        names: &[San],
        validity: Duration,
        now: OffsetDateTime,
    ) -> Result<Leaf, TlsError> {
        let ca_key = KeyPair::from_pem(self.key.expose()).map_err(|_| TlsError::Corrupt {
            key: "ca-key.pem",
            what: "private key",
        })?;
        let issuer =
            Issuer::from_ca_cert_pem(&self.cert_pem, ca_key).map_err(|_| TlsError::Corrupt {
                key: "ca.pem",
                what: "CA certificate",
            })?;
        let key = KeyPair::generate().map_err(generate("a serving key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "zt-injector");
        params.distinguished_name = dn;
        params.subject_alt_names = names
            .iter()
            .map(|n| match n {
                San::Dns(d) => d
                    .clone()
                    .try_into()
                    .map(SanType::DnsName)
                    .map_err(generate("a certificate name")),
                San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - BACKDATE;
        params.not_after = (now + validity).min(self.not_after);
        let cert = params
            .signed_by(&key, &issuer)
            .map_err(generate("the serving certificate"))?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key: PrivatePem::new(key.serialize_pem()),
            not_after: params.not_after,
        })
    }

    /// Time left.
    pub fn remaining(&self, now: OffsetDateTime) -> Duration {
        remaining(self.not_after, now)
    }
}

impl Leaf {
    /// Time left.
    pub fn remaining(&self, now: OffsetDateTime) -> Duration {
        remaining(self.not_after, now)
    }
}

fn remaining(not_after: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(not_after - now).unwrap_or(Duration::ZERO)
}

/// The single certificate in `pem`, as DER.
pub fn cert_der(pem: &str, key: &'static str) -> Result<CertificateDer<'static>, TlsError> {
    CertificateDer::from_pem_slice(pem.as_bytes()).map_err(|_| TlsError::Corrupt {
        key,
        what: "certificate",
    })
}

/// End of validity of the certificate in `pem`.
pub fn not_after(pem: &str, key: &'static str) -> Result<OffsetDateTime, TlsError> {
    let der = cert_der(pem, key)?;
    let corrupt = || TlsError::Corrupt {
        key,
        what: "certificate",
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|_| corrupt())?;
    OffsetDateTime::from_unix_timestamp(cert.validity().not_after.timestamp())
        .map_err(|_| corrupt())
}

/// The subject alternative names of the certificate in `pem`, as written in settings.
pub fn names(pem: &str, key: &'static str) -> Result<Vec<San>, TlsError> {
    let der = cert_der(pem, key)?;
    let corrupt = || TlsError::Corrupt {
        key,
        what: "certificate",
    };
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|_| corrupt())?;
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                x509_parser::extensions::GeneralName::DNSName(d) => {
                    out.push(San::Dns(d.to_string()))
                }
                x509_parser::extensions::GeneralName::IPAddress(b) => match b.len() {
                    4 => out.push(San::Ip(std::net::IpAddr::from(
                        <[u8; 4]>::try_from(*b).map_err(|_| corrupt())?,
                    ))),
                    16 => out.push(San::Ip(std::net::IpAddr::from(
                        <[u8; 16]>::try_from(*b).map_err(|_| corrupt())?,
                    ))),
                    _ => return Err(corrupt()),
                },
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Every certificate of a PEM bundle, as DER.
pub fn bundle_ders(pem: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| TlsError::Corrupt {
            key: "ca-bundle.pem",
            what: "certificate bundle",
        })?;
    let parses = |d: &CertificateDer<'_>| x509_parser::parse_x509_certificate(d).is_ok();
    if certs.is_empty() || !certs.iter().all(parses) {
        return Err(TlsError::Corrupt {
            key: "ca-bundle.pem",
            what: "certificate bundle",
        });
    }
    Ok(certs)
}
