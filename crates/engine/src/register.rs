//! `registerBranch`: a TCC participant's try registers its confirm and cancel with dtx.

use dtx_core::{Branch, GlobalStatus, Op, TransType, lifecycle, timeout};
use dtx_store::Error as StoreError;
use tracing::debug;

use crate::request::check_branch_url;
use crate::{Engine, Error, Result};

/// The longest branch id accepted (nested TCC ids grow by two digits per level).
const MAX_BRANCH_ID_LEN: usize = 128;

/// A TCC branch registration, decoded from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterBranch {
    /// Global id.
    pub gid: String,
    /// Mode (only `tcc` registers branches in this version).
    pub trans_type: String,
    /// Branch id as the client chose it (`01`, nested `0201`...).
    pub branch_id: String,
    /// Request body for confirm and cancel.
    pub data: Vec<u8>,
    /// Confirm URL (empty = nothing to call).
    pub confirm: String,
    /// Cancel URL (empty = nothing to call).
    pub cancel: String,
}

impl Engine {
    /// Registers a branch of a prepared TCC: rows `cancel` then `confirm`. The same
    /// registration again is accepted (a client retry); a different one with the same branch
    /// id is refused.
    pub async fn register_branch(&self, req: RegisterBranch) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        match req.trans_type.as_str() {
            "tcc" => {}
            "" => return bad("trans_type is missing".into()),
            "xa" | "workflow" => {
                return bad(format!("trans_type '{}' is not supported by this version", req.trans_type));
            }
            other => return bad(format!("registerBranch: unknown or unsupported trans_type '{other}'")),
        }
        crate::request::check_gid(&req.gid)?;
        crate::request::check_text("branch_id", &req.branch_id)?;
        crate::request::check_text("confirm", &req.confirm)?;
        crate::request::check_text("cancel", &req.cancel)?;
        if req.branch_id.is_empty() || req.branch_id.len() > MAX_BRANCH_ID_LEN {
            return bad(format!("branch_id must have 1 to {MAX_BRANCH_ID_LEN} characters"));
        }
        // The transaction's protocol is not known yet here: accept both URL forms.
        check_branch_url(&req.confirm, true).map_err(|m| Error::InvalidArgument(format!("confirm: {m}")))?;
        check_branch_url(&req.cancel, true).map_err(|m| Error::InvalidArgument(format!("cancel: {m}")))?;

        let inner = &self.inner;
        let loaded = self.load_same_type(&req.gid, TransType::Tcc).await.map_err(|e| match e {
            Error::NotFound(_) => Error::Conflict(format!("no prepared transaction with gid {}", req.gid)),
            other => other,
        })?;
        let g = &loaded.global;
        let now = inner.clock.now();
        let t =
            timeout::effective_timeout(g.trans_type, g.options.timeout_to_fail, inner.opts.timeout_to_fail);
        if g.status == GlobalStatus::Prepared && timeout::is_timed_out(g.create_time, t, now) {
            return Err(Error::Conflict(format!(
                "transaction {} timed out after {} seconds and is being cancelled",
                req.gid,
                t.unwrap_or_default().as_secs()
            )));
        }
        if !lifecycle::can_register(g.status) {
            return Err(Error::Conflict(format!("current status '{}', cannot register a branch", g.status)));
        }
        let rows = vec![
            Branch::new(req.branch_id.clone(), Op::Cancel, req.cancel.clone(), req.data.clone(), now),
            Branch::new(req.branch_id.clone(), Op::Confirm, req.confirm.clone(), req.data.clone(), now),
        ];
        match inner.store.add_branches(&req.gid, rows, now).await {
            Ok(()) => {
                debug!(gid = %req.gid, branch_id = %req.branch_id, "tcc branch registered");
                Ok(())
            }
            Err(StoreError::Conflict(_)) => {
                let current = inner.store.load(&req.gid).await?.map(|l| l.branches).unwrap_or_default();
                let mine: Vec<&Branch> = current.iter().filter(|b| b.branch_id == req.branch_id).collect();
                if !mine.is_empty() && mine.iter().all(|b| registered_as(b, &req)) {
                    // The same registration again: a client retry.
                    Ok(())
                } else {
                    Err(Error::Conflict(format!(
                        "branch {} of {} is already registered with other URLs or data",
                        req.branch_id, req.gid
                    )))
                }
            }
            Err(StoreError::Precondition(m)) => Err(Error::Conflict(m)),
            Err(e) => Err(e.into()),
        }
    }
}

/// Whether a stored row is what this registration would have written.
fn registered_as(b: &Branch, req: &RegisterBranch) -> bool {
    b.payload == req.data
        && match b.op {
            Op::Cancel => b.url == req.cancel,
            Op::Confirm => b.url == req.confirm,
            _ => false,
        }
}
