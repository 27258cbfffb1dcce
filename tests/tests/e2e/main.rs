//! dtx end to end: one test binary for every scenario, so the workspace links the server,
//! engine and stores into a single executable instead of one per file (build time and disk).
//! nextest still runs each test in its own process.

mod common;

mod admin_ui;
mod api;
mod bad_input;
mod crash;
mod crash_tcc;
mod grpc;
mod grpc_saga;
mod grpc_tcc_msg;
mod json_rpc;
mod lease;
mod msg;
mod mysql;
mod operator;
mod ops_health;
mod ops_metrics;
mod otlp;
mod participant_health;
mod postgres_nodes;
mod postgres_outage;
mod reliability;
mod retention_load;
mod saga;
mod saga_options;
mod security;
mod tcc;
mod tls;
mod topics;
mod trace;
mod workflow;
mod xa;
