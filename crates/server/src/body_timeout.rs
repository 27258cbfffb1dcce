//! `--http-body-timeout`: a request body must arrive within the timeout of the moment it first
//! stalled. Unlike `tower_http::timeout::RequestBodyTimeout`, which arms a timer on the first
//! read of every body, the timer is armed only when a read finds no data ready: the bodies of
//! API calls arrive with their headers, so most requests never touch the timer wheel (ADR 28:
//! arming, polling and cancelling the timer cost ~800 instructions per request).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::HttpBody;
use axum::http::Request;
use hyper::body::{Frame, SizeHint};
use tokio::time::Sleep;
use tower::{Layer, Service};

/// The body did not arrive in time; handlers answer 400 with this text.
#[derive(Debug, thiserror::Error)]
#[error("the request body stalled for longer than {0:?} (--http-body-timeout)")]
pub struct BodyTimedOut(Duration);

/// Wraps every request body in a [`StallTimeoutBody`].
#[derive(Clone, Copy, Debug)]
pub struct BodyTimeoutLayer(pub Duration);

impl<S> Layer<S> for BodyTimeoutLayer {
    type Service = BodyTimeout<S>;

    fn layer(&self, inner: S) -> BodyTimeout<S> {
        BodyTimeout { inner, timeout: self.0 }
    }
}

/// See [`BodyTimeoutLayer`].
#[derive(Clone, Copy, Debug)]
pub struct BodyTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B> Service<Request<B>> for BodyTimeout<S>
where
    S: Service<Request<StallTimeoutBody<B>>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> S::Future {
        let timeout = self.timeout;
        self.inner.call(req.map(|inner| StallTimeoutBody { inner, timeout, stalled: None }))
    }
}

/// A request body with a deadline that starts when a read first finds nothing ready, and is
/// kept from then on (it is not moved by later progress: a client trickling bytes is cut off
/// too).
#[derive(Debug)]
pub struct StallTimeoutBody<B> {
    inner: B,
    timeout: Duration,
    /// Armed at the first stall (boxed: only stalled bodies pay for it).
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<B> HttpBody for StallTimeoutBody<B>
where
    B: HttpBody + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, axum::BoxError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let timeout = this.timeout;
        let deadline = this.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimedOut(timeout).into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use axum::body::Bytes;

    use super::*;

    async fn frame<B: HttpBody + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
        std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
    }

    /// A body that answers from a script: a chunk, or "nothing ready yet" (waking itself, as a
    /// socket would when data came, only when told to).
    struct Scripted(VecDeque<Option<&'static str>>);

    impl HttpBody for Scripted {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.0.pop_front() {
                None => Poll::Ready(None),
                Some(Some(chunk)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(chunk.as_bytes()))))),
                // Stalled for good: never woken again.
                Some(None) => {
                    self.0.push_front(None);
                    Poll::Pending
                }
            }
        }
    }

    fn wrapped(script: &[Option<&'static str>]) -> StallTimeoutBody<Scripted> {
        StallTimeoutBody {
            inner: Scripted(script.iter().copied().collect()),
            timeout: Duration::from_millis(200),
            stalled: None,
        }
    }

    #[tokio::test]
    async fn a_body_that_arrives_is_read_without_a_timer() {
        let mut body = wrapped(&[Some("{\"gid\""), Some(":\"a\"}")]);
        let mut read = Vec::new();
        while let Some(frame) = frame(&mut body).await {
            read.extend_from_slice(&frame.expect("frame").into_data().expect("data"));
        }
        assert_eq!(read, b"{\"gid\":\"a\"}");
        assert!(body.stalled.is_none(), "no timer armed");
    }

    #[tokio::test]
    async fn a_body_that_stalls_fails_after_the_timeout() {
        let mut body = wrapped(&[Some("{\"gid\""), None]);
        let first = frame(&mut body).await.expect("a frame").expect("data");
        assert_eq!(first.into_data().expect("data"), Bytes::from_static(b"{\"gid\""));
        assert!(body.stalled.is_none(), "not stalled yet");
        let started = std::time::Instant::now();
        let err = frame(&mut body).await.expect("an answer").expect_err("timed out");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(200) && waited < Duration::from_secs(3), "{waited:?}");
        assert!(err.to_string().contains("--http-body-timeout"), "{err}");
    }
}
