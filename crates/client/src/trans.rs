//! What every transaction carries: payloads, options, and the request sent to the coordinator.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::Error;

/// A branch payload: the bytes the coordinator stores and sends to the participant unchanged.
///
/// Over HTTP the API carries payloads as text, so they must be UTF-8 (JSON usually is); over
/// gRPC they are the encoded request message of the participant's method.
///
/// ```
/// use dtx_client::Payload;
/// let p = Payload::json(&serde_json::json!({"amount": 30})).unwrap();
/// assert_eq!(p.as_bytes(), br#"{"amount":30}"#);
/// assert_eq!(Payload::from("raw text").as_bytes(), b"raw text");
/// assert!(Payload::empty().as_bytes().is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload(Bytes);

impl Payload {
    /// No payload. (DTM's HTTP SDKs send `null` for "no body": use `Payload::json(&())` for that.)
    pub fn empty() -> Payload {
        Payload(Bytes::new())
    }

    /// A value serialised as JSON.
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Payload, Error> {
        serde_json::to_vec(value)
            .map(|v| Payload(Bytes::from(v)))
            .map_err(|e| Error::InvalidInput(format!("payload is not serialisable as JSON: {e}")))
    }

    /// Raw bytes, sent as they are.
    pub fn bytes(bytes: impl Into<Bytes>) -> Payload {
        Payload(bytes.into())
    }

    /// A protobuf message, encoded (the request of a gRPC participant's method).
    #[cfg(feature = "grpc")]
    pub fn proto<M: prost::Message>(message: &M) -> Payload {
        Payload(Bytes::from(message.encode_to_vec()))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub(crate) fn into_bytes(self) -> Bytes {
        self.0
    }

    /// The payload as text for DTM's HTTP API.
    pub(crate) fn to_text(&self) -> Result<String, Error> {
        String::from_utf8(self.0.to_vec()).map_err(|_| {
            Error::InvalidInput(
                "an HTTP payload must be UTF-8 text (JSON); use gRPC for binary payloads".into(),
            )
        })
    }
}

impl From<Value> for Payload {
    fn from(v: Value) -> Self {
        Payload(Bytes::from(v.to_string()))
    }
}

impl From<&Value> for Payload {
    fn from(v: &Value) -> Self {
        Payload(Bytes::from(v.to_string()))
    }
}

impl From<Vec<u8>> for Payload {
    fn from(v: Vec<u8>) -> Self {
        Payload(Bytes::from(v))
    }
}

impl From<Bytes> for Payload {
    fn from(v: Bytes) -> Self {
        Payload(v)
    }
}

impl From<&str> for Payload {
    fn from(v: &str) -> Self {
        Payload(Bytes::copy_from_slice(v.as_bytes()))
    }
}

impl From<String> for Payload {
    fn from(v: String) -> Self {
        Payload(Bytes::from(v))
    }
}

/// Per-transaction options (DTM's `TransOptions`). Unset values use the coordinator's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// Submit waits for the first round and reports its outcome (FAILURE / ONGOING as errors).
    pub wait_result: bool,
    /// Roll back (TCC, saga) or ask the check-back (msg) after this long.
    pub timeout_to_fail: Option<Duration>,
    /// The base retry interval of this transaction.
    pub retry_interval: Option<Duration>,
    /// The timeout of each participant call.
    pub request_timeout: Option<Duration>,
    /// A saga rolls back after this many retries.
    pub retry_limit: Option<u64>,
    /// Headers (gRPC: metadata) sent with every participant call.
    pub branch_headers: BTreeMap<String, String>,
}

/// Whole seconds, rounded up: DTM's options are integer seconds and a timeout must not shrink.
fn secs(d: Duration) -> i64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i64::try_from(s).unwrap_or(i64::MAX)
}

impl Options {
    fn json_into(&self, m: &mut Map<String, Value>) {
        if self.wait_result {
            m.insert("wait_result".into(), json!(true));
        }
        let mut put = |k: &str, v: Option<i64>| {
            if let Some(v) = v {
                m.insert(k.into(), json!(v));
            }
        };
        put("timeout_to_fail", self.timeout_to_fail.map(secs));
        put("retry_interval", self.retry_interval.map(secs));
        put("request_timeout", self.request_timeout.map(secs));
        put("retry_limit", self.retry_limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX)));
        if !self.branch_headers.is_empty() {
            m.insert("branch_headers".into(), json!(self.branch_headers));
        }
    }

    #[cfg(feature = "grpc")]
    pub(crate) fn to_grpc(&self) -> dtx_proto::dtmgimp::DtmTransOptions {
        dtx_proto::dtmgimp::DtmTransOptions {
            wait_result: self.wait_result,
            timeout_to_fail: self.timeout_to_fail.map(secs).unwrap_or(0),
            retry_interval: self.retry_interval.map(secs).unwrap_or(0),
            request_timeout: self.request_timeout.map(secs).unwrap_or(0),
            retry_limit: self.retry_limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX)).unwrap_or(0),
            branch_headers: self.branch_headers.clone().into_iter().collect(),
        }
    }
}

/// The option setters shared by [`crate::Saga`], [`crate::Msg`] and [`crate::Tcc`]'s builder.
macro_rules! option_setters {
    ($t:ty) => {
        impl $t {
            /// Submit waits for the first round: a rollback comes back as
            /// [`Error::Failure`](crate::Error::Failure) (with the rollback reason), an unfinished
            /// round as [`Error::Ongoing`](crate::Error::Ongoing).
            pub fn wait_result(mut self, on: bool) -> Self {
                self.req.options.wait_result = on;
                self
            }
            /// Give up (roll back, or ask the check-back) after this long (whole seconds).
            pub fn timeout_to_fail(mut self, d: std::time::Duration) -> Self {
                self.req.options.timeout_to_fail = Some(d);
                self
            }
            /// The base retry interval (whole seconds).
            pub fn retry_interval(mut self, d: std::time::Duration) -> Self {
                self.req.options.retry_interval = Some(d);
                self
            }
            /// The timeout of each participant call (whole seconds).
            pub fn request_timeout(mut self, d: std::time::Duration) -> Self {
                self.req.options.request_timeout = Some(d);
                self
            }
            /// Roll back a saga after this many retries.
            pub fn retry_limit(mut self, n: u64) -> Self {
                self.req.options.retry_limit = Some(n);
                self
            }
            /// A header (gRPC metadata) sent with every participant call.
            pub fn branch_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
                self.req.options.branch_headers.insert(name.into(), value.into());
                self
            }
            /// All of [`Options`](crate::Options) at once.
            pub fn options(mut self, options: crate::Options) -> Self {
                self.req.options = options;
                self
            }
        }
    };
}
pub(crate) use option_setters;

/// A global transaction request as both APIs carry it.
#[derive(Debug, Clone, Default)]
pub(crate) struct TransRequest {
    pub gid: String,
    pub trans_type: &'static str,
    /// Each step: `action` / `compensate` URLs (empty = absent).
    pub steps: Vec<BTreeMap<&'static str, String>>,
    pub payloads: Vec<Payload>,
    pub custom_data: Option<Value>,
    pub query_prepared: String,
    pub rollback_reason: String,
    pub options: Options,
}

impl TransRequest {
    pub fn new(gid: &str, trans_type: &'static str) -> TransRequest {
        TransRequest { gid: gid.to_owned(), trans_type, ..TransRequest::default() }
    }

    /// DTM's HTTP body.
    pub fn to_json(&self) -> Result<Value, Error> {
        let mut m = Map::new();
        m.insert("gid".into(), json!(self.gid));
        m.insert("trans_type".into(), json!(self.trans_type));
        if !self.steps.is_empty() {
            m.insert("steps".into(), json!(self.steps));
            let payloads = self.payloads.iter().map(Payload::to_text).collect::<Result<Vec<_>, _>>()?;
            m.insert("payloads".into(), json!(payloads));
        }
        if let Some(c) = &self.custom_data {
            m.insert("custom_data".into(), json!(c.to_string()));
        }
        if !self.query_prepared.is_empty() {
            m.insert("query_prepared".into(), json!(self.query_prepared));
        }
        if !self.rollback_reason.is_empty() {
            m.insert("rollback_reason".into(), json!(self.rollback_reason));
        }
        self.options.json_into(&mut m);
        Ok(Value::Object(m))
    }

    /// DTM's gRPC request.
    #[cfg(feature = "grpc")]
    pub fn to_grpc(&self) -> dtx_proto::dtmgimp::DtmRequest {
        dtx_proto::dtmgimp::DtmRequest {
            gid: self.gid.clone(),
            trans_type: self.trans_type.to_owned(),
            trans_options: Some(self.options.to_grpc()),
            customed_data: self.custom_data.as_ref().map(Value::to_string).unwrap_or_default(),
            bin_payloads: self.payloads.iter().map(|p| p.as_bytes().to_vec()).collect(),
            query_prepared: self.query_prepared.clone(),
            steps: if self.steps.is_empty() { String::new() } else { json!(self.steps).to_string() },
            req_extra: Default::default(),
            rollback_reason: self.rollback_reason.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_whole_seconds_rounded_up_and_omitted_when_unset() {
        let mut r = TransRequest::new("g", "saga");
        r.options.timeout_to_fail = Some(Duration::from_millis(1500));
        r.options.retry_limit = Some(3);
        let v = r.to_json().unwrap();
        assert_eq!(v, json!({"gid": "g", "trans_type": "saga", "timeout_to_fail": 2, "retry_limit": 3}));
    }

    #[test]
    fn http_payloads_must_be_text() {
        let mut r = TransRequest::new("g", "saga");
        r.steps.push(BTreeMap::from([("action", "http://a".to_owned())]));
        r.payloads.push(Payload::bytes(vec![0xff, 0xfe]));
        assert!(matches!(r.to_json(), Err(Error::InvalidInput(_))));
    }
}
