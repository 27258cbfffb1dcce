//! `POST /api/json-rpc`: DTM's JSON-RPC 2.0 endpoint (spec 2.4). Methods `newGid`, `prepare`,
//! `submit`, `abort`, `registerBranch`, with the same params as the HTTP bodies. The answer is
//! always HTTP 200 with `error` null (and `result`) or `{code, message}`.

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::api::handlers;
use crate::api::wire::{GlobalRequest, RegisterBody};

/// Unparsable JSON.
const PARSE_ERROR: i64 = -32700;
/// Not a JSON-RPC 2.0 request (no id, wrong version).
const INVALID_REQUEST: i64 = -32600;
/// Unknown method.
const METHOD_NOT_FOUND: i64 = -32601;
/// Params the method cannot use (bad input: nothing was changed).
const INVALID_PARAMS: i64 = -32602;
/// Any other error, ONGOING included (as DTM).
const INTERNAL_ERROR: i64 = -32603;
/// DTM's FAILURE (e.g. submitting a finished transaction).
const FAILURE: i64 = -32901;

fn answer(id: Value, outcome: Result<Value, (i64, String)>) -> Response {
    let body = match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": id, "error": null, "result": result}),
        Err((code, message)) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}, "result": null})
        }
    };
    Json(body).into_response()
}

fn code_of(e: ApiError) -> (i64, String) {
    let code = match e {
        ApiError::BadRequest(_) => INVALID_PARAMS,
        ApiError::Failure(_) => FAILURE,
        _ => INTERNAL_ERROR,
    };
    (code, e.to_string())
}

/// `POST /api/json-rpc`.
pub async fn handle(State(state): State<AppState>, body: Body) -> Response {
    let Ok(bytes) = to_bytes(body, state.max_body_bytes).await else {
        let m = format!("request body exceeds the limit of {} bytes", state.max_body_bytes);
        return answer(Value::Null, Err((INVALID_REQUEST, m)));
    };
    let req: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return answer(Value::Null, Err((PARSE_ERROR, format!("parse error: {e}")))),
    };
    let id = req.get("id").cloned().unwrap_or(Value::Null);
    let id_ok = match &id {
        Value::String(s) => !s.is_empty(),
        Value::Number(_) => true,
        _ => false,
    };
    if req.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || !id_ok {
        let m = "invalid request: needs \"jsonrpc\":\"2.0\" and a non-empty \"id\"".to_owned();
        return answer(id, Err((INVALID_REQUEST, m)));
    }
    let method = req.get("method").and_then(Value::as_str).unwrap_or_default().to_owned();
    let params = req.get("params").cloned().unwrap_or(Value::Null);
    let outcome = dispatch(&state, &method, params).await;
    answer(id, outcome)
}

async fn dispatch(state: &AppState, method: &str, params: Value) -> Result<Value, (i64, String)> {
    let r = match method {
        "newGid" => return Ok(json!({"gid": handlers::new_gid_text()})),
        "prepare" | "submit" | "abort" => global(state, method, params).await,
        "registerBranch" => register(state, params).await,
        other => return Err((METHOD_NOT_FOUND, format!("method not found: '{other}'"))),
    };
    r.map(|()| Value::Null).map_err(code_of)
}

/// A global request: the same object as the HTTP body; the gid is taken as is (DTM strips
/// nothing over JSON-RPC), under the rule every front door applies.
async fn global(state: &AppState, method: &str, params: Value) -> Result<(), ApiError> {
    let g: GlobalRequest = serde_json::from_value(params)
        .map_err(|e| ApiError::BadRequest(format!("params is not a transaction object: {e}")))?;
    let gid = g.gid.clone().unwrap_or_default();
    dtx_core::gid::check_gid(&gid).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let t = handlers::trans_type(g.trans_type.as_deref())?;
    let req = g.into_request(gid, t)?;
    match method {
        "prepare" => state.engine.prepare(req).await?,
        "submit" => drop(handlers::reply(state.engine.submit(req).await?)?),
        _ => drop(handlers::abort_request(state, req).await?),
    }
    Ok(())
}

async fn register(state: &AppState, params: Value) -> Result<(), ApiError> {
    let body: RegisterBody = serde_json::from_value(params)
        .map_err(|e| ApiError::BadRequest(format!("params is not an object of strings: {e}")))?;
    let gid = body.gid.clone().unwrap_or_default();
    dtx_core::gid::check_gid(&gid).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    state.engine.register_branch(handlers::register_request(gid, body)).await?;
    Ok(())
}
