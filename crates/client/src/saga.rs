//! Sagas: steps of an action and its compensation, run in order (or as a graph) by the
//! coordinator, compensated in reverse when one fails.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::client::GlobalOp;
use crate::trans::{TransRequest, option_setters};
use crate::{Client, Error, Payload};

/// A saga being built. Submit it with [`Saga::submit`].
///
/// ```
/// use serde_json::json;
/// let client = dtx_client::Client::http("http://127.0.0.1:36789/api/dtmsvr").unwrap();
/// let saga = client
///     .saga("gid-1")
///     .add("http://bank1/TransOut", "http://bank1/TransOutRevert", json!({"amount": 30}))
///     .add("http://bank2/TransIn", "http://bank2/TransInRevert", json!({"amount": 30}))
///     .add_branch_order(1, [0])
///     .concurrent(true)
///     .retry_limit(3);
/// assert_eq!(
///     saga.to_json().unwrap(),
///     json!({
///         "gid": "gid-1",
///         "trans_type": "saga",
///         "steps": [
///             {"action": "http://bank1/TransOut", "compensate": "http://bank1/TransOutRevert"},
///             {"action": "http://bank2/TransIn", "compensate": "http://bank2/TransInRevert"}
///         ],
///         "payloads": [r#"{"amount":30}"#, r#"{"amount":30}"#],
///         "custom_data": r#"{"concurrent":true,"orders":{"1":[0]}}"#,
///         "retry_limit": 3
///     })
/// );
/// ```
#[derive(Debug, Clone)]
pub struct Saga {
    client: Client,
    req: TransRequest,
    orders: BTreeMap<usize, Vec<usize>>,
    concurrent: bool,
}

option_setters!(Saga);

impl Saga {
    pub(crate) fn new(client: Client, gid: String) -> Saga {
        Saga { client, req: TransRequest::new(&gid, "saga"), orders: BTreeMap::new(), concurrent: false }
    }

    /// The gid.
    pub fn gid(&self) -> &str {
        &self.req.gid
    }

    /// Appends a step: `action` runs forward, `compensate` undoes it (empty: the step cannot
    /// be rolled back, a pivot). Both receive `payload`.
    pub fn add(
        mut self,
        action: impl Into<String>,
        compensate: impl Into<String>,
        payload: impl Into<Payload>,
    ) -> Saga {
        let mut step = BTreeMap::new();
        step.insert("action", action.into());
        let compensate = compensate.into();
        if !compensate.is_empty() {
            step.insert("compensate", compensate);
        }
        self.req.steps.push(step);
        self.req.payloads.push(payload.into());
        self
    }

    /// Step `branch` (0-based, in `add` order) starts only after the steps `depends_on`
    /// succeeded. Used with [`Saga::concurrent`].
    pub fn add_branch_order(mut self, branch: usize, depends_on: impl IntoIterator<Item = usize>) -> Saga {
        self.orders.entry(branch).or_default().extend(depends_on);
        self
    }

    /// Runs independent steps concurrently (the order graph of [`Saga::add_branch_order`]).
    pub fn concurrent(mut self, on: bool) -> Saga {
        self.concurrent = on;
        self
    }

    fn request(&self) -> TransRequest {
        let mut req = self.req.clone();
        if self.concurrent {
            let orders: BTreeMap<String, &Vec<usize>> =
                self.orders.iter().map(|(k, v)| (k.to_string(), v)).collect();
            req.custom_data = Some(json!({"orders": orders, "concurrent": true}));
        }
        req
    }

    /// The body sent to the HTTP API's `submit` (for logs and tests).
    pub fn to_json(&self) -> Result<Value, Error> {
        self.request().to_json()
    }

    /// Submits the saga. With [`Saga::wait_result`], a rollback is [`Error::Failure`] carrying
    /// the rollback reason, and a round that could not finish is [`Error::Ongoing`].
    pub async fn submit(&self) -> Result<(), Error> {
        self.client.global_call(GlobalOp::Submit, &self.request()).await
    }
}
