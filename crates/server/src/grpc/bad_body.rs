//! A tower layer on the gRPC server: a request body that is not a valid protobuf message is bad
//! input (`InvalidArgument`), not a server fault. tonic decodes the request before the
//! service sees it and answers a failed decode with `Internal`; this layer rewrites exactly that
//! answer (found by the reliability suite's fuzzer).

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tonic::codegen::http;
use tonic::codegen::http::HeaderValue;
use tower::{Layer, Service};

/// Wraps the gRPC routes.
#[derive(Clone, Copy, Default)]
pub struct BadBodyLayer;

impl<S> Layer<S> for BadBodyLayer {
    type Service = BadBody<S>;

    fn layer(&self, inner: S) -> BadBody<S> {
        BadBody { inner }
    }
}

/// See [`BadBodyLayer`].
#[derive(Clone)]
pub struct BadBody<S> {
    inner: S,
}

/// `grpc-status` of `Internal` and of `InvalidArgument`.
const INTERNAL: &[u8] = b"13";
const INVALID_ARGUMENT: &str = "3";

fn is_decode_failure(headers: &http::HeaderMap) -> bool {
    let status = headers.get("grpc-status").map(HeaderValue::as_bytes);
    let message = headers.get("grpc-message").map(HeaderValue::as_bytes).unwrap_or_default();
    // tonic percent-encodes the message.
    status == Some(INTERNAL)
        && (message.starts_with(b"failed to decode") || message.starts_with(b"failed%20to%20decode"))
}

impl<S, B, R> Service<http::Request<B>> for BadBody<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            if is_decode_failure(resp.headers()) {
                resp.headers_mut().insert("grpc-status", HeaderValue::from_static(INVALID_ARGUMENT));
            }
            Ok(resp)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_decode_failure_is_rewritten() {
        let mut h = http::HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("13"));
        h.insert("grpc-message", HeaderValue::from_static("failed%20to%20decode%20Protobuf%20message"));
        assert!(is_decode_failure(&h));
        h.insert("grpc-message", HeaderValue::from_static("internal%20error"));
        assert!(!is_decode_failure(&h));
        h.insert("grpc-status", HeaderValue::from_static("3"));
        assert!(!is_decode_failure(&h));
    }
}
