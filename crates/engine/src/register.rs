//! `registerBranch`: a TCC participant's try registers its confirm and cancel with dtx, an XA
//! participant its phase-two URL, a workflow client the result of a step.

use dtx_core::{Branch, BranchStatus, Op, TransType, workflow};
use dtx_store::{Error as StoreError, Expect};
use tracing::debug;

use crate::request::check_branch_url;
use crate::{Engine, Error, Result};

/// The longest branch id accepted (nested TCC ids grow by two digits per level).
const MAX_BRANCH_ID_LEN: usize = 128;

/// A branch registration, decoded from the wire (the keys a mode does not use stay empty).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegisterBranch {
    /// Global id.
    pub gid: String,
    /// Mode: `tcc`, `xa` or `workflow`.
    pub trans_type: String,
    /// Branch id as the client chose it (`01`, nested `0201`...).
    pub branch_id: String,
    /// Request body for confirm and cancel.
    pub data: Vec<u8>,
    /// Confirm URL (empty = nothing to call).
    pub confirm: String,
    /// Cancel URL (empty = nothing to call).
    pub cancel: String,
    /// XA: the phase-two URL (commit and rollback).
    pub url: String,
    /// Workflow: the recorded step's op (`action`, `commit`, `rollback`).
    pub op: String,
    /// Workflow: the recorded step's status (`succeed`, `failed`).
    pub status: String,
}

impl Engine {
    /// Registers a branch of a prepared transaction: TCC rows `cancel` then `confirm`, XA rows
    /// `rollback` then `commit` (both on the phase-two URL), a workflow step as one row with
    /// the status and data the client recorded. The same registration again is accepted (a
    /// client retry); a different one with the same branch id (and op) is refused.
    pub async fn register_branch(&self, req: RegisterBranch) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        let trans_type = match req.trans_type.as_str() {
            "tcc" => TransType::Tcc,
            "xa" => TransType::Xa,
            "workflow" => TransType::Workflow,
            "" => return bad("trans_type is missing".into()),
            other => return bad(format!("registerBranch: unknown or unsupported trans_type '{other}'")),
        };
        crate::request::check_gid(&req.gid)?;
        crate::request::check_text("branch_id", &req.branch_id)?;
        crate::request::check_text("confirm", &req.confirm)?;
        crate::request::check_text("cancel", &req.cancel)?;
        crate::request::check_text("url", &req.url)?;
        if req.branch_id.is_empty() || req.branch_id.len() > MAX_BRANCH_ID_LEN {
            return bad(format!("branch_id must have 1 to {MAX_BRANCH_ID_LEN} characters"));
        }
        // The transaction's protocol is not known yet here: accept both URL forms.
        let url = |key: &str, value: &str| {
            check_branch_url(value, true).map_err(|m| Error::InvalidArgument(format!("{key}: {m}")))
        };
        let inner = &self.inner;
        let now = inner.clock.now();
        let rows = match trans_type {
            TransType::Tcc => {
                url("confirm", &req.confirm)?;
                url("cancel", &req.cancel)?;
                vec![
                    Branch::new(req.branch_id.clone(), Op::Cancel, req.cancel.clone(), req.data.clone(), now),
                    Branch::new(
                        req.branch_id.clone(),
                        Op::Confirm,
                        req.confirm.clone(),
                        req.data.clone(),
                        now,
                    ),
                ]
            }
            TransType::Xa => {
                if req.url.is_empty() {
                    return bad("url (the phase-two URL of the XA branch) is missing".into());
                }
                url("url", &req.url)?;
                vec![
                    Branch::new(req.branch_id.clone(), Op::Rollback, req.url.clone(), req.data.clone(), now),
                    Branch::new(req.branch_id.clone(), Op::Commit, req.url.clone(), req.data.clone(), now),
                ]
            }
            _ => {
                let bad_wf = |e: workflow::BadWorkflow| Error::InvalidArgument(e.0);
                let op = workflow::step_op(&req.op).map_err(bad_wf)?;
                let status = workflow::step_status(&req.status).map_err(bad_wf)?;
                let mut row = Branch::new(req.branch_id.clone(), op, String::new(), req.data.clone(), now);
                row.status = status;
                row.finish_time = Some(now);
                vec![row]
            }
        };
        // Every address these URLs name must pass the participant policy (as at submit).
        let urls: Vec<&str> = rows.iter().map(|b| b.url.as_str()).collect();
        crate::participant::check_urls(inner.policy.as_deref(), urls)
            .await
            .map_err(Error::InvalidArgument)?;

        // The store checks the mode, the timeout, the status and the lease inside the write.
        let expect = Expect { trans_type, default_timeout: inner.opts.timeout_to_fail };
        match inner.store.add_branches(&req.gid, expect, rows.clone(), now).await {
            Ok(()) => {
                debug!(gid = %req.gid, branch_id = %req.branch_id, %trans_type, "branch registered");
                Ok(())
            }
            Err(StoreError::Conflict(_)) => {
                let current = inner.store.load(&req.gid).await?.map(|l| l.branches).unwrap_or_default();
                let same = rows.iter().all(|new| {
                    current.iter().any(|b| b.branch_id == new.branch_id && b.op == new.op && same_row(b, new))
                });
                if same {
                    // The same registration again: a client retry.
                    Ok(())
                } else {
                    Err(Error::Conflict(format!(
                        "branch {} of {} is already registered with other URLs or data",
                        req.branch_id, req.gid
                    )))
                }
            }
            Err(StoreError::NotFound(_)) => {
                Err(Error::Conflict(format!("no prepared transaction with gid {}", req.gid)))
            }
            Err(StoreError::Precondition(m)) => Err(Error::Conflict(m)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a stored row is what this registration would have written (a workflow row's status
/// counts, a phase-two row's may have moved on).
fn same_row(stored: &Branch, new: &Branch) -> bool {
    stored.url == new.url
        && stored.payload == new.payload
        && (new.status == BranchStatus::Prepared || stored.status == new.status)
}
