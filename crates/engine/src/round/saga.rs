//! A saga processing round: the core's planner decides, this file persists and calls.
//!
//! Order of effects, always: persist (fenced) the marks of the calls about to start, together
//! with every result gathered since the last write, then call. So a crash never loses the fact
//! that an action was attempted (its compensation will run), and a compensation is never
//! started for an action that was never attempted.

use dtx_core::retry::RetryKind;
use dtx_core::saga::{
    self, AbortCause, Decision, Phase, SagaCustomData, SagaLayout, StepState, action_phase_after,
    compensate_phase_after, is_rollbackable,
};
use dtx_core::{Branch, BranchStatus, Global, GlobalStatus, Op, Outcome, Timestamp, timeout};
use dtx_store::Loaded;
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tracing::{debug, error, info};

use crate::Inner;
use crate::round::RoundEnd;
use crate::round::ctx::{Ctx, Premark, Premarks};
use crate::round::exec::{Running, Target};

/// Which of a step's two rows a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Action,
    Compensate,
}

/// Which call a result belongs to.
type Tag = (usize, Side);

/// The rows of one saga step in the branch list.
#[derive(Debug, Clone, Copy)]
struct StepRows {
    action: usize,
    compensate: usize,
}

/// Saga rows as the layout sees them: which steps exist, which can be rolled back.
pub(crate) struct SagaShape {
    rows: Vec<StepRows>,
    layout: SagaLayout,
}

impl SagaShape {
    /// Pairs the `compensate` and `action` rows of each step (in branch order) and builds the
    /// dependency graph from `custom_data`.
    pub(crate) fn of(global: &Global, branches: &[Branch]) -> Result<SagaShape, String> {
        let mut rows = Vec::new();
        for (i, b) in branches.iter().enumerate() {
            if b.op != Op::Action {
                continue;
            }
            let comp = branches
                .iter()
                .position(|c| c.op == Op::Compensate && c.branch_id == b.branch_id)
                .ok_or_else(|| format!("step {} has no compensate row", b.branch_id))?;
            rows.push(StepRows { action: i, compensate: comp });
        }
        let rollbackable = rows
            .iter()
            .map(|r| is_rollbackable(&branches[r.action].url, &branches[r.compensate].url))
            .collect();
        let custom = SagaCustomData::parse(&global.custom_data).map_err(|e| e.to_string())?;
        let layout = SagaLayout::new(rollbackable, &custom).map_err(|e| e.to_string())?;
        Ok(SagaShape { rows, layout })
    }

    /// The step states at the start of a round, from the stored rows.
    pub(crate) fn stored_states(&self, branches: &[Branch]) -> Vec<StepState> {
        self.rows
            .iter()
            .map(|r| StepState {
                action: Phase::from_stored(branches[r.action].status, branches[r.action].attempts),
                compensate: Phase::from_stored(
                    branches[r.compensate].status,
                    branches[r.compensate].attempts,
                ),
            })
            .collect()
    }

    /// True once a non-rollbackable action has succeeded (the saga only goes forward).
    pub(crate) fn forward_only(&self, branches: &[Branch]) -> bool {
        saga::forward_only(&self.layout, &self.stored_states(branches))
    }

    /// The action rows a brand-new saga starts with (marked attempted in its insert).
    pub(crate) fn first_actions(&self, global: &Global, branches: &[Branch]) -> Vec<usize> {
        let states = self.stored_states(branches);
        match saga::plan(&self.layout, global.status, &states, false, false) {
            Decision::Start { actions, .. } => actions.iter().map(|&s| self.rows[s].action).collect(),
            _ => Vec::new(),
        }
    }
}

pub(crate) struct SagaRound<'a> {
    ctx: Ctx<'a>,
    retries_used: u64,
    retry_limit_exceeded: bool,
}

/// Why [`SagaRound::wait`] stops the loop.
enum Stop {
    /// The round is over (lost ownership, store failure).
    End(RoundEnd),
    /// Nothing in flight: release the row.
    Release,
}

/// A call waiting for its immediate retry (retry_limit) to be due.
type Pausing = BoxFuture<'static, (Tag, usize)>;

impl<'a> SagaRound<'a> {
    pub(crate) fn new(inner: &'a Inner, loaded: Loaded, owner: String, premarks: Premarks) -> Self {
        SagaRound {
            ctx: Ctx::new(inner, loaded, owner, premarks),
            retries_used: 0,
            retry_limit_exceeded: false,
        }
    }

    pub(crate) async fn run(mut self) -> RoundEnd {
        let shape = match SagaShape::of(&self.ctx.global, &self.ctx.branches) {
            Ok(s) => s,
            Err(e) => {
                // Stored data that no longer parses cannot be driven; leave it for an operator.
                error!(gid = %self.ctx.global.gid, error = %e, "saga cannot be scheduled");
                return self.ctx.release(RetryKind::Error, None).await;
            }
        };
        let mut steps = shape.stored_states(&self.ctx.branches);
        let timeout = self.ctx.timeout();
        let mut running: FuturesUnordered<Running<'a, Tag>> = FuturesUnordered::new();
        let mut pausing: FuturesUnordered<Pausing> = FuturesUnordered::new();

        loop {
            let decision = saga::plan(
                &shape.layout,
                self.ctx.global.status,
                &steps,
                self.ctx.timed_out(),
                self.retry_limit_exceeded,
            );
            match decision {
                Decision::Start { actions, compensations } => {
                    let mut calls = Vec::with_capacity(actions.len() + compensations.len());
                    for &s in &actions {
                        calls.push(((s, Side::Action), shape.rows[s].action));
                    }
                    for &s in &compensations {
                        calls.push(((s, Side::Compensate), shape.rows[s].compensate));
                    }
                    let rows: Vec<usize> = calls.iter().map(|&(_, row)| row).collect();
                    // Shutting down: only calls already on record may still start.
                    if !self.ctx.stopping() || self.ctx.all_premarked(&rows) {
                        for s in actions {
                            steps[s].action = Phase::Running;
                        }
                        for s in compensations {
                            steps[s].compensate = Phase::Running;
                        }
                        let targets = calls.into_iter().map(|(tag, row)| (tag, Target::Row(row))).collect();
                        match self.ctx.launch(targets).await {
                            Ok(started) => running.extend(started),
                            Err(end) => return end,
                        }
                        continue;
                    }
                    match self.wait(&shape, &mut steps, &mut running, &mut pausing).await {
                        Ok(()) => {}
                        Err(Stop::End(end)) => return end,
                        Err(Stop::Release) => return self.release(timeout).await,
                    }
                }
                Decision::Wait => match self.wait(&shape, &mut steps, &mut running, &mut pausing).await {
                    Ok(()) => {}
                    Err(Stop::End(end)) => return end,
                    Err(Stop::Release) => return self.release(timeout).await,
                },
                Decision::Abort(cause) => {
                    let reason = self.abort_reason(&shape, cause, timeout);
                    info!(gid = %self.ctx.global.gid, %reason, "saga rolling back");
                    self.ctx.set_status(GlobalStatus::Aborting, Some(reason));
                }
                Decision::Finish(status) => return self.ctx.finish(status).await,
            }
        }
    }

    /// Ends the round without a final status.
    async fn release(self, timeout: Option<std::time::Duration>) -> RoundEnd {
        // Due again no later than the timeout, so it rolls back on time.
        let due_by = (self.ctx.global.status == GlobalStatus::Submitted)
            .then(|| timeout.map(|t| self.ctx.global.create_time.add(t)))
            .flatten();
        let kind = self.ctx.retry_kind();
        self.ctx.release(kind, due_by).await
    }

    /// Waits for the next event: a call's answer, an immediate retry coming due, or the lease
    /// renewal. With nothing in flight, the round ends ([`Stop::Release`]).
    async fn wait(
        &mut self,
        shape: &SagaShape,
        steps: &mut [StepState],
        running: &mut FuturesUnordered<Running<'a, Tag>>,
        pausing: &mut FuturesUnordered<Pausing>,
    ) -> Result<(), Stop> {
        if running.is_empty() && pausing.is_empty() {
            return Err(Stop::Release);
        }
        tokio::select! {
            Some(((s, side), outcome)) = running.next() => {
                if let Some(row) = self.apply(shape, steps, s, side, outcome) {
                    let pause = immediate_retry_pause(self.retries_used);
                    let timer = self.ctx.inner.clock.sleep(pause);
                    pausing.push(Box::pin(async move {
                        timer.await;
                        ((s, side), row)
                    }));
                }
            }
            Some(((s, side), row)) = pausing.next() => {
                if self.ctx.stopping() || self.ctx.global.status != GlobalStatus::Submitted {
                    // Not retried now (shutting down, or rolling back since: a rollback never
                    // re-runs an action): the attempt's outcome stays unknown.
                    steps[s].action = Phase::Waiting;
                } else {
                    // A new attempt like any other: recorded (fenced) before the call.
                    match self.ctx.launch(vec![((s, side), Target::Row(row))]).await {
                        Ok(started) => running.extend(started),
                        Err(end) => return Err(Stop::End(end)),
                    }
                }
            }
            () = self.ctx.renewal_due() => {
                self.ctx.renew_lease().await.map_err(Stop::End)?;
            }
        }
        Ok(())
    }

    /// Records a call's answer. Returns the branch row to call again soon when `retry_limit`
    /// allows an immediate re-execution.
    fn apply(
        &mut self,
        shape: &SagaShape,
        steps: &mut [StepState],
        step: usize,
        side: Side,
        outcome: Outcome,
    ) -> Option<usize> {
        let (row, phase) = match side {
            Side::Action => {
                (shape.rows[step].action, action_phase_after(&shape.layout, steps, step, &outcome))
            }
            Side::Compensate => (shape.rows[step].compensate, compensate_phase_after(&outcome)),
        };
        // Immediate re-execution (retry_limit) only while going forward: a rollback never
        // re-runs an action.
        if phase == Phase::Waiting
            && side == Side::Action
            && self.ctx.global.status == GlobalStatus::Submitted
            && self.ctx.global.options.retry_limit > 0
        {
            if self.retries_used < self.ctx.global.options.retry_limit {
                self.retries_used += 1;
                self.ctx.record(row, &outcome, None);
                debug!(gid = %self.ctx.global.gid, step, "immediate retry (retry_limit)");
                return Some(row);
            }
            self.retry_limit_exceeded = true;
        }
        let final_status = match phase {
            Phase::Succeeded => Some(BranchStatus::Succeed),
            Phase::Failed => Some(BranchStatus::Failed),
            _ => None,
        };
        self.ctx.record(row, &outcome, final_status);
        match side {
            Side::Action => steps[step].action = phase,
            Side::Compensate => steps[step].compensate = phase,
        }
        None
    }

    fn abort_reason(&self, shape: &SagaShape, cause: AbortCause, t: Option<std::time::Duration>) -> String {
        match cause {
            AbortCause::ActionFailed(step) => {
                let b = &self.ctx.branches[shape.rows[step].action];
                format!("branch {} action {} answered FAILURE: {}", b.branch_id, b.url, b.last_error)
            }
            AbortCause::Timeout => timeout::timeout_reason(t.unwrap_or_default()),
            AbortCause::RetryLimit => format!(
                "retry limit exhausted: more than {} immediate retries (retry_limit)",
                self.ctx.global.options.retry_limit
            ),
        }
    }
}

/// The pause before the `n`-th immediate retry (retry_limit) of a round: short, doubling,
/// bounded, so a participant refusing connections is not hit as fast as the loop spins.
pub(crate) fn immediate_retry_pause(n: u64) -> std::time::Duration {
    let doublings = u32::try_from(n.saturating_sub(1)).unwrap_or(u32::MAX).min(8);
    IMMEDIATE_RETRY_FIRST_PAUSE.saturating_mul(1 << doublings).min(IMMEDIATE_RETRY_MAX_PAUSE)
}

const IMMEDIATE_RETRY_FIRST_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);
const IMMEDIATE_RETRY_MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// Marks the first actions of a new saga as attempted, so its insert also records them.
/// Returns those attempts, for the round to use without a write of its own.
///
/// With `ahead` (the node's operator-stop count, on a store only this node uses) the insert
/// also records the first attempt of every later rollbackable action (ADR 21): a sequential
/// saga then calls all its actions without a write between them, and writes once at its end.
/// Such a mark may precede a call that never comes (the saga rolled back first); after a crash
/// the action counts as attempted and is compensated, which participants take as a null
/// compensation, as after a crash between any attempt's write and its call (ADR 2). A pivot
/// (no compensation) is never marked ahead: an attempted pivot stops the rollback.
/// [`unmark_ahead`] takes those marks back out of the rows the round starts with.
pub(crate) fn premark_first_actions(
    global: &Global,
    branches: &mut [Branch],
    now: Timestamp,
    ahead: Option<u64>,
) -> Premarks {
    let mut premarks = Premarks::new();
    let Ok(shape) = SagaShape::of(global, branches) else {
        return premarks;
    };
    let first = shape.first_actions(global, branches);
    for &row in &first {
        let b = &mut branches[row];
        b.attempts += 1;
        b.update_time = now;
        premarks.push(Premark {
            branch_id: b.branch_id.clone(),
            op: b.op,
            attempts: b.attempts,
            ahead: None,
        });
    }
    let Some(stops) = ahead else {
        return premarks;
    };
    for (step, rows) in shape.rows.iter().enumerate() {
        let b = &mut branches[rows.action];
        if first.contains(&rows.action) || !shape.layout.is_rollbackable(step) || b.attempts != 0 {
            continue;
        }
        b.attempts = 1;
        b.update_time = now;
        premarks.push(Premark { branch_id: b.branch_id.clone(), op: b.op, attempts: 1, ahead: Some(stops) });
    }
    premarks
}

/// The rows a round starts with after an insert that recorded attempts ahead: those attempts
/// are on record but not yet made, so the round counts them only when it calls.
pub(crate) fn unmark_ahead(premarks: &Premarks, branches: &mut [Branch]) {
    for p in premarks.iter().filter(|p| p.ahead.is_some()) {
        if let Some(b) = branches.iter_mut().find(|b| b.branch_id == p.branch_id && b.op == p.op) {
            b.attempts = p.attempts - 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn immediate_retry_pauses_double_up_to_a_bound() {
        let ms = |n| immediate_retry_pause(n).as_millis();
        assert_eq!([ms(1), ms(2), ms(3), ms(4), ms(5)], [200, 400, 800, 1600, 2000]);
        assert_eq!(ms(1000), 2000);
    }
}
