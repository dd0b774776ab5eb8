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
//! | more than 8 empty lines before the request line     | 400                    |
//! | head over [`MAX_HEAD_BYTES`] or [`MAX_HEADERS`]      | 431                    |
//!
//! Values are trimmed of spaces and tabs only (a Unicode space is part of
//! the value), and the framing header is written as it was understood
//! (`content-length: <n>` or `transfer-encoding: chunked`), never in the
//! client's spelling.
//!
//! Chunked bodies are checked chunk by chunk on the way through; chunk
//! extensions and trailer fields are dropped (a trailer is a header the app
//! might read as one).

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

#[cfg(doc)]
use crate::serve::HEADER_READ_TIMEOUT;
use crate::serve::MAX_HEAD_BYTES;

/// Reads from the client go into a buffer with at least this much room.
pub(crate) const READ_BUF: usize = 8 * 1024;
/// Most header fields in one request head.
pub(crate) const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions), and most trailer bytes.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;

/// Hop-by-hop headers that are not forwarded (RFC 9110 §7.6.1). The
/// `Connection` header is written again (only `close`/`keep-alive`): the
/// client's connection is carried to one app connection at a time, so what
/// it says about closing holds on both.
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
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A complete head, rewritten for the app.
#[derive(Debug)]
pub(crate) struct Head {
    /// Bytes of the input the head took.
    pub consumed: usize,
    /// The head as the app gets it.
    pub out: Vec<u8>,
    pub framing: Framing,
    /// The client will send nothing after this request (`Connection:
    /// close`, or HTTP/1.0 without keep-alive).
    pub close: bool,
    /// A HEAD request (its answer has no body).
    pub is_head: bool,
}

/// Why a request is refused. The inbound answers with the status when
/// nothing has gone to the app on the connection yet, and closes the
/// connection either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Malformed(&'static str),
    TooLarge,
    NotImplemented(&'static str),
}

impl Refusal {
    pub(crate) fn status(self) -> (u16, &'static str) {
        match self {
            Refusal::Malformed(_) => (400, "Bad Request"),
            Refusal::TooLarge => (431, "Request Header Fields Too Large"),
            Refusal::NotImplemented(_) => (501, "Not Implemented"),
        }
    }

    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::Malformed(m) | Refusal::NotImplemented(m) => m,
            Refusal::TooLarge => "the request head is too large",
        }
    }
}

/// `v` without the optional whitespace around it: only the spaces and tabs
/// HTTP allows, not Unicode spaces (`5\u{a0}`) an app may read as part of
/// the value.
pub(crate) fn trim_ows(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| matches!(b, b' ' | b'\t');
    let start = v.iter().position(|b| !ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ows(b)).map_or(start, |e| e + 1);
    &v[start..end]
}

/// Whether a `Connection` value has the `close` and the `keep-alive` token
/// (a value that is not UTF-8 has neither).
pub(crate) fn connection_tokens(v: &[u8]) -> (bool, bool) {
    if std::str::from_utf8(v).is_err() {
        return (false, false);
    }
    v.split(|&b| b == b',')
        .map(trim_ows)
        .fold((false, false), |(close, keep_alive), t| {
            (
                close || t.eq_ignore_ascii_case(b"close"),
                keep_alive || t.eq_ignore_ascii_case(b"keep-alive"),
            )
        })
}

/// A `Content-Length` value: plain digits (around them only spaces and
/// tabs) that fit in a u64.
pub(crate) fn content_length(v: &[u8]) -> Option<u64> {
    let v = trim_ows(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
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
pub(crate) fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(READ_BUF);
    }
}

/// Parses the head at the start of `buf`. `Ok(None)`: not complete yet.
pub(crate) fn parse(buf: &[u8], peer_header: &str, peer: &str) -> Result<Option<Head>, Refusal> {
    // Uninitialised: filling 128 empty headers on every parse costs more
    // than parsing a small head.
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let consumed = match req.parse_with_uninit_headers(buf, &mut headers) {
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
        if h.name.eq_ignore_ascii_case("connection") {
            let (c, k) = connection_tokens(h.value);
            close |= c;
            keep_alive |= k;
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = content_length(h.value)
                .ok_or(Refusal::Malformed("content-length is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Refusal::Malformed("two different content-length values"));
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encodings += 1;
            if trim_ows(h.value).eq_ignore_ascii_case(b"chunked") {
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
    // The framing header is written as it was understood, once, so the
    // app cannot read a different one from the client's spelling.
    match framing {
        Framing::Empty => {}
        Framing::Length(n) => out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    for h in req.headers.iter() {
        if is_peer_header(h.name, peer_header)
            || HOP_BY_HOP.iter().any(|x| h.name.eq_ignore_ascii_case(x))
            || h.name.eq_ignore_ascii_case("content-length")
            || h.name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
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
        is_head: method == "HEAD",
    }))
}

/// Most empty lines accepted before a request line (RFC 9112 §2.2 asks
/// servers to ignore at least one).
const MAX_EMPTY_LINES: usize = 8;

/// The client's time for a request head: [`HEADER_READ_TIMEOUT`] (or
/// another), counted from the moment the connection is ready for a request,
/// so an idle keep-alive connection is closed after that long too, as
/// hyper's server did. One timer per connection, moved forward only when
/// it is more than [`HeadTimer::SLACK`] behind (so a head gets between the
/// timeout less the slack and the timeout), so that most requests do not
/// touch the runtime's timer wheel.
pub(crate) struct HeadTimer {
    timeout: std::time::Duration,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl HeadTimer {
    const SLACK: std::time::Duration = std::time::Duration::from_secs(1);

    pub(crate) fn new(timeout: std::time::Duration) -> Self {
        Self {
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
        }
    }

    /// The time starts again now, whatever it was.
    fn restart(&mut self) {
        let due = tokio::time::Instant::now() + self.timeout;
        self.sleep.as_mut().reset(due);
    }

    /// A new head starts now.
    fn start(&mut self) {
        let due = tokio::time::Instant::now() + self.timeout;
        if due > self.sleep.deadline() + Self::SLACK.min(self.timeout / 4) {
            self.sleep.as_mut().reset(due);
        }
    }
}

/// What the connection is doing when the client's time for its next head
/// is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activity {
    /// The app is still answering, and the client taking the answer: the
    /// client is not idle.
    Busy,
    /// Idle since this moment (the last answer's end): the time counts from
    /// there.
    IdleSince(tokio::time::Instant),
    /// Idle, as far as is known: the time is up.
    Idle,
}

/// The next request head from `rd` (with what is already in `buf`).
/// `Ok(None)`: the client closed, or sent no complete head in time
/// ([`HeadTimer`]) — counted from the end of the last answer, as
/// `activity()` tells.
pub(crate) async fn read<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    peer_header: &str,
    peer: &str,
    timer: &mut HeadTimer,
    activity: &(dyn Fn() -> Activity + Sync),
) -> Result<Option<Head>, Refusal> {
    timer.start();
    let mut empty_lines = 0;
    // A head can only become complete with a new line feed: bytes that
    // bring none are not parsed again (a head sent a byte at a time costs
    // one parse per line, not one per byte). The first bytes are, so that
    // what is not HTTP at all is refused at once.
    let mut parse_again = !buf.is_empty();
    loop {
        // Empty lines before the request line are dropped here, not by
        // httparse on every parse again.
        while let Some(n) = [&b"\r\n"[..], b"\n"]
            .iter()
            .find(|e| buf.starts_with(e))
            .map(|e| e.len())
        {
            buf.advance(n);
            empty_lines += 1;
            if empty_lines > MAX_EMPTY_LINES {
                return Err(Refusal::Malformed(
                    "too many empty lines before the request",
                ));
            }
        }
        if parse_again && !buf.is_empty() {
            if let Some(h) = parse(buf, peer_header, peer)? {
                return Ok(Some(h));
            }
        } else if buf.len() > MAX_HEAD_BYTES {
            return Err(Refusal::TooLarge);
        }
        let before = buf.len();
        make_room(buf);
        tokio::select! {
            biased;
            read = rd.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Ok(None),
                Ok(_) => parse_again = before == 0 || buf[before..].contains(&b'\n'),
            },
            () = timer.sleep.as_mut() => {
                // The client waiting for (and taking) an answer is not
                // idle: its time counts from the end of the last answer.
                match activity() {
                    Activity::Busy => {
                        timer.restart();
                        continue;
                    }
                    Activity::IdleSince(t) if t + timer.timeout > tokio::time::Instant::now() => {
                        timer.sleep.as_mut().reset(t + timer.timeout);
                        continue;
                    }
                    _ => {}
                }
                tracing::debug!("no complete request head in time; closing");
                return Ok(None);
            }
        }
    }
}

/// What went wrong while forwarding a body.
#[derive(Debug)]
pub(crate) enum BodyError {
    /// The client's body is not valid (bad chunk framing): nothing more can
    /// be read from this connection.
    Malformed(&'static str),
    /// Writing to the app failed.
    Io(std::io::Error),
    /// The client closed mid-body, or reading from it failed.
    Client(std::io::Error),
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
    match rd.read_buf(buf).await {
        Ok(0) => Err(BodyError::Client(std::io::ErrorKind::UnexpectedEof.into())),
        Ok(_) => Ok(()),
        Err(e) => Err(BodyError::Client(e)),
    }
}

/// Reads until the new bytes bring a line feed (a line can only end with
/// one, so nothing is parsed again before) or `buf` is over `limit`.
async fn fill_line<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
    limit: usize,
) -> Result<(), BodyError> {
    loop {
        let before = buf.len();
        fill(rd, buf).await?;
        if buf[before..].contains(&b'\n') || buf.len() > limit {
            return Ok(());
        }
    }
}

/// Writes `pending` (the head) and the body that follows it in `buf`/`rd`
/// to `wr`, leaving in `buf` whatever comes after the body (the next
/// pipelined request). The head and the body bytes already read go out in
/// one write.
pub(crate) async fn forward<R, W>(
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
                        fill_line(rd, buf, MAX_CHUNK_LINE).await?;
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
            Ok(httparse::Status::Partial) if buf.len() <= MAX_TRAILERS => {
                fill_line(rd, buf, MAX_TRAILERS).await?
            }
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
    use tokio::io::{AsyncRead, AsyncReadExt};

    use super::{forward, is_peer_header, read, Activity};

    /// What an app behind hyper's HTTP/1 server saw: each request's method,
    /// target, body and the values of every header that spells the peer-ID
    /// header (`_` for `-` included).
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
                    .iter()
                    .filter(|(name, _)| is_peer_header(name.as_str(), &peer_header))
                    .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned())
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

    /// `data` as a reader that hands out at most `step` bytes per read.
    pub(crate) fn in_pieces(data: &[u8], step: usize) -> impl AsyncRead + Unpin + '_ {
        let mut reads: std::pin::Pin<Box<dyn AsyncRead + Unpin + '_>> =
            Box::pin(tokio::io::empty());
        for piece in data.chunks(step.max(1)).rev() {
            reads = Box::pin(AsyncReadExt::chain(piece, reads));
        }
        reads
    }

    /// What the inbound writes to the app for `raw`, read `step` bytes at
    /// a time: heads read and rewritten, bodies forwarded, until the input
    /// ends or a request is refused. Also how many requests it forwarded
    /// whole.
    pub(crate) async fn rewritten(
        raw: &[u8],
        step: usize,
        peer_header: &str,
        peer: &str,
    ) -> (Vec<u8>, usize) {
        let mut rd = in_pieces(raw, step);
        let mut buf = BytesMut::new();
        let (mut app, mut forwarded) = (Vec::new(), 0);
        let mut timer = super::HeadTimer::new(crate::serve::HEADER_READ_TIMEOUT);
        while let Ok(Some(h)) = read(&mut rd, &mut buf, peer_header, peer, &mut timer, &|| {
            Activity::Idle
        })
        .await
        {
            buf.advance(h.consumed);
            if forward(h.framing, h.out, &mut buf, &mut rd, &mut app)
                .await
                .is_err()
            {
                break;
            }
            forwarded += 1;
            if h.close {
                break;
            }
        }
        (app, forwarded)
    }

    /// The smuggling property, against hyper's own server, with `raw` read
    /// `step` bytes at a time: every request the inbound forwards is one
    /// hyper's server, as the app, accepts; they are a prefix of the
    /// requests hyper's server would have seen in `raw` itself (same
    /// methods, targets and bodies: never a request hyper would not have
    /// seen, never a boundary moved); each has exactly one peer ID, ours.
    /// Returns how many requests were forwarded.
    pub(crate) async fn agrees_with_hyper(
        raw: &[u8],
        step: usize,
        peer_header: &str,
        peer: &str,
    ) -> usize {
        let direct = hyper_sees(raw.to_vec(), peer_header).await;
        let (out, forwarded) = rewritten(raw, step, peer_header, peer).await;
        let through = hyper_sees(out, peer_header).await;
        let shown = String::from_utf8_lossy(raw);
        assert_eq!(
            through.len(),
            forwarded,
            "{shown:?}: the sidecar forwarded {forwarded} requests, hyper as the app accepted {}",
            through.len()
        );
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
        forwarded
    }
}

#[cfg(test)]
mod tests;
