//! Inbound: TLS 1.3 with a required, authorised client SVID; HTTP/1.1 to the
//! app on loopback with the verified peer ID in a header.

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::{presented_id, ActiveGuard};
use crate::config::InboundConfig;
use crate::serve::{next_tcp, HEADER_READ_TIMEOUT, MAX_HEAD_BYTES};
use crate::status::ListenerStats;

type Body = BoxBody<Bytes, hyper::Error>;

/// Hop-by-hop headers a proxy must not forward (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

fn error(status: StatusCode, msg: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": { "code": "zt_sidecar", "message": msg } }).to_string();
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

pub(super) async fn serve(
    listener: TcpListener,
    config: Arc<ArcSwap<ServerConfig>>,
    cfg: InboundConfig,
    stats: Arc<ListenerStats>,
    cancel: CancellationToken,
) {
    let header = match HeaderName::from_bytes(cfg.peer_id_header.as_bytes()) {
        Ok(h) => h,
        Err(_) => return, // validated in config
    };
    let cfg = Arc::new(cfg);
    while let Some((tcp, remote)) = next_tcp(&listener, &cancel).await {
        let acceptor = TlsAcceptor::from(config.load_full());
        let (cfg, stats, header) = (cfg.clone(), stats.clone(), header.clone());
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(cfg.handshake_timeout, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    classify_failure(&e, &stats, &remote.to_string());
                    return;
                }
                Err(_) => {
                    stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%remote, "TLS handshake timed out");
                    return;
                }
            };
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| presented_id(c).ok());
            let Some(peer) = peer else { return };
            let Ok(peer_value) = HeaderValue::from_str(&peer) else {
                return;
            };
            let _active = ActiveGuard::new(&stats);
            tracing::debug!(%remote, peer = %peer, "mTLS peer accepted");
            let upstream: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::default();
            let service = service_fn(move |req| {
                let (upstream, header, peer_value, stats, forward_to) = (
                    upstream.clone(),
                    header.clone(),
                    peer_value.clone(),
                    stats.clone(),
                    cfg.forward_to,
                );
                async move {
                    stats.requests.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, Infallible>(
                        forward(req, &upstream, forward_to, &header, peer_value).await,
                    )
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_HEAD_BYTES)
                .serve_connection(TokioIo::new(tls), service);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "inbound connection ended with an error");
            }
        });
    }
}

/// Counts and logs a failed handshake. Refusals by the verifier (untrusted,
/// not allowed) were already counted and logged with the presented ID.
fn classify_failure(e: &std::io::Error, stats: &ListenerStats, remote: &str) {
    let tls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    match tls {
        Some(rustls::Error::InvalidCertificate(_)) => {}
        Some(rustls::Error::NoCertificatesPresented) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%remote, presented_id = "<none>", reason = "no client certificate", "refused mTLS peer");
        }
        _ => {
            stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%remote, error = %e, "TLS handshake failed");
        }
    }
}

async fn forward(
    mut req: Request<Incoming>,
    upstream: &Mutex<Option<SendRequest<Incoming>>>,
    forward_to: std::net::SocketAddr,
    header: &HeaderName,
    peer: HeaderValue,
) -> Response<Body> {
    let headers = req.headers_mut();
    // Only the verified identity may reach the app under this name.
    while headers.remove(header).is_some() {}
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
    headers.insert(header.clone(), peer);

    let mut guard = upstream.lock().await;
    if guard.as_ref().is_none_or(|s| s.is_closed()) {
        let tcp = match TcpStream::connect(forward_to).await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(app = %forward_to, error = %e, "app unreachable");
                return error(
                    StatusCode::BAD_GATEWAY,
                    "zt-sidecar: the application is not reachable",
                );
            }
        };
        let _ = tcp.set_nodelay(true);
        match hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await {
            Ok((sender, conn)) => {
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                *guard = Some(sender);
            }
            Err(e) => {
                tracing::warn!(app = %forward_to, error = %e, "app handshake failed");
                return error(
                    StatusCode::BAD_GATEWAY,
                    "zt-sidecar: the application is not reachable",
                );
            }
        }
    }
    let Some(sender) = guard.as_mut() else {
        return error(
            StatusCode::BAD_GATEWAY,
            "zt-sidecar: the application is not reachable",
        );
    };
    if sender.ready().await.is_err() {
        *guard = None;
        return error(
            StatusCode::BAD_GATEWAY,
            "zt-sidecar: the application closed the connection",
        );
    }
    match sender.send_request(req).await {
        Ok(resp) => resp.map(|b| b.boxed()),
        Err(e) => {
            tracing::warn!(app = %forward_to, error = %e, "request to the app failed");
            *guard = None;
            error(
                StatusCode::BAD_GATEWAY,
                "zt-sidecar: the application did not answer",
            )
        }
    }
}
