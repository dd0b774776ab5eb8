//! Outbound: the app connects over plain HTTP on loopback; each connection is
//! carried over its own mTLS connection to the upstream, whose SPIFFE ID is
//! pinned. Byte-for-byte (keep-alive and streaming work as the app does them).
//!
//! A connection to the upstream that is refused, or reset or cut during the
//! handshake (its sidecar restarting, or killed with the connection in its
//! backlog), is tried again with backoff within `handshake_timeout`: nothing
//! of the app's request has been sent yet, so a peer back within that time
//! costs the request latency instead of a 502. A certificate the pinned ID
//! refuses is never retried.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

use super::ActiveGuard;
use crate::config::OutboundConfig;
use crate::serve::{drain, next_tcp};
use crate::status::ListenerStats;

pub(super) async fn serve(
    listener: TcpListener,
    config: Arc<ArcSwap<ClientConfig>>,
    cfg: OutboundConfig,
    stats: Arc<ListenerStats>,
    cancel: CancellationToken,
) {
    let cfg = Arc::new(cfg);
    let host = cfg
        .upstream
        .rsplit_once(':')
        .map(|(h, _)| h.trim_matches(['[', ']']))
        .unwrap_or("");
    let server_name = match ServerName::try_from(host.to_string()) {
        Ok(n) => n,
        Err(_) => {
            tracing::error!(upstream = %cfg.upstream, "upstream host is not a DNS name or IP address");
            return;
        }
    };
    while let Some((mut app, app_addr)) = next_tcp(&listener, &cancel).await {
        let connector = TlsConnector::from(config.load_full());
        let (cfg, stats, server_name) = (cfg.clone(), stats.clone(), server_name.clone());
        tokio::spawn(async move {
            tracing::debug!(app = %app_addr, "app connection accepted");
            let connect = connect_retrying(&cfg.upstream, &connector, &server_name, app_addr);
            let mut tls = match tokio::time::timeout(cfg.handshake_timeout, connect).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    let refused = e
                        .get_ref()
                        .and_then(|i| i.downcast_ref::<rustls::Error>())
                        .is_some_and(|t| matches!(t, rustls::Error::InvalidCertificate(_)));
                    if !refused {
                        stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(upstream = %cfg.upstream, error = %e, "mTLS connection to upstream failed");
                    }
                    bad_gateway(
                        &mut app,
                        &format!(
                            "zt-sidecar: cannot reach {} over mTLS as {}",
                            cfg.upstream, cfg.server_id
                        ),
                    )
                    .await;
                    return;
                }
                Err(_) => {
                    stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(upstream = %cfg.upstream, "mTLS handshake to upstream timed out");
                    bad_gateway(&mut app, "zt-sidecar: upstream handshake timed out").await;
                    return;
                }
            };
            let _active = ActiveGuard::new(&stats);
            // Our end of the mTLS connection: the `remote` of the peer's log.
            let local = tracing::enabled!(tracing::Level::DEBUG)
                .then(|| tls.get_ref().0.local_addr().ok())
                .flatten();
            tracing::debug!(app = %app_addr, ?local, "connected to the upstream over mTLS");
            match tokio::io::copy_bidirectional(&mut app, &mut tls).await {
                Ok((sent, received)) => {
                    tracing::debug!(app = %app_addr, ?local, sent, received, "outbound connection ended");
                }
                Err(e) => {
                    tracing::debug!(app = %app_addr, ?local, error = %e, "outbound connection ended with an error");
                }
            }
        });
    }
}

/// First and longest pause between connection attempts to an upstream that
/// is not there (doubling in between).
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(25), Duration::from_millis(400));

/// Whether a failed connect or handshake means the peer process is gone or
/// not there yet (as opposed to a refused certificate or a bad address).
fn peer_gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe
    )
}

/// TCP connect and TLS handshake to `upstream`, tried again while the peer
/// is gone ([`peer_gone`]). The caller bounds the whole attempt.
async fn connect_retrying(
    upstream: &str,
    connector: &TlsConnector,
    server_name: &ServerName<'static>,
    app: std::net::SocketAddr,
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut pause = RETRY_BACKOFF.0;
    let mut failures = 0u32;
    loop {
        let attempt = async {
            let tcp = TcpStream::connect(upstream).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(server_name.clone(), tcp).await
        };
        match attempt.await {
            Err(e) if peer_gone(&e) => {
                failures += 1;
                if failures == 1 {
                    tracing::debug!(upstream, %app, error = %e, "upstream not there; trying again until the handshake timeout");
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_BACKOFF.1);
            }
            other => return other,
        }
    }
}

/// Answers the app's request with a 502 and closes, the way an HTTP server
/// must for the client to see the answer: the request head is read first (a
/// client such as hyper treats a response that comes before its request is
/// written as an error), and after the answer the connection is drained
/// briefly before it is dropped (closing a socket with unread data sends a
/// reset, which can destroy the 502 before the client reads it).
async fn bad_gateway(app: &mut TcpStream, msg: &str) {
    const HEAD_LIMIT: usize = 16 * 1024;
    const WAIT: Duration = Duration::from_secs(1);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(WAIT, async {
        while seen.len() < HEAD_LIMIT && !seen.windows(4).any(|w| w == b"\r\n\r\n") {
            match app.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let body = serde_json::json!({ "error": { "code": "upstream_unavailable", "message": msg } })
        .to_string();
    let resp = format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = app.write_all(resp.as_bytes()).await;
    let _ = app.shutdown().await;
    drain(app).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The app's client writes its request after the sidecar already knows
    /// the upstream is refused (a slow client, or a fast refusal): the 502
    /// comes after the request, whole, not as a reset.
    #[tokio::test]
    async fn a_late_request_still_reads_the_whole_502() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut app, _) = listener.accept().await.unwrap();
            bad_gateway(&mut app, "zt-sidecar: test refusal").await;
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        // No answer before the request: hyper's client fails a connection
        // on which a response arrives before it wrote its request
        // ("UnexpectedMessage"), which is how this test flaked before.
        let mut early = [0u8; 64];
        match client.try_read(&mut early) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the 502 came before the request: {other:?}"),
        }
        let body = "x".repeat(8 * 1024);
        client
            .write_all(
                format!(
                    "POST /pinned HTTP/1.1\r\nhost: up\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        let mut answer = Vec::new();
        client
            .read_to_end(&mut answer)
            .await
            .expect("the 502 arrives whole, not as a connection reset");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
        assert!(answer.contains("zt-sidecar: test refusal"), "{answer}");
        server.await.unwrap();
    }
}
