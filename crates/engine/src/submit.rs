//! `submit` and `prepare`: creating transactions (owned by this node when they are processed at
//! once) and DTM's idempotency rules for gids that already exist.

use std::future::Future;
use std::sync::Arc;

use dtx_core::lifecycle::{self, OnPrepare, OnSubmit};
use std::time::Duration;

use dtx_core::retry::RetryPolicy;
use dtx_core::{GlobalStatus, Timestamp, TransType, timeout};
use dtx_store::{
    BranchUpdate, Created, Error as StoreError, LeaseChange, Loaded, NewTransaction, Save, StatusChange,
    ThenSave,
};
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use crate::request::TransRequest;
use crate::round::ctx::Premarks;
use crate::round::{self, RoundEnd, RoundMode};
use crate::{Engine, Error, Inner, Result};

/// The answer to a request that processes a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitReply {
    /// Stored durably; processing goes on in the background.
    Accepted,
    /// `wait_result`: the round reached a final status.
    Finished {
        /// `succeed` or `failed`.
        status: GlobalStatus,
        /// The rollback reason when failed.
        reason: String,
    },
    /// `wait_result`: the round ended without a final status.
    InProgress {
        /// Where it stands (`submitted`, `aborting`, `prepared`).
        status: GlobalStatus,
        /// The rollback reason so far.
        reason: String,
    },
}

impl Engine {
    /// `submit`: validates, stores durably and processes a transaction (or, for a known gid,
    /// applies DTM's rules: a prepared one is submitted, a submitted one reprocessed).
    pub async fn submit(&self, req: TransRequest) -> Result<SubmitReply> {
        // The body's future is ~10 KB; boxed, the one callers move around (axum's handler box,
        // a task cell, a join handle's slot) is a pointer and the request.
        Box::pin(self.submit_boxed(req)).await
    }

    async fn submit_boxed(&self, req: TransRequest) -> Result<SubmitReply> {
        if req.trans_type == TransType::Workflow {
            // A workflow's submit only records how the client ended it.
            return self.finish_workflow(&req).await;
        }
        req.validate(self.inner.opts.max_steps)?;
        req.check_policy(&self.inner).await?;
        let inner = &self.inner;
        let delay =
            if req.trans_type == TransType::Msg { req.msg_delay()?.map_or(0, |d| d.as_secs()) } else { 0 };
        if matches!(req.trans_type, TransType::Tcc | TransType::Xa | TransType::Msg) {
            // These are usually prepared first: claim the stored row straight away rather than
            // fail an insert, read it and then claim it; absent, it is created. The claim
            // carries the prepared -> submitted save, decided on the claimed row inside the
            // same write where the store can (ADR 22).
            let slot = self.round_slot().await?;
            let now = inner.clock.now();
            let owner = inner.fresh_owner();
            let plan = Arc::new(self.submit_plan(&req, &owner, now, delay));
            let decide = plan.clone();
            let then = ThenSave(Arc::new(move |loaded: &Loaded| decide.save_of(loaded)));
            let lease_until = now.add(inner.opts.lease);
            if let Some(c) = inner.store.claim_then(&req.gid, &owner, now, lease_until, then).await? {
                return self.submit_claimed(&req, c.loaded, owner, slot, &plan, c.saved).await;
            }
        }
        let now = inner.clock.now();
        let mut global = req.global(inner, GlobalStatus::Submitted, now);
        let mut branches = req.branches(inner, now).await?;
        let owner = inner.fresh_owner();
        let owned = delay == 0;
        if owned {
            // Due at once if this node dies: the lease alone keeps others away meanwhile.
            global.owner = Some(owner.clone());
            global.lease_until = Some(now.add(inner.opts.lease));
        } else {
            global.next_cron_time = now.add(std::time::Duration::from_secs(delay));
        }
        // A round slot before anything is stored: a saturated node refuses (503) with nothing
        // kept, rather than store work it cannot start.
        let slot = if owned { Some(self.round_slot().await?) } else { None };
        let premarks = if owned && req.trans_type == TransType::Saga {
            // Read before the insert: an operator stop that begins after it may find the saga
            // stored, and must then keep the round from calling ahead (ADR 21).
            round::saga::premark_first_actions(&global, &mut branches, now, inner.marks_ahead())
        } else {
            Premarks::new()
        };
        let tx = NewTransaction { global, branches };
        let Created { tx, ids } = match inner.store.create_returning_ids(tx).await {
            Ok(created) => created,
            Err(StoreError::Conflict(_)) => return self.submit_existing(&req, delay).await,
            Err(e) => return Err(e.into()),
        };
        // Per-transaction lifecycle lines are debug: at thousands of transactions a second, info
        // stays for what an operator acts on (rollbacks, timeouts, outages).
        debug!(gid = %req.gid, trans_type = %req.trans_type, branches = tx.branches.len(), "submitted");
        if !owned {
            return Ok(SubmitReply::Accepted);
        }
        let mut loaded = Loaded { global: tx.global, branches: tx.branches, taken_over: false };
        // Rows of known id are updated by it (ADR 25).
        if ids.len() == loaded.branches.len() {
            loaded.branches.iter_mut().zip(ids).for_each(|(b, id)| b.id = id);
        }
        round::saga::unmark_ahead(&premarks, &mut loaded.branches);
        Ok(self.process(loaded, owner, premarks, req.options.wait_result, slot).await)
    }

    /// `submit` of a gid that exists.
    async fn submit_existing(&self, req: &TransRequest, delay: u64) -> Result<SubmitReply> {
        let inner = &self.inner;
        let existing = self.load_same_type(&req.gid, req.trans_type).await?;
        let status = existing.global.status;
        match lifecycle::on_submit(Some(status)) {
            OnSubmit::Refuse | OnSubmit::Create => {
                Err(Error::Conflict(format!("current status '{status}', cannot submit")))
            }
            OnSubmit::Reprocess | OnSubmit::FromPrepared => {
                let slot = self.round_slot().await?;
                let now = inner.clock.now();
                let owner = inner.fresh_owner();
                let Some(loaded) =
                    inner.store.claim(&req.gid, &owner, now, now.add(inner.opts.lease)).await?
                else {
                    if status == GlobalStatus::Prepared {
                        // A round is deciding it right now (the timeout of a tcc, the
                        // check-back of a msg): this submit was not applied. Say so rather than
                        // acknowledge it; the client may retry.
                        return Err(Error::Ongoing(format!(
                            "transaction {} is being processed (its timeout is being handled); \
                             the submit was not applied, retry",
                            req.gid
                        )));
                    }
                    // Another round owns it right now and carries it on.
                    return Ok(if req.options.wait_result {
                        SubmitReply::InProgress { status, reason: existing.global.rollback_reason }
                    } else {
                        SubmitReply::Accepted
                    });
                };
                let plan = self.submit_plan(req, &owner, now, delay);
                self.submit_claimed(req, loaded, owner, slot, &plan, false).await
            }
        }
    }

    /// What a submit does with the row it claims, for [`SubmitPlan::decide`].
    fn submit_plan(&self, req: &TransRequest, owner: &str, now: Timestamp, delay: u64) -> SubmitPlan {
        let opts = &self.inner.opts;
        SubmitPlan {
            gid: req.gid.clone(),
            trans_type: req.trans_type,
            owner: owner.to_owned(),
            now,
            delay,
            lease: opts.lease,
            retry: opts.retry,
            // Read before the write, as for a saga's insert: an operator stop that begins after
            // it keeps the round from calling ahead (ADR 21).
            ahead: if delay > 0 { None } else { self.inner.marks_ahead() },
        }
    }

    /// `submit` of a gid this node has just claimed: a prepared transaction becomes submitted
    /// (durably, before the answer), with the attempts of the calls its first round will make
    /// written in the same write; a submitted or aborting one is processed again. `saved`: the
    /// claim's write already carried the plan's save ([`dtx_store::Store::claim_then`]).
    async fn submit_claimed(
        &self,
        req: &TransRequest,
        loaded: Loaded,
        owner: String,
        slot: OwnedSemaphorePermit,
        plan: &SubmitPlan,
        saved: bool,
    ) -> Result<SubmitReply> {
        match plan.decide(loaded) {
            OnClaimed::WrongType(loaded) => {
                self.release_now(&loaded, &owner).await;
                Err(Error::Conflict(format!(
                    "gid {} is used by a {} transaction, not {}",
                    req.gid, loaded.global.trans_type, req.trans_type
                )))
            }
            OnClaimed::Refuse(loaded, other) => {
                // Changed between the load and the claim: give it back untouched.
                self.release_now(&loaded, &owner).await;
                let s = loaded.global.status;
                Err(Error::Conflict(format!("current status '{s}', cannot submit ({other:?})")))
            }
            // The submit request's options apply to this answer (DTM: wait_result of the
            // request), the stored ones to the processing.
            OnClaimed::Reprocess(loaded) => {
                Ok(self.process(loaded, owner, Premarks::new(), req.options.wait_result, Some(slot)).await)
            }
            OnClaimed::Submit { save, loaded, premarks } => {
                if !saved {
                    self.inner.store.save(save).await?;
                }
                debug!(gid = %req.gid, "prepared transaction submitted");
                if plan.delay > 0 {
                    return Ok(SubmitReply::Accepted);
                }
                Ok(self.process(loaded, owner, premarks, req.options.wait_result, Some(slot)).await)
            }
        }
    }

    /// `prepare`: stores a tcc, xa or msg `prepared`, not owned, due when it times out.
    pub async fn prepare(&self, req: TransRequest) -> Result<()> {
        if !matches!(req.trans_type, TransType::Tcc | TransType::Xa | TransType::Msg) {
            return Err(Error::InvalidArgument(format!(
                "prepare is for tcc, xa and msg transactions (a workflow uses prepareWorkflow), not '{}'",
                req.trans_type
            )));
        }
        req.validate(self.inner.opts.max_steps)?;
        req.check_policy(&self.inner).await?;
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut global = req.global(inner, GlobalStatus::Prepared, now);
        if let Some(t) = timeout::effective_timeout(
            req.trans_type,
            req.options.timeout_to_fail,
            inner.opts.timeout_to_fail,
        ) {
            global.next_cron_time = now.add(t);
        }
        let branches = req.branches(inner, now).await?;
        match inner.store.create(NewTransaction { global, branches }).await {
            Ok(()) => {
                debug!(gid = %req.gid, trans_type = %req.trans_type, "prepared");
                Ok(())
            }
            Err(StoreError::Conflict(_)) => {
                let existing = self.load_same_type(&req.gid, req.trans_type).await?;
                match lifecycle::on_prepare(Some(existing.global.status)) {
                    OnPrepare::AlreadyPrepared => Ok(()),
                    OnPrepare::Create | OnPrepare::Refuse => Err(Error::Conflict(format!(
                        "current status '{}', cannot prepare",
                        existing.global.status
                    ))),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Loads a transaction that a request names by gid and mode.
    pub(crate) async fn load_same_type(&self, gid: &str, trans_type: TransType) -> Result<Loaded> {
        let loaded = self
            .inner
            .store
            .load(gid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no transaction with gid {gid}")))?;
        if loaded.global.trans_type != trans_type {
            return Err(Error::Conflict(format!(
                "gid {gid} is used by a {} transaction, not {trans_type}",
                loaded.global.trans_type
            )));
        }
        Ok(loaded)
    }

    /// The lease for a prepared transaction this node just submitted or aborted: kept, and the
    /// schedule made due at once (it was due at its timeout), in the same fenced write as the
    /// status change, so that if this node dies the next one takes it over as soon as the
    /// lease expires, not at the old timeout.
    pub(crate) fn renewed_due_now(&self, loaded: &Loaded, now: Timestamp) -> LeaseChange {
        renewed_due_now(self.inner.opts.lease, &self.inner.opts.retry, loaded, now)
    }

    /// Gives a claimed row back at once, unchanged.
    pub(crate) async fn release_now(&self, loaded: &Loaded, owner: &str) {
        let now = self.inner.clock.now();
        let _ = self
            .inner
            .store
            .save(Save {
                gid: loaded.global.gid.clone(),
                owner: owner.to_owned(),
                now,
                branches: Vec::new(),
                status: None,
                lease: match &loaded.global.held_host {
                    // Held for a down host (or marked resumed, ''): it stays so.
                    Some(host) => LeaseChange::Hold {
                        next_cron_time: loaded.global.next_cron_time,
                        next_cron_interval: loaded.global.next_cron_interval,
                        host: host.clone(),
                    },
                    None => LeaseChange::Release {
                        next_cron_time: loaded.global.next_cron_time,
                        next_cron_interval: loaded.global.next_cron_interval,
                    },
                },
            })
            .await;
    }

    /// Runs a round inline (`wait`) or in the background, holding `slot` (a round-cap permit)
    /// until it ends. Front doors run a `wait_result` request in a task of its own
    /// ([`Engine::detached`]), so a client that disconnects does not cancel its round.
    pub(crate) async fn process(
        &self,
        loaded: Loaded,
        owner: String,
        premarks: Premarks,
        wait: bool,
        slot: Option<OwnedSemaphorePermit>,
    ) -> SubmitReply {
        if wait {
            // Boxed: inline, the round's state would make every submit's future that large,
            // waiting or not.
            let end = Box::pin(round::run(&self.inner, loaded, owner, premarks, RoundMode::Submit)).await;
            drop(slot);
            return reply_of(end);
        }
        let inner: Arc<Inner> = self.inner.clone();
        // The round boxed: tokio copies a task's whole future when it spawns it and again
        // when it stores its end (`set_stage`); unboxed that is the round's state, kilobytes.
        self.inner.tasks.spawn(async move {
            Box::pin(round::run(&inner, loaded, owner, premarks, RoundMode::Submit)).await;
            drop(slot);
        });
        SubmitReply::Accepted
    }

    /// Runs a request (a submit, an abort) as a task of its own, tracked like the rounds (the
    /// shutdown drains it): the caller may go away (an HTTP client disconnecting drops its
    /// handler) without cancelling the request half-way or the round it runs.
    pub fn detached<F>(&self, fut: F) -> impl Future<Output = Result<F::Output>> + Send + 'static
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = self.inner.tasks.spawn(fut);
        async move { handle.await.map_err(|e| Error::Unavailable(format!("the request's task failed: {e}"))) }
    }
}

fn reply_of(end: RoundEnd) -> SubmitReply {
    match end {
        RoundEnd::Finished { status, reason } => SubmitReply::Finished { status, reason },
        RoundEnd::Pending { status, reason } => SubmitReply::InProgress { status, reason },
        RoundEnd::Abandoned => {
            SubmitReply::InProgress { status: GlobalStatus::Submitted, reason: String::new() }
        }
    }
}

/// [`Engine::renewed_due_now`] with the node's lease and retry policy given.
fn renewed_due_now(lease: Duration, retry: &RetryPolicy, loaded: &Loaded, now: Timestamp) -> LeaseChange {
    LeaseChange::RenewRescheduled {
        lease_until: now.add(lease),
        next_cron_time: now,
        next_cron_interval: retry.base(loaded.global.options.retry_interval),
    }
}

/// Everything the submit of a claimed transaction depends on besides the row, so that the
/// decision can be taken inside the claim's write ([`dtx_store::Store::claim_then`]) and again on the row
/// the claim returns, to the same result.
#[derive(Debug)]
struct SubmitPlan {
    gid: String,
    trans_type: TransType,
    owner: String,
    now: Timestamp,
    /// A message's `delay` in seconds: submitted but not processed before then.
    delay: u64,
    lease: Duration,
    retry: RetryPolicy,
    /// [`Inner::marks_ahead`] as read before the write.
    ahead: Option<u64>,
}

/// What the submit does with a row it claimed.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "a value of the moment, matched at once; boxing would allocate"
)]
enum OnClaimed {
    /// The gid belongs to a transaction of another mode.
    WrongType(Loaded),
    /// Its status cannot be submitted (it changed since it was read).
    Refuse(Loaded, OnSubmit),
    /// Submitted or aborting already: processed again as it is.
    Reprocess(Loaded),
    /// Prepared: made submitted by `save`, then processed (unless delayed).
    Submit { save: Save, loaded: Loaded, premarks: Premarks },
}

impl SubmitPlan {
    fn decide(&self, mut loaded: Loaded) -> OnClaimed {
        if loaded.global.trans_type != self.trans_type {
            return OnClaimed::WrongType(loaded);
        }
        match lifecycle::on_submit(Some(loaded.global.status)) {
            OnSubmit::Reprocess => OnClaimed::Reprocess(loaded),
            OnSubmit::FromPrepared => {
                let mut premarks = Premarks::new();
                let branches = if self.delay > 0 {
                    Vec::new()
                } else {
                    round::premark_first_calls(&mut loaded, &mut premarks, self.ahead)
                };
                let save = self.submitted(&loaded, branches);
                loaded.global.status = GlobalStatus::Submitted;
                loaded.global.lease_until = match save.lease {
                    LeaseChange::RenewRescheduled { lease_until, .. } => Some(lease_until),
                    _ => None,
                };
                OnClaimed::Submit { save, loaded, premarks }
            }
            other => OnClaimed::Refuse(loaded, other),
        }
    }

    /// The save [`SubmitPlan::decide`] makes of a claimed row, decided on the borrowed row
    /// inside the claim's write (no copy of the row), to the same result.
    fn save_of(&self, loaded: &Loaded) -> Option<Save> {
        let submits = loaded.global.trans_type == self.trans_type
            && lifecycle::on_submit(Some(loaded.global.status)) == OnSubmit::FromPrepared;
        if !submits {
            return None;
        }
        let branches =
            if self.delay > 0 { Vec::new() } else { round::first_call_updates(loaded, self.ahead) };
        Some(self.submitted(loaded, branches))
    }

    /// prepared -> submitted, fenced by the claim, with the first calls' attempts.
    fn submitted(&self, loaded: &Loaded, branches: Vec<BranchUpdate>) -> Save {
        let now = self.now;
        let lease = if self.delay > 0 {
            LeaseChange::Release {
                next_cron_time: now.add(Duration::from_secs(self.delay)),
                next_cron_interval: loaded.global.next_cron_interval,
            }
        } else {
            renewed_due_now(self.lease, &self.retry, loaded, now)
        };
        Save {
            gid: self.gid.clone(),
            owner: self.owner.clone(),
            now,
            branches,
            status: Some(StatusChange { to: GlobalStatus::Submitted, rollback_reason: None, result: None }),
            lease,
        }
    }
}

#[cfg(test)]
mod tests {
    use dtx_core::{Branch, BranchStatus, Op};

    use super::*;

    fn plan(trans_type: TransType, delay: u64, ahead: Option<u64>) -> SubmitPlan {
        SubmitPlan {
            gid: "g".to_owned(),
            trans_type,
            owner: "node-1".to_owned(),
            now: Timestamp(1_000),
            delay,
            lease: Duration::from_secs(30),
            retry: RetryPolicy {
                retry_interval: Duration::from_secs(10),
                max_interval: Duration::from_secs(60),
                jitter: 0.0,
            },
            ahead,
        }
    }

    fn row(trans_type: TransType, status: GlobalStatus, branches: Vec<Branch>) -> Loaded {
        let mut tx = dtx_store::testsuite::saga("g");
        tx.global.trans_type = trans_type;
        tx.global.status = status;
        Loaded { global: tx.global, branches, taken_over: false }
    }

    fn branch(id: &str, op: Op, status: BranchStatus, attempts: u32) -> Branch {
        Branch {
            status,
            attempts,
            ..Branch::new(id.to_owned(), op, format!("http://svc/{op}"), Vec::new(), Timestamp(1))
        }
    }

    /// The claim's write decides the save on the borrowed row (`save_of`); the submit decides
    /// again on the row the claim returned (`decide`): both must be the same save, for every
    /// mode, status, delay and ahead setting, or the row written is not the row processed.
    #[test]
    fn the_save_decided_in_the_claim_equals_the_submits() {
        let tcc = vec![
            branch("01", Op::Try, BranchStatus::Succeed, 1),
            branch("01", Op::Confirm, BranchStatus::Prepared, 0),
            branch("01", Op::Cancel, BranchStatus::Prepared, 0),
            branch("02", Op::Try, BranchStatus::Succeed, 1),
            branch("02", Op::Confirm, BranchStatus::Prepared, 2),
            branch("02", Op::Cancel, BranchStatus::Prepared, 0),
        ];
        let msg = vec![
            branch("01", Op::Action, BranchStatus::Prepared, 0),
            branch("02", Op::Action, BranchStatus::Prepared, 1),
            branch("03", Op::Action, BranchStatus::Succeed, 1),
        ];
        let mut submits = 0;
        let xa = vec![
            branch("01", Op::Commit, BranchStatus::Prepared, 0),
            branch("01", Op::Rollback, BranchStatus::Prepared, 0),
            branch("02", Op::Commit, BranchStatus::Prepared, 1),
            branch("02", Op::Rollback, BranchStatus::Prepared, 0),
        ];
        for (trans_type, branches) in [(TransType::Tcc, &tcc), (TransType::Xa, &xa), (TransType::Msg, &msg)] {
            for status in [
                GlobalStatus::Prepared,
                GlobalStatus::Submitted,
                GlobalStatus::Aborting,
                GlobalStatus::Succeed,
            ] {
                for stored_type in [trans_type, TransType::Saga] {
                    for (delay, ahead) in [(0, None), (0, Some(3)), (5, None), (5, Some(3))] {
                        let p = plan(trans_type, delay, ahead);
                        let loaded = row(stored_type, status, branches.clone());
                        let in_claim = p.save_of(&loaded);
                        let decided = match p.decide(loaded) {
                            OnClaimed::Submit { save, .. } => Some(save),
                            _ => None,
                        };
                        assert_eq!(
                            in_claim, decided,
                            "{trans_type} {status} {stored_type} {delay} {ahead:?}"
                        );
                        submits += usize::from(decided.is_some_and(|s| !s.branches.is_empty()));
                    }
                }
            }
        }
        // The cases with first calls to record are among them, not only refusals.
        assert_eq!(submits, 6);
    }
}
