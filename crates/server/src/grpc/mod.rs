//! The DTM-compatible gRPC API (`dtmgimp.Dtm`, spec section 5) over the same engine as the
//! HTTP API: requests are decoded here and handed to the same engine operations, and errors
//! are mapped to gRPC codes in one place ([`status_of`]).

use std::collections::BTreeMap;

use dtx_core::{GlobalStatus, TransOptions, TransType};
use dtx_engine::{Engine, RegisterBranch, Step, SubmitReply, TransRequest};
use dtx_proto::dtmgimp::dtm_server::Dtm;
use dtx_proto::dtmgimp::{
    DtmBranchRequest, DtmGidReply, DtmProgress, DtmProgressesReply, DtmRequest, DtmTopicRequest,
    DtmTransaction,
};
use tonic::{Request, Response, Status};

use crate::api::new_gid_text;

mod bad_body;
mod observe;
pub use bad_body::BadBodyLayer;
pub use observe::{Grpc, GrpcMetricsLayer};

/// `traceparent` / `tracestate` metadata of a request (W3C trace context).
fn trace_of<T>(request: &Request<T>) -> (Option<String>, Option<String>) {
    let get = |k| request.metadata().get(k).and_then(|v| v.to_str().ok()).map(str::to_owned);
    (get("traceparent"), get("tracestate"))
}

/// The `dtmgimp.Dtm` service.
#[derive(Clone)]
pub struct DtmService {
    engine: Engine,
}

impl DtmService {
    /// A service over the engine.
    pub fn new(engine: Engine) -> DtmService {
        DtmService { engine }
    }
}

/// The one mapping from engine errors to gRPC codes (spec 3.3): FAILURE → `Aborted`,
/// ONGOING → `FailedPrecondition`, bad input → `InvalidArgument`.
pub fn status_of(e: dtx_engine::Error) -> Status {
    use dtx_engine::Error as E;
    match e {
        E::InvalidArgument(m) => Status::invalid_argument(m),
        E::Conflict(m) => Status::aborted(m),
        E::Ongoing(m) => Status::failed_precondition(m),
        E::NotFound(m) => Status::not_found(m),
        E::Unavailable(m) => Status::unavailable(m),
        E::Internal(source) => {
            tracing::error!(error = %source, "internal error");
            Status::internal("internal error")
        }
    }
}

fn bad(m: impl Into<String>) -> Status {
    Status::invalid_argument(m)
}

/// Decodes a `DtmRequest` into the engine's request (gRPC transactions have protocol `grpc`).
fn request_of(r: DtmRequest) -> Result<TransRequest, Status> {
    if r.gid.is_empty() {
        return Err(bad("gid is missing"));
    }
    if r.trans_type.is_empty() {
        return Err(bad("trans_type is missing"));
    }
    let trans_type: TransType = r.trans_type.parse().map_err(|_| {
        bad(format!("unknown trans_type '{}' (expected saga, tcc, msg, xa or workflow)", r.trans_type))
    })?;
    // `Steps` is the JSON text of the steps array; DTM's SDK may send "null".
    let steps: Vec<Option<BTreeMap<String, Option<String>>>> = match r.steps.trim() {
        "" | "null" => Vec::new(),
        text => {
            serde_json::from_str(text).map_err(|e| bad(format!("Steps is not a JSON array of steps: {e}")))?
        }
    };
    let steps = steps
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let mut s = s.ok_or_else(|| bad(format!("steps[{i}] is null")))?;
            let mut take = |k: &str| s.remove(k).flatten().unwrap_or_default();
            Ok(Step { action: take("action"), compensate: take("compensate") })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    let o = r.trans_options.unwrap_or_default();
    let non_negative =
        |v: i64, key: &str| u64::try_from(v).map_err(|_| bad(format!("{key} must not be negative")));
    let options = TransOptions {
        wait_result: o.wait_result,
        timeout_to_fail: non_negative(o.timeout_to_fail, "TimeoutToFail")?,
        request_timeout: non_negative(o.request_timeout, "RequestTimeout")?,
        retry_interval: non_negative(o.retry_interval, "RetryInterval")?,
        branch_headers: o.branch_headers.into_iter().collect(),
        // The gRPC options have no Concurrent: a gRPC msg is sequential.
        concurrent: false,
        retry_limit: non_negative(o.retry_limit, "RetryLimit")?,
    };
    Ok(TransRequest {
        gid: r.gid,
        trans_type,
        protocol: "grpc".into(),
        steps,
        payloads: r.bin_payloads,
        custom_data: r.customed_data,
        query_prepared: r.query_prepared,
        options,
        rollback_reason: r.rollback_reason,
        req_extra: r.req_extra.into_iter().collect(),
    })
}

/// The answer to a submit, per DTM's `wait_result` rules (spec 5.3).
fn reply_of_submit(r: SubmitReply) -> Result<Response<()>, Status> {
    match r {
        SubmitReply::Accepted | SubmitReply::Finished { status: GlobalStatus::Succeed, .. } => {
            Ok(Response::new(()))
        }
        SubmitReply::Finished { reason, .. } => {
            Err(Status::aborted(if reason.is_empty() { "the transaction failed".into() } else { reason }))
        }
        SubmitReply::InProgress { status: GlobalStatus::Aborting, reason } => {
            Err(Status::aborted(format!("rolling back: {reason}")))
        }
        SubmitReply::InProgress { status, .. } => Err(Status::failed_precondition(format!(
            "the transaction is still {status}; dtx keeps retrying it in the background"
        ))),
    }
}

#[tonic::async_trait]
impl Dtm for DtmService {
    async fn new_gid(&self, _: Request<()>) -> Result<Response<DtmGidReply>, Status> {
        Ok(Response::new(DtmGidReply { gid: new_gid_text() }))
    }

    async fn submit(&self, request: Request<DtmRequest>) -> Result<Response<()>, Status> {
        let trace = trace_of(&request);
        let mut req = request_of(request.into_inner())?;
        dtx_engine::trace_context::attach(&mut req, trace.0.as_deref(), trace.1.as_deref());
        // Detached: a caller that goes away does not cancel the submit or its round.
        let engine = self.engine.clone();
        let submitted = self.engine.detached(async move { engine.submit(req).await });
        reply_of_submit(submitted.await.map_err(status_of)?.map_err(status_of)?)
    }

    async fn prepare(&self, request: Request<DtmRequest>) -> Result<Response<()>, Status> {
        let trace = trace_of(&request);
        let mut req = request_of(request.into_inner())?;
        dtx_engine::trace_context::attach(&mut req, trace.0.as_deref(), trace.1.as_deref());
        self.engine.prepare(req).await.map_err(status_of)?;
        Ok(Response::new(()))
    }

    async fn abort(&self, request: Request<DtmRequest>) -> Result<Response<()>, Status> {
        let req = request_of(request.into_inner())?;
        let engine = self.engine.clone();
        let aborted = self.engine.detached(async move { engine.abort(&req.gid, &req.rollback_reason).await });
        match aborted.await.map_err(status_of)?.map_err(status_of)? {
            SubmitReply::Accepted | SubmitReply::Finished { .. } => Ok(Response::new(())),
            SubmitReply::InProgress { status, .. } => Err(Status::failed_precondition(format!(
                "the transaction is still {status}; dtx keeps cancelling it in the background"
            ))),
        }
    }

    async fn register_branch(&self, request: Request<DtmBranchRequest>) -> Result<Response<()>, Status> {
        let mut r = request.into_inner();
        if r.gid.is_empty() {
            return Err(bad("gid is missing"));
        }
        let mut take = |k: &str| r.data.remove(k).unwrap_or_default();
        let (confirm, cancel, url) = (take("confirm"), take("cancel"), take("url"));
        let (op, status) = (take("op"), take("status"));
        // `Op` (field 4) is ignored, as DTM does: a workflow's op travels in `Data`.
        let req = RegisterBranch {
            gid: r.gid,
            trans_type: r.trans_type,
            branch_id: r.branch_id,
            data: r.busi_payload,
            confirm,
            cancel,
            url,
            op,
            status,
        };
        self.engine.register_branch(req).await.map_err(status_of)?;
        Ok(Response::new(()))
    }

    async fn prepare_workflow(
        &self,
        request: Request<DtmRequest>,
    ) -> Result<Response<DtmProgressesReply>, Status> {
        let trace = trace_of(&request);
        let mut req = request_of(request.into_inner())?;
        dtx_engine::trace_context::attach(&mut req, trace.0.as_deref(), trace.1.as_deref());
        let wf = self.engine.prepare_workflow(req).await.map_err(status_of)?;
        let g = wf.global;
        // Unlike DTM (which leaves it empty over gRPC), the result is filled: a finished
        // workflow replayed over gRPC returns what it returned the first time.
        let transaction = DtmTransaction {
            gid: g.gid,
            status: g.status.to_string(),
            rollback_reason: g.rollback_reason,
            result: g.result,
        };
        let progresses = wf
            .progresses
            .into_iter()
            .map(|b| DtmProgress {
                status: b.status.to_string(),
                bin_data: b.payload,
                branch_id: b.branch_id,
                op: b.op.to_string(),
            })
            .collect();
        Ok(Response::new(DtmProgressesReply { transaction: Some(transaction), progresses }))
    }

    async fn subscribe(&self, request: Request<DtmTopicRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        self.engine.subscribe(&r.topic, &r.url, &r.remark).await.map_err(status_of)?;
        Ok(Response::new(()))
    }

    async fn unsubscribe(&self, request: Request<DtmTopicRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        self.engine.unsubscribe(&r.topic, &r.url).await.map_err(status_of)?;
        Ok(Response::new(()))
    }

    async fn delete_topic(&self, request: Request<DtmTopicRequest>) -> Result<Response<()>, Status> {
        let r = request.into_inner();
        self.engine.delete_topic(&r.topic).await.map_err(status_of)?;
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_requests_are_invalid_arguments() {
        let ok = DtmRequest { gid: "g".into(), trans_type: "saga".into(), ..Default::default() };
        assert!(request_of(ok.clone()).is_ok());
        for r in [
            DtmRequest { gid: String::new(), ..ok.clone() },
            DtmRequest { trans_type: "nope".into(), ..ok.clone() },
            DtmRequest { steps: "{".into(), ..ok.clone() },
        ] {
            assert_eq!(request_of(r).unwrap_err().code(), tonic::Code::InvalidArgument);
        }
        let r = request_of(DtmRequest {
            steps: r#"[{"action":"h:1/a.B/C","compensate":"h:1/a.B/D"}]"#.into(),
            bin_payloads: vec![vec![1, 2]],
            ..ok
        })
        .unwrap();
        assert_eq!(r.protocol, "grpc");
        assert_eq!(r.steps[0].compensate, "h:1/a.B/D");
    }
}
