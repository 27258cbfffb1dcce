//! What every processing round shares: the owned transaction in memory, the writes gathered
//! since the last flush, and the fenced flush / finish / release operations. Calls go through
//! the executor (`exec.rs`), which flushes before it calls.

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

/// Attempts persisted before the round started and not yet used by a call (a handful).
pub(crate) type Premarks = Vec<Premark>;

/// An attempt a branch row's insert (or the submit of a prepared transaction) persisted ahead
/// of its call. A call of exactly that row at exactly that count needs no write of its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Premark {
    pub(crate) branch_id: String,
    pub(crate) op: Op,
    /// The attempt count written.
    pub(crate) attempts: u32,
    /// `None`: a first call, counted in the round's rows too. `Some(stops)`: a later call
    /// recorded ahead (ADR 21), not counted in the round's rows until it is made (a live saga
    /// never compensates an action it did not call), and usable only while the node's count
    /// of operator stops begun is still `stops`.
    pub(crate) ahead: Option<u64>,
}

pub(crate) struct Ctx<'a> {
    pub(crate) inner: &'a Inner,
    pub(crate) global: Global,
    pub(crate) branches: Vec<Branch>,
    owner: String,
    dirty: BTreeSet<usize>,
    status_change: Option<StatusChange>,
    premarks: Premarks,
    /// Ends when the lease is due for renewal (a third of it after the last renewing write).
    renew: BoxFuture<'static, ()>,
    /// Some call errored in this round (backoff).
    pub(crate) saw_error: bool,
    /// Some call answered ONGOING in this round (fixed interval).
    pub(crate) saw_ongoing: bool,
    /// Some call got a definite answer in this round (the interval resets).
    pub(crate) progress: bool,
    /// The row of the last call that errored (its host may be down by the release).
    error_row: Option<usize>,
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(inner: &'a Inner, loaded: Loaded, owner: String, premarks: Premarks) -> Ctx<'a> {
        Ctx {
            inner,
            global: loaded.global,
            branches: loaded.branches,
            owner,
            dirty: BTreeSet::new(),
            status_change: None,
            premarks,
            renew: inner.clock.sleep(inner.opts.lease / 3),
            saw_error: false,
            saw_ongoing: false,
            progress: false,
            error_row: None,
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
        self.status_change = Some(StatusChange { to, rollback_reason: reason, result: None });
    }

    /// Counts an attempt of a branch row (persisted with the next flush).
    pub(crate) fn mark_attempt(&mut self, row: usize) {
        self.branches[row].attempts += 1;
        self.dirty.insert(row);
    }

    /// Whether a call of `row` now would use an attempt persisted for a first call.
    pub(crate) fn is_premarked_first(&self, row: usize) -> bool {
        self.premark_of(row).is_some_and(|i| self.premarks[i].ahead.is_none())
    }

    fn premark_of(&self, row: usize) -> Option<usize> {
        // The insert's write stands in for the call's own only while its lease is fresh
        // (renewed no later than a third of it from now): a slow insert must not let a call
        // start on a lease that another node may already have taken over.
        let fresh_until = self.now().add(self.inner.opts.lease * 2 / 3);
        if self.premarks.is_empty() || self.global.lease_until.is_none_or(|until| until < fresh_until) {
            return None;
        }
        let b = &self.branches[row];
        self.premarks.iter().position(|p| {
            p.branch_id == b.branch_id
                && p.op == b.op
                && match p.ahead {
                    None => p.attempts == b.attempts,
                    Some(seen) => p.attempts == b.attempts + 1 && self.inner.no_stop_since(seen),
                }
        })
    }

    /// Uses up the persisted attempt of `row`, if it has one (see [`Premark`]).
    pub(crate) fn take_premark(&mut self, row: usize) -> bool {
        match self.premark_of(row) {
            Some(i) => {
                let p = self.premarks.swap_remove(i);
                // Ahead of its call, the attempt was on record but not in the round's rows.
                self.branches[row].attempts = p.attempts;
                true
            }
            None => false,
        }
    }

    /// A status change is waiting to be written.
    pub(crate) fn has_status_change(&self) -> bool {
        self.status_change.is_some()
    }

    /// Completes when the lease is due for renewal ([`Ctx::renew_lease`]).
    pub(crate) async fn renewal_due(&mut self) {
        (&mut self.renew).await;
    }

    /// Whether the lease this round last wrote is still running.
    pub(crate) fn lease_valid(&self) -> bool {
        self.global.lease_until.is_some_and(|until| self.now() < until)
    }

    /// Renews the lease (writing whatever is unsaved with it).
    pub(crate) async fn renew_lease(&mut self) -> Result<(), RoundEnd> {
        let lease = self.renewed();
        self.flush(lease).await
    }

    /// Records a call's answer on its branch row and in the round's retry flags. `done` says
    /// whether the row reached a final status (`succeed`, or `failed` for a saga action).
    pub(crate) fn record(&mut self, row: usize, outcome: &Outcome, final_status: Option<BranchStatus>) {
        self.note(outcome, final_status.is_some());
        if matches!(outcome, Outcome::Error(_)) {
            self.error_row = Some(row);
        }
        let now = self.now();
        let b = &mut self.branches[row];
        b.last_error = outcome.error_text().map(dtx_core::outcome::stored_text).unwrap_or_default();
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
            op_name: None,
            json_rpc: self.global.protocol == "json-rpc",
            payload,
            headers: opts.branch_headers.clone(),
            timeout: if opts.request_timeout > 0 {
                Duration::from_secs(opts.request_timeout)
            } else {
                self.inner.opts.request_timeout
            },
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
        if status == GlobalStatus::Succeed {
            debug!(gid = %self.global.gid, trans_type = %self.global.trans_type, %status, "transaction finished");
        } else {
            info!(gid = %self.global.gid, trans_type = %self.global.trans_type, %status,
                reason = %self.global.rollback_reason, "transaction finished");
        }
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
        let mut lease = LeaseChange::Release { next_cron_time: next, next_cron_interval: interval };
        // Its host went down meanwhile (crate::health): wait for that host rather than on a
        // timer of its own, so it resumes as soon as the host is back.
        if let Some((host, until)) =
            self.error_row.and_then(|row| self.inner.health.down_until(&self.branches[row].url))
        {
            // Still due by its timeout, if that comes first.
            let next_cron_time = match due_by {
                Some(deadline) if deadline > now && deadline < until => deadline,
                _ => until.max(now),
            };
            self.inner.health.note_held(&host, &self.global.gid);
            lease = LeaseChange::Hold { next_cron_time, next_cron_interval: interval, host };
        }
        if let Err(end) = self.flush(lease).await {
            return end;
        }
        debug!(gid = %self.global.gid, next_in_ms = next.0 - now.0, "waiting for a later round");
        RoundEnd::Pending { status: self.global.status, reason: self.global.rollback_reason }
    }

    /// Releases the row without calling, held for `host` (down, as this node sees it) until
    /// its next probe `until`: the host's first success makes it due at once.
    pub(crate) async fn hold(&mut self, host: String, until: Timestamp) -> RoundEnd {
        let interval = self.global.next_cron_interval.max(self.base_interval());
        let next_cron_time = until.max(self.now());
        debug!(gid = %self.global.gid, %host, next_in_ms = next_cron_time.0 - self.now().0, "held: its participant host is down");
        self.inner.health.note_held(&host, &self.global.gid);
        let lease = LeaseChange::Hold { next_cron_time, next_cron_interval: interval, host };
        if let Err(end) = self.flush(lease).await {
            return end;
        }
        RoundEnd::Pending { status: self.global.status, reason: self.global.rollback_reason.clone() }
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
        // Attempts recorded ahead that no call used yet are taken back by any write of the
        // round (ADR 21): a later round, or this one rolling back, then sees those calls as
        // never made (a saga does not compensate them). Only a round that ends without
        // writing again (a crash, a lost lease) leaves them on record.
        let (branches, dirty) = (&self.branches, &mut self.dirty);
        self.premarks.retain(|p| {
            if p.ahead.is_some()
                && let Some(row) = branches.iter().position(|b| b.branch_id == p.branch_id && b.op == p.op)
            {
                dirty.insert(row);
            }
            p.ahead.is_none()
        });
        let branches = self
            .dirty
            .iter()
            .map(|&i| {
                let b = &self.branches[i];
                BranchUpdate {
                    id: b.id,
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
        let lease_until = match save.lease {
            LeaseChange::Renew { lease_until } | LeaseChange::RenewRescheduled { lease_until, .. } => {
                Some(lease_until)
            }
            LeaseChange::Release { .. } | LeaseChange::Hold { .. } => None,
        };
        match self.inner.store.save(save).await {
            Ok(()) => {
                self.dirty.clear();
                self.global.lease_until = lease_until;
                if lease_until.is_some() {
                    self.renew = self.inner.clock.sleep(self.inner.opts.lease / 3);
                }
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
