//! Workflow (spec 6.6): the client runs the workflow itself. `prepareWorkflow` creates it (or
//! returns what is recorded: status, result, rollback reason, and the recorded steps, so a
//! replay skips them), `registerBranch` records steps (`register.rs`), `submit` with
//! `req_extra` finishes it, and while it stays `prepared` the scheduler calls its callback so
//! a crashed client resumes it (`round/workflow.rs`).

use dtx_core::workflow::{self, OnFinish};
use dtx_core::{Branch, Global, GlobalStatus, TransType};
use dtx_store::{Error as StoreError, LeaseChange, NewTransaction, Save, StatusChange};
use tracing::{debug, info};

use crate::request::TransRequest;
use crate::submit::SubmitReply;
use crate::{Engine, Error, Result};

/// A workflow as `prepareWorkflow` returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowState {
    /// The transaction (status, result, rollback reason...).
    pub global: Global,
    /// The steps recorded so far, in order.
    pub progresses: Vec<Branch>,
}

impl Engine {
    /// `prepareWorkflow`: creates the workflow `prepared` (its callback due one retry interval
    /// from now), or returns the stored one, whatever its status, with its recorded steps.
    pub async fn prepare_workflow(&self, req: TransRequest) -> Result<WorkflowState> {
        if req.trans_type != TransType::Workflow {
            return Err(Error::InvalidArgument(format!(
                "prepareWorkflow is for workflow transactions, not '{}'",
                req.trans_type
            )));
        }
        req.validate(self.inner.opts.max_steps)?;
        req.check_policy(&self.inner).await?;
        let now = self.inner.clock.now();
        let mut global = req.global(&self.inner, GlobalStatus::Prepared, now);
        global.next_cron_time = now.add(global.next_cron_interval);
        match self.inner.store.create(NewTransaction { global: global.clone(), branches: Vec::new() }).await {
            Ok(()) => {
                debug!(gid = %req.gid, "workflow prepared");
                Ok(WorkflowState { global, progresses: Vec::new() })
            }
            Err(StoreError::Conflict(_)) => {
                let loaded = self.load_same_type(&req.gid, TransType::Workflow).await?;
                Ok(WorkflowState { global: loaded.global, progresses: loaded.branches })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `submit` of a workflow: `req_extra.status` (`succeed` / `failed`) with its
    /// `rollback_reason` and `result` (base64, stored as sent) ends a prepared workflow. Nothing
    /// is called. The same end again is accepted (a client retry).
    pub(crate) async fn finish_workflow(&self, req: &TransRequest) -> Result<SubmitReply> {
        crate::request::check_gid(&req.gid)?;
        let extra = |k: &str| req.req_extra.get(k).cloned().unwrap_or_default();
        let to = workflow::finish_status(&extra("status")).map_err(|e| Error::InvalidArgument(e.0))?;
        let (reason, result) = (extra("rollback_reason"), extra("result"));
        crate::request::check_text("req_extra.rollback_reason", &reason)?;
        crate::request::check_text("req_extra.result", &result)?;
        let existing = self.load_same_type(&req.gid, TransType::Workflow).await.map_err(|e| match e {
            Error::NotFound(_) => Error::Conflict(format!("no prepared workflow with gid {}", req.gid)),
            other => other,
        })?;
        let refuse = |s: GlobalStatus| {
            Error::Conflict(format!("workflow {} is {s}, cannot finish it as {to}", req.gid))
        };
        match workflow::on_finish(existing.global.status, to) {
            OnFinish::AlreadyDone => return Ok(SubmitReply::Accepted),
            OnFinish::Refuse => return Err(refuse(existing.global.status)),
            OnFinish::Finish => {}
        }
        let inner = &self.inner;
        let now = inner.clock.now();
        let owner = inner.fresh_owner();
        let Some(loaded) = inner.store.claim(&req.gid, &owner, now, now.add(inner.opts.lease)).await? else {
            // Its callback is being called right now (the row is held for a moment).
            return Err(Error::Ongoing(format!("workflow {} is being processed; retry the submit", req.gid)));
        };
        if workflow::on_finish(loaded.global.status, to) != OnFinish::Finish {
            self.release_now(&loaded, &owner).await;
            return Err(refuse(loaded.global.status));
        }
        let change = StatusChange {
            to,
            rollback_reason: (!reason.is_empty()).then_some(reason),
            result: (!result.is_empty()).then_some(result),
        };
        let lease = LeaseChange::Release {
            next_cron_time: now,
            next_cron_interval: loaded.global.next_cron_interval,
        };
        let save =
            Save { gid: req.gid.clone(), owner, now, branches: Vec::new(), status: Some(change), lease };
        inner.store.save(save).await?;
        info!(gid = %req.gid, status = %to, "workflow finished");
        Ok(SubmitReply::Accepted)
    }
}
