//! A tower layer on the gRPC server: DTM's `dtm_server_*` families for every gRPC call
//! (`type="grpc"`, `api` = the method name lower-cased, `status` = ok unless the call answered
//! with a non-zero `grpc-status` in its headers, which is where tonic puts an error status).

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::future::BoxFuture;
use tonic::codegen::http;
use tower::{Layer, Service};

use crate::metrics::Metrics;

/// Wraps the gRPC routes.
#[derive(Clone)]
pub struct GrpcMetricsLayer(pub Arc<Metrics>);

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> GrpcMetrics<S> {
        GrpcMetrics { inner, metrics: self.0.clone() }
    }
}

/// See [`GrpcMetricsLayer`].
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, R> Service<http::Request<B>> for GrpcMetrics<S>
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
        let api = req.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            let ok = match &result {
                Ok(resp) => resp.headers().get("grpc-status").is_none_or(|s| s.as_bytes() == b"0"),
                Err(_) => false,
            };
            metrics.api_request("grpc", &api, ok, started.elapsed());
            result
        })
    }
}
