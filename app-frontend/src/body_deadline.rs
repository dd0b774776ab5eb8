//! A deadline for request bodies, and an end to every connection after
//! its answer.
//!
//! actix-web bounds the time a client takes to send the first request head
//! on a connection, and the time an idle kept-alive connection stays open,
//! but not the time a client takes to send a body, nor the head of a later
//! request on the same connection once its first byte has come, nor the
//! rest of a chunked body it drains after answering. A client announcing a
//! form and sending one byte a second would keep its connection (and a
//! pending form extractor) for hours, and many such clients would exhaust
//! the frontend's connections. So:
//!
//! - [`limit`] wraps every request's body so that reading it fails with
//!   [`std::io::ErrorKind::TimedOut`] once the limit has passed since the
//!   head arrived; the form extractor's error handler turns that into a 408
//!   page. A body that has arrived is never refused: the deadline is only
//!   looked at when the next piece is not there yet.
//! - The body is [`Kept`] with the response until the response has been
//!   sent: a body not read to its end (late, or not wanted by the route)
//!   then makes actix answer with `Connection: close` and close after a
//!   short linger, instead of reading a chunked body on, with no time limit,
//!   after the answer.
//! - The server does not keep connections alive
//!   ([`server`](crate::server)): a connection serves the requests that
//!   arrived with its first, then closes, so no later head can be started
//!   and left unfinished.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest};
use actix_web::error::PayloadError;
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use futures_core::Stream;
use tokio::time::{Instant, Sleep};

/// The error inside the `TimedOut` I/O error a late body gets (never shown
/// to the user).
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
struct TooSlow;

/// actix-web's boxed body stream (the type `Payload::from` takes).
type Boxed = Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>;

/// Makes reading `req`'s body fail once `limit` has passed from now, and
/// returns the body's keeper, to be moved into the response with
/// [`Kept::new`]. Requests without a body are left alone.
pub fn limit(req: &mut ServiceRequest, limit: Duration) -> Option<Rc<RefCell<Payload>>> {
    let inner = req.take_payload();
    if matches!(inner, Payload::None) {
        return None;
    }
    let inner = Rc::new(RefCell::new(inner));
    let body = Deadline {
        inner: inner.clone(),
        due: Instant::now() + limit,
        sleep: None,
    };
    req.set_payload(Payload::from(Box::pin(body) as Boxed));
    Some(inner)
}

/// A response body that keeps the request's body until it has been sent
/// (see the module's documentation).
pub struct Kept {
    body: BoxBody,
    _request_body: Option<Rc<RefCell<Payload>>>,
}

impl Kept {
    /// `body`, keeping `request_body` (from [`limit`]) as long as it lives.
    pub fn new(
        body: impl MessageBody + 'static,
        request_body: Option<Rc<RefCell<Payload>>>,
    ) -> Self {
        Self {
            body: body.boxed(),
            _request_body: request_body,
        }
    }
}

impl MessageBody for Kept {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

/// Whether `e` is the error [`limit`] gives a late body.
pub fn is_too_slow(e: &PayloadError) -> bool {
    matches!(e, PayloadError::Io(io) if io.get_ref().is_some_and(|inner| inner.is::<TooSlow>()))
}

struct Deadline {
    inner: Rc<RefCell<Payload>>,
    due: Instant,
    /// Armed the first time the body is waited for.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Poll::Ready(item) = Pin::new(&mut *this.inner.borrow_mut()).poll_next(cx) {
            return Poll::Ready(item);
        }
        let due = this.due;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                TooSlow,
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The next item of `s`, or `None` if it is not ready.
    fn poll_once(s: &mut Deadline) -> Option<Option<Result<Bytes, PayloadError>>> {
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        match Pin::new(s).poll_next(&mut cx) {
            Poll::Ready(item) => Some(item),
            Poll::Pending => None,
        }
    }

    fn deadline(inner: Payload, limit: Duration) -> Deadline {
        Deadline {
            inner: Rc::new(RefCell::new(inner)),
            due: Instant::now() + limit,
            sleep: None,
        }
    }

    #[tokio::test]
    async fn a_body_that_has_arrived_is_read_even_after_the_deadline() {
        let limit = Duration::from_millis(20);
        let mut d = deadline(Payload::from(Bytes::from_static(b"a=1")), limit);
        tokio::time::sleep(3 * limit).await;
        let first = poll_once(&mut d).expect("ready");
        assert_eq!(first.unwrap().unwrap(), Bytes::from_static(b"a=1"));
        assert!(matches!(poll_once(&mut d), Some(None)), "then the end");
    }

    #[tokio::test]
    async fn a_body_still_missing_at_the_deadline_is_an_error_that_says_so() {
        let limit = Duration::from_millis(200);
        let pending = Box::pin(Waiting) as Boxed;
        let started = Instant::now();
        let mut d = deadline(Payload::from(pending), limit);
        assert!(poll_once(&mut d).is_none(), "waiting");
        tokio::time::sleep_until(started + limit).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        match poll_once(&mut d) {
            Some(Some(Err(e))) => assert!(is_too_slow(&e), "{e}"),
            other => panic!("expected the timeout, got {other:?}"),
        }
        // Other I/O errors are not mistaken for it.
        let other = PayloadError::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the request body did not arrive in time",
        ));
        assert!(!is_too_slow(&other));
        assert!(!is_too_slow(&PayloadError::Incomplete(None)));
    }

    /// A body whose next piece never comes.
    struct Waiting;

    impl Stream for Waiting {
        type Item = Result<Bytes, PayloadError>;

        fn poll_next(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Pending
        }
    }
}
