//! A saga processing round: the core's planner decides, this file persists and calls.
//!
//! Order of effects, always: persist (fenced) the marks of the calls about to start, together
//! with every result gathered since the last write, then call. So a crash never loses the fact
//! that an action was attempted (its compensation will run), and a compensation is never
//! started for an action that was never attempted.

use std::collections::BTreeSet;

use bytes::Bytes;
use dtx_core::retry::RetryKind;
use dtx_core::saga::{
    self, AbortCause, Decision, Phase, SagaCustomData, SagaLayout, StepState, action_phase_after,
    compensate_phase_after,
};
use dtx_core::{Branch, BranchStatus, Global, GlobalStatus, Op, Outcome, Timestamp, timeout};
use dtx_store::{BranchUpdate, Error as StoreError, LeaseChange, Loaded, Save, StatusChange};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tracing::{debug, error, info, warn};

use crate::Inner;
use crate::participant::CallRequest;
use crate::round::RoundEnd;

/// Which of a step's two rows a call is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Action,
    Compensate,
}

type CallResult = (usize, Side, Outcome);

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
            .map(|r| branches[r.action].url.is_empty() || !branches[r.compensate].url.is_empty())
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
    inner: &'a Inner,
    global: Global,
    branches: Vec<Branch>,
    owner: String,
    /// The first calls were already marked attempted by the insert: skip that write.
    premarked: bool,
    dirty: BTreeSet<usize>,
    status_change: Option<StatusChange>,
    saw_error: bool,
    saw_ongoing: bool,
    progress: bool,
    retries_used: u64,
    retry_limit_exceeded: bool,
}

impl<'a> SagaRound<'a> {
    pub(crate) fn new(inner: &'a Inner, loaded: Loaded, owner: String, premarked: bool) -> Self {
        SagaRound {
            inner,
            global: loaded.global,
            branches: loaded.branches,
            owner,
            premarked,
            dirty: BTreeSet::new(),
            status_change: None,
            saw_error: false,
            saw_ongoing: false,
            progress: false,
            retries_used: 0,
            retry_limit_exceeded: false,
        }
    }

    pub(crate) async fn run(mut self) -> RoundEnd {
        let inner = self.inner;
        let shape = match SagaShape::of(&self.global, &self.branches) {
            Ok(s) => s,
            Err(e) => {
                // Stored data that no longer parses cannot be driven; leave it for an operator.
                error!(gid = %self.global.gid, error = %e, "saga cannot be scheduled");
                return self.release(RetryKind::Error).await;
            }
        };
        let mut steps = shape.stored_states(&self.branches);
        let timeout = timeout::effective_timeout(
            self.global.trans_type,
            self.global.options.timeout_to_fail,
            inner.opts.timeout_to_fail,
        );
        let mut running: FuturesUnordered<BoxFuture<'a, CallResult>> = FuturesUnordered::new();
        let renew_every = inner.opts.lease / 3;
        let mut renew_at = tokio::time::Instant::now() + renew_every;

        loop {
            let now = inner.clock.now();
            let timed_out = timeout::is_timed_out(self.global.create_time, timeout, now);
            let decision =
                saga::plan(&shape.layout, self.global.status, &steps, timed_out, self.retry_limit_exceeded);
            match decision {
                Decision::Start { actions, compensations } if !self.stopping() || self.premarked => {
                    let mut calls = Vec::with_capacity(actions.len() + compensations.len());
                    for s in actions {
                        steps[s].action = Phase::Running;
                        calls.push((s, Side::Action, shape.rows[s].action));
                    }
                    for s in compensations {
                        steps[s].compensate = Phase::Running;
                        calls.push((s, Side::Compensate, shape.rows[s].compensate));
                    }
                    if self.premarked {
                        self.premarked = false;
                    } else {
                        for &(_, _, row) in &calls {
                            self.branches[row].attempts += 1;
                            self.dirty.insert(row);
                        }
                        if let Err(end) = self.flush(self.renewed_lease()).await {
                            return end;
                        }
                        renew_at = tokio::time::Instant::now() + renew_every;
                    }
                    for (s, side, row) in calls {
                        running.push(self.call(s, side, row));
                    }
                }
                Decision::Start { .. } | Decision::Wait => {
                    if running.is_empty() {
                        let kind = if self.saw_error || self.stopping() {
                            RetryKind::Error
                        } else {
                            RetryKind::Ongoing
                        };
                        return self.release(kind).await;
                    }
                    tokio::select! {
                        Some((s, side, outcome)) = running.next() => {
                            if let Some(again) = self.apply(&shape, &mut steps, s, side, outcome) {
                                running.push(self.call(s, side, again));
                            }
                        }
                        _ = tokio::time::sleep_until(renew_at) => {
                            if let Err(end) = self.flush(self.renewed_lease()).await {
                                return end;
                            }
                            renew_at = tokio::time::Instant::now() + renew_every;
                        }
                    }
                }
                Decision::Abort(cause) => {
                    let reason = self.abort_reason(&shape, cause, timeout);
                    info!(gid = %self.global.gid, %reason, "saga rolling back");
                    self.global.status = GlobalStatus::Aborting;
                    self.global.rollback_reason = reason.clone();
                    self.status_change =
                        Some(StatusChange { to: GlobalStatus::Aborting, rollback_reason: Some(reason) });
                }
                Decision::Finish(status) => {
                    self.global.status = status;
                    self.status_change = Some(StatusChange { to: status, rollback_reason: None });
                    let base = self.base_interval();
                    let lease = LeaseChange::Release { next_cron_time: now, next_cron_interval: base };
                    if let Err(end) = self.flush(lease).await {
                        return end;
                    }
                    info!(gid = %self.global.gid, %status, "saga finished");
                    return RoundEnd::Finished { status, reason: self.global.rollback_reason };
                }
            }
        }
    }

    /// Records a call's answer. Returns the branch row to call again at once when
    /// `retry_limit` allows an immediate re-execution.
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
        match (&outcome, phase) {
            (Outcome::Success, _) | (Outcome::Failure(_), Phase::Failed) => self.progress = true,
            (Outcome::Ongoing, _) => self.saw_ongoing = true,
            _ => self.saw_error = true,
        }
        let now = self.inner.clock.now();
        let branch = &mut self.branches[row];
        branch.last_error = outcome.error_text().unwrap_or_default().to_owned();
        branch.update_time = now;
        self.dirty.insert(row);
        // Immediate re-execution (retry_limit) only while going forward: a rollback never
        // re-runs an action.
        if phase == Phase::Waiting && side == Side::Action && self.global.status == GlobalStatus::Submitted {
            let limit = self.global.options.retry_limit;
            if limit > 0 {
                if self.retries_used < limit {
                    self.retries_used += 1;
                    branch.attempts += 1;
                    debug!(gid = %self.global.gid, branch_id = %branch.branch_id, "immediate retry");
                    return Some(row);
                }
                self.retry_limit_exceeded = true;
            }
        }
        match phase {
            Phase::Succeeded => {
                branch.status = BranchStatus::Succeed;
                branch.finish_time = Some(now);
            }
            Phase::Failed => {
                branch.status = BranchStatus::Failed;
                branch.finish_time = Some(now);
            }
            _ => {}
        }
        match side {
            Side::Action => steps[step].action = phase,
            Side::Compensate => steps[step].compensate = phase,
        }
        None
    }

    fn call(&self, step: usize, side: Side, row: usize) -> BoxFuture<'a, CallResult> {
        let inner = self.inner;
        let b = &self.branches[row];
        let opts = &self.global.options;
        let req = CallRequest {
            url: b.url.clone(),
            gid: self.global.gid.clone(),
            trans_type: self.global.trans_type,
            branch_id: b.branch_id.clone(),
            op: b.op,
            payload: Bytes::from(b.payload.clone()),
            headers: opts.branch_headers.clone(),
            timeout: if opts.request_timeout > 0 {
                std::time::Duration::from_secs(opts.request_timeout)
            } else {
                inner.opts.request_timeout
            },
        };
        Box::pin(async move {
            let outcome = inner.participants.call(&req).await;
            (step, side, outcome)
        })
    }

    fn abort_reason(&self, shape: &SagaShape, cause: AbortCause, t: Option<std::time::Duration>) -> String {
        match cause {
            AbortCause::ActionFailed(step) => {
                let b = &self.branches[shape.rows[step].action];
                format!("branch {} action {} answered FAILURE: {}", b.branch_id, b.url, b.last_error)
            }
            AbortCause::Timeout => timeout::timeout_reason(t.unwrap_or_default()),
            AbortCause::RetryLimit => format!(
                "retry limit exhausted: more than {} immediate retries (retry_limit)",
                self.global.options.retry_limit
            ),
        }
    }

    fn stopping(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    fn base_interval(&self) -> std::time::Duration {
        self.inner.opts.retry.base(self.global.options.retry_interval)
    }

    fn renewed_lease(&self) -> LeaseChange {
        LeaseChange::Renew { lease_until: self.inner.clock.now().add(self.inner.opts.lease) }
    }

    /// Ends the round without a final status: the row is released with its next retry time.
    async fn release(mut self, kind: RetryKind) -> RoundEnd {
        let now = self.inner.clock.now();
        let policy = self.inner.opts.retry;
        let base = self.base_interval();
        let interval = if self.stopping() && !self.saw_error {
            // Shutting down: hand it over to whoever runs next, without penalty.
            base
        } else {
            let current = if self.progress { base } else { self.global.next_cron_interval.max(base) };
            policy.next_interval(base, current, kind)
        };
        let mut next = if self.stopping() && !self.saw_error {
            now
        } else {
            now.add(policy.jittered(interval, rand::random::<f64>()))
        };
        // A saga going forward is due again no later than its timeout, so `timeout_to_fail`
        // rolls it back on time rather than at the next (possibly backed-off) retry.
        if self.global.status == GlobalStatus::Submitted
            && let Some(t) = timeout::effective_timeout(
                self.global.trans_type,
                self.global.options.timeout_to_fail,
                self.inner.opts.timeout_to_fail,
            )
        {
            let deadline = self.global.create_time.add(t);
            if deadline > now && deadline < next {
                next = deadline;
            }
        }
        let lease = LeaseChange::Release { next_cron_time: next, next_cron_interval: interval };
        if let Err(end) = self.flush(lease).await {
            return end;
        }
        debug!(gid = %self.global.gid, next_in_ms = next.0 - now.0, "saga waiting for a later round");
        RoundEnd::Pending { status: self.global.status, reason: self.global.rollback_reason }
    }

    /// One fenced write of everything gathered since the last one.
    async fn flush(&mut self, lease: LeaseChange) -> Result<(), RoundEnd> {
        let now = self.inner.clock.now();
        let branches = self
            .dirty
            .iter()
            .map(|&i| {
                let b = &self.branches[i];
                BranchUpdate {
                    branch_id: b.branch_id.clone(),
                    op: b.op,
                    status: b.status,
                    attempts: b.attempts,
                    last_error: b.last_error.clone(),
                    finish_time: b.finish_time,
                }
            })
            .collect();
        let save = Save {
            gid: self.global.gid.clone(),
            owner: self.owner.clone(),
            now,
            branches,
            status: self.status_change.take(),
            lease,
        };
        match self.inner.store.save(save).await {
            Ok(()) => {
                self.dirty.clear();
                Ok(())
            }
            Err(StoreError::Fenced { gid }) => {
                warn!(%gid, "ownership lost; stopping this round");
                Err(RoundEnd::Abandoned)
            }
            Err(e) => {
                error!(gid = %self.global.gid, error = %e, "store write failed; the lease will hand the saga over");
                Err(RoundEnd::Abandoned)
            }
        }
    }
}

/// Marks the first actions of a new saga as attempted, so its insert also records them.
pub(crate) fn premark_first_actions(global: &Global, branches: &mut [Branch], now: Timestamp) -> bool {
    let Ok(shape) = SagaShape::of(global, branches) else {
        return false;
    };
    let first = shape.first_actions(global, branches);
    for &row in &first {
        branches[row].attempts = 1;
        branches[row].update_time = now;
    }
    !first.is_empty()
}
