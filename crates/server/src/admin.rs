//! The admin web UI at `/admin` and what it needs from the server.
//!
//! - The UI's build (sources in `web/admin/`, built with `npm ci && npm run build` into
//!   `crates/server/assets/admin/`, committed) is embedded in the binary: no CDN, works offline,
//!   `cargo build` needs no Node (ADR 0006).
//! - `GET /api/admin/counts`: transactions per status and the due backlog.
//! - The admin token (`--admin-token`): when set, the admin calls (the UI's: `all`,
//!   `forceStop`, `resetNextCronTime`, `resetCronTime`, `subscribe`, `unsubscribe`, `DELETE
//!   topic`, `scanKV`, `/api/admin/*`) need `Authorization: Bearer <token>`, compared in constant
//!   time; otherwise 401 and nothing is done.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dtx_engine::Engine;
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;

use crate::api::ApiError;

const INDEX_HTML: &str = include_str!("../assets/admin/index.html");
const APP_JS: &str = include_str!("../assets/admin/assets/app.js");
const APP_CSS: &str = include_str!("../assets/admin/assets/index.css");

/// The UI's routes and its JSON endpoints.
pub fn router(engine: Engine) -> axum::Router {
    axum::Router::new()
        .route("/admin", get(index))
        .route("/admin/", get(index))
        .route("/admin/assets/app.js", get(|| asset("text/javascript; charset=utf-8", APP_JS)))
        .route("/admin/assets/index.css", get(|| asset("text/css; charset=utf-8", APP_CSS)))
        .route("/api/admin/counts", get(counts))
        .with_state(engine)
}

async fn index() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML).await
}

// File names carry no content hash, so browsers must revalidate.
async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// `GET /api/admin/counts`: `{"counts": {"<status>": n, ...}, "due": n}`.
async fn counts(State(engine): State<Engine>) -> Result<Response, ApiError> {
    let c = engine.status_counts().await?;
    let by: Map<String, Value> = c.by_status.iter().map(|(s, n)| (s.as_str().to_owned(), json!(n))).collect();
    Ok(Json(json!({"counts": by, "due": c.due})).into_response())
}

/// The admin token, if one is configured.
#[derive(Clone)]
pub struct AdminToken(pub Option<Arc<str>>);

/// Whether a request is an admin call (the token guards it).
fn is_admin_call(method: &Method, path: &str) -> bool {
    const DTMSVR: &[&str] =
        &["all", "forceStop", "resetNextCronTime", "resetCronTime", "subscribe", "unsubscribe", "scanKV"];
    if path.starts_with("/api/admin/") {
        return true;
    }
    let Some(rest) = path.strip_prefix("/api/dtmsvr/") else {
        return false;
    };
    DTMSVR.contains(&rest) || (method == Method::DELETE && rest.starts_with("topic/"))
}

/// Axum middleware: refuses admin calls without the configured token (401, nothing done).
pub async fn require_token(State(token): State<AdminToken>, req: Request, next: Next) -> Response {
    let Some(expected) = &token.0 else {
        return next.run(req).await;
    };
    if !is_admin_call(req.method(), req.uri().path()) {
        return next.run(req).await;
    }
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        return next.run(req).await;
    }
    let body =
        json!({"dtm_result": "FAILURE", "message": "admin token required: Authorization: Bearer <token>"});
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_calls_are_the_uis() {
        for path in ["/api/dtmsvr/all", "/api/dtmsvr/forceStop", "/api/dtmsvr/scanKV", "/api/admin/counts"] {
            assert!(is_admin_call(&Method::GET, path), "{path}");
        }
        assert!(is_admin_call(&Method::DELETE, "/api/dtmsvr/topic/t"));
        for path in ["/api/dtmsvr/submit", "/api/dtmsvr/query", "/api/ping", "/admin", "/api/dtmsvr/allx"] {
            assert!(!is_admin_call(&Method::GET, path), "{path}");
        }
    }

    #[test]
    fn the_embedded_build_is_the_vite_output() {
        assert!(INDEX_HTML.contains("/admin/assets/app.js"), "{INDEX_HTML}");
        assert!(INDEX_HTML.contains("/admin/assets/index.css"), "{INDEX_HTML}");
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"), "no CDN");
    }
}
