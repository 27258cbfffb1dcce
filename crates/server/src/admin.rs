//! The admin web UI at `/admin` and what it needs from the server.
//!
//! - The UI's build (sources in `web/admin/`, built with `npm ci && npm run build` into
//!   `crates/server/assets/admin/`, committed) is embedded in the binary: no CDN, works offline,
//!   `cargo build` needs no Node (ADR 0006).
//! - `GET /api/admin/counts`: transactions per status and the due backlog.
//! - The admin token (`--admin-token`) guards the UI's calls: see [`crate::auth`].

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dtx_engine::Engine;
use serde_json::{Map, Value, json};

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_build_is_the_vite_output() {
        assert!(INDEX_HTML.contains("/admin/assets/app.js"), "{INDEX_HTML}");
        assert!(INDEX_HTML.contains("/admin/assets/index.css"), "{INDEX_HTML}");
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"), "no CDN");
    }
}
