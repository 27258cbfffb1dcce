//! The DTM-compatible HTTP API (`/api/dtmsvr/...`, spec section 2).
//!
//! Handlers decode the wire format (`wire`), call the engine, and render DTM's envelope
//! (`error`). No transaction logic lives here.

mod error;
mod handlers;
mod json_rpc;
mod wire;

use axum::Router;
use axum::routing::{any, delete, get, post};
use dtx_engine::Engine;

pub use error::ApiError;
pub use handlers::new_gid_text;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Engine,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

/// The API router. Its layers (metrics, auth, timeouts, tracing, body limits) wrap the whole
/// server's router once, in `app`.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/ping", any(handlers::ping))
        .route("/api/dtmsvr/version", get(handlers::version))
        .route("/api/dtmsvr/newGid", get(handlers::new_gid))
        .route("/api/dtmsvr/submit", post(handlers::submit))
        .route("/api/dtmsvr/prepare", post(handlers::prepare))
        .route("/api/dtmsvr/abort", post(handlers::abort))
        .route("/api/dtmsvr/prepareWorkflow", post(handlers::prepare_workflow))
        .route("/api/dtmsvr/registerBranch", post(handlers::register_branch))
        .route("/api/dtmsvr/registerTccBranch", post(handlers::register_branch))
        .route("/api/dtmsvr/registerXaBranch", post(handlers::register_branch))
        .route("/api/dtmsvr/forceStop", post(handlers::force_stop))
        .route("/api/dtmsvr/resetNextCronTime", post(handlers::reset_next_cron_time))
        .route("/api/dtmsvr/resetCronTime", get(handlers::reset_cron_time))
        .route("/api/dtmsvr/subscribe", get(handlers::subscribe))
        .route("/api/dtmsvr/unsubscribe", get(handlers::unsubscribe))
        .route("/api/dtmsvr/topic/{topic}", delete(handlers::delete_topic))
        .route("/api/dtmsvr/scanKV", get(handlers::scan_kv))
        .route("/api/dtmsvr/queryKV", get(handlers::query_kv))
        .route("/api/dtmsvr/query", get(handlers::query))
        .route("/api/dtmsvr/all", get(handlers::all))
        .route("/api/json-rpc", post(json_rpc::handle))
        .with_state(state)
}
