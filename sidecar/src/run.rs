//! Wires the pieces together and runs them until cancelled, then shuts down:
//! revoke leases and tokens (unless disabled) and remove what we created.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, ListenAddr};
use crate::identity::{Identity, IdentityError};
use crate::openbao::OpenBao;
use crate::openbao::{LeaseBook, TokenKeeper, Tokens};
use crate::proxy::Proxy;
use crate::secrets::FilePolicy;
use crate::secrets::KvRenderer;
use crate::secrets::SecretsEnv;
use crate::secrets::{revoke_leftovers, LeaseRotator, Leftovers};
use crate::serve::{bind_unix, serve_tcp, serve_unix};
use crate::status::State;

/// Runs the sidecar until `cancel` fires. Errors are start-up failures
/// (a listener that cannot bind, an unusable secrets dir).
pub async fn run(config: Config, cancel: CancellationToken) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let state = State::new(config.clone());

    let admin = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("admin.listen: cannot listen on {}", config.admin.listen))?;
    {
        let state = state.clone();
        tokio::spawn(serve_tcp(
            admin,
            move |req| crate::admin::handle(state.clone(), req),
            cancel.clone(),
        ));
    }
    tracing::info!(admin = %config.admin.listen, "admin listener up");

    if let Some(dir) = config.secrets_dir() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("secrets.dir: cannot create {}", dir.display()))?;
    }
    let mtls_listeners = crate::mtls::bind_all(&config).await?;

    tracing::info!(workload_api = %config.identity.workload_api, "waiting for an identity from the Workload API");
    let identity = match Identity::connect(&config.identity, config.backoff, &cancel).await {
        Ok(i) => i,
        Err(IdentityError::Cancelled) => return Ok(()),
        Err(e) => return Err(e).context("cannot use the Workload API"),
    };
    let spiffe_id = identity
        .x509()
        .svid()
        .map(|s| s.spiffe_id().to_string())
        .unwrap_or_default();
    let span = tracing::info_span!("zt", spiffe_id = %spiffe_id);
    tracing::info!(parent: &span, "identity obtained");
    tokio::spawn(
        identity
            .clone()
            .watch(
                config.identity.svid_dir.clone(),
                state.clone(),
                cancel.clone(),
            )
            .instrument(span.clone()),
    );
    let mtls_tasks =
        crate::mtls::spawn_all(&config, mtls_listeners, &identity, &state, &cancel, &span)?;

    let Some(ob) = config.openbao.clone() else {
        cancel.cancelled().await;
        for t in mtls_tasks {
            let _ = t.await;
        }
        return Ok(());
    };
    let bao = OpenBao::new(&ob.address, ob.request_timeout)?;
    let book = LeaseBook::default();
    let (keeper, tokens, check) = TokenKeeper::new(
        ob.clone(),
        bao.clone(),
        identity.clone(),
        config.backoff,
        state.clone(),
        book.clone(),
    );
    let keeper: JoinHandle<Tokens> =
        tokio::spawn(keeper.run(cancel.clone()).instrument(span.clone()));

    let policy = FilePolicy::of(&config.secrets);
    let mut rotators: Vec<JoinHandle<Leftovers>> = Vec::new();
    if let Some(dir) = config.secrets_dir() {
        let env = SecretsEnv {
            bao: bao.clone(),
            tokens: tokens.clone(),
            state: state.clone(),
            dir: dir.to_path_buf(),
            policy,
            backoff: config.backoff,
            check: check.clone(),
        };
        for db in &config.secrets.database {
            let r = LeaseRotator::new(db.clone(), env.clone(), book.clone());
            rotators.push(tokio::spawn(r.run(cancel.clone()).instrument(span.clone())));
        }
        for kv in &config.secrets.kv {
            let r = KvRenderer::new(kv.clone(), env.clone());
            tokio::spawn(r.run(cancel.clone()).instrument(span.clone()));
        }
    }

    let mut sockets = Vec::new();
    if let Some(p) = &config.proxy {
        let proxy = Proxy::new(
            p.clone(),
            &ob.address,
            tokens.clone(),
            check.clone(),
            state.clone(),
        )?;
        for l in &p.listen {
            match l {
                ListenAddr::Unix(path) => {
                    let proxy = proxy.clone();
                    let handler = move |req| proxy.clone().handle(req);
                    let mode = if config.secrets.group.is_some() {
                        0o660
                    } else {
                        0o600
                    };
                    let listener = bind_unix(path, mode, config.secrets.group)
                        .with_context(|| format!("proxy.listen: cannot listen on {l}"))?;
                    sockets.push(path.clone());
                    tokio::spawn(
                        serve_unix(listener, handler, cancel.clone()).instrument(span.clone()),
                    );
                }
                ListenAddr::Tcp(addr) => {
                    let proxy = proxy.clone().on_tcp();
                    let handler = move |req| proxy.clone().handle(req);
                    let listener = TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("proxy.listen: cannot listen on {l}"))?;
                    tokio::spawn(
                        serve_tcp(listener, handler, cancel.clone()).instrument(span.clone()),
                    );
                }
            }
            tracing::info!(parent: &span, listen = %l, "OpenBao proxy listening");
        }
    }

    cancel.cancelled().await;
    let _guard = span.enter();
    tracing::info!("shutting down");
    let tokens = keeper.await.unwrap_or_default();
    let mut leftovers = Vec::new();
    for r in rotators {
        if let Ok(l) = r.await {
            leftovers.push(l);
        }
    }
    for t in mtls_tasks {
        let _ = t.await;
    }
    if ob.revoke_on_shutdown {
        if let Some(current) = &tokens.current {
            revoke_leftovers(&bao, current, &leftovers).await;
        }
        for t in tokens.current.iter().chain(tokens.retired.iter()) {
            match bao.revoke_self(&t.secret).await {
                Ok(()) => tracing::info!(generation = t.generation, "revoked token on shutdown"),
                Err(e) => {
                    tracing::warn!(generation = t.generation, error = %e, "could not revoke token on shutdown")
                }
            }
        }
    }
    for s in sockets {
        let _ = std::fs::remove_file(s);
    }
    Ok(())
}
