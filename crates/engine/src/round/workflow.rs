//! A workflow round: the client runs the workflow, so the only thing dtx does with a workflow
//! still `prepared` is call its callback (`query_prepared`), so that a client that crashed
//! resumes it (spec 6.6). The answer is only logged: the client finishes the workflow with its
//! own `submit`. The next call comes one retry interval later, without backoff.

use bytes::Bytes;
use dtx_core::workflow::{self, CALLBACK_BRANCH, Custom};
use dtx_core::{GlobalStatus, Op, Outcome};
use dtx_store::Loaded;
use tracing::{info, warn};

use crate::Inner;
use crate::participant::is_http_url;
use crate::round::RoundEnd;
use crate::round::ctx::Ctx;
use crate::round::exec::{Target, no_premarks};

pub(crate) async fn run(inner: &Inner, loaded: Loaded, owner: String) -> RoundEnd {
    let ctx = Ctx::new(inner, loaded, owner, no_premarks());
    let next = ctx.now().add(ctx.base_interval());
    if ctx.global.status != GlobalStatus::Prepared || ctx.global.query_prepared.is_empty() {
        // Finished (nothing is due), or nobody to call: the client itself must submit.
        return ctx.release_until(next).await;
    }
    let custom = match Custom::parse(&ctx.global.custom_data) {
        Ok(c) => c,
        Err(e) => {
            // Validated on prepareWorkflow; a row written otherwise is left for an operator.
            warn!(gid = %ctx.global.gid, error = %e, "workflow custom_data unreadable; not calling back");
            return ctx.release_until(next).await;
        }
    };
    call_back(ctx, custom).await
}

async fn call_back(mut ctx: Ctx<'_>, custom: Custom) -> RoundEnd {
    let url = ctx.global.query_prepared.clone();
    // gRPC callbacks (`workflow.Workflow/Execute`) take a WorkflowData message; HTTP ones the
    // input itself.
    let payload = if ctx.global.protocol == "grpc" && !is_http_url(&url) {
        workflow::grpc_callback_payload(&custom.data)
    } else {
        custom.data
    };
    // `Op::Msg` stands for "a callback of the client" in metrics; the wire carries the name.
    let mut req = ctx.request(url, CALLBACK_BRANCH.to_owned(), Op::Msg, Bytes::from(payload));
    req.op_name = Some(custom.name);
    let gid = ctx.global.gid.clone();
    // The executor's fenced write comes first: a round that lost the workflow calls nobody.
    let Some(call) = (match ctx.launch(vec![((), Target::Plain(req))]).await {
        Ok(mut started) => started.pop(),
        Err(end) => return end,
    }) else {
        return RoundEnd::Abandoned;
    };
    // Then the row is given back before the answer is awaited: the client resumes the
    // workflow inside the callback and must be able to record its steps and submit it, which
    // a held lease would refuse. Fixed cadence: next call one retry interval from now,
    // whatever the answer (DTM calls again every lease).
    let next = ctx.now().add(ctx.base_interval());
    let end = ctx.release_until(next).await;
    let ((), outcome) = call.await;
    match &outcome {
        Outcome::Success => info!(%gid, "workflow callback answered"),
        other => warn!(%gid, outcome = ?other, "workflow callback did not succeed"),
    }
    end
}
