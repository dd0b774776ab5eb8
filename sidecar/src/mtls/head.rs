//! Request heads on the inbound hop, and the request bodies that follow them.
//!
//! A head is parsed with `httparse` (the parser hyper's HTTP/1 uses) and
//! written again for the app: the request line and the client's headers as
//! they came, minus every header that would pass as the verified identity
//! (the peer-ID header, also spelled with `_` for `-`) and the hop-by-hop
//! headers, plus the verified peer ID. Framing is decided here once, by the
//! rules of RFC 9112 §6, and anything ambiguous is refused rather than
//! guessed at: the app must see exactly the request boundaries the sidecar
//! saw, or a client could smuggle a second request past the header rewrite.
//!
//! | request                                              | answer                 |
//! |------------------------------------------------------|------------------------|
//! | not HTTP/1.x, bad request line or header             | 400                    |
//! | `Content-Length` not digits, or two different ones   | 400                    |
//! | `Content-Length` and `Transfer-Encoding` together    | 400                    |
//! | `Transfer-Encoding` in HTTP/1.0                      | 400                    |
//! | `Transfer-Encoding` other than one `chunked`         | 501                    |
//! | `CONNECT`                                            | 501                    |
//! | head over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`]      | 431                    |
//!
//! Chunked bodies are checked chunk by chunk on the way through; chunk
//! extensions and trailer fields are dropped (a trailer is a header the app
//! might read as one).

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::serve::MAX_HEAD_BYTES;

/// Reads from the client go into a buffer with at least this much room.
pub(super) const READ_BUF: usize = 8 * 1024;
/// Most header fields in one request head.
pub(super) const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions), and most trailer bytes.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// Hop-by-hop headers that are not forwarded (RFC 9110 §7.6.1). The
/// `Connection` header is written again (only `close`/`keep-alive`):
/// the client's connection and the app's are one, so what it says about
/// closing holds on both.
const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authenticate",
];

/// How the request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A complete head, rewritten for the app.
#[derive(Debug)]
pub(super) struct Head {
    /// Bytes of the input the head took.
    pub consumed: usize,
    /// The head as the app gets it.
    pub out: Vec<u8>,
    pub framing: Framing,
    /// The client will send nothing after this request (`Connection:
    /// close`, or HTTP/1.0 without keep-alive).
    pub close: bool,
}

/// Why a request is refused; each is answered with its status and the
/// connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    Malformed(&'static str),
    TooLarge,
    NotImplemented(&'static str),
}

impl Refusal {
    pub(super) fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::Malformed(_) => (400, "Bad Request"),
            Refusal::TooLarge => (431, "Request Header Fields Too Large"),
            Refusal::NotImplemented(_) => (501, "Not Implemented"),
        }
    }

    pub(super) fn message(self) -> &'static str {
        match self {
            Refusal::Malformed(m) | Refusal::NotImplemented(m) => m,
            Refusal::TooLarge => "the request head is too large",
        }
    }
}

/// Whether `name` would reach the app as the peer-ID header `peer_header`
/// (lower case): same letters ignoring case, `_` counting as `-` (CGI-style
/// servers map both to one variable).
fn is_peer_header(name: &str, peer_header: &str) -> bool {
    let norm = |b: u8| {
        if b == b'_' {
            b'-'
        } else {
            b.to_ascii_lowercase()
        }
    };
    name.len() == peer_header.len()
        && name
            .bytes()
            .zip(peer_header.bytes())
            .all(|(a, b)| norm(a) == norm(b))
}

/// Room for the next read: a read into a full `BytesMut` would get only a
/// few bytes.
pub(super) fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_BUF);
    }
}

/// Parses the head at the start of `buf`. `Ok(None)`: not complete yet.
pub(super) fn parse(buf: &[u8], peer_header: &str, peer: &str) -> Result<Option<Head>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD_BYTES => n,
        Ok(httparse::Status::Complete(_)) | Err(httparse::Error::TooManyHeaders) => {
            return Err(Refusal::TooLarge)
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD_BYTES => {
            return Err(Refusal::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Refusal::Malformed("the request head is not valid HTTP/1.1")),
    };
    let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
        return Err(Refusal::Malformed("the request head is not valid HTTP/1.1"));
    };
    if method == "CONNECT" {
        return Err(Refusal::NotImplemented("CONNECT is not forwarded"));
    }

    let (mut close, mut keep_alive) = (false, false);
    let mut length: Option<u64> = None;
    let mut chunked = 0usize;
    let mut encodings = 0usize;
    for h in req.headers.iter() {
        let value = std::str::from_utf8(h.value).map(str::trim);
        if h.name.eq_ignore_ascii_case("connection") {
            for token in value.unwrap_or("").split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive |= token.eq_ignore_ascii_case("keep-alive");
            }
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = value
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(Refusal::Malformed("content-length is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Refusal::Malformed("two different content-length values"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encodings += 1;
            if value.is_ok_and(|v| v.eq_ignore_ascii_case("chunked")) {
                chunked += 1;
            }
        }
    }
    let framing = match (length, encodings) {
        (_, 0) => length.map_or(Framing::Empty, Framing::Length),
        (Some(_), _) => {
            return Err(Refusal::Malformed(
                "content-length and transfer-encoding together",
            ))
        }
        (None, _) if version == 0 => {
            return Err(Refusal::Malformed(
                "transfer-encoding in an HTTP/1.0 request",
            ))
        }
        (None, 1) if chunked == 1 => Framing::Chunked,
        (None, _) => {
            return Err(Refusal::NotImplemented(
                "transfer-encoding other than chunked",
            ))
        }
    };
    let close = close || (version == 0 && !keep_alive);

    let mut out = Vec::with_capacity(consumed + peer_header.len() + peer.len() + 32);
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(if version == 0 {
        b" HTTP/1.0\r\n"
    } else {
        b" HTTP/1.1\r\n"
    });
    let mut length_written = false;
    for h in req.headers.iter() {
        if is_peer_header(h.name, peer_header)
            || HOP_BY_HOP.iter().any(|x| h.name.eq_ignore_ascii_case(x))
        {
            continue;
        }
        if h.name.eq_ignore_ascii_case("content-length") {
            if length_written {
                continue;
            }
            length_written = true;
        }
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    } else if version == 0 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(peer_header.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(peer.as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    Ok(Some(Head {
        consumed,
        out,
        framing,
        close,
    }))
}

/// What went wrong while forwarding a body.
#[derive(Debug)]
pub(super) enum BodyError {
    /// The client's body is not valid (bad chunk framing): nothing more can
    /// be read from this connection.
    Malformed(&'static str),
    /// Either connection failed or the client closed mid-body.
    Io(std::io::Error),
}

impl From<std::io::Error> for BodyError {
    fn from(e: std::io::Error) -> Self {
        BodyError::Io(e)
    }
}

/// Reads more of the client's bytes into `buf`; the client closing
/// mid-body is an error.
async fn fill<R: AsyncRead + Unpin>(rd: &mut R, buf: &mut BytesMut) -> Result<(), BodyError> {
    make_room(buf);
    if rd.read_buf(buf).await? == 0 {
        return Err(BodyError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(())
}

/// Writes `pending` (the head) and the body that follows it in `buf`/`rd`
/// to `wr`, leaving in `buf` whatever comes after the body (the next
/// pipelined request). The head and the body bytes already read go out in
/// one write.
pub(super) async fn forward<R, W>(
    framing: Framing,
    mut pending: Vec<u8>,
    buf: &mut BytesMut,
    rd: &mut R,
    wr: &mut W,
) -> Result<(), BodyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match framing {
        Framing::Empty => wr.write_all(&pending).await?,
        Framing::Length(mut left) => loop {
            let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            pending.extend_from_slice(&buf[..take]);
            buf.advance(take);
            left -= take as u64;
            wr.write_all(&pending).await?;
            pending.clear();
            if left == 0 {
                break;
            }
            fill(rd, buf).await?;
        },
        Framing::Chunked => loop {
            // A chunk-size line, written again without extensions.
            let size = loop {
                // httparse takes an empty line for a size of 0; hyper (and
                // RFC 9112 §7.1) want at least one hex digit.
                if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) {
                    return Err(BodyError::Malformed("a chunk size is not valid"));
                }
                match httparse::parse_chunk_size(buf) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        buf.advance(n);
                        break size;
                    }
                    Ok(httparse::Status::Partial) if buf.len() <= MAX_CHUNK_LINE => {
                        wr.write_all(&pending).await?;
                        pending.clear();
                        fill(rd, buf).await?;
                    }
                    _ => return Err(BodyError::Malformed("a chunk size is not valid")),
                }
            };
            if size == 0 {
                skip_trailers(buf, rd).await?;
                pending.extend_from_slice(b"0\r\n\r\n");
                wr.write_all(&pending).await?;
                break;
            }
            pending.extend_from_slice(format!("{size:x}\r\n").as_bytes());
            let mut left = size;
            loop {
                let take = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                pending.extend_from_slice(&buf[..take]);
                buf.advance(take);
                left -= take as u64;
                if left == 0 {
                    break;
                }
                wr.write_all(&pending).await?;
                pending.clear();
                fill(rd, buf).await?;
            }
            while buf.len() < 2 {
                wr.write_all(&pending).await?;
                pending.clear();
                fill(rd, buf).await?;
            }
            if &buf[..2] != b"\r\n" {
                return Err(BodyError::Malformed("a chunk does not end with CRLF"));
            }
            buf.advance(2);
            pending.extend_from_slice(b"\r\n");
        },
    }
    Ok(())
}

/// Reads past the trailer section after the last chunk (up to the empty
/// line), checking its fields the way a head's are checked and dropping
/// them.
async fn skip_trailers<R: AsyncRead + Unpin>(
    buf: &mut BytesMut,
    rd: &mut R,
) -> Result<(), BodyError> {
    const MAX_TRAILER_FIELDS: usize = 32;
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
        match httparse::parse_headers(buf, &mut fields) {
            // Lines must end with CRLF here (hyper refuses a bare LF in
            // the trailer section; httparse would take it).
            Ok(httparse::Status::Complete((n, _))) if crlf_only(&buf[..n]) => {
                buf.advance(n);
                return Ok(());
            }
            Ok(httparse::Status::Complete(_)) => {
                return Err(BodyError::Malformed("the trailer section is not valid"))
            }
            Ok(httparse::Status::Partial) if buf.len() <= MAX_TRAILERS => fill(rd, buf).await?,
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Err(BodyError::Malformed("the trailer section is too large"))
            }
            Err(_) => return Err(BodyError::Malformed("the trailer section is not valid")),
        }
    }
}

/// Every LF in `bytes` comes right after a CR.
fn crlf_only(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, b)| *b != b'\n' || (i > 0 && bytes[i - 1] == b'\r'))
}

/// The framing checked against hyper's own HTTP/1 server, for the unit
/// tests and the `inbound_head` fuzz target (`crate::fuzzing`).
pub(crate) mod differential {
    use bytes::{Buf, BytesMut};
    use tokio::io::AsyncReadExt;

    use super::{forward, parse};

    /// What an app behind hyper's HTTP/1 server saw: each request's method,
    /// target, body and values of the peer-ID header.
    pub(crate) type Seen = Vec<(String, String, Vec<u8>, Vec<String>)>;

    /// Serves `raw` (then EOF) with hyper's HTTP/1 server and returns the
    /// requests it handed to the app.
    pub(crate) async fn hyper_sees(raw: Vec<u8>, peer_header: &str) -> Seen {
        use http_body_util::BodyExt;
        use std::sync::{Arc, Mutex};
        use tokio::io::AsyncWriteExt;
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let record = seen.clone();
        let peer_header = peer_header.to_string();
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let record = record.clone();
            let peer_header = peer_header.clone();
            async move {
                let method = req.method().to_string();
                let target = req.uri().to_string();
                let peers = req
                    .headers()
                    .get_all(peer_header.as_str())
                    .iter()
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect();
                // A body hyper cannot read to its end is not a request the app got.
                if let Ok(body) = req.into_body().collect().await {
                    record
                        .lock()
                        .unwrap()
                        .push((method, target, body.to_bytes().to_vec(), peers));
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                    bytes::Bytes,
                >::new()))
            }
        });
        let conn = tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .half_close(true)
                .serve_connection(hyper_util::rt::TokioIo::new(server), svc),
        );
        client.write_all(&raw).await.unwrap();
        client.shutdown().await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            client.read_to_end(&mut sink),
        )
        .await;
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
        let seen = seen.lock().unwrap().clone();
        seen
    }

    /// What the inbound writes to the app for `raw`: heads rewritten, bodies
    /// forwarded, until the input ends or a request is refused.
    pub(crate) async fn rewritten(raw: &[u8], peer_header: &str, peer: &str) -> Vec<u8> {
        let mut buf = BytesMut::from(raw);
        let mut app = Vec::new();
        let mut rd = tokio::io::empty();
        while !buf.is_empty() {
            let Ok(Some(h)) = parse(&buf, peer_header, peer) else {
                break;
            };
            buf.advance(h.consumed);
            if forward(h.framing, h.out, &mut buf, &mut rd, &mut app)
                .await
                .is_err()
                || h.close
            {
                break;
            }
        }
        app
    }

    /// The smuggling property, against hyper's own server: through the
    /// inbound, an app sees a prefix of the requests hyper's server would have
    /// seen from the same bytes (same methods, targets and bodies; never a
    /// request hyper would not have seen, never a boundary moved), each with
    /// exactly one peer ID, ours.
    pub(crate) async fn agrees_with_hyper(raw: &[u8], peer_header: &str, peer: &str) {
        let direct = hyper_sees(raw.to_vec(), peer_header).await;
        let through = hyper_sees(rewritten(raw, peer_header, peer).await, peer_header).await;
        let shown = String::from_utf8_lossy(raw);
        assert!(
            through.len() <= direct.len(),
            "{shown:?}: the app saw {} requests through the sidecar, hyper alone {}",
            through.len(),
            direct.len()
        );
        for (i, (t, d)) in through.iter().zip(&direct).enumerate() {
            assert_eq!(
                (&t.0, &t.1, &t.2),
                (&d.0, &d.1, &d.2),
                "{shown:?}: request {i} differs"
            );
            assert_eq!(t.3, vec![peer.to_string()], "{shown:?}: request {i}");
        }
    }
}

#[cfg(test)]
mod tests;
