//! Calling participants, as DTM does (spec section 4): HTTP (4.2) or gRPC (4.4).

pub mod grpc;
mod json_rpc;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use dtx_core::{Op, Outcome, TransType};
use tracing::{Instrument, debug};

/// One branch call.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// The participant URL (already validated); empty = succeed without calling.
    pub url: String,
    /// Global id.
    pub gid: String,
    /// Mode, sent as `trans_type`.
    pub trans_type: TransType,
    /// Branch id, sent as `branch_id`.
    pub branch_id: String,
    /// Op, sent as `op` (unless `op_name` says otherwise).
    pub op: Op,
    /// Sent as `op` instead of the op's name: the workflow callback carries the workflow's name.
    pub op_name: Option<String>,
    /// The stored request body.
    pub payload: Bytes,
    /// `branch_headers` of the transaction.
    pub headers: BTreeMap<String, String>,
    /// Deadline of the call.
    pub timeout: Duration,
    /// The transaction's protocol is `json-rpc`: an HTTP URL naming a `method` is called as a
    /// JSON-RPC 2.0 request (spec 4.3).
    pub json_rpc: bool,
}

/// Who the engine calls participants through. Production uses [`Participants`] (HTTP and
/// gRPC); tests plug in scripted participants. Only the engine's effect executor holds it, so
/// no round can call anyone without first persisting the attempt.
#[async_trait::async_trait]
pub trait Caller: Send + Sync + 'static {
    /// Calls a branch and reads the answer per the result protocol.
    async fn call(&self, req: &CallRequest) -> Outcome;
}

#[async_trait::async_trait]
impl Caller for Participants {
    async fn call(&self, req: &CallRequest) -> Outcome {
        Participants::call(self, req).await
    }
}

/// Bodies are only read to look for the legacy `FAILURE` / `ONGOING` markers.
const MAX_READ_BODY: usize = 64 * 1024;

/// The participant caller: one shared, connection-pooling HTTP client and a gRPC channel per
/// target.
#[derive(Clone)]
pub struct Participants {
    http: reqwest::Client,
    grpc: std::sync::Arc<grpc::GrpcCaller>,
    observer: std::sync::Arc<dyn crate::Observer>,
    /// Span export (`None`: no call span at all, the default).
    export: Option<std::sync::Arc<dyn crate::trace_context::SpanExport>>,
}

impl std::fmt::Debug for Participants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participants").finish_non_exhaustive()
    }
}

/// How a URL is called (spec 4.1): `http://` / `https://` over HTTP, anything else over gRPC.
pub fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

impl CallRequest {
    /// The `op` sent with the call.
    pub fn op_text(&self) -> &str {
        self.op_name.as_deref().unwrap_or(self.op.as_str())
    }
}

impl Participants {
    /// Builds the shared client.
    pub fn new() -> Result<Participants, reqwest::Error> {
        Participants::observed(std::sync::Arc::new(crate::NoObserver))
    }

    /// [`Participants::new`] reporting every call to `observer`.
    pub fn observed(observer: std::sync::Arc<dyn crate::Observer>) -> Result<Participants, reqwest::Error> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(512)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            // Participants are addressed directly: an HTTP_PROXY meant for outbound traffic
            // must not capture calls to services on this network (or on loopback).
            .no_proxy()
            .build()?;
        Ok(Participants { http, grpc: std::sync::Arc::default(), observer, export: None })
    }

    /// Gives every call a `participant_call` span linked for export (crate::trace_context).
    pub fn with_span_export(
        mut self,
        export: std::sync::Arc<dyn crate::trace_context::SpanExport>,
    ) -> Participants {
        self.export = Some(export);
        self
    }

    /// Calls a branch and reads the answer per the result protocol.
    pub async fn call(&self, req: &CallRequest) -> Outcome {
        if req.url.is_empty() {
            return Outcome::Success;
        }
        let started = std::time::Instant::now();
        let outcome = match &self.export {
            None => self.call_url(req, None).await,
            Some(export) => {
                // A child of the round's span; the participant learns its id (trace_context).
                let span = tracing::info_span!("participant_call", gid = %req.gid, branch_id = %req.branch_id,
                    op = %req.op_text(), url = %req.url, outcome = tracing::field::Empty);
                let exported = export.traceparent_of(&span);
                let outcome = self.call_url(req, exported.as_deref()).instrument(span.clone()).await;
                span.record("outcome", outcome_name(&outcome));
                outcome
            }
        };
        self.observer.branch_called(req, &outcome, started.elapsed());
        outcome
    }

    async fn call_url(&self, req: &CallRequest, exported: Option<&str>) -> Outcome {
        if !is_http_url(&req.url) {
            let outcome = self.grpc.call(req, exported).await;
            debug!(gid = %req.gid, branch_id = %req.branch_id, op = %req.op_text(), url = %req.url, ?outcome, "grpc branch call");
            return outcome;
        }
        if req.json_rpc && req.url.contains("method") {
            let outcome = json_rpc::call(&self.http, req).await;
            debug!(gid = %req.gid, branch_id = %req.branch_id, op = %req.op_text(), url = %req.url, ?outcome, "json-rpc branch call");
            return outcome;
        }
        let mut url = match url::Url::parse(&req.url) {
            Ok(u) => u,
            Err(e) => return Outcome::Error(format!("bad participant url {}: {e}", req.url)),
        };
        url.query_pairs_mut()
            .append_pair("gid", &req.gid)
            .append_pair("trans_type", req.trans_type.as_str())
            .append_pair("branch_id", &req.branch_id)
            .append_pair("op", req.op_text());
        // DTM sends a body only when there is one (its SDKs always send at least `null`); XA
        // phase two is always a POST, with an empty body.
        let builder = if req.payload.is_empty() && req.trans_type != TransType::Xa {
            self.http.get(url)
        } else {
            self.http.post(url).body(req.payload.clone())
        };
        let mut builder = builder.header("Content-Type", "application/json").timeout(req.timeout);
        for (k, v) in &req.headers {
            // A stored traceparent goes out as a child context (crate::trace_context).
            builder = builder.header(k.as_str(), crate::trace_context::outgoing_as(k, v, exported).as_ref());
        }
        let outcome = match builder.send().await {
            Err(e) => Outcome::Error(describe(&e)),
            Ok(resp) => {
                let status = resp.status().as_u16();
                match read_bounded(resp).await {
                    Ok(body) => Outcome::from_http(status, &body),
                    Err(e) => Outcome::Error(describe(&e)),
                }
            }
        };
        debug!(gid = %req.gid, branch_id = %req.branch_id, op = %req.op_text(), url = %req.url, ?outcome, "branch call");
        outcome
    }
}

fn outcome_name(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "success",
        Outcome::Failure(_) => "failure",
        Outcome::Ongoing => "ongoing",
        Outcome::Error(_) => "error",
    }
}

pub(crate) async fn read_bounded(mut resp: reqwest::Response) -> Result<String, reqwest::Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = MAX_READ_BODY.saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if buf.len() >= MAX_READ_BODY {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

pub(crate) fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("timed out: {e}")
    } else if e.is_connect() {
        format!("connection failed: {e}")
    } else {
        e.to_string()
    }
}
