//! Route handlers.

use std::collections::HashMap;

use axum::Json;
use axum::body::{Body, to_bytes};
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use std::time::Duration;

use dtx_core::{GlobalStatus, Timestamp, TransType};
use dtx_engine::{Engine, RegisterBranch, SubmitReply, TransRequest};
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

/// `GET /api/dtmsvr/newGid`.
pub async fn new_gid() -> Json<Value> {
    Json(json!({"gid": new_gid_text(), "dtm_result": "SUCCESS"}))
}

/// 22 random base57 characters, like DTM's shortuuid.
pub fn new_gid_text() -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..22).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Reads a request body up to the configured size (and within `--http-body-timeout`, a layer).
async fn read_body(state: &AppState, body: Body) -> Result<axum::body::Bytes, ApiError> {
    to_bytes(body, state.max_body_bytes).await.map_err(|e| {
        let cause = std::error::Error::source(&e).map(ToString::to_string).unwrap_or_else(|| e.to_string());
        if cause.contains("length limit") {
            ApiError::BadRequest(format!("request body exceeds the limit of {} bytes", state.max_body_bytes))
        } else {
            ApiError::BadRequest(format!("request body not received: {cause}"))
        }
    })
}

/// Reads and decodes a global request body, bounded by the configured size.
async fn read_global(state: &AppState, body: Body) -> Result<GlobalRequest, ApiError> {
    let bytes = read_body(state, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("malformed JSON body: {e}")))
}

pub(super) fn trans_type(raw: Option<&str>) -> Result<TransType, ApiError> {
    let raw = raw.unwrap_or_default();
    if raw.is_empty() {
        return Err(ApiError::BadRequest("trans_type is missing".into()));
    }
    raw.parse().map_err(|_| {
        ApiError::BadRequest(format!("unknown trans_type '{raw}' (expected saga, tcc, msg, xa or workflow)"))
    })
}

/// Decodes a global request body: gid cleaned, trans_type known.
async fn read_request(state: &AppState, body: Body) -> Result<TransRequest, ApiError> {
    let req = read_global(state, body).await?;
    let gid = wire::clean_gid(req.gid.as_deref())?;
    let t = trans_type(req.trans_type.as_deref())?;
    req.into_request(gid, t)
}

/// `POST /api/dtmsvr/submit`.
pub async fn submit(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req = read_traced(&state, &headers, body).await?;
    // Detached: a wait_result client that disconnects does not cancel the submit or its round.
    let engine = state.engine.clone();
    reply(state.engine.detached(async move { engine.submit(req).await }).await??)
}

/// A transaction request with the W3C trace context sent along (dtx_engine::trace_context).
async fn read_traced(
    state: &AppState,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Result<dtx_engine::TransRequest, ApiError> {
    let mut req = read_request(state, body).await?;
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    dtx_engine::trace_context::attach(&mut req, get("traceparent"), get("tracestate"));
    Ok(req)
}

/// The answer to a submit, per DTM's `wait_result` rules (spec 5.3).
pub(super) fn reply(r: SubmitReply) -> Result<Response, ApiError> {
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

/// `POST /api/dtmsvr/prepare`.
pub async fn prepare(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req = read_traced(&state, &headers, body).await?;
    state.engine.prepare(req).await?;
    Ok(success())
}

/// `POST /api/dtmsvr/prepareWorkflow`: `{"transaction": ..., "progresses": [...]}`, the stored
/// workflow (or the new one) and its recorded steps.
pub async fn prepare_workflow(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let req = read_traced(&state, &headers, body).await?;
    let wf = state.engine.prepare_workflow(req).await?;
    let progresses: Vec<Value> = wf.progresses.iter().map(|b| wire::branch_json(&wf.global.gid, b)).collect();
    Ok(Json(json!({"transaction": wire::global_json(&wf.global, false), "progresses": progresses}))
        .into_response())
}

/// `POST /api/dtmsvr/abort`: reaching `failed` is the success of an abort.
pub async fn abort(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let req = read_request(&state, body).await?;
    abort_request(&state, req).await
}

/// An abort, decoded.
pub(super) async fn abort_request(state: &AppState, req: TransRequest) -> Result<Response, ApiError> {
    let engine = state.engine.clone();
    let aborted = state.engine.detached(async move { engine.abort(&req.gid, &req.rollback_reason).await });
    match aborted.await?? {
        SubmitReply::Accepted | SubmitReply::Finished { .. } => Ok(success()),
        SubmitReply::InProgress { status, .. } => Err(ApiError::Ongoing(format!(
            "the transaction is still {status}; dtx keeps cancelling it in the background"
        ))),
    }
}

/// `POST /api/dtmsvr/registerBranch` (and the legacy `registerTccBranch` / `registerXaBranch`):
/// a flat JSON object of strings.
pub async fn register_branch(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let body: wire::RegisterBody = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!("malformed registerBranch body (a JSON object of strings): {e}"))
    })?;
    let gid = wire::clean_gid(body.gid.as_deref())?;
    state.engine.register_branch(register_request(gid, body)).await?;
    Ok(success())
}

/// A registerBranch body (a flat object of strings) as the engine's request.
pub(super) fn register_request(gid: String, body: wire::RegisterBody) -> RegisterBranch {
    RegisterBranch {
        gid,
        trans_type: body.trans_type,
        branch_id: body.branch_id,
        data: body.data.into_bytes(),
        confirm: body.confirm,
        cancel: body.cancel,
        url: body.url,
        op: body.op,
        status: body.status,
    }
}

/// The `gid` of a `{"gid": ...}` body.
async fn read_gid(state: &AppState, body: Body) -> Result<String, ApiError> {
    let req = read_global(state, body).await?;
    wire::clean_gid(req.gid.as_deref())
}

/// `POST /api/dtmsvr/forceStop`.
pub async fn force_stop(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let gid = read_gid(&state, body).await?;
    state.engine.force_stop(&gid).await?;
    Ok(success())
}

/// `POST /api/dtmsvr/resetNextCronTime`: retry now.
pub async fn reset_next_cron_time(State(state): State<AppState>, body: Body) -> Result<Response, ApiError> {
    let gid = read_gid(&state, body).await?;
    state.engine.reset_next_cron_time(&gid).await?;
    Ok(success())
}

/// `GET /api/dtmsvr/resetCronTime?timeout=&limit=`: retry now everything scheduled further
/// than `timeout` seconds ahead (default 3 × the default timeout-to-fail).
pub async fn reset_cron_time(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let default = state.engine.options().timeout_to_fail * 3;
    let timeout = param::<u64>(&params, "timeout")?.map(Duration::from_secs).unwrap_or(default);
    let limit: u32 = param(&params, "limit")?.unwrap_or(100);
    if limit == 0 {
        return Err(ApiError::BadRequest("limit must be at least 1".into()));
    }
    let (n, more) = state.engine.reset_cron_time(timeout, limit).await?;
    Ok(Json(json!({"has_remaining": more, "succeed_count": n})).into_response())
}

fn required<'a>(params: &'a HashMap<String, String>, key: &str) -> &'a str {
    params.get(key).map(String::as_str).unwrap_or_default()
}

/// `GET /api/dtmsvr/subscribe?topic=&url=&remark=`.
pub async fn subscribe(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    state
        .engine
        .subscribe(required(&params, "topic"), required(&params, "url"), required(&params, "remark"))
        .await?;
    Ok(success())
}

/// `GET /api/dtmsvr/unsubscribe?topic=&url=`.
pub async fn unsubscribe(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    state.engine.unsubscribe(required(&params, "topic"), required(&params, "url")).await?;
    Ok(success())
}

/// `DELETE /api/dtmsvr/topic/{topic}`.
pub async fn delete_topic(
    State(state): State<AppState>,
    Path(topic): Path<String>,
) -> Result<Response, ApiError> {
    state.engine.delete_topic(&topic).await?;
    Ok(success())
}

/// `GET /api/dtmsvr/scanKV?cat=&position=&limit=`: newest first, `position` is the cursor.
pub async fn scan_kv(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let limit: u32 = param(&params, "limit")?.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::BadRequest("limit must be between 1 and 1000".into()));
    }
    let before: Option<i64> = param(&params, "position")?;
    let rows = state.engine.kv_scan(required(&params, "cat"), before, limit).await?;
    let next = if rows.len() == limit as usize {
        rows.last().map(|r| r.id.to_string()).unwrap_or_default()
    } else {
        String::new()
    };
    let kv: Vec<Value> = rows.iter().map(wire::kv_json).collect();
    Ok(Json(json!({"kv": kv, "next_position": next})).into_response())
}

/// `GET /api/dtmsvr/queryKV?cat=&key=`: one row, or the whole category when `key` is empty.
pub async fn query_kv(
    State(state): State<AppState>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let cat = required(&params, "cat");
    let key = required(&params, "key");
    let rows = if key.is_empty() {
        state.engine.kv_scan(cat, None, 1000).await?
    } else {
        state.engine.kv_get(cat, key).await?.into_iter().collect()
    };
    let kv: Vec<Value> = rows.iter().map(wire::kv_json).collect();
    Ok(Json(json!({"kv": kv})).into_response())
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
        // dtx's addition (admin UI): gids starting with this.
        gid_prefix: params.get("gidPrefix").filter(|p| !p.is_empty()).cloned(),
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
