//! A 2-phase message round: a prepared message past its timeout is decided by its check-back
//! (fail closed: only a clear success commits); a submitted one runs its actions until every
//! one has succeeded. A message never rolls back.

use bytes::Bytes;
use dtx_core::msg::{self, CheckBack, Decision};
use dtx_core::saga::Phase;
use dtx_core::{BranchStatus, GlobalStatus, Op};
use dtx_store::Loaded;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tracing::info;

use crate::Inner;
use crate::round::RoundEnd;
use crate::round::ctx::{Ctx, Premarks};
use crate::round::exec::{Running, Target};

/// The msg check-back is branch `00`, op `msg`.
const CHECK_BACK_BRANCH: &str = "00";

pub(crate) async fn run<'a>(inner: &'a Inner, loaded: Loaded, owner: String, premarks: Premarks) -> RoundEnd {
    let mut ctx = Ctx::new(inner, loaded, owner, premarks);
    if ctx.global.status == GlobalStatus::Submitted
        && let Some(at) = msg::delayed_until(ctx.global.create_time, &ctx.global.custom_data)
        && at > ctx.now()
    {
        // Made due early (resetCronTime / resetNextCronTime): the delay still holds, as in
        // DTM, which checks it in every round.
        return ctx.release_until(at).await;
    }
    let rows: Vec<usize> = (0..ctx.branches.len()).filter(|&i| ctx.branches[i].op == Op::Action).collect();
    let mut phases: Vec<Phase> =
        rows.iter().map(|&r| Phase::from_stored(ctx.branches[r].status, ctx.branches[r].attempts)).collect();
    let concurrent = ctx.global.options.concurrent;
    let mut running: FuturesUnordered<Running<'a, usize>> = FuturesUnordered::new();

    loop {
        match msg::plan(ctx.global.status, &phases, concurrent, ctx.timed_out()) {
            Decision::CheckBack => {
                let req = ctx.request(
                    ctx.global.query_prepared.clone(),
                    CHECK_BACK_BRANCH.to_owned(),
                    Op::Msg,
                    Bytes::new(),
                );
                // Through the executor: a fenced write first, so a round that lost the
                // transaction never asks (nor acts on the answer).
                let outcome = match ctx.call_renewing(Target::Plain(req)).await {
                    Ok(outcome) => outcome,
                    Err(end) => return end,
                };
                match msg::check_back(&outcome) {
                    CheckBack::Commit => {
                        ctx.note(&outcome, true);
                        info!(gid = %ctx.global.gid, "msg check-back: committed");
                        ctx.set_status(GlobalStatus::Submitted, None);
                    }
                    CheckBack::Fail => {
                        let text = outcome.error_text().unwrap_or_default().to_owned();
                        info!(gid = %ctx.global.gid, "msg check-back: never committed");
                        ctx.set_status(
                            GlobalStatus::Failed,
                            Some(format!(
                                "check-back {} answered FAILURE: {text}",
                                ctx.global.query_prepared
                            )),
                        );
                        return ctx.finish(GlobalStatus::Failed).await;
                    }
                    CheckBack::AskAgain(kind) => {
                        ctx.note(&outcome, false);
                        return ctx.release(kind, None).await;
                    }
                }
            }
            Decision::Start(actions) if !ctx.stopping() => {
                // Persist, then act: the executor writes the attempts (and a check-back's
                // commit) first, and a round that lost its ownership (lease taken over,
                // forceStop) stops here instead of calling the next action.
                for &i in &actions {
                    phases[i] = Phase::Running;
                }
                let targets = actions.into_iter().map(|i| (i, Target::Row(rows[i]))).collect();
                match ctx.launch(targets).await {
                    Ok(started) => running.extend(started),
                    Err(end) => return end,
                }
            }
            Decision::Finish => return ctx.finish(GlobalStatus::Succeed).await,
            Decision::Start(_) | Decision::Wait => {
                if running.is_empty() {
                    if ctx.global.status == GlobalStatus::Prepared
                        && let Some(t) = ctx.timeout()
                    {
                        // Not timed out yet: the check-back is due when it is.
                        let at = ctx.global.create_time.add(t);
                        return ctx.release_until(at).await;
                    }
                    let kind = ctx.retry_kind();
                    return ctx.release(kind, None).await;
                }
                tokio::select! {
                    Some((i, outcome)) = running.next() => {
                        phases[i] = msg::action_phase_after(&outcome);
                        let done = (phases[i] == Phase::Succeeded).then_some(BranchStatus::Succeed);
                        ctx.record(rows[i], &outcome, done);
                    }
                    () = ctx.renewal_due() => {
                        if let Err(end) = ctx.renew_lease().await {
                            return end;
                        }
                    }
                }
            }
        }
    }
}
