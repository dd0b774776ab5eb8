//! The loop every replica runs: read the Secret and serve its certificate;
//! if leader, rotate; keep the webhook's `caBundle` current.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::Api;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::lease::LeaderElector;
use super::serving::ServingCert;
use super::state::{step, Change, StepConfig, TlsState, ANNOTATION_CA_GENERATION};
use crate::settings::Settings;

/// What the readiness endpoint needs to know about TLS.
#[derive(Debug, Default)]
pub struct TlsStatus {
    last_read: Mutex<Option<Instant>>,
}

impl TlsStatus {
    fn read_now(&self) {
        *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether the Secret was read successfully within `within`.
    pub fn fresh(&self, within: Duration) -> bool {
        self.last_read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|t| t.elapsed() <= within)
    }
}

/// Keeps this replica's certificate, the shared Secret (as leader) and the
/// webhook's `caBundle` current.
pub struct Rotator {
    secrets: Api<Secret>,
    webhooks: Api<MutatingWebhookConfiguration>,
    elector: LeaderElector,
    settings: Arc<Settings>,
    serving: Arc<ServingCert>,
    status: Arc<TlsStatus>,
    step_config: StepConfig,
}

impl Rotator {
    /// A rotator using `client` for the objects `settings` names.
    pub fn new(
        client: kube::Client,
        settings: Arc<Settings>,
        serving: Arc<ServingCert>,
        status: Arc<TlsStatus>,
    ) -> Self {
        let k = &settings.kubernetes;
        let leases: Api<Lease> = Api::namespaced(client.clone(), &k.namespace);
        Self {
            secrets: Api::namespaced(client.clone(), &k.namespace),
            webhooks: Api::all(client),
            elector: LeaderElector::new(
                leases,
                &k.lease,
                &settings.identity,
                settings.tls.lease_duration,
            ),
            step_config: StepConfig {
                ca_validity: settings.tls.ca_validity,
                cert_validity: settings.tls.cert_validity,
                dwell: settings.tls.rotation_dwell,
                names: k.sans(),
            },
            settings,
            serving,
            status,
        }
    }

    /// Runs until `cancel`, once per poll interval.
    pub async fn run(mut self, cancel: CancellationToken) {
        loop {
            self.tick().await;
            tokio::select! {
                () = tokio::time::sleep(self.settings.tls.poll_interval) => {}
                () = cancel.cancelled() => return,
            }
        }
    }

    /// One round: read, (lead, rotate), serve, publish the bundle.
    pub async fn tick(&mut self) {
        let name = self.settings.kubernetes.tls_secret.clone();
        let secret = match self.secrets.get(&name).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(secret = %name, error = %e, "cannot read the TLS Secret (the chart creates it)");
                return;
            }
        };
        self.status.read_now();
        let mut state = match TlsState::from_secret(&secret) {
            Ok(s) => s,
            Err(e) => {
                // The message names the key, never its content.
                tracing::error!(secret = %name, error = %e, "the TLS Secret holds garbage; the leader replaces it");
                None
            }
        };
        if let Some(s) = &state {
            self.serve(s);
        }
        let leading = match self.elector.try_lead().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(lease = %self.settings.kubernetes.lease, error = %e, "cannot use the rotation Lease");
                false
            }
        };
        if leading {
            match step(state.as_ref(), &self.step_config, OffsetDateTime::now_utc()) {
                Ok(Some((mut next, change))) => {
                    if change == Change::Bootstrap {
                        // A new CA after the Secret was emptied or replaced:
                        // its generation must pass the one the webhook
                        // configuration records, or the new bundle would
                        // look older than the published one and never be
                        // published (every opted-in pod refused).
                        next.generation = next.generation.max(self.recorded_generation().await + 1);
                    }
                    let mut updated = secret.clone();
                    next.write_into(&mut updated);
                    match self
                        .secrets
                        .replace(&name, &PostParams::default(), &updated)
                        .await
                    {
                        Ok(_) => {
                            tracing::info!(generation = next.generation, change = ?change, phase = ?next.phase, "TLS state changed");
                            if change == Change::Bootstrap {
                                tracing::info!("serving CA created");
                            }
                            self.serve(&next);
                            state = Some(next);
                        }
                        Err(kube::Error::Api(s)) if s.is_conflict() => {
                            tracing::debug!("the TLS Secret changed under us; next round");
                        }
                        Err(e) => {
                            tracing::warn!(secret = %name, error = %e, "cannot write the TLS Secret");
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "cannot rotate the serving certificate"),
            }
        }
        if let Some(s) = &state {
            self.publish_bundle(s).await;
        }
    }

    fn serve(&self, state: &TlsState) {
        let before = self.serving.generation();
        match self.serving.load(state) {
            Ok(()) if before != Some(state.generation) => {
                tracing::debug!(generation = state.generation, "serving certificate loaded");
            }
            Ok(()) => {}
            Err(e) => {
                tracing::error!(generation = state.generation, error = %e, "cannot serve the Secret's certificate")
            }
        }
    }

    /// The generation the webhook configuration's `caBundle` comes from (0:
    /// none recorded, or the configuration cannot be read).
    async fn recorded_generation(&self) -> u64 {
        let name = &self.settings.kubernetes.webhook_configuration;
        match self.webhooks.get(name).await {
            Ok(config) => recorded_generation(&config),
            Err(e) => {
                tracing::warn!(webhook_configuration = %name, error = %e, "cannot read the webhook configuration");
                0
            }
        }
    }

    /// Sets the webhook configuration's `caBundle` (every webhook in it) to
    /// the state's bundle — unless it already comes from a newer generation.
    async fn publish_bundle(&self, state: &TlsState) {
        let name = &self.settings.kubernetes.webhook_configuration;
        let mut config = match self.webhooks.get(name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(webhook_configuration = %name, error = %e, "cannot read the webhook configuration");
                return;
            }
        };
        let recorded = recorded_generation(&config);
        if recorded > state.generation {
            return; // another replica is ahead of us; we will catch up
        }
        let bundle = ByteString(state.bundle_pem().into_bytes());
        let webhooks = config.webhooks.get_or_insert_with(Vec::new);
        let current = webhooks
            .iter()
            .all(|w| w.client_config.ca_bundle.as_ref() == Some(&bundle));
        if recorded == state.generation && current {
            return;
        }
        for w in webhooks.iter_mut() {
            w.client_config.ca_bundle = Some(bundle.clone());
        }
        config
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                ANNOTATION_CA_GENERATION.into(),
                state.generation.to_string(),
            );
        match self
            .webhooks
            .replace(name, &PostParams::default(), &config)
            .await
        {
            Ok(_) => tracing::info!(
                generation = state.generation,
                cas = state.bundle.len(),
                "caBundle updated"
            ),
            Err(kube::Error::Api(s)) if s.is_conflict() => {}
            Err(e) => {
                tracing::warn!(webhook_configuration = %name, error = %e, "cannot update the caBundle")
            }
        }
    }
}

/// The `ca-bundle-generation` annotation of a webhook configuration (0 if absent).
fn recorded_generation(config: &MutatingWebhookConfiguration) -> u64 {
    config
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(ANNOTATION_CA_GENERATION))
        .and_then(|g| g.parse().ok())
        .unwrap_or(0)
}
