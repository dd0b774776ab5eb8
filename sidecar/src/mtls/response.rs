//! Where the app's responses end, on the inbound hop.
//!
//! The app's bytes are relayed to the client as they come; this scanner
//! only watches them go by, to know at every moment whether the app is
//! *between responses* (everything it sent answers a request, completely)
//! and whether anything of the current response has been sent yet. With
//! that, the inbound can tell an app that closed an idle connection (open
//! another one for the next request, the client notices nothing) from one
//! that dropped a request (answer it with a 502 if nothing of its answer
//! went out) or died mid-response (close the client's connection: nothing
//! else is honest).
//!
//! Framing follows RFC 9112 §6.3 for responses: no body for HEAD, 1xx,
//! 204 and 304; `Transfer-Encoding` ending in `chunked`; `Content-Length`;
//! otherwise until the app closes. Whatever the scanner cannot follow (a
//! head that is not HTTP, conflicting lengths, `101 Switching Protocols`,
//! bytes nobody asked for) makes it give up for the rest of the connection:
//! the bytes are still relayed as they come, and the app's close then
//! closes the client's connection, which is never wrong.

use std::collections::VecDeque;

use super::head::{connection_tokens, content_length, trim_ows};
use crate::serve::MAX_HEAD_BYTES;

/// Most header fields in one response head followed (more: not followed,
/// see the module docs).
const MAX_HEADERS: usize = 64;
/// Longest chunk-size line and trailer section followed.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Where the scanner is in the app's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// At the start of a response head (or inside one, in `line`).
    #[default]
    Head,
    /// This many body bytes are left.
    Length(u64),
    /// In a chunked body.
    Chunk(Chunk),
    /// The body ends when the app closes.
    UntilClose,
    /// Not followed any more: relay until the app closes.
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// In a chunk-size line (kept in `line`).
    Size,
    /// This many chunk-data bytes are left.
    Data(u64),
    /// The CRLF after chunk data (bytes of it seen).
    DataEnd(u8),
    /// In the trailer section (the current line kept in `line`).
    Trailers,
}

/// What the app's connection is doing, as far as its bytes show.
#[derive(Debug, Default)]
pub(crate) struct Responses {
    /// One entry per request forwarded and not yet completely answered:
    /// whether it was a HEAD request (its response has no body).
    pending: VecDeque<bool>,
    state: State,
    /// A response head (or chunk line, or trailer line) split across reads.
    line: Vec<u8>,
    /// Bytes of the current response already seen (relayed).
    started: bool,
    /// When the last answer owed was completed (nothing owed since).
    idle_since: Option<tokio::time::Instant>,
    /// An answer said the app closes after it (`Connection: close`, or
    /// HTTP/1.0 without keep-alive): its close ends the client's connection
    /// too, as the client was told.
    closing: bool,
}

/// What the app's close means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AtClose {
    /// Between responses, nothing asked and unanswered: the connection can
    /// be replaced by a new one for the next request.
    Idle,
    /// A request is unanswered and nothing of its answer was sent: the
    /// client can be told so (502) before its connection closes (`head`:
    /// the request was a HEAD, so the answer has no body).
    Dropped { head: bool },
    /// Mid-response, a close-delimited body, or a stream the scanner lost:
    /// the client's connection closes.
    Close,
}

impl Responses {
    /// A request was forwarded (`head`: it is a HEAD request).
    pub(crate) fn asked(&mut self, head: bool) {
        self.pending.push_back(head);
    }

    /// Watches `data`, the next bytes from the app (relayed unchanged).
    pub(crate) fn saw(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = match self.state {
                State::Lost | State::UntilClose => return,
                State::Head => self.head(data),
                State::Length(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    let left = left - take as u64;
                    if left == 0 {
                        self.done();
                    } else {
                        self.state = State::Length(left);
                    }
                    take
                }
                State::Chunk(c) => self.chunk(c, data),
            };
            data = &data[n..];
        }
    }

    /// Requests not yet completely answered.
    #[cfg(test)]
    fn unanswered(&self) -> usize {
        self.pending.len()
    }

    /// Requests are waiting for (the rest of) their answers, as far as the
    /// scanner can tell (once it gave up, it cannot).
    pub(crate) fn busy(&self) -> bool {
        !self.pending.is_empty() && self.state != State::Lost
    }

    /// When the app finished answering everything asked so far (`None`:
    /// nothing answered yet, or it still owes answers).
    pub(crate) fn idle_since(&self) -> Option<tokio::time::Instant> {
        self.idle_since.filter(|_| self.pending.is_empty())
    }

    /// What the app closing its connection now means.
    pub(crate) fn at_close(&self) -> AtClose {
        match self.state {
            State::Head if !self.started && self.line.is_empty() && !self.closing => {
                match self.pending.front() {
                    None => AtClose::Idle,
                    Some(&head) => AtClose::Dropped { head },
                }
            }
            _ => AtClose::Close,
        }
    }

    /// The current response is complete.
    fn done(&mut self) {
        self.pending.pop_front();
        if self.pending.is_empty() {
            self.idle_since = Some(tokio::time::Instant::now());
        }
        self.state = State::Head;
        self.started = false;
    }

    fn lose(&mut self, why: &'static str) -> usize {
        tracing::debug!(reason = why, "not following the app's responses any more");
        self.state = State::Lost;
        self.line.clear();
        0
    }

    /// Bytes of `data` taken by the head; the state after it.
    fn head(&mut self, data: &[u8]) -> usize {
        let Some(&is_head) = self.pending.front() else {
            return self.lose("bytes from the app that answer no request");
        };
        self.started = true;
        // Usually the whole head is in one read: parse it in place.
        let (parsed, from_line) = if self.line.is_empty() {
            (parse_head(data, is_head), 0)
        } else {
            let before = self.line.len();
            let take = data
                .len()
                .min(MAX_HEAD_BYTES + 1 - before.min(MAX_HEAD_BYTES));
            self.line.extend_from_slice(&data[..take]);
            (parse_head(&self.line, is_head), before)
        };
        match parsed {
            Parsed::Partial => {
                if self.line.is_empty() {
                    if data.len() > MAX_HEAD_BYTES {
                        return self.lose("a response head over the limit");
                    }
                    self.line.extend_from_slice(data);
                } else if self.line.len() > MAX_HEAD_BYTES {
                    return self.lose("a response head over the limit");
                }
                data.len()
            }
            Parsed::Invalid(why) => self.lose(why),
            Parsed::Complete { len, body, close } => {
                self.line.clear();
                self.closing |= close;
                match body {
                    Body::Interim => {
                        // 1xx: the final response is still to come.
                        self.started = false;
                    }
                    Body::None => self.done(),
                    Body::Length(0) => self.done(),
                    Body::Length(n) => self.state = State::Length(n),
                    Body::Chunked => self.state = State::Chunk(Chunk::Size),
                    Body::UntilClose => self.state = State::UntilClose,
                    Body::Switch => {
                        self.lose("the app switched protocols");
                    }
                }
                len - from_line
            }
        }
    }

    /// Bytes of `data` taken in chunked state `c`.
    fn chunk(&mut self, c: Chunk, data: &[u8]) -> usize {
        match c {
            Chunk::Data(left) => {
                let take = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                let left = left - take as u64;
                self.state = State::Chunk(if left == 0 {
                    Chunk::DataEnd(0)
                } else {
                    Chunk::Data(left)
                });
                take
            }
            Chunk::DataEnd(seen) => {
                let want: &[u8] = &b"\r\n"[usize::from(seen)..];
                let take = want.len().min(data.len());
                if data[..take] != want[..take] {
                    return self.lose("chunk data not followed by CRLF");
                }
                let seen = seen + take as u8;
                self.state = State::Chunk(if seen == 2 {
                    Chunk::Size
                } else {
                    Chunk::DataEnd(seen)
                });
                take
            }
            Chunk::Size | Chunk::Trailers => {
                let Some(lf) = data.iter().position(|&b| b == b'\n') else {
                    self.line.extend_from_slice(data);
                    if self.line.len() > MAX_CHUNK_LINE {
                        return self.lose("a chunk line over the limit");
                    }
                    return data.len();
                };
                self.line.extend_from_slice(&data[..=lf]);
                let line = std::mem::take(&mut self.line);
                if c == Chunk::Trailers {
                    if line == b"\r\n" || line == b"\n" {
                        self.done();
                    }
                    // Another trailer line: wait for the empty one.
                    return lf + 1;
                }
                match chunk_size(&line) {
                    Some(0) => self.state = State::Chunk(Chunk::Trailers),
                    Some(n) => self.state = State::Chunk(Chunk::Data(n)),
                    None => return self.lose("a chunk size that is not valid"),
                }
                lf + 1
            }
        }
    }
}

/// The size on a chunk-size line (`1a;ext=x\r\n`).
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    let hex = std::str::from_utf8(&line[..digits]).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

#[derive(Debug, PartialEq, Eq)]
enum Body {
    /// A 1xx other than 101: another head follows.
    Interim,
    /// 101: the connection is no longer HTTP.
    Switch,
    None,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    Partial,
    Invalid(&'static str),
    /// `close`: a final answer after which the app closes.
    Complete {
        len: usize,
        body: Body,
        close: bool,
    },
}

/// Parses the response head at the start of `buf` (the answer to a HEAD
/// request if `to_head`) and decides how its body is framed.
fn parse_head(buf: &[u8], to_head: bool) -> Parsed {
    // Uninitialised, as for request heads: filling 64 empty headers on
    // every response cost more than parsing a small head (half of this
    // function's time in a profile under load).
    let mut headers =
        [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut headers,
    ) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Invalid("a response head that is not valid HTTP/1.1"),
    };
    let (Some(code), Some(version)) = (resp.code, resp.version) else {
        return Parsed::Invalid("a response without a status");
    };
    // The fields that frame the body and speak for the connection, in one
    // pass.
    let (mut close, mut keep_alive) = (false, false);
    let mut length: Option<u64> = None;
    let mut length_invalid: Option<&'static str> = None;
    let mut encoding: Option<&[u8]> = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match (content_length(h.value), length) {
                (None, _) => {
                    length_invalid.get_or_insert("a content-length that is not a number");
                }
                (Some(n), Some(l)) if n != l => {
                    length_invalid.get_or_insert("two different content-length values");
                }
                (Some(n), _) => length = Some(n),
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            let (c, k) = connection_tokens(h.value);
            close |= c;
            keep_alive |= k;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // The last coding of the last field is what counts.
            encoding = Some(h.value);
        }
    }
    // Only a final answer speaks for the connection.
    let close = code >= 200 && (close || (version == 0 && !keep_alive));
    let body = match code {
        101 => Body::Switch,
        100..=199 => Body::Interim,
        204 | 304 => Body::None,
        _ if to_head => Body::None,
        _ => {
            if let Some(why) = length_invalid {
                return Parsed::Invalid(why);
            }
            match (encoding, length) {
                (Some(te), _) => {
                    let last = te
                        .rsplit(|&b| b == b',')
                        .next()
                        .map(trim_ows)
                        .unwrap_or(&[]);
                    if last.eq_ignore_ascii_case(b"chunked") {
                        Body::Chunked
                    } else {
                        Body::UntilClose
                    }
                }
                (None, Some(n)) => Body::Length(n),
                (None, None) => Body::UntilClose,
            }
        }
    };
    Parsed::Complete { len, body, close }
}

#[cfg(test)]
mod tests;
