//! A TCC round: confirm (or cancel) every registered branch, newest first, one at a time. The
//! round ends at the first call without success; the rest waits for the next round.
//!
//! XA rounds run the same loop with XA's rules (commit / rollback, oldest first): see
//! [`run_phase_two`].

use dtx_core::tcc::{self, Decision, Row};
use dtx_core::{GlobalStatus, timeout};
use dtx_store::Loaded;
use tracing::info;

use crate::Inner;
use crate::round::RoundEnd;
use crate::round::ctx::{Ctx, Premarks};
use crate::round::exec::Target;

pub(crate) async fn run(inner: &Inner, loaded: Loaded, owner: String, premarks: Premarks) -> RoundEnd {
    run_phase_two(inner, loaded, owner, premarks, tcc::plan).await
}

/// The rules of a two-phase mode: which row to call next (`dtx_core::tcc::plan`, `dtx_core::xa::plan`).
pub(crate) type Plan = fn(GlobalStatus, &[Row], bool) -> Decision;

/// A phase-two round (TCC or XA): call one row at a time as `plan` decides.
pub(crate) async fn run_phase_two(
    inner: &Inner,
    loaded: Loaded,
    owner: String,
    premarks: Premarks,
    plan: Plan,
) -> RoundEnd {
    let mut ctx = Ctx::new(inner, loaded, owner, premarks);
    loop {
        let rows: Vec<Row> = ctx.branches.iter().map(|b| Row { op: b.op, status: b.status }).collect();
        match plan(ctx.global.status, &rows, ctx.timed_out()) {
            Decision::AbortTimedOut => {
                let reason = timeout::timeout_reason(ctx.timeout().unwrap_or_default());
                info!(gid = %ctx.global.gid, trans_type = %ctx.global.trans_type, %reason, "timed out; rolling back");
                ctx.set_status(GlobalStatus::Aborting, Some(reason));
            }
            Decision::Call(row) => {
                if ctx.stopping() {
                    let kind = ctx.retry_kind();
                    return ctx.release(kind, None).await;
                }
                // The executor persists the attempt (renewing the lease) before the call.
                let outcome = match ctx.call_renewing(Target::Row(row)).await {
                    Ok(outcome) => outcome,
                    Err(end) => return end,
                };
                let done = tcc::phase_two_status_after(&outcome);
                ctx.record(row, &outcome, done);
                if done.is_none() {
                    let kind = ctx.retry_kind();
                    return ctx.release(kind, None).await;
                }
            }
            Decision::Finish(status) => return ctx.finish(status).await,
            Decision::Wait => {
                // Prepared and within its time: nothing to do until it times out (or the
                // client submits or aborts it).
                return match ctx.timeout() {
                    Some(t) => {
                        let at = ctx.global.create_time.add(t);
                        ctx.release_until(at).await
                    }
                    None => {
                        let kind = ctx.retry_kind();
                        ctx.release(kind, None).await
                    }
                };
            }
        }
    }
}
