//! Helpers shared by the gRPC test files.
#![allow(dead_code)] // not every helper is used by every test module

use dtx_tests::TestServer;
use dtx_tests::grpc::{GrpcParticipant, GrpcSaga, odd_req_bytes, req_bytes};
use serde_json::Value;
use tonic::transport::Channel;

pub const HTTP_PAYLOAD: &str = r#"{"amount":30}"#;

/// The classic TransOut / TransIn saga over gRPC; step 1's payload is a non-canonical encoding
/// (see [`odd_req_bytes`]), step 2's a plain one.
pub fn trans_saga(p: &GrpcParticipant, gid: &str) -> GrpcSaga {
    GrpcSaga::new(gid).step(p.url("TransOut"), p.url("TransOutRevert"), odd_req_bytes(30, gid)).step(
        p.url("TransIn"),
        p.url("TransInRevert"),
        req_bytes(30),
    )
}

pub fn base_interval(s: &TestServer) -> u64 {
    s.engine().options().retry.retry_interval.as_secs()
}

pub fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

pub async fn channel(s: &TestServer) -> Channel {
    Channel::from_shared(format!("http://{}", s.grpc_addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}
