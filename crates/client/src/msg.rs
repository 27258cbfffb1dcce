//! 2-phase messages (the transactional outbox): prepare, commit a local transaction, submit;
//! the coordinator then calls every action until it succeeds.

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::GlobalOp;
use crate::trans::{TransRequest, option_setters};
use crate::{Client, Error, Payload};

/// A message being built.
///
/// ```
/// use serde_json::json;
/// let client = dtx_client::Client::http("http://127.0.0.1:36789/api/dtmsvr").unwrap();
/// let msg = client
///     .msg("gid-2")
///     .add("http://bank2/TransIn", json!({"amount": 30}))
///     .add_topic("payments", json!({"amount": 30}))
///     .delay(std::time::Duration::from_secs(5));
/// assert_eq!(
///     msg.to_json().unwrap(),
///     json!({
///         "gid": "gid-2",
///         "trans_type": "msg",
///         "steps": [{"action": "http://bank2/TransIn"}, {"action": "topic://payments"}],
///         "payloads": [r#"{"amount":30}"#, r#"{"amount":30}"#],
///         "custom_data": r#"{"delay":5}"#
///     })
/// );
/// ```
#[derive(Debug, Clone)]
pub struct Msg {
    client: Client,
    req: TransRequest,
}

option_setters!(Msg);

impl Msg {
    pub(crate) fn new(client: Client, gid: String) -> Msg {
        Msg { client, req: TransRequest::new(&gid, "msg") }
    }

    /// The gid.
    pub fn gid(&self) -> &str {
        &self.req.gid
    }

    /// The client this message was built from.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Appends an action: the coordinator calls `action` with `payload` after submit, until it
    /// succeeds.
    pub fn add(mut self, action: impl Into<String>, payload: impl Into<Payload>) -> Msg {
        self.req.steps.push([("action", action.into())].into_iter().collect());
        self.req.payloads.push(payload.into());
        self
    }

    /// Appends an action for every subscriber of `topic` (`topic://<topic>`).
    pub fn add_topic(self, topic: &str, payload: impl Into<Payload>) -> Msg {
        self.add(format!("topic://{topic}"), payload)
    }

    /// Runs the actions this long after submit (whole seconds).
    pub fn delay(mut self, d: Duration) -> Msg {
        let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
        self.req.custom_data = Some(json!({"delay": s}));
        self
    }

    /// The body sent to the HTTP API (for logs and tests).
    pub fn to_json(&self) -> Result<Value, Error> {
        self.req.to_json()
    }

    /// Phase one: the coordinator records the message as prepared. If it is not submitted
    /// before its timeout, the coordinator asks `query_prepared` (the check-back) whether the
    /// local transaction committed.
    pub async fn prepare(&mut self, query_prepared: &str) -> Result<(), Error> {
        self.req.query_prepared = query_prepared.to_owned();
        self.client.global_call(GlobalOp::Prepare, &self.req).await
    }

    /// Phase two: the actions run.
    pub async fn submit(&self) -> Result<(), Error> {
        self.client.global_call(GlobalOp::Submit, &self.req).await
    }

    /// Aborts a prepared message (its actions never run).
    pub async fn abort(&self) -> Result<(), Error> {
        self.client.global_call(GlobalOp::Abort, &self.req).await
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
impl Msg {
    /// Prepares the message, runs `business` in a local transaction on `pool` guarded by the
    /// message barrier, and submits the message once that transaction committed:
    ///
    /// - `business` returned `Ok`: submit; its value is returned. Once the local transaction
    ///   committed the message *will* be delivered (the check-back says so), so a submit that
    ///   does not get through (transport error, ONGOING while the coordinator is already
    ///   asking the check-back) is logged, not returned; only FAILURE is returned;
    /// - it returned [`Error::Failure`]: abort (the message never runs); the error is returned;
    /// - any other error (including a lost commit answer, or [`Error::Duplicated`] when the
    ///   check-back already rolled this message back): ask the check-back `query_prepared`
    ///   (which reads the barrier table) whether the local transaction committed, then submit
    ///   or abort accordingly; the error is returned. If even that is unclear, the
    ///   coordinator asks the check-back itself when the message times out.
    ///
    /// `query_prepared` is the URL of this service's check-back handler, which answers with
    /// [`crate::barrier::query_prepared`] on the same database.
    pub async fn do_and_submit<DB, T>(
        &mut self,
        query_prepared: &str,
        pool: &sqlx::Pool<DB>,
        business: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, Error>,
    ) -> Result<T, Error>
    where
        DB: crate::barrier::BarrierDatabase,
    {
        use crate::barrier::{Barrier, Barriered, MSG_BRANCH_ID, MSG_OP};
        self.prepare(query_prepared).await?;
        let info = crate::BranchInfo::new(&self.req.gid, "msg", MSG_BRANCH_ID, MSG_OP)?;
        let outcome = match Barrier::new(&info).call(pool, business).await {
            Ok(Barriered::Ran(v)) => Ok(v),
            Ok(Barriered::Skipped(_)) => Err(Error::Duplicated),
            Err(e) => Err(e),
        };
        match outcome {
            Ok(v) => match self.submit().await {
                Err(e @ Error::Failure(_)) => Err(e),
                Err(e) => {
                    // The local transaction committed, so the check-back answers success: the
                    // coordinator delivers the message even though this submit did not get
                    // through (e.g. ONGOING while it is already asking the check-back).
                    tracing::warn!(gid = %self.req.gid, error = %e, "submit after the local commit failed; the check-back will deliver");
                    Ok(v)
                }
                Ok(()) => Ok(v),
            },
            Err(e @ Error::Failure(_)) => {
                self.abort().await?;
                Err(e)
            }
            Err(e) => {
                let call = crate::client::CallOptions {
                    headers: &self.req.options.branch_headers,
                    timeout: self.req.options.request_timeout,
                };
                match self.client.call_participant(query_prepared, &info, &Payload::empty(), &call).await {
                    Ok(_) => self.submit().await?,
                    Err(Error::Failure(_)) => self.abort().await?,
                    Err(unclear) => {
                        tracing::warn!(gid = %self.req.gid, error = %unclear, "check-back unclear; the coordinator will ask again");
                    }
                }
                Err(e)
            }
        }
    }
}
