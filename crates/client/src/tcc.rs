//! TCC: the caller tries every branch itself inside a scope; the coordinator then confirms
//! them all (the scope returned `Ok`) or cancels them all (`Err`, or a timeout).

use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;

use crate::branch::{BranchInfo, sub_branch_id};
use crate::client::{CallOptions, GlobalOp};
use crate::trans::{Options, TransRequest, option_setters};
use crate::{Client, Error, Payload};

/// A TCC transaction about to run; see [`TccBuilder::run`].
#[derive(Debug, Clone)]
pub struct TccBuilder {
    client: Client,
    req: TransRequest,
}

option_setters!(TccBuilder);

impl TccBuilder {
    pub(crate) fn new(client: Client, gid: String) -> TccBuilder {
        TccBuilder { client, req: TransRequest::new(&gid, "tcc") }
    }

    /// Prepares the transaction, runs `scope`, then submits it if `scope` returned `Ok` (every
    /// branch is confirmed) or aborts it with the error's text as the rollback reason if it
    /// returned `Err` (every registered branch is cancelled) and returns that error.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), dtx_client::Error> {
    /// use serde_json::json;
    /// let client = dtx_client::Client::http("http://127.0.0.1:36789/api/dtmsvr")?;
    /// let gid = client.new_gid().await?;
    /// client
    ///     .tcc(gid)
    ///     .run(async |tcc| {
    ///         let body = json!({"amount": 30});
    ///         tcc.call_branch(&body, "http://bank1/TryOut", "http://bank1/ConfirmOut", "http://bank1/CancelOut").await?;
    ///         tcc.call_branch(&body, "http://bank2/TryIn", "http://bank2/ConfirmIn", "http://bank2/CancelIn").await?;
    ///         Ok(())
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn run<T>(self, scope: impl AsyncFnOnce(&Tcc) -> Result<T, Error>) -> Result<T, Error> {
        let mut req = self.req;
        self.client.global_call(GlobalOp::Prepare, &req).await?;
        let tcc = Tcc::new(self.client.clone(), req.gid.clone(), String::new(), req.options.clone());
        match scope(&tcc).await {
            Ok(v) => {
                self.client.global_call(GlobalOp::Submit, &req).await?;
                Ok(v)
            }
            Err(e) => {
                req.rollback_reason = e.to_string();
                if let Err(abort) = self.client.global_call(GlobalOp::Abort, &req).await {
                    // The coordinator still cancels the branches when the transaction times out.
                    tracing::warn!(gid = %req.gid, error = %abort, "TCC abort failed");
                }
                Err(e)
            }
        }
    }
}

/// A TCC scope: registers branches and calls their try.
#[derive(Debug)]
pub struct Tcc {
    client: Client,
    gid: String,
    parent: String,
    next: AtomicU32,
    options: Options,
}

impl Tcc {
    fn new(client: Client, gid: String, parent: String, options: Options) -> Tcc {
        Tcc { client, gid, parent, next: AtomicU32::new(0), options }
    }

    /// A nested TCC inside a try handler: branches registered here belong to the same global
    /// transaction, with ids under the calling branch (`02` -> `0201`, `0202`...). `branch` is
    /// the try call being handled (its op must be `try`).
    pub fn nested(client: &Client, branch: &BranchInfo) -> Result<Tcc, Error> {
        if branch.trans_type != "tcc" || branch.op != "try" {
            return Err(Error::InvalidInput(format!(
                "a nested TCC starts from a TCC try call, not {} {}",
                branch.trans_type, branch.op
            )));
        }
        Ok(Tcc::new(client.clone(), branch.gid.clone(), branch.branch_id.clone(), Options::default()))
    }

    /// The gid.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// Registers a branch (its `confirm` and `cancel` URLs) and then calls `try_url` with
    /// `payload` (query or metadata `gid`, `trans_type=tcc`, `branch_id`, `op=try`, `dtm`).
    /// Returns the try's answer body (HTTP) or reply message (gRPC); a try answering FAILURE is
    /// [`Error::Failure`]. Returning that error from the scope cancels the transaction.
    pub async fn call_branch(
        &self,
        payload: impl Into<Payload>,
        try_url: &str,
        confirm_url: &str,
        cancel_url: &str,
    ) -> Result<Bytes, Error> {
        let payload = payload.into();
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let branch_id = sub_branch_id(&self.parent, n)?;
        self.client.register_tcc_branch(&self.gid, &branch_id, &payload, confirm_url, cancel_url).await?;
        let info = BranchInfo::new(&self.gid, "tcc", &branch_id, "try")?;
        let call =
            CallOptions { headers: &self.options.branch_headers, timeout: self.options.request_timeout };
        self.client.call_participant(try_url, &info, &payload, &call).await
    }
}
