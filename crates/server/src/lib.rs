//! `dtx-server`: the dtx coordinator process.
//!
//! - [`config`]: settings (defaults → TOML → `DTX_*` → flags) and their validation.
//! - [`api`]: the DTM-compatible HTTP API over the engine.
//! - [`grpc`]: the DTM-compatible gRPC API (`dtmgimp.Dtm`) over the same engine.
//! - [`Server`]: wiring (store, engine, listener), serving and graceful shutdown.
//! - [`telemetry`]: log output.
//! - [`metrics`]: Prometheus metrics (`/api/metrics`), the engine's observer; `observed_store`:
//!   store write latency and queue depth; `guarded_store`: store deadlines and write-queue
//!   admission (load shedding).
//! - [`admin`]: the embedded admin web UI (`/admin`) and its JSON endpoints.
//! - [`auth`]: the admin and API tokens on both front doors.
//! - [`health`]: readiness (`/api/ready`, gRPC health).
//! - [`listen`]: the HTTP listener (TLS, header and handshake deadlines).
//! - [`cli`]: the `dtx` binary's entry point.

pub mod admin;
pub mod api;
mod app;
pub mod auth;
pub mod body_timeout;
pub mod cli;
pub mod config;
pub mod grpc;
mod guarded_store;
pub mod health;
pub mod listen;
pub mod metrics;
mod observed_store;
pub mod telemetry;

pub use app::{Error, Server};
pub use config::Config;
