//! Liveness and readiness. `/api/ping` (DTM's) answers while the process serves HTTP;
//! `/api/ready` answers 200 only while the store answers a read within [`READY_DEADLINE`], 503
//! otherwise. The gRPC health service follows readiness: a task probes the store every
//! [`PROBE_EVERY`] and marks the overall service (`""`) and `dtmgimp.Dtm` SERVING or
//! NOT_SERVING.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use dtx_engine::Engine;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tracing::{info, warn};

/// How long the store may take to answer a readiness probe.
pub const READY_DEADLINE: Duration = Duration::from_secs(2);

/// How often the gRPC health status is refreshed.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// A gid no transaction has (gids are printable): the probe reads an index and finds nothing.
const PROBE_GID: &str = "\u{1}dtx-readiness-probe";

/// The gRPC service names whose health follows readiness.
const GRPC_SERVICES: [&str; 2] = ["", "dtmgimp.Dtm"];

/// The node's readiness, as last probed.
pub struct Readiness {
    engine: Engine,
    ready: AtomicBool,
}

impl Readiness {
    /// Not probed yet: assumed ready (the store answered at start).
    pub fn new(engine: Engine) -> Readiness {
        Readiness { engine, ready: AtomicBool::new(true) }
    }

    /// Probes the store now; logs changes.
    pub async fn probe(&self) -> bool {
        let ok = matches!(tokio::time::timeout(READY_DEADLINE, self.engine.load(PROBE_GID)).await, Ok(Ok(_)));
        let was = self.ready.swap(ok, Ordering::Relaxed);
        if was != ok {
            if ok {
                info!("store answers again: ready");
            } else {
                warn!(deadline_ms = READY_DEADLINE.as_millis() as u64, "store does not answer: not ready");
            }
        }
        ok
    }
}

/// `GET /api/ready`.
pub async fn ready(State(readiness): State<Arc<Readiness>>) -> Response {
    if readiness.probe().await {
        (StatusCode::OK, Json(json!({"status": "ready"}))).into_response()
    } else {
        let body = json!({"status": "unavailable", "message": "the store does not answer"});
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

/// Keeps the gRPC health service in step with readiness until `stop`, then reports
/// NOT_SERVING (the node is draining: load balancers send new work elsewhere).
pub async fn follow(readiness: Arc<Readiness>, reporter: HealthReporter, stop: CancellationToken) {
    let mut last = None;
    loop {
        let ok = tokio::select! {
            _ = stop.cancelled() => break,
            ok = readiness.probe() => ok,
        };
        if last != Some(ok) {
            let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
            for name in GRPC_SERVICES {
                reporter.set_service_status(name, status).await;
            }
            last = Some(ok);
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(PROBE_EVERY) => {}
        }
    }
    for name in GRPC_SERVICES {
        reporter.set_service_status(name, ServingStatus::NotServing).await;
    }
}
