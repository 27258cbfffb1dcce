//! End-to-end test harness of dtx.
//!
//! - [`TestServer`]: the dtx server in process, on loopback, over a temporary SQLite database,
//!   with a [`ManualClock`](dtx_engine::ManualClock) and the scheduler off: tests step time with
//!   [`TestServer::advance`] and run due work with [`TestServer::cron`].
//! - [`Participant`]: a real HTTP participant on loopback whose answers each test scripts, and
//!   which records every call it receives.
//! - [`DtxProcess`]: the real `dtx` binary as a child process (crash / restart tests).
//! - [`saga`]: request bodies as DTM's SDKs send them, and readers of `query` answers.

pub mod binary;
pub mod participant;
pub mod saga;
pub mod server;

pub use binary::{DtxProcess, dtx_binary, free_port};
pub use participant::{Call, Gate, Participant, Reply};
pub use saga::{Saga, branch, branch_statuses, status_of, time_ms};
pub use server::TestServer;

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
