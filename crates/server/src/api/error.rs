//! The response envelope (spec 2.1) and the one mapping from errors to HTTP statuses.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An API error, rendered in DTM's envelope.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed; nothing was stored.
    #[error("{0}")]
    BadRequest(String),
    /// 409 FAILURE.
    #[error("{0}")]
    Failure(String),
    /// 425 ONGOING.
    #[error("{0}")]
    Ongoing(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 503: the store is unreachable.
    #[error("{0}")]
    Unavailable(String),
    /// 500: details are logged, not returned.
    #[error("internal error")]
    Internal,
}

impl From<dtx_engine::Error> for ApiError {
    fn from(e: dtx_engine::Error) -> Self {
        use dtx_engine::Error as E;
        match e {
            E::InvalidArgument(m) => ApiError::BadRequest(m),
            E::Conflict(m) => ApiError::Failure(m),
            E::Ongoing(m) => ApiError::Ongoing(m),
            E::NotFound(m) => ApiError::NotFound(m),
            E::Unavailable(m) => ApiError::Unavailable(m),
            E::Internal(source) => {
                tracing::error!(error = %source, "internal error");
                ApiError::Internal
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let (status, body) = match self {
            ApiError::BadRequest(_) => {
                (StatusCode::BAD_REQUEST, json!({"code": "invalid_argument", "message": message}))
            }
            ApiError::Failure(_) => (
                StatusCode::CONFLICT,
                json!({"dtm_result": "FAILURE", "code": "failure", "message": message}),
            ),
            ApiError::Ongoing(_) => (
                StatusCode::TOO_EARLY,
                json!({"dtm_result": "ONGOING", "code": "ongoing", "message": message}),
            ),
            ApiError::NotFound(_) => {
                (StatusCode::NOT_FOUND, json!({"code": "not_found", "message": message}))
            }
            ApiError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, json!({"code": "unavailable", "message": message}))
            }
            ApiError::Internal => {
                (StatusCode::INTERNAL_SERVER_ERROR, json!({"code": "internal", "message": message}))
            }
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Overloaded, shutting down or the store not answering: all passing conditions.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// The `Retry-After` of every 503, in seconds.
pub const RETRY_AFTER_SECS: &str = "1";

/// `{"dtm_result":"SUCCESS"}`: the answer of most calls, written once (no JSON value built
/// and serialised per request).
pub fn success() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"))],
        r#"{"dtm_result":"SUCCESS"}"#,
    )
        .into_response()
}
