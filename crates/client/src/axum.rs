//! axum participants (feature `axum`): extract the branch a call is for, answer with the
//! result protocol.
//!
//! - [`BranchInfo`](crate::BranchInfo) is an extractor (from the query string: `gid`,
//!   `trans_type`, `branch_id`, `op`); a request without them is answered 400.
//! - [`BranchCall<T>`] also reads the JSON payload (a body of `null` or nothing reads as JSON
//!   `null`, as DTM's SDKs send for "no payload").
//! - [`crate::Error`] is a response: [`Error::Failure`](crate::Error::Failure) = 409 (the
//!   coordinator rolls back), [`Error::Ongoing`](crate::Error::Ongoing) = 425 (asks again later), anything
//!   else 500 (retried). [`Success`] is 200 `{"dtm_result":"SUCCESS"}`. So a handler returns
//!   [`BranchResult`](crate::BranchResult).
//!
//! ```
//! use axum::{Router, routing::post};
//! use dtx_client::axum::{BranchCall, Success};
//! use dtx_client::{BranchResult, Error};
//!
//! #[derive(serde::Deserialize)]
//! struct Transfer { amount: i64 }
//!
//! async fn trans_in(call: BranchCall<Transfer>) -> BranchResult {
//!     if call.payload.amount > 1000 {
//!         return Err(Error::failure("amount over the limit")); // 409: the saga rolls back
//!     }
//!     Ok(Success)
//! }
//! let app: Router = Router::new().route("/TransIn", post(trans_in));
//! ```

use ::axum::extract::{FromRequest, FromRequestParts, Request};
use ::axum::http::StatusCode;
use ::axum::http::request::Parts;
use ::axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::{BranchInfo, Error};

impl<S: Send + Sync> FromRequestParts<S> for BranchInfo {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        BranchInfo::from_query(parts.uri.query().unwrap_or_default())
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()).into_response())
    }
}

/// A branch call: which branch ([`BranchInfo`]) and its JSON payload.
#[derive(Debug, Clone)]
pub struct BranchCall<T> {
    /// The branch.
    pub info: BranchInfo,
    /// The payload.
    pub payload: T,
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for BranchCall<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let info = BranchInfo::from_request_parts(&mut parts, state).await?;
        let bytes = bytes::Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"null" } else { &bytes };
        let payload = serde_json::from_slice(text)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("bad payload: {e}")).into_response())?;
        Ok(BranchCall { info, payload })
    }
}

/// A branch's success: 200 `{"dtm_result":"SUCCESS"}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Success;

impl IntoResponse for Success {
    fn into_response(self) -> Response {
        ::axum::Json(json!({"dtm_result": "SUCCESS"})).into_response()
    }
}

/// The coordinator reads `FAILURE` / `ONGOING` anywhere in a body as that result, so an error
/// text must not carry them by accident.
fn defuse(text: &str) -> String {
    text.replace("FAILURE", "failure").replace("ONGOING", "ongoing")
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self {
            Error::Failure(m) => {
                (StatusCode::CONFLICT, ::axum::Json(json!({"dtm_result": "FAILURE", "message": m})))
                    .into_response()
            }
            Error::Ongoing(m) => {
                (StatusCode::TOO_EARLY, ::axum::Json(json!({"dtm_result": "ONGOING", "message": m})))
                    .into_response()
            }
            other => {
                tracing::warn!(error = %other, "branch handler error (the coordinator retries)");
                let body = json!({"message": defuse(&other.to_string())});
                (StatusCode::INTERNAL_SERVER_ERROR, ::axum::Json(body)).into_response()
            }
        }
    }
}

/// A ready check-back (`query_prepared`) route for messages sent with
/// [`crate::Msg::do_and_submit`] on `pool`: answers with [`crate::barrier::query_prepared`]
/// on the default barrier table.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let pool = sqlx::SqlitePool::connect_lazy("sqlite::memory:").unwrap();
/// let app: axum::Router = axum::Router::new().route("/queryPrepared", dtx_client::axum::query_prepared_route(pool));
/// # }
/// ```
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub fn query_prepared_route<DB, S>(pool: sqlx::Pool<DB>) -> ::axum::routing::MethodRouter<S>
where
    DB: crate::barrier::BarrierDatabase,
    S: Clone + Send + Sync + 'static,
{
    ::axum::routing::get(move |info: BranchInfo| async move {
        crate::barrier::query_prepared(&pool, None, &info.gid).await.map(|()| Success)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_answer_per_result_protocol() {
        assert_eq!(Error::failure("x").into_response().status(), StatusCode::CONFLICT);
        assert_eq!(Error::Ongoing("x".into()).into_response().status(), StatusCode::TOO_EARLY);
        assert_eq!(Error::Protocol("x".into()).into_response().status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(Success.into_response().status(), StatusCode::OK);
        assert_eq!(defuse("FAILURE or ONGOING"), "failure or ongoing");
    }
}
