//! The workload's SPIFFE identity from the Workload API.
//!
//! Two live sources from the `spiffe` crate — X.509 (for mTLS and the
//! optional PEM files) and JWT (minted per OpenBao login) — each reconnecting
//! with backoff on its own and keeping the last good material meanwhile.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use spiffe::{JwtSource, TrustDomain, X509Source};
use tokio_util::sync::CancellationToken;

use crate::config::{BackoffConfig, IdentityConfig};
use crate::secrets::{write_atomic, FilePolicy};
use crate::status::{State, SvidInfo};
use zt_contracts::Sensitive;

/// Why identity could not be obtained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum IdentityError {
    /// The X.509 source failed to start.
    #[error("X.509 source: {0}")]
    X509(#[from] spiffe::X509SourceError),
    /// The JWT source failed (start or fetch).
    #[error("JWT source: {0}")]
    Jwt(#[from] spiffe::JwtSourceError),
    /// Shutting down.
    #[error("cancelled")]
    Cancelled,
}

/// Both sources.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    x509: X509Source,
    jwt: JwtSource,
}

impl Identity {
    /// Connects to the Workload API and waits for the first SVID and bundles
    /// (retrying with backoff inside the sources) or cancellation.
    pub(crate) async fn connect(
        cfg: &IdentityConfig,
        backoff: BackoffConfig,
        cancel: &CancellationToken,
    ) -> Result<Self, IdentityError> {
        let build = async {
            let x509 = X509Source::builder()
                .endpoint(&cfg.workload_api)
                .reconnect_backoff(backoff.initial, backoff.max)
                .build()
                .await?;
            let jwt = JwtSource::builder()
                .endpoint(&cfg.workload_api)
                .reconnect_backoff(backoff.initial, backoff.max)
                .build()
                .await?;
            Ok::<_, IdentityError>(Self { x509, jwt })
        };
        tokio::select! {
            r = build => r,
            () = cancel.cancelled() => Err(IdentityError::Cancelled),
        }
    }

    /// The live X.509 source (mTLS uses it for every handshake).
    pub(crate) fn x509(&self) -> &X509Source {
        &self.x509
    }

    /// A fresh JWT-SVID for `audience`.
    pub(crate) async fn jwt_svid(&self, audience: &str) -> Result<Sensitive, IdentityError> {
        let svid = self.jwt.fetch_jwt_svid([audience]).await?;
        Ok(Sensitive::new(svid.token()))
    }

    /// Publishes each new SVID to `state` and, if configured, writes the PEM
    /// files, until cancelled.
    pub(crate) async fn watch(
        self,
        svid_dir: Option<PathBuf>,
        state: State,
        cancel: CancellationToken,
    ) {
        let mut updates = self.x509.updated();
        loop {
            self.publish(svid_dir.as_deref(), &state);
            tokio::select! {
                r = updates.changed() => if r.is_err() {
                    tracing::warn!("the X.509 source closed; identity updates stop");
                    return;
                },
                () = cancel.cancelled() => return,
            }
        }
    }

    fn publish(&self, svid_dir: Option<&Path>, state: &State) {
        let Ok(svid) = self.x509.svid() else {
            tracing::warn!("no usable X.509-SVID right now; keeping the last one");
            return;
        };
        let Some(leaf) = svid.cert_chain().first() else {
            return;
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_bytes()) else {
            tracing::warn!("cannot parse the X.509-SVID leaf");
            return;
        };
        let expires_at = SystemTime::UNIX_EPOCH
            + Duration::from_secs(cert.validity().not_after.timestamp().max(0) as u64);
        let info = SvidInfo {
            spiffe_id: svid.spiffe_id().to_string(),
            expires_at,
            serial: cert.raw_serial_as_string().replace(':', ""),
        };
        let changed = state
            .svid()
            .map(|s| s.serial != info.serial)
            .unwrap_or(true);
        if changed {
            tracing::info!(spiffe_id = %info.spiffe_id, serial = %info.serial, expires_at = %crate::clock::rfc3339(expires_at), "X.509-SVID in use");
            if let Some(dir) = svid_dir {
                if let Err(e) = self.write_pem_files(dir, &svid) {
                    state.failure("svid_files");
                    tracing::error!(dir = %dir.display(), error = %e, "cannot write SVID files");
                }
            }
        }
        state.set_svid(info);
    }

    fn write_pem_files(&self, dir: &Path, svid: &spiffe::X509Svid) -> std::io::Result<()> {
        let pem_of = |tag: &str, der: &[u8]| pem::encode(&pem::Pem::new(tag, der.to_vec()));
        let chain: String = svid
            .cert_chain()
            .iter()
            .map(|c| pem_of("CERTIFICATE", c.as_bytes()))
            .collect();
        let key = pem_of("PRIVATE KEY", svid.private_key().as_bytes());
        let td: &TrustDomain = svid.spiffe_id().trust_domain();
        let bundle: String = self
            .x509
            .bundle_set()
            .ok()
            .and_then(|set| set.get(td))
            .map(|b| {
                b.authorities()
                    .iter()
                    .map(|c| pem_of("CERTIFICATE", c.as_bytes()))
                    .collect()
            })
            .unwrap_or_default();
        std::fs::create_dir_all(dir)?;
        let public = FilePolicy {
            mode: 0o444,
            owner: None,
            group: None,
        };
        let private = FilePolicy {
            mode: 0o400,
            owner: None,
            group: None,
        };
        // Key first: a reader that sees the new certificate finds its key.
        write_atomic(&dir.join("svid_key.pem"), key.as_bytes(), private)?;
        write_atomic(&dir.join("svid.pem"), chain.as_bytes(), public)?;
        write_atomic(&dir.join("bundle.pem"), bundle.as_bytes(), public)
    }
}
