//! Wires the pieces together: the Kubernetes client, the TLS rotator, the
//! HTTPS and health listeners.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::{Injector, KubeConfigMaps};
use crate::server::{serve_health, serve_https, tls_config};
use crate::settings::Settings;
use crate::tls::{Rotator, ServingCert, TlsStatus};

/// Runs the injector until `cancel`.
pub async fn run(settings: Settings, cancel: CancellationToken) -> anyhow::Result<()> {
    // In a pod: the ServiceAccount; elsewhere (tests, development): KUBECONFIG.
    let client = kube::Client::try_default().await.context(
        "cannot configure the Kubernetes client (in-cluster ServiceAccount or KUBECONFIG)",
    )?;
    let settings = Arc::new(settings);
    let serving = Arc::new(ServingCert::default());
    let status = Arc::new(TlsStatus::default());

    let listener = TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("listen: cannot listen on {}", settings.listen))?;
    let health = TcpListener::bind(settings.health_listen)
        .await
        .with_context(|| format!("health_listen: cannot listen on {}", settings.health_listen))?;
    tracing::info!(listen = %settings.listen, health = %settings.health_listen, identity = %settings.identity, "zt-injector listening");

    let rotator = Rotator::new(
        client.clone(),
        settings.clone(),
        serving.clone(),
        status.clone(),
    );
    let rotating = tokio::spawn(rotator.run(cancel.clone()));
    tokio::spawn(serve_health(
        health,
        serving.clone(),
        status,
        settings.tls.stale_after(),
        cancel.clone(),
    ));
    let injector = Arc::new(Injector::new(
        settings.clone(),
        KubeConfigMaps::new(client, settings.kubernetes.configmap_timeout),
    ));
    let tls = tls_config(serving).context("cannot configure TLS")?;
    serve_https(listener, tls, injector, cancel).await;
    let _ = rotating.await;
    Ok(())
}
