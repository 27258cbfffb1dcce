//! DTM's `dtm_server_*` families for every gRPC call (`type="grpc"`, `api` = the method name
//! lower-cased, `status` = ok unless the call answered with a non-zero `grpc-status` in its
//! headers, which is where tonic puts an error status), through the shared
//! [`crate::metrics::ApiMetricsLayer`].

use tonic::codegen::http;

use crate::metrics::{ApiMetricsLayer, ApiProtocol};

/// Wraps the gRPC routes.
pub type GrpcMetricsLayer = ApiMetricsLayer<Grpc>;

/// gRPC calls, named by their method.
#[derive(Clone, Copy, Debug)]
pub struct Grpc;

impl ApiProtocol for Grpc {
    const KIND: &'static str = "grpc";
    type Name = String;

    fn name<B>(req: &http::Request<B>) -> String {
        req.uri().path().rsplit('/').next().unwrap_or_default().to_owned()
    }

    fn api(name: &String) -> &str {
        name
    }

    fn ok<R>(resp: &http::Response<R>) -> bool {
        resp.headers().get("grpc-status").is_none_or(|s| s.as_bytes() == b"0")
    }
}
