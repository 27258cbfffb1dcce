//! Route handlers.

use std::collections::HashMap;

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use dtx_core::{GlobalStatus, Timestamp, TransType};
use dtx_engine::{Engine, SubmitReply};
use dtx_store::ListFilter;
use rand::Rng;
use serde_json::{Value, json};

use crate::api::AppState;
use crate::api::error::{ApiError, success};
use crate::api::wire::{self, GlobalRequest};

/// `ANY /api/ping`.
pub async fn ping() -> Json<Value> {
    Json(json!({"msg": "pong"}))
}

/// `GET /api/dtmsvr/version`.
pub async fn version() -> Json<Value> {
    Json(json!({"version": concat!("v", env!("CARGO_PKG_VERSION"))}))
}

/// `GET /api/dtmsvr/newGid`: 22 random base57 characters, like DTM's shortuuid.
pub async fn new_gid() -> Json<Value> {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let gid: String = (0..22).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect();
    Json(json!({"gid": gid, "dtm_result": "SUCCESS"}))
}

/// Reads and decodes a global request body, bounded by the configured size.
async fn read_global(state: &AppState, body: Body) -> Result<GlobalRequest, ApiError> {
    let bytes = to_bytes(body, state.max_body_bytes).await.map_err(|_| {
        ApiError::BadRequest(format!("request body exceeds the limit of {} bytes", state.max_body_bytes))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}

fn trans_type(raw: Option<&str>) -> Result<TransType, ApiError> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        return Err(ApiError::BadRequest("trans_type is missing".into()));
    }
    raw.parse().map_err(|_| {
        ApiError::BadRequest(format!("unknown trans_type '{raw}' (expected saga, tcc, msg, xa or workflow)"))
    })
}

/// `POST /api/dtmsvr/submit`.
pub async fn submit(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let req = read_global(&state, body).await?;
    let gid = wire::clean_gid(req.gid.as_deref())?;
    match trans_type(req.trans_type.as_deref())? {
        TransType::Saga => {
            let saga = req.into_saga(gid)?;
            reply(state.engine.submit_saga(saga).await?)
        }
        other => {
            Err(ApiError::BadRequest(format!("trans_type '{other}' is not supported by this version yet")))
        }
    }
}

/// The answer to a submit, per DTM's `wait_result` rules (spec 5.3).
fn reply(r: SubmitReply) -> Result<Response, ApiError> {
    match r {
        SubmitReply::Accepted | SubmitReply::Finished { status: GlobalStatus::Succeed, .. } => Ok(success()),
        SubmitReply::Finished { reason, .. } => {
            Err(ApiError::Failure(if reason.is_empty() { "the transaction failed".into() } else { reason }))
        }
        // Rolling back: the outcome is decided even though compensations are still pending.
        SubmitReply::InProgress { status: GlobalStatus::Aborting, reason } => {
            Err(ApiError::Failure(format!("rolling back: {reason}")))
        }
        SubmitReply::InProgress { status, .. } => Err(ApiError::Ongoing(format!(
            "the transaction is still {status}; dtx keeps retrying it in the background"
        ))),
    }
}

/// `GET /api/dtmsvr/query?gid=`.
pub async fn query(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let gid = params.get("gid").map(String::as_str).unwrap_or_default();
    if gid.is_empty() {
        return Err(ApiError::BadRequest("no gid specified".into()));
    }
    let body = match state.engine.load(gid).await? {
        None => json!({"transaction": null, "branches": []}),
        Some(loaded) => {
            let forward_only = Engine::is_forward_only(&loaded);
            let branches: Vec<Value> =
                loaded.branches.iter().map(|b| wire::branch_json(&loaded.global.gid, b)).collect();
            json!({"transaction": wire::global_json(&loaded.global, forward_only), "branches": branches})
        }
    };
    Ok(Json(body).into_response())
}

fn param<T: std::str::FromStr>(params: &HashMap<String, String>, key: &str) -> Result<Option<T>, ApiError> {
    match params.get(key).map(|v| v.trim()).filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => {
            v.parse().map(Some).map_err(|_| ApiError::BadRequest(format!("{key}: '{v}' is not valid")))
        }
    }
}

/// `GET /api/dtmsvr/all`: newest first, `position` is the cursor.
pub async fn all(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let position: Option<String> = param(&params, "position")?;
    if let Some(gid) = params.get("gid").filter(|g| !g.is_empty()) {
        let tx = state
            .engine
            .load(gid)
            .await?
            .map(|l| vec![wire::global_json(&l.global, Engine::is_forward_only(&l))]);
        return Ok(
            Json(json!({"transactions": tx, "next_position": position.unwrap_or_default()})).into_response()
        );
    }
    let limit: u32 = param(&params, "limit")?.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::BadRequest("limit must be between 1 and 1000".into()));
    }
    let filter = ListFilter {
        before_id: position
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|_| ApiError::BadRequest("position: not a cursor returned by this API".into()))?,
        limit,
        status: param(&params, "status")?,
        trans_type: param(&params, "transType")?,
        created_from: param::<i64>(&params, "createTimeStart")?.map(Timestamp),
        created_to: param::<i64>(&params, "createTimeEnd")?.map(Timestamp),
    };
    let rows = state.engine.list(&filter).await?;
    let next = if rows.len() == limit as usize {
        rows.last().map(|g| g.id.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    let txs: Vec<Value> = rows.iter().map(|g| wire::global_json(g, false)).collect();
    Ok(Json(json!({"transactions": txs, "next_position": next})).into_response())
}
