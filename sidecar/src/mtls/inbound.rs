//! Inbound: TLS 1.3 with a required, authorised client SVID; HTTP/1.1 to the
//! app on loopback with the verified peer ID in a header.
//!
//! Each mTLS connection is carried to one connection to the app, the way
//! the outbound carries each app connection over one mTLS connection. On
//! the way in, every request head is parsed and written again with the
//! verified peer ID ([`head`](super::head)), its body passed through as its
//! framing says; on the way back, the app's bytes are relayed as they come.
//! The app's responses need no parsing: the client and the app share one
//! connection's worth of state, so `Connection: close` from either side
//! holds for both, and when the app closes its connection the client's
//! closes too (it sees the app's `Connection: close`, or the close).
//!
//! ```text
//!   client ──TLS──▶ heads rewritten, bodies checked ──TCP──▶ app
//!   client ◀─TLS── bytes relayed                    ◀─TCP── app
//! ```
//!
//! A request the sidecar refuses ([`head::Refusal`]) is answered with its
//! status and a JSON error when it is the first on the connection, and
//! closes the connection when it is not (the app's answers to earlier
//! requests may still be in flight, and a second writer would interleave
//! with them). The app not accepting the connection is a 502 JSON error,
//! and the next request on the connection tries again. The client closing
//! its side ends both connections, as it did when hyper served them.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::{Buf, BytesMut};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::head::{self, BodyError, Refusal};
use super::{presented_id, ActiveGuard};
use crate::config::InboundConfig;
use crate::serve::{drain, next_tcp, HEADER_READ_TIMEOUT, MAX_HEAD_BYTES};
use crate::status::ListenerStats;

/// The app's answer to a connection it did not accept.
const NOT_REACHABLE: &str = "zt-sidecar: the application is not reachable";

/// A JSON error response of the sidecar's own.
fn error_response(status: (u16, &str), msg: &str, close: bool) -> Vec<u8> {
    let body = serde_json::json!({ "error": { "code": "zt_sidecar", "message": msg } }).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
        status.0,
        status.1,
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    )
    .into_bytes()
}

pub(super) async fn serve(
    listener: TcpListener,
    config: Arc<ArcSwap<ServerConfig>>,
    cfg: InboundConfig,
    stats: Arc<ListenerStats>,
    cancel: CancellationToken,
) {
    let cfg = Arc::new(cfg);
    while let Some((tcp, remote)) = next_tcp(&listener, &cancel).await {
        let acceptor = TlsAcceptor::from(config.load_full());
        let (cfg, stats) = (cfg.clone(), stats.clone());
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
            // The verifier accepted a certificate with exactly one SPIFFE
            // ID, which is a valid header value (a URI).
            let Some(peer) = peer.filter(|p| http::HeaderValue::from_str(p).is_ok()) else {
                return;
            };
            let _active = ActiveGuard::new(&stats);
            tracing::debug!(%remote, peer = %peer, "mTLS peer accepted");
            relay(tls, &cfg, &peer, &stats).await;
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

type ClientRead = tokio::io::ReadHalf<TlsStream<TcpStream>>;
type ClientWrite = tokio::io::WriteHalf<TlsStream<TcpStream>>;

/// One authorised connection, until either side is done: requests from the
/// client to the app ([`requests`]), the app's bytes back ([`responses`]),
/// polled together in this task.
async fn relay(tls: TlsStream<TcpStream>, cfg: &InboundConfig, peer: &str, stats: &ListenerStats) {
    let (client_r, client_w) = tokio::io::split(tls);
    // The write half goes to the response side with the app's read half
    // once the app connection exists; until then the request side answers
    // with its own errors.
    let (to_responses, app_conn) = oneshot::channel();
    let requests = requests(client_r, client_w, to_responses, cfg, peer, stats);
    let responses = async move {
        if let Ok((mut app_r, mut client_w)) = app_conn.await {
            relay_responses(&mut app_r, &mut client_w).await;
        }
    };
    tokio::pin!(requests, responses);
    tokio::select! {
        // The app closed: everything it answered is relayed, the client's
        // connection closes with it.
        () = &mut responses => {}
        end = &mut requests => match end {
            // The client asked to close after its last request: the app
            // answers it and closes. The app's connection is not half-closed
            // meanwhile (`app_w` lives until then): many servers, hyper's
            // among them, drop a response in progress when their reading
            // side sees the end.
            End::AnswerThenClose(app_w) => {
                responses.await;
                drop(app_w);
            }
            // The client is gone, or sent what cannot be forwarded: both
            // connections close now.
            End::Now => {}
        },
    }
}

/// How the request side ended.
enum End {
    AnswerThenClose(Option<tokio::net::tcp::OwnedWriteHalf>),
    Now,
}

/// The app's bytes to the client until the app closes, then a TLS close.
async fn relay_responses(app_r: &mut tokio::net::tcp::OwnedReadHalf, client_w: &mut ClientWrite) {
    match tokio::io::copy(app_r, client_w).await {
        Ok(_) => {
            let _ = client_w.shutdown().await;
        }
        Err(e) => tracing::debug!(error = %e, "relaying the app's response ended with an error"),
    }
}

/// Reads request heads and bodies from the client and forwards them to the
/// app, connecting to it for the first request.
async fn requests(
    mut client_r: ClientRead,
    client_w: ClientWrite,
    to_responses: oneshot::Sender<(tokio::net::tcp::OwnedReadHalf, ClientWrite)>,
    cfg: &InboundConfig,
    peer: &str,
    stats: &ListenerStats,
) -> End {
    let mut buf = BytesMut::with_capacity(head::READ_BUF);
    // `Some` until the app connection exists (then the response side has it).
    let mut own = Some((client_w, to_responses));
    let mut app_w: Option<tokio::net::tcp::OwnedWriteHalf> = None;
    loop {
        let head = match read_head(&mut client_r, &mut buf, &cfg.peer_id_header, peer).await {
            Ok(Some(h)) => h,
            Ok(None) => return End::Now,
            Err(refusal) => {
                tracing::debug!(reason = refusal.message(), "request refused");
                if let Some((mut client_w, _)) = own.take() {
                    let answer = error_response(refusal.status(), refusal.message(), true);
                    if client_w.write_all(&answer).await.is_ok() {
                        let _ = client_w.shutdown().await;
                        drain(&mut client_r).await;
                    }
                }
                return End::Now;
            }
        };
        buf.advance(head.consumed);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if app_w.is_none() {
            match TcpStream::connect(cfg.forward_to).await {
                Ok(app) => {
                    let _ = app.set_nodelay(true);
                    let (app_r, w) = app.into_split();
                    if let Some((client_w, to_responses)) = own.take() {
                        let _ = to_responses.send((app_r, client_w));
                    }
                    app_w = Some(w);
                }
                Err(e) => {
                    tracing::warn!(app = %cfg.forward_to, error = %e, "app unreachable");
                    let Some((client_w, _)) = own.as_mut() else {
                        return End::Now;
                    };
                    // The body is read and dropped; the connection stays
                    // usable unless the client asked to close it.
                    let skipped = head::forward(
                        head.framing,
                        Vec::new(),
                        &mut buf,
                        &mut client_r,
                        &mut tokio::io::sink(),
                    )
                    .await;
                    let close = head.close || skipped.is_err();
                    let answer = error_response((502, "Bad Gateway"), NOT_REACHABLE, close);
                    if client_w.write_all(&answer).await.is_err() || close {
                        let _ = client_w.shutdown().await;
                        return End::Now;
                    }
                    continue;
                }
            }
        }
        let Some(w) = app_w.as_mut() else {
            return End::Now;
        };
        match head::forward(head.framing, head.out, &mut buf, &mut client_r, w).await {
            Ok(()) if head.close => return End::AnswerThenClose(app_w),
            Ok(()) => {}
            Err(BodyError::Malformed(why)) => {
                tracing::debug!(reason = why, "request body refused; closing");
                return End::Now;
            }
            Err(BodyError::Io(e)) => {
                tracing::debug!(error = %e, "forwarding a request ended with an error");
                return End::Now;
            }
        }
    }
}

/// The next request head from the client. `Ok(None)`: the client closed
/// (or went quiet mid-head past the deadline) between requests.
async fn read_head<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    peer_header: &str,
    peer: &str,
) -> Result<Option<head::Head>, Refusal> {
    // A head must be complete within HEADER_READ_TIMEOUT of its first byte;
    // an idle keep-alive connection may wait for its next request.
    let mut deadline = None;
    // A head can only become complete with a new line feed: bytes that
    // bring none are not parsed again (a head sent a byte at a time costs
    // one parse per line, not one per byte). The first bytes are, so that
    // what is not HTTP at all is refused at once.
    let mut parse_again = !buf.is_empty();
    loop {
        if parse_again {
            if let Some(h) = head::parse(buf, peer_header, peer)? {
                return Ok(Some(h));
            }
        } else if buf.len() > MAX_HEAD_BYTES {
            return Err(Refusal::TooLarge);
        }
        let before = buf.len();
        head::make_room(buf);
        let read = match deadline {
            None => rd.read_buf(buf).await,
            Some(at) => match tokio::time::timeout_at(at, rd.read_buf(buf)).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::debug!("request head not complete in time; closing");
                    return Ok(None);
                }
            },
        };
        match read {
            Ok(0) | Err(_) => return Ok(None),
            Ok(_) => parse_again = before == 0 || buf[before..].contains(&b'\n'),
        }
        deadline.get_or_insert_with(|| tokio::time::Instant::now() + HEADER_READ_TIMEOUT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "x-spiffe-peer-id";
    const PEER: &str = "spiffe://demo.local/ns/demo/sa/frontend";

    /// A reader that hands out `data` `step` bytes per read.
    fn dribble(data: &[u8], step: usize) -> impl AsyncRead + Unpin + '_ {
        let mut reads: std::pin::Pin<Box<dyn AsyncRead + Unpin + '_>> =
            Box::pin(tokio::io::empty());
        for piece in data.chunks(step).rev() {
            reads = Box::pin(AsyncReadExt::chain(piece, reads));
        }
        reads
    }

    #[tokio::test]
    async fn a_head_sent_a_byte_at_a_time_is_read_whole() {
        let raw = b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        let mut buf = BytesMut::new();
        let h = read_head(&mut dribble(raw, 1), &mut buf, HEADER, PEER)
            .await
            .unwrap()
            .expect("a head");
        assert!(String::from_utf8_lossy(&h.out).starts_with("GET /slow HTTP/1.1\r\n"));
        // Reading stopped at the head's last byte: the next request is
        // still unread.
        assert_eq!(h.consumed, raw.len() - b"GET /next".len());
        assert_eq!(buf.len(), h.consumed);
    }

    #[tokio::test]
    async fn what_is_not_http_is_refused_at_once_and_a_head_without_end_at_the_limit() {
        let mut buf = BytesMut::new();
        let r = read_head(
            &mut dribble(b"\x16\x03\x01\x00\x05", 5),
            &mut buf,
            HEADER,
            PEER,
        )
        .await;
        assert!(matches!(r, Err(Refusal::Malformed(_))), "{r:?}");
        let endless = [
            b"GET / HTTP/1.1\r\nx: ".as_slice(),
            &[b'a'; MAX_HEAD_BYTES + 10],
        ]
        .concat();
        let mut buf = BytesMut::new();
        let r = read_head(&mut dribble(&endless, 1000), &mut buf, HEADER, PEER).await;
        assert!(matches!(r, Err(Refusal::TooLarge)), "{r:?}");
        let mut buf = BytesMut::new();
        let r = read_head(
            &mut dribble(b"GET / HTTP/1.1\r\nHo", 3),
            &mut buf,
            HEADER,
            PEER,
        )
        .await;
        assert!(matches!(r, Ok(None)), "the client closed mid-head: {r:?}");
    }
}
