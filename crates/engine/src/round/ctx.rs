//! What every processing round shares: the owned transaction in memory, the writes gathered
//! since the last flush, and the fenced flush / finish / release operations.

use std::collections::BTreeSet;
use std::time::Duration;

use bytes::Bytes;
use dtx_core::retry::RetryKind;
use dtx_core::{Branch, BranchStatus, Global, GlobalStatus, Op, Outcome, Timestamp, timeout};
use dtx_store::{BranchUpdate, Error as StoreError, LeaseChange, Loaded, Save, StatusChange};
use futures::future::BoxFuture;
use tracing::{debug, error, info, warn};

use crate::Inner;
use crate::participant::CallRequest;
use crate::round::RoundEnd;

pub(crate) struct Ctx<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) global: Global,
    pub(crate) branches: Vec<Branch>,
    owner: String,
    dirty: BTreeSet<usize>,
    status_change: Option<StatusChange>,
    /// Some call errored in this round (backoff).
    pub(crate) saw_error: bool,
    /// Some call answered ONGOING in this round (fixed interval).
    pub(crate) saw_ongoing: bool,
    /// Some call got a definite answer in this round (the interval resets).
    pub(crate) progress: bool,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(inner: &'a Inner, loaded: Loaded, owner: String) -> Ctx<'a> {
        Ctx {
            inner,
            global: loaded.global,
            branches: loaded.branches,
            owner,
            dirty: BTreeSet::new(),
            status_change: None,
            saw_error: false,
            saw_ongoing: false,
            progress: false,
        }
    }

    pub(crate) fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    pub(crate) fn stopping(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// The transaction's effective `timeout_to_fail`.
    pub(crate) fn timeout(&self) -> Option<Duration> {
        timeout::effective_timeout(
            self.global.trans_type,
            self.global.options.timeout_to_fail,
            self.inner.opts.timeout_to_fail,
        )
    }

    pub(crate) fn timed_out(&self) -> bool {
        timeout::is_timed_out(self.global.create_time, self.timeout(), self.now())
    }

    /// Changes the status in memory; it is persisted with the next flush.
    /// A reason given earlier and not yet persisted is kept.
    pub(crate) fn set_status(&mut self, to: GlobalStatus, reason: Option<String>) {
        self.global.status = to;
        if let Some(r) = &reason {
            self.global.rollback_reason = r.clone();
        }
        let reason = reason.or_else(|| self.status_change.take().and_then(|c| c.rollback_reason));
        self.status_change = Some(StatusChange { to, rollback_reason: reason });
    }

    /// Counts an attempt of a branch row (persisted with the next flush).
    pub(crate) fn mark_attempt(&mut self, row: usize) {
        self.branches[row].attempts += 1;
        self.dirty.insert(row);
    }

    /// Records a call's answer on its branch row and in the round's retry flags. `done` says
    /// whether the row reached a final status (`succeed`, or `failed` for a saga action).
    pub(crate) fn record(&mut self, row: usize, outcome: &Outcome, final_status: Option<BranchStatus>) {
        self.note(outcome, final_status.is_some());
        let now = self.now();
        let b = &mut self.branches[row];
        b.last_error = outcome.error_text().unwrap_or_default().to_owned();
        b.update_time = now;
        if let Some(s) = final_status {
            b.status = s;
            b.finish_time = Some(now);
        }
        self.dirty.insert(row);
    }

    /// Updates the round's retry flags for an answer (also for calls without a branch row).
    pub(crate) fn note(&mut self, outcome: &Outcome, definite: bool) {
        match outcome {
            _ if definite => self.progress = true,
            Outcome::Ongoing => self.saw_ongoing = true,
            _ => self.saw_error = true,
        }
    }

    /// A call to a branch row.
    pub(crate) fn call_row(&self, row: usize) -> CallRequest {
        let b = &self.branches[row];
        self.request(b.url.clone(), b.branch_id.clone(), b.op, Bytes::from(b.payload.clone()))
    }

    /// A call with this transaction's headers and timeout.
    pub(crate) fn request(&self, url: String, branch_id: String, op: Op, payload: Bytes) -> CallRequest {
        let opts = &self.global.options;
        CallRequest {
            url,
            gid: self.global.gid.clone(),
            trans_type: self.global.trans_type,
            branch_id,
            op,
            payload,
            headers: opts.branch_headers.clone(),
            timeout: if opts.request_timeout > 0 {
                Duration::from_secs(opts.request_timeout)
            } else {
                self.inner.opts.request_timeout
            },
        }
    }

    /// Starts a call; the future owns everything it needs.
    pub(crate) fn spawn_call<T: Send + 'a>(&self, req: CallRequest, tag: T) -> BoxFuture<'a, (T, Outcome)> {
        let inner = self.inner;
        Box::pin(async move {
            let outcome = inner.participants.call(&req).await;
            (tag, outcome)
        })
    }

    /// Makes one call and waits for its answer, renewing the lease every third of it
    /// meanwhile, so that a call longer than the lease does not let another round take the
    /// transaction over and call again. `Err` when the ownership was lost meanwhile (the
    /// answer is then dropped, the round stops).
    pub(crate) async fn call_renewing(&mut self, req: &CallRequest) -> Result<Outcome, RoundEnd> {
        let inner = self.inner;
        let call = inner.participants.call(req);
        tokio::pin!(call);
        let every = inner.opts.lease / 3;
        loop {
            tokio::select! {
                outcome = &mut call => return Ok(outcome),
                _ = tokio::time::sleep(every) => {
                    let lease = self.renewed();
                    self.flush(lease).await?;
                }
            }
        }
    }

    pub(crate) fn base_interval(&self) -> Duration {
        self.inner.opts.retry.base(self.global.options.retry_interval)
    }

    /// The lease, extended from now.
    pub(crate) fn renewed(&self) -> LeaseChange {
        LeaseChange::Renew { lease_until: self.now().add(self.inner.opts.lease) }
    }

    /// Writes the final status and releases the row.
    pub(crate) async fn finish(mut self, status: GlobalStatus) -> RoundEnd {
        self.set_status(status, None);
        let lease =
            LeaseChange::Release { next_cron_time: self.now(), next_cron_interval: self.base_interval() };
        if let Err(end) = self.flush(lease).await {
            return end;
        }
        info!(gid = %self.global.gid, trans_type = %self.global.trans_type, %status, "transaction finished");
        RoundEnd::Finished { status, reason: self.global.rollback_reason }
    }

    /// Ends the round without a final status: releases the row, due again after the retry
    /// policy's interval for `kind` (or at `due_by` if that is sooner and still ahead).
    pub(crate) async fn release(mut self, kind: RetryKind, due_by: Option<Timestamp>) -> RoundEnd {
        let now = self.now();
        let policy = self.inner.opts.retry;
        let base = self.base_interval();
        let handing_over = self.stopping() && !self.saw_error;
        let interval = if handing_over {
            base
        } else {
            let current = if self.progress { base } else { self.global.next_cron_interval.max(base) };
            policy.next_interval(base, current, kind)
        };
        let mut next =
            if handing_over { now } else { now.add(policy.jittered(interval, rand::random::<f64>())) };
        if let Some(deadline) = due_by
            && deadline > now
            && deadline < next
        {
            next = deadline;
        }
        let lease = LeaseChange::Release { next_cron_time: next, next_cron_interval: interval };
        if let Err(end) = self.flush(lease).await {
            return end;
        }
        debug!(gid = %self.global.gid, next_in_ms = next.0 - now.0, "waiting for a later round");
        RoundEnd::Pending { status: self.global.status, reason: self.global.rollback_reason }
    }

    /// Releases the row until a given time, keeping the interval (a prepared transaction
    /// waiting for its timeout, a delayed message).
    pub(crate) async fn release_until(mut self, at: Timestamp) -> RoundEnd {
        let lease = LeaseChange::Release { next_cron_time: at, next_cron_interval: self.base_interval() };
        if let Err(end) = self.flush(lease).await {
            return end;
        }
        RoundEnd::Pending { status: self.global.status, reason: self.global.rollback_reason }
    }

    /// The kind of wait a round ending now calls for.
    pub(crate) fn retry_kind(&self) -> RetryKind {
        if self.saw_error || self.stopping() { RetryKind::Error } else { RetryKind::Ongoing }
    }

    /// One fenced write of everything gathered since the last one.
    pub(crate) async fn flush(&mut self, lease: LeaseChange) -> Result<(), RoundEnd> {
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
            now: self.now(),
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
                self.inner.observer.fenced();
                warn!(%gid, "ownership lost (lease taken over or force-stopped); stopping this round");
                Err(RoundEnd::Abandoned)
            }
            Err(e) => {
                error!(gid = %self.global.gid, error = %e, "store write failed; the lease will hand the transaction over");
                Err(RoundEnd::Abandoned)
            }
        }
    }
}
