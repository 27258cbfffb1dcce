//! End-to-end test harness of dtx.
//!
//! - [`TestServer`]: the dtx server in process, on loopback, over a temporary SQLite database,
//!   with a [`ManualClock`](dtx_engine::ManualClock) and the scheduler off: tests step time with
//!   [`TestServer::advance`] and run due work with [`TestServer::cron`].
//! - [`Participant`]: a real HTTP participant on loopback whose answers each test scripts, and
//!   which records every call it receives.
//! - [`DtxProcess`]: the real `dtx` binary as a child process (crash / restart tests).
//! - [`client`]: the client side of DTM over HTTP ([`Client`], [`Tcc`], [`Msg`]).
//! - [`saga`]: request bodies as DTM's SDKs send them, and readers of `query` answers.
//! - [`grpc`]: gRPC on both sides: a scripted gRPC participant ([`grpc::GrpcParticipant`]) and
//!   the `dtmgimp.Dtm` client side.
//! - [`tls`]: a throwaway CA with server and client certificates (rcgen), as files.

pub mod binary;
pub mod client;
pub mod grpc;
pub mod participant;
pub mod saga;
pub mod server;
pub mod tls;

pub use binary::{DtxProcess, dtx_binary, free_port, sqlite_url};
pub use client::{Client, Msg, Tcc, advance_to_due, assert_timeout_reason, due_in_ms};
pub use participant::{Call, Gate, Participant, Reply};
pub use saga::{Saga, branch, branch_statuses, status_of, time_ms};
pub use server::{Rounds, TestServer};

/// Polls `check` every 20 ms until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: std::time::Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
