//! The order-saga example: three services with their own databases kept consistent by dtx.
//!
//! - [`order`] (HTTP): takes orders, starts the saga (or the TCC variant), and is a participant
//!   itself (confirm / cancel the order, notify shipping).
//! - [`inventory`] (gRPC participant): reserves and releases stock.
//! - [`coupon`] (HTTP participant): uses and releases coupons, also as TCC.
//! - [`scenarios::run_scenarios`] starts everything (and a dtx, unless given one), runs the
//!   scenarios and checks each one's invariant against the three databases. The binary and the
//!   integration test both call it.
//!
//! Every branch handler runs its business inside [`dtx_client::barrier::Barrier::call`]:
//! duplicates, null compensations and hanging actions are the barrier's job, not the handler's.

pub mod coordinator;
pub mod coupon;
pub mod db;
pub mod hooks;
pub mod inventory;
pub mod order;
pub mod report;
pub mod scenarios;
pub mod serve;

/// The generated gRPC code of `proto/inventory.proto`.
pub mod proto {
    #![allow(missing_docs, clippy::all)]
    tonic::include_proto!("inventory");
}

pub use hooks::{Event, Faults, Hooks, Journal};
pub use report::Report;
pub use scenarios::{Config, run_scenarios};

/// What can go wrong in the example's services and runner.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A database error.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// An SDK error (coordinator, barrier).
    #[error("dtx: {0}")]
    Dtx(#[from] dtx_client::Error),
    /// The embedded coordinator.
    #[error("embedded dtx: {0}")]
    Server(#[from] dtx_server::Error),
    /// Sockets, files.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    /// HTTP calls of the runner.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
    /// A gRPC server.
    #[error("gRPC server: {0}")]
    Grpc(#[from] tonic::transport::Error),
    /// A bad option or URL.
    #[error("configuration: {0}")]
    Config(String),
    /// Something the runner expected did not happen (in time).
    #[error("{0}")]
    Runner(String),
}
