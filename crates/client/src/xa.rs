//! XA: every branch runs its local transaction up to the database's *prepared* state (the
//! data written but invisible, the locks held), and the coordinator then commits them all
//! (the scope returned `Ok`) or rolls them all back (`Err`, or a timeout).
//!
//! - The global side is [`XaBuilder::run`]: prepare, run the scope, submit or abort. In the
//!   scope, [`Xa::call_branch`] calls a participant's action (op `action`, with
//!   `phase2_url` = the same URL, as DTM's SDKs do).
//! - The participant side (features `postgres`, `mysql`) is [`local`] for the action: it opens
//!   the database's XA transaction, runs the business in it, registers the branch with the
//!   coordinator and prepares (PostgreSQL `PREPARE TRANSACTION`, MySQL `XA PREPARE`); and
//!   [`phase_two`] for the coordinator's `commit` / `rollback` call on the same URL.
//!
//! The xid of a branch is `<gid>-<branch_id>`, as DTM's. Phase two is idempotent: an xid the
//! database does not know (already committed or rolled back, or never prepared) counts as
//! done. After a rollback, phase two inserts the branch's barrier row (`xa`, gid, branch,
//! `action`, `01`, reason `rollback`): an action arriving late finds it and does not prepare
//! a transaction nobody would ever finish.

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;

use crate::branch::{BranchInfo, sub_branch_id};
use crate::client::{CallOptions, GlobalOp};
use crate::trans::{Options, TransRequest, option_setters};
use crate::{Client, Error, Payload};

/// An XA transaction about to run; see [`XaBuilder::run`].
#[derive(Debug, Clone)]
pub struct XaBuilder {
    client: Client,
    req: TransRequest,
}

option_setters!(XaBuilder);

impl XaBuilder {
    pub(crate) fn new(client: Client, gid: String) -> XaBuilder {
        XaBuilder { client, req: TransRequest::new(&gid, "xa") }
    }

    /// Prepares the transaction, runs `scope`, then submits it if `scope` returned `Ok` (the
    /// coordinator commits every registered branch, in registration order) or aborts it with
    /// the error's text as the rollback reason if it returned `Err` (every registered branch is
    /// rolled back) and returns that error.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), dtx_client::Error> {
    /// use serde_json::json;
    /// let client = dtx_client::Client::http("http://127.0.0.1:36789/api/dtmsvr")?;
    /// let gid = client.new_gid().await?;
    /// client
    ///     .xa(gid)
    ///     .run(async |xa| {
    ///         xa.call_branch(&json!({"amount": 30}), "http://bank1/api/XaTransOut").await?;
    ///         xa.call_branch(&json!({"amount": 30}), "http://bank2/api/XaTransIn").await?;
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<T>(self, scope: impl AsyncFnOnce(&Xa) -> Result<T, Error>) -> Result<T, Error> {
        let mut req = self.req;
        self.client.global_call(GlobalOp::Prepare, &req).await?;
        let xa = Xa {
            client: self.client.clone(),
            gid: req.gid.clone(),
            next: AtomicU32::new(0),
            options: req.options.clone(),
        };
        match scope(&xa).await {
            Ok(v) => {
                self.client.global_call(GlobalOp::Submit, &req).await?;
                Ok(v)
            }
            Err(e) => {
                req.rollback_reason = e.to_string();
                if let Err(abort) = self.client.global_call(GlobalOp::Abort, &req).await {
                    // The coordinator still rolls the branches back when the transaction times out.
                    tracing::warn!(gid = %req.gid, error = %abort, "XA abort failed");
                }
                Err(e)
            }
        }
    }
}

/// An XA scope: calls the branches' actions.
#[derive(Debug)]
pub struct Xa {
    client: Client,
    gid: String,
    next: AtomicU32,
    options: Options,
}

impl Xa {
    /// The gid.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Calls the action of the next branch (`01`, `02`...) at `url` with `payload` (query or
    /// metadata `gid`, `trans_type=xa`, `branch_id`, `op=action`, `dtm`, `phase2_url=url`).
    /// The participant prepares its local transaction and registers `url` for phase two
    /// ([`local`]). A branch answering FAILURE is [`Error::Failure`]; returning that error
    /// from the scope rolls the transaction back.
    pub async fn call_branch(&self, payload: impl Into<Payload>, url: &str) -> Result<Bytes, Error> {
        let payload = payload.into();
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let branch_id = sub_branch_id("", n)?;
        let info = BranchInfo::new(&self.gid, "xa", &branch_id, "action")?.with_phase2_url(url);
        let call =
            CallOptions { headers: &self.options.branch_headers, timeout: self.options.request_timeout };
        self.client.call_participant(url, &info, &payload, &call).await
    }
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
mod local;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub use local::{local, phase_two, xid};
