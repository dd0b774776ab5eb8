//! Inbound: TLS 1.3 with a required, authorised client SVID; HTTP/1.1 to the
//! app on loopback with the verified peer ID in a header.
//!
//! Each mTLS connection is carried to one connection to the app at a
//! time, the way the outbound carries each app connection over one mTLS
//! connection. On the way in, every request head is parsed and written
//! again with the verified peer ID ([`head`](super::head)), its body passed
//! through as its framing says; on the way back, the app's bytes are
//! relayed as they come, watched by [`Responses`] to know where each answer
//! ends:
//!
//! - the app closing an idle connection (between answers, nothing asked
//!   and unanswered) is not passed on: the client's connection stays, and
//!   the next request opens a new app connection;
//! - the app closing with a request unanswered and nothing of its answer
//!   sent (it crashed, or was restarted) gets the client a 502 JSON error,
//!   then a close;
//! - the app closing mid-answer, or after a body delimited by the close,
//!   closes the client's connection.
//!
//! `Connection: close` from the client holds for the app's connection too
//! (the app answers and closes, then the client's connection closes).
//!
//! ```text
//!   client ──TLS──▶ heads rewritten, bodies checked ──TCP──▶ app
//!   client ◀─TLS── bytes relayed, answers followed  ◀─TCP── app
//! ```
//!
//! A request the sidecar refuses ([`head::Refusal`]) is answered with its
//! status and a JSON error when no app connection is open, and stops the
//! forwarding when one is (the app's answers to earlier requests may still
//! be in flight, and a second writer would interleave with them): those are
//! relayed, then the connection closes. The app not accepting the
//! connection is a 502 JSON error, and the next request on the connection
//! tries again. The client closing its side ends both connections, as it
//! did when hyper served them.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::{Buf, BytesMut};
use rustls::ServerConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::head::{self, BodyError, Framing};
use super::response::{AtClose, Responses};
use super::{presented_id, ActiveGuard};
use crate::config::InboundConfig;
use crate::serve::{drain, next_tcp, HEADER_READ_TIMEOUT};
use crate::status::ListenerStats;

/// The app's answer to a connection it did not accept.
const NOT_REACHABLE: &str = "zt-sidecar: the application is not reachable";
/// The answer to a request the app closed its connection on unanswered.
const DROPPED: &str = "zt-sidecar: the application closed the connection without answering";
/// The app's bytes are relayed through a buffer this large.
const RELAY_BUF: usize = 16 * 1024;
/// Largest request body read (and dropped) to keep the connection open
/// after a 502; a larger one is answered at once and the connection closed.
const SKIPPED_BODY_LIMIT: u64 = 64 * 1024;

/// A JSON error response of the sidecar's own: code `upstream_unavailable`
/// for a 502 (the code the outbound uses when the upstream cannot be
/// reached, so a caller handles both alike), `zt_sidecar` for a refusal.
/// The answer to a HEAD request (`head`) has no body: only its length.
fn error_response(status: (u16, &str), msg: &str, close: bool, head: bool) -> Vec<u8> {
    let code = if status.0 == 502 {
        "upstream_unavailable"
    } else {
        "zt_sidecar"
    };
    let body = serde_json::json!({ "error": { "code": code, "message": msg } }).to_string();
    format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{}",
        status.0,
        status.1,
        body.len(),
        if close { "connection: close\r\n" } else { "" },
        if head { "" } else { &body },
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
                tracing::debug!(%remote, "no usable peer ID after the handshake; closing");
                return;
            };
            let _active = ActiveGuard::new(&stats);
            tracing::debug!(%remote, peer = %peer, "mTLS peer accepted");
            relay(tls, &cfg, &peer, &stats).await;
            tracing::debug!(%remote, "mTLS connection closed");
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
type AppRead = tokio::net::tcp::OwnedReadHalf;
type AppWrite = tokio::net::tcp::OwnedWriteHalf;

/// What the two halves of one connection know about the app's side.
struct AppSide {
    /// Requests forwarded and how far the app has answered them.
    responses: Responses,
    /// No app connection (none yet, or the app closed one between
    /// responses): the next request opens one.
    gone: bool,
}

/// What the two halves of one connection share.
struct Shared {
    app: std::sync::Mutex<AppSide>,
    writing: Writing,
}

/// Since when the response side has been writing one relayed read (up to
/// [`RELAY_BUF`] bytes) to the client (ms after `base`, 0 while it is not):
/// a client that takes longer than the head timeout to take one is not
/// waiting for the answer, it is gone or stalling.
struct Writing {
    base: tokio::time::Instant,
    since_ms: std::sync::atomic::AtomicU64,
}

impl Writing {
    fn new() -> Self {
        Self {
            base: tokio::time::Instant::now(),
            since_ms: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        // At least 1: 0 means "not writing".
        (self.base.elapsed().as_millis() as u64).max(1)
    }

    fn start(&self) {
        self.since_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn stop(&self) {
        self.since_ms.store(0, Ordering::Relaxed);
    }

    /// Writing the same relayed read for `limit` or longer.
    fn stalled(&self, limit: std::time::Duration) -> bool {
        let since = self.since_ms.load(Ordering::Relaxed);
        since != 0 && self.now_ms().saturating_sub(since) >= limit.as_millis() as u64
    }
}

/// One authorised connection, until either side is done: requests from the
/// client to the app ([`requests`]), the app's bytes back
/// ([`relay_responses`]), polled together in this task. The client's write
/// half is the response side's while an app connection is open, and the
/// request side's (for its own answers) while none is.
async fn relay(tls: TlsStream<TcpStream>, cfg: &InboundConfig, peer: &str, stats: &ListenerStats) {
    let (mut client_r, client_w) = tokio::io::split(tls);
    let client_w = tokio::sync::Mutex::new(client_w);
    let shared = Shared {
        app: std::sync::Mutex::new(AppSide {
            responses: Responses::default(),
            gone: true,
        }),
        writing: Writing::new(),
    };
    let (to_responses, app_conns) = mpsc::channel(1);
    let responses = relay_responses(app_conns, &client_w, &shared);
    tokio::pin!(responses);
    let end = {
        let requests = requests(
            &mut client_r,
            &client_w,
            to_responses,
            &shared,
            cfg,
            peer,
            stats,
        );
        tokio::pin!(requests);
        tokio::select! {
            () = &mut responses => None,
            end = &mut requests => Some(end),
        }
    };
    match end {
        // The app closed mid-answer, or with a request unanswered (told
        // with a 502 when nothing of the answer had gone out): the client's
        // connection is closed. What the client still sends is read and
        // dropped for a moment, so that closing with unread data (a reset)
        // does not destroy the last answer on its way.
        None => drain(&mut client_r).await,
        // The client asked to close after its last request: the app
        // answers it and closes. The app's connection is not half-closed
        // meanwhile (`app_w` lives until then): many servers, hyper's
        // among them, drop a response in progress when their reading side
        // sees the end. An app that does not close is not waited for once
        // the client has gone.
        Some(End::AnswerThenClose(app_w)) => {
            tokio::select! {
                () = &mut responses => {}
                () = until_closed(&mut client_r) => {}
            }
            drop(app_w);
        }
        // Nothing more is forwarded; the app's answers to what was are
        // relayed for a while (it may keep its connection open, so not
        // until it closes), then the client's unread bytes dropped as above.
        Some(End::StopForwarding) => {
            let _ = tokio::time::timeout(HEADER_READ_TIMEOUT, &mut responses).await;
            drain(&mut client_r).await;
        }
        // The client is gone, or the sidecar answered it itself: both
        // connections close now.
        Some(End::Now) => {}
    }
}

/// Reads and drops what the client sends until it closes.
async fn until_closed(client_r: &mut ClientRead) {
    let mut buf = [0u8; 4096];
    while matches!(client_r.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// How the request side ended.
enum End {
    /// The client asked to close after its last request.
    AnswerThenClose(Option<AppWrite>),
    /// The client sent what cannot be forwarded after earlier requests.
    StopForwarding,
    /// The client is gone, or was answered by the sidecar itself.
    Now,
}

/// The app's bytes to the client, one app connection after another: an
/// app that closes between responses is connected to again for the next
/// request; one that closes with a request unanswered gets the client a
/// 502 if nothing of the answer went out, and the client's connection
/// closes. Ends when the request side is done and the app idle.
async fn relay_responses(
    mut app_conns: mpsc::Receiver<AppRead>,
    client_w: &tokio::sync::Mutex<ClientWrite>,
    shared: &Shared,
) {
    let (app, writing) = (&shared.app, &shared.writing);
    let mut buf = vec![0u8; RELAY_BUF];
    while let Some(mut app_r) = app_conns.recv().await {
        let mut client_w = client_w.lock().await;
        let at_close = loop {
            let n = match app_r.read(&mut buf).await {
                Ok(n) if n > 0 => n,
                _ => {
                    let mut app = lock(app);
                    let at_close = app.responses.at_close();
                    app.gone = at_close == AtClose::Idle;
                    break at_close;
                }
            };
            lock(app).responses.saw(&buf[..n]);
            if !write_to_client(&mut client_w, &buf[..n], writing).await {
                tracing::debug!("writing the app's answer to the client failed; closing");
                return;
            }
        };
        match at_close {
            AtClose::Idle => {
                tracing::debug!(
                    "the app closed an idle connection; the next request opens another"
                );
            }
            AtClose::Dropped { head } => {
                tracing::warn!("the app closed its connection without answering a request");
                let answer = error_response((502, "Bad Gateway"), DROPPED, true, head);
                let _ = client_w.write_all(&answer).await;
                let _ = client_w.shutdown().await;
                return;
            }
            AtClose::Close => {
                tracing::debug!(
                    "the app closed mid-answer, after a body delimited by the close, or after saying close; closing the client's connection"
                );
                let _ = client_w.shutdown().await;
                return;
            }
        }
    }
    let _ = client_w.lock().await.shutdown().await;
}

/// Writes `data` to the client. A write that does not complete at once is
/// marked in `writing` from its first wait (a client that takes longer than
/// the head timeout to take it is stalled); one that does, the usual case,
/// costs no clock read.
async fn write_to_client(client_w: &mut ClientWrite, data: &[u8], writing: &Writing) -> bool {
    let mut write = std::pin::pin!(async {
        client_w.write_all(data).await?;
        client_w.flush().await
    });
    let mut waiting = false;
    let written = std::future::poll_fn(|cx| {
        let poll = write.as_mut().poll(cx);
        if poll.is_pending() && !waiting {
            waiting = true;
            writing.start();
        }
        poll
    })
    .await;
    if waiting {
        writing.stop();
    }
    written.is_ok()
}

fn lock(app: &std::sync::Mutex<AppSide>) -> std::sync::MutexGuard<'_, AppSide> {
    // Nothing panics while holding it; a poisoned lock still has valid data.
    app.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads request heads and bodies from the client and forwards them to the
/// app, connecting to it for the first request and again after the app
/// closed an idle connection.
async fn requests(
    client_r: &mut ClientRead,
    client_w: &tokio::sync::Mutex<ClientWrite>,
    to_responses: mpsc::Sender<AppRead>,
    shared: &Shared,
    cfg: &InboundConfig,
    peer: &str,
    stats: &ListenerStats,
) -> End {
    let (app, writing) = (&shared.app, &shared.writing);
    let mut buf = BytesMut::with_capacity(head::READ_BUF);
    let mut app_w: Option<AppWrite> = None;
    let mut timer = head::HeadTimer::new(HEADER_READ_TIMEOUT);
    loop {
        // The client's time for its next head counts from the end of the
        // last answer; while one is owed it is not idle, unless it takes
        // none of the answer for as long.
        let activity = || {
            let app = lock(app);
            if app.responses.busy() {
                if writing.stalled(HEADER_READ_TIMEOUT) {
                    head::Activity::Idle
                } else {
                    head::Activity::Busy
                }
            } else {
                app.responses
                    .idle_since()
                    .map_or(head::Activity::Idle, head::Activity::IdleSince)
            }
        };
        let head = match head::read(
            client_r,
            &mut buf,
            &cfg.peer_id_header,
            peer,
            &mut timer,
            &activity,
        )
        .await
        {
            Ok(Some(h)) => h,
            Ok(None) => {
                tracing::debug!("no further request from the client; closing");
                return End::Now;
            }
            Err(refusal) => {
                let status = refusal.status().0;
                tracing::warn!(%peer, status, reason = refusal.message(), "request refused");
                if !lock(app).gone {
                    // The app's answers to earlier requests may still be on
                    // their way: they are relayed, nothing more is forwarded.
                    return End::StopForwarding;
                }
                let answer = error_response(refusal.status(), refusal.message(), true, false);
                let mut client_w = client_w.lock().await;
                if client_w.write_all(&answer).await.is_ok() {
                    let _ = client_w.shutdown().await;
                    drop(client_w);
                    drain(client_r).await;
                }
                return End::Now;
            }
        };
        buf.advance(head.consumed);
        stats.requests.fetch_add(1, Ordering::Relaxed);
        // Counted as asked, unless there is no app connection: then one is
        // opened first. Deciding both under one lock means the response
        // side either sees this request pending when the app closes (and
        // answers it with a 502) or has marked the app gone before it.
        let connected = {
            let mut app = lock(app);
            if !app.gone {
                app.responses.asked(head.is_head);
            }
            !app.gone
        };
        if !connected {
            match TcpStream::connect(cfg.forward_to).await {
                Ok(conn) => {
                    let _ = conn.set_nodelay(true);
                    let (app_r, w) = conn.into_split();
                    {
                        let mut app = lock(app);
                        app.gone = false;
                        app.responses.asked(head.is_head);
                    }
                    if to_responses.send(app_r).await.is_err() {
                        tracing::debug!("the response side is gone; closing");
                        return End::Now;
                    }
                    app_w = Some(w);
                }
                Err(e) => {
                    tracing::warn!(app = %cfg.forward_to, error = %e, "app unreachable");
                    // A small body is read and dropped, and the connection
                    // stays usable unless the client asked to close it; a
                    // larger one is not read at all: the answer comes at once
                    // and the connection closes.
                    let small = match head.framing {
                        Framing::Empty => true,
                        Framing::Length(n) => n <= SKIPPED_BODY_LIMIT,
                        Framing::Chunked => false,
                    };
                    let skipped = small
                        && head::forward(
                            head.framing,
                            Vec::new(),
                            &mut buf,
                            client_r,
                            &mut tokio::io::sink(),
                        )
                        .await
                        .is_ok();
                    let close = head.close || !skipped;
                    let answer =
                        error_response((502, "Bad Gateway"), NOT_REACHABLE, close, head.is_head);
                    let mut client_w = client_w.lock().await;
                    if client_w.write_all(&answer).await.is_err() || close {
                        let _ = client_w.shutdown().await;
                        drop(client_w);
                        drain(client_r).await;
                        return End::Now;
                    }
                    continue;
                }
            }
        }
        let Some(w) = app_w.as_mut() else {
            return End::Now;
        };
        match head::forward(head.framing, head.out, &mut buf, client_r, w).await {
            Ok(()) if head.close => return End::AnswerThenClose(app_w),
            Ok(()) => {}
            Err(BodyError::Malformed(why)) => {
                tracing::warn!(%peer, reason = why, "request body refused; closing");
                return End::StopForwarding;
            }
            Err(BodyError::Io(e)) => {
                // The app closed mid-body (it may have answered early, a 413
                // say): what it sent is relayed, then the client's
                // connection closes.
                tracing::debug!(error = %e, "forwarding a request to the app failed");
                return End::StopForwarding;
            }
            Err(BodyError::Client(e)) => {
                tracing::debug!(error = %e, "the client went away mid-body");
                return End::Now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::MAX_HEAD_BYTES;
    use head::differential::in_pieces;
    use head::{Head, HeadTimer, Refusal};

    const HEADER: &str = "x-spiffe-peer-id";
    const PEER: &str = "spiffe://demo.local/ns/demo/sa/frontend";

    /// `head::read` on `data` handed out `step` bytes per read, and what it
    /// left in its buffer.
    async fn read_in_pieces(data: &[u8], step: usize) -> (Result<Option<Head>, Refusal>, BytesMut) {
        let mut buf = BytesMut::new();
        let timer = &mut HeadTimer::new(HEADER_READ_TIMEOUT);
        let r = head::read(
            &mut in_pieces(data, step),
            &mut buf,
            HEADER,
            PEER,
            timer,
            &|| head::Activity::Idle,
        )
        .await;
        (r, buf)
    }

    #[tokio::test]
    async fn a_head_sent_a_byte_at_a_time_is_read_whole() {
        let raw = b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        let (r, buf) = read_in_pieces(raw, 1).await;
        let h = r.unwrap().expect("a head");
        assert!(String::from_utf8_lossy(&h.out).starts_with("GET /slow HTTP/1.1\r\n"));
        // Reading stopped at the head's last byte: the next request is
        // still unread.
        assert_eq!(h.consumed, raw.len() - b"GET /next".len());
        assert_eq!(buf.len(), h.consumed);
    }

    #[tokio::test]
    async fn what_is_not_http_is_refused_at_once_and_a_head_without_end_at_the_limit() {
        let (r, _) = read_in_pieces(b"\x16\x03\x01\x00\x05", 5).await;
        assert!(matches!(r, Err(Refusal::Malformed(_))), "{r:?}");
        let endless = [
            b"GET / HTTP/1.1\r\nx: ".as_slice(),
            &[b'a'; MAX_HEAD_BYTES + 10],
        ]
        .concat();
        let (r, _) = read_in_pieces(&endless, 1000).await;
        assert!(matches!(r, Err(Refusal::TooLarge)), "{r:?}");
        let (r, _) = read_in_pieces(b"GET / HTTP/1.1\r\nHo", 3).await;
        assert!(matches!(r, Ok(None)), "the client closed mid-head: {r:?}");
    }

    #[test]
    fn a_write_without_progress_for_the_limit_is_a_stall() {
        let w = Writing::new();
        let limit = std::time::Duration::from_millis(50);
        assert!(!w.stalled(limit), "not writing");
        w.start();
        assert!(!w.stalled(limit));
        std::thread::sleep(limit + std::time::Duration::from_millis(20));
        assert!(w.stalled(limit));
        w.stop();
        assert!(!w.stalled(limit));
    }

    /// `head::read` from a client that sends nothing, with `timeout` and
    /// `activity`.
    async fn quiet_read(
        quiet: &mut tokio::io::DuplexStream,
        buf: &mut BytesMut,
        timeout: std::time::Duration,
        activity: &(dyn Fn() -> head::Activity + Sync),
    ) -> Result<Option<Head>, Refusal> {
        let timer = &mut HeadTimer::new(timeout);
        head::read(quiet, buf, HEADER, PEER, timer, activity).await
    }

    #[tokio::test]
    async fn an_idle_connection_and_a_flood_of_empty_lines_are_not_kept() {
        // Nothing sent at all: closed after the head timeout, as hyper did.
        let (mut quiet, _keep_open) = tokio::io::duplex(64);
        let mut buf = BytesMut::new();
        let started = tokio::time::Instant::now();
        let timeout = std::time::Duration::from_millis(200);
        let r = quiet_read(&mut quiet, &mut buf, timeout, &|| head::Activity::Idle).await;
        assert!(matches!(r, Ok(None)), "{r:?}");
        assert!(started.elapsed() >= timeout, "{:?}", started.elapsed());
        // Time the app spends answering does not count; the client's time
        // runs from the end of the last answer.
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let last_answer = started + 2 * timeout;
        let activity = || match calls.fetch_add(1, Ordering::SeqCst) {
            0 | 1 => head::Activity::Busy,
            _ => head::Activity::IdleSince(last_answer),
        };
        let r = quiet_read(&mut quiet, &mut buf, timeout, &activity).await;
        assert!(matches!(r, Ok(None)), "{r:?}");
        // Busy at 1×, 2× the timeout; idle since 2×, so up at 3×.
        let took = started.elapsed();
        assert!(took >= 3 * timeout && took < 5 * timeout, "{took:?}");
        // A few empty lines before a request are fine, a flood is not.
        let (r, _) = read_in_pieces(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n", 2).await;
        assert!(matches!(r, Ok(Some(_))), "{r:?}");
        let (r, _) = read_in_pieces(&b"\r\n".repeat(1000), 2).await;
        assert!(matches!(r, Err(Refusal::Malformed(_))), "{r:?}");
    }
}
