//! The TLS state kept in the Secret, and the rotation state machine that
//! only the Lease holder runs ([`step`]: a pure function of the state and
//! the clock, so every transition is unit-tested).

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::pki::{self, Ca, Leaf, PrivatePem, TlsError};
use crate::settings::San;

/// Secret annotation: the state's generation, raised by every change.
pub const ANNOTATION_GENERATION: &str = "zt.demo.local/tls-generation";
/// Secret annotation: the rotation phase.
pub const ANNOTATION_PHASE: &str = "zt.demo.local/tls-phase";
/// Secret annotation: when the phase began (RFC 3339).
pub const ANNOTATION_PHASE_SINCE: &str = "zt.demo.local/tls-phase-since";
/// Webhook configuration annotation: the generation its `caBundle` comes
/// from, so a replica that lags never writes an older bundle over a newer one.
pub const ANNOTATION_CA_GENERATION: &str = "zt.demo.local/ca-bundle-generation";

const BUNDLE: &str = "ca-bundle.pem";
const CA: &str = "ca.pem";
const CA_KEY: &str = "ca-key.pem";
const NEXT_CA: &str = "next-ca.pem";
const NEXT_CA_KEY: &str = "next-ca-key.pem";
const TLS: &str = "tls.pem";
const TLS_KEY: &str = "tls-key.pem";

/// Where a CA rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// One CA, trusted and signing.
    Stable,
    /// A new CA is trusted (bundle: old, new); the old one still signs.
    CaAdded,
    /// The new CA signs; the old one is still trusted (bundle: old, new).
    CaSwitched,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Stable => "stable",
            Phase::CaAdded => "ca-added",
            Phase::CaSwitched => "ca-switched",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "stable" => Some(Phase::Stable),
            "ca-added" => Some(Phase::CaAdded),
            "ca-switched" => Some(Phase::CaSwitched),
            _ => None,
        }
    }
}

/// Everything the Secret holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsState {
    /// Raised by every change.
    pub generation: u64,
    /// Rotation phase.
    pub phase: Phase,
    /// When the phase began.
    pub phase_since: OffsetDateTime,
    /// CA certificates (PEM) the API server must trust.
    pub bundle: Vec<String>,
    /// The CA that signs serving certificates.
    pub active: Ca,
    /// The CA being introduced (phase `ca-added` only).
    pub next: Option<Ca>,
    /// The serving certificate.
    pub leaf: Leaf,
}

impl TlsState {
    /// The bundle as one PEM text (the webhook's `caBundle`).
    pub fn bundle_pem(&self) -> String {
        self.bundle.concat()
    }

    /// Reads the state from the Secret: `None` if it holds none yet (the
    /// chart creates it empty), an error if it holds garbage.
    pub fn from_secret(secret: &Secret) -> Result<Option<Self>, TlsError> {
        let data = secret.data.clone().unwrap_or_default();
        if data.is_empty() {
            return Ok(None);
        }
        let text = |key: &'static str, what: &'static str| -> Result<String, TlsError> {
            data.get(key)
                .and_then(|b| String::from_utf8(b.0.clone()).ok())
                .ok_or(TlsError::Corrupt { key, what })
        };
        let notes = secret.metadata.annotations.clone().unwrap_or_default();
        let note = |key: &'static str| notes.get(key).map(String::as_str);
        let generation = note(ANNOTATION_GENERATION)
            .and_then(|g| g.parse().ok())
            .ok_or(TlsError::Corrupt {
                key: ANNOTATION_GENERATION,
                what: "generation",
            })?;
        let phase = note(ANNOTATION_PHASE)
            .and_then(Phase::parse)
            .ok_or(TlsError::Corrupt {
                key: ANNOTATION_PHASE,
                what: "phase",
            })?;
        let phase_since = note(ANNOTATION_PHASE_SINCE)
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
            .ok_or(TlsError::Corrupt {
                key: ANNOTATION_PHASE_SINCE,
                what: "time",
            })?;
        let bundle_text = text(BUNDLE, "certificate bundle")?;
        let bundle = split_bundle(&bundle_text)?;
        let ca = |cert: &'static str, key: &'static str| -> Result<Ca, TlsError> {
            let cert_pem = text(cert, "CA certificate")?;
            Ok(Ca {
                not_after: pki::not_after(&cert_pem, cert)?,
                cert_pem,
                key: PrivatePem::new(text(key, "private key")?),
            })
        };
        let active = ca(CA, CA_KEY)?;
        let next = match phase {
            Phase::CaAdded => Some(ca(NEXT_CA, NEXT_CA_KEY)?),
            _ => None,
        };
        let leaf_pem = text(TLS, "certificate")?;
        let leaf = Leaf {
            not_after: pki::not_after(&leaf_pem, TLS)?,
            cert_pem: leaf_pem,
            key: PrivatePem::new(text(TLS_KEY, "private key")?),
        };
        Ok(Some(Self {
            generation,
            phase,
            phase_since,
            bundle,
            active,
            next,
            leaf,
        }))
    }

    /// Writes the state into `secret` (data and annotations; the rest of the
    /// object, including its resourceVersion, is kept).
    pub fn write_into(&self, secret: &mut Secret) {
        let b = |s: &str| ByteString(s.as_bytes().to_vec());
        let mut data = BTreeMap::from([
            (BUNDLE.to_string(), b(&self.bundle_pem())),
            (CA.to_string(), b(&self.active.cert_pem)),
            (CA_KEY.to_string(), b(self.active.key.expose())),
            (TLS.to_string(), b(&self.leaf.cert_pem)),
            (TLS_KEY.to_string(), b(self.leaf.key.expose())),
        ]);
        if let Some(next) = &self.next {
            data.insert(NEXT_CA.into(), b(&next.cert_pem));
            data.insert(NEXT_CA_KEY.into(), b(next.key.expose()));
        }
        secret.data = Some(data);
        secret.string_data = None;
        let notes = secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new);
        notes.insert(ANNOTATION_GENERATION.into(), self.generation.to_string());
        notes.insert(ANNOTATION_PHASE.into(), self.phase.as_str().into());
        notes.insert(
            ANNOTATION_PHASE_SINCE.into(),
            self.phase_since
                .format(&Rfc3339)
                .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into()),
        );
    }
}

fn split_bundle(text: &str) -> Result<Vec<String>, TlsError> {
    const END: &str = "-----END CERTIFICATE-----";
    pki::bundle_ders(text)?;
    Ok(text
        .split_inclusive(END)
        .map(str::trim_start)
        .filter(|p| p.contains(END))
        .map(|p| format!("{p}\n"))
        .collect())
}

/// What the state machine needs to know.
#[derive(Debug, Clone)]
pub struct StepConfig {
    /// Lifetime of a new CA.
    pub ca_validity: Duration,
    /// Lifetime of a new serving certificate.
    pub cert_validity: Duration,
    /// Length of each CA rotation phase.
    pub dwell: Duration,
    /// Names the serving certificate must carry.
    pub names: Vec<San>,
}

/// What changes, and why (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// No state yet (or garbage): a new CA and certificate.
    Bootstrap,
    /// A new CA joins the bundle.
    CaAdded,
    /// Serving certificates now come from the new CA.
    CaSwitched,
    /// The old CA leaves the bundle.
    CaRetired,
    /// A new serving certificate from the same CA.
    CertRenewed,
}

/// The next state, if anything must change now; `None` otherwise.
pub fn step(
    current: Option<&TlsState>,
    cfg: &StepConfig,
    now: OffsetDateTime,
) -> Result<Option<(TlsState, Change)>, TlsError> {
    let Some(cur) = current else {
        let active = Ca::generate(cfg.ca_validity, now)?;
        let leaf = active.issue(&cfg.names, cfg.cert_validity, now)?;
        return Ok(Some((
            TlsState {
                generation: 1,
                phase: Phase::Stable,
                phase_since: now,
                bundle: vec![active.cert_pem.clone()],
                active,
                next: None,
                leaf,
            },
            Change::Bootstrap,
        )));
    };
    let mut next = cur.clone();
    next.generation = cur.generation + 1;
    let dwelt = Duration::try_from(now - cur.phase_since).unwrap_or(Duration::ZERO) >= cfg.dwell;
    let change = match cur.phase {
        Phase::Stable if cur.active.remaining(now) < cfg.ca_validity / 3 => {
            let new = Ca::generate(cfg.ca_validity, now)?;
            next.bundle = vec![cur.active.cert_pem.clone(), new.cert_pem.clone()];
            next.next = Some(new);
            next.phase = Phase::CaAdded;
            next.phase_since = now;
            Some(Change::CaAdded)
        }
        Phase::CaAdded if dwelt => {
            let Some(new) = next.next.take() else {
                return Err(TlsError::Corrupt {
                    key: NEXT_CA,
                    what: "CA certificate",
                });
            };
            next.leaf = new.issue(&cfg.names, cfg.cert_validity, now)?;
            next.active = new;
            next.phase = Phase::CaSwitched;
            next.phase_since = now;
            Some(Change::CaSwitched)
        }
        Phase::CaSwitched if dwelt => {
            next.bundle = vec![cur.active.cert_pem.clone()];
            next.phase = Phase::Stable;
            next.phase_since = now;
            Some(Change::CaRetired)
        }
        _ => None,
    };
    if change == Some(Change::CaSwitched) {
        return Ok(Some((next, Change::CaSwitched)));
    }
    let names_differ = pki::names(&cur.leaf.cert_pem, TLS)? != cfg.names;
    let renew = cur.leaf.remaining(now) < cfg.cert_validity / 3 || names_differ;
    if renew {
        next.leaf = next.active.issue(&cfg.names, cfg.cert_validity, now)?;
        return Ok(Some((next, change.unwrap_or(Change::CertRenewed))));
    }
    Ok(change.map(|c| (next, c)))
}

#[cfg(test)]
mod tests;
