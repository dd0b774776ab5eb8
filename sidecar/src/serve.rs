//! Accept loops for plain HTTP/1.1 listeners (admin, proxy, outbound mTLS).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio_util::sync::CancellationToken;

/// How long a client may take to send its request headers.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted request head (request line + headers).
pub(crate) const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Reads and drops what the peer still sends, for at most a second and
/// 64 KiB: called after an answer that ends the connection, so that closing
/// a socket with unread data (which sends a reset) does not destroy the
/// answer before the peer reads it.
pub(crate) async fn drain<R: AsyncRead + Unpin>(rd: &mut R) {
    use tokio::io::AsyncReadExt;
    const LIMIT: usize = 64 * 1024;
    const WAIT: Duration = Duration::from_secs(1);
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(WAIT, async {
        let mut drained = 0;
        while drained < LIMIT {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
}

/// Serves one connection with `handler`.
pub async fn serve_conn<IO, H, F>(io: IO, handler: H)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, std::convert::Infallible>> + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(TokioIo::new(io), service_fn(handler));
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The next TCP connection (with `TCP_NODELAY`), or `None` once cancelled.
/// A failed accept (e.g. out of file descriptors) is logged and retried.
pub async fn next_tcp(
    listener: &TcpListener,
    cancel: &CancellationToken,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    return Some((stream, remote));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = cancel.cancelled() => return None,
        }
    }
}

/// Serves HTTP/1.1 on TCP connections until cancelled.
pub async fn serve_tcp<H, F>(listener: TcpListener, handler: H, cancel: CancellationToken)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, std::convert::Infallible>> + Send + 'static,
{
    while let Some((stream, _)) = next_tcp(&listener, &cancel).await {
        tokio::spawn(serve_conn(stream, handler.clone()));
    }
}

/// Accepts Unix-socket connections until cancelled.
pub(crate) async fn serve_unix<H, F>(listener: UnixListener, handler: H, cancel: CancellationToken)
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Full<Bytes>>, std::convert::Infallible>> + Send + 'static,
{
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => { tokio::spawn(serve_conn(stream, handler.clone())); }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = cancel.cancelled() => return,
        }
    }
}

/// Binds a Unix socket at `path`, replacing a stale one, with `mode` and
/// optional group so the app container can connect.
pub(crate) fn bind_unix(
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if group.is_some() {
        std::os::unix::fs::chown(path, None, group)?;
    }
    Ok(l)
}
