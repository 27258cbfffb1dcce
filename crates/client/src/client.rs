//! The coordinator handle: one API (new_gid, saga, tcc, msg, query) over HTTP or gRPC.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::branch::BranchInfo;
use crate::trans::{Payload, TransRequest};
use crate::{Error, Msg, Saga, TccBuilder, XaBuilder};

/// A handle on one coordinator (dtx or DTM). Cheap to clone; clones share connections.
///
/// [`Client::http`] talks to `http://host:36789/api/dtmsvr`, [`Client::grpc`] (feature `grpc`)
/// to `host:36790`; everything else is the same. Branch URLs are the participant's own:
/// `http(s)://...` URLs are called over HTTP, `host:port/package.Service/Method` over gRPC.
#[derive(Clone, Debug)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    api: Api,
    http: reqwest::Client,
    #[cfg(feature = "grpc")]
    channels: crate::grpc::Channels,
}

#[derive(Debug)]
enum Api {
    Http(String),
    #[cfg(feature = "grpc")]
    Grpc {
        addr: String,
        client: dtx_proto::dtmgimp::dtm_client::DtmClient<tonic::transport::Channel>,
    },
}

impl Client {
    /// A client of the HTTP API at `base_url`, e.g. `http://127.0.0.1:36789/api/dtmsvr`.
    ///
    /// ```
    /// let client = dtx_client::Client::http("http://127.0.0.1:36789/api/dtmsvr").unwrap();
    /// assert_eq!(client.coordinator(), "http://127.0.0.1:36789/api/dtmsvr");
    /// assert!(dtx_client::Client::http("not a url").is_err());
    /// ```
    pub fn http(base_url: &str) -> Result<Client, Error> {
        Client::http_with(default_http()?, base_url)
    }

    /// [`Client::http`] with a `reqwest::Client` of the caller's (timeouts, TLS, proxies). It is
    /// also used for HTTP calls to participants (TCC try, the message check-back).
    pub fn http_with(http: reqwest::Client, base_url: &str) -> Result<Client, Error> {
        let base = base_url.trim_end_matches('/');
        let parsed = url::Url::parse(base)
            .map_err(|e| Error::InvalidInput(format!("coordinator URL {base_url}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(Error::InvalidInput(format!("coordinator URL {base_url}: not http(s)")));
        }
        Ok(Client::with_api(Api::Http(base.to_owned()), http))
    }

    /// A client of the gRPC API (`dtmgimp.Dtm`) at `addr`: `host:port` or `http://host:port`.
    /// The connection is made on first use. Call it inside a Tokio runtime (the channel's
    /// worker is a task).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let client = dtx_client::Client::grpc("127.0.0.1:36790").unwrap();
    /// assert_eq!(client.coordinator(), "127.0.0.1:36790");
    /// # }
    /// ```
    #[cfg(feature = "grpc")]
    pub fn grpc(addr: &str) -> Result<Client, Error> {
        let channel = crate::grpc::lazy_channel(addr)?;
        let client = dtx_proto::dtmgimp::dtm_client::DtmClient::new(channel);
        let addr = addr.trim_start_matches("http://").to_owned();
        Ok(Client::with_api(Api::Grpc { addr, client }, default_http()?))
    }

    fn with_api(api: Api, http: reqwest::Client) -> Client {
        Client {
            inner: Arc::new(Inner {
                api,
                http,
                #[cfg(feature = "grpc")]
                channels: Default::default(),
            }),
        }
    }

    /// The coordinator's address as given (HTTP base URL or gRPC `host:port`); TCC passes it
    /// to try handlers as `dtm`.
    pub fn coordinator(&self) -> &str {
        match &self.inner.api {
            Api::Http(base) => base,
            #[cfg(feature = "grpc")]
            Api::Grpc { addr, .. } => addr,
        }
    }

    /// A new globally unique gid from the coordinator.
    pub async fn new_gid(&self) -> Result<String, Error> {
        match &self.inner.api {
            Api::Http(base) => {
                let v = self.get_json(&format!("{base}/newGid")).await?;
                v.get("gid")
                    .and_then(Value::as_str)
                    .filter(|g| !g.is_empty())
                    .map(str::to_owned)
                    .ok_or_else(|| Error::Protocol(format!("newGid answered without a gid: {v}")))
            }
            #[cfg(feature = "grpc")]
            Api::Grpc { client, .. } => Ok(client.clone().new_gid(()).await?.into_inner().gid),
        }
    }

    /// A saga builder for `gid`.
    pub fn saga(&self, gid: impl Into<String>) -> Saga {
        Saga::new(self.clone(), gid.into())
    }

    /// A 2-phase message builder for `gid`.
    pub fn msg(&self, gid: impl Into<String>) -> Msg {
        Msg::new(self.clone(), gid.into())
    }

    /// An XA transaction for `gid`; set options, then [`XaBuilder::run`] the scope.
    pub fn xa(&self, gid: impl Into<String>) -> XaBuilder {
        XaBuilder::new(self.clone(), gid.into())
    }

    /// A TCC transaction for `gid`; set options, then [`TccBuilder::run`] the scope.
    pub fn tcc(&self, gid: impl Into<String>) -> TccBuilder {
        TccBuilder::new(self.clone(), gid.into())
    }

    /// The transaction and its branches as the coordinator's `query` returns them (HTTP API
    /// only: DTM's gRPC API has no query). `None` when the coordinator does not know `gid`.
    pub async fn query(&self, gid: &str) -> Result<Option<Value>, Error> {
        let base = self.http_base("query is part of the HTTP API only; use an HTTP client")?;
        let mut url =
            url::Url::parse(&format!("{base}/query")).map_err(|e| Error::InvalidInput(e.to_string()))?;
        url.query_pairs_mut().append_pair("gid", gid);
        // Not read by the legacy substring rule: a transaction's texts may well contain FAILURE.
        let resp = self.inner.http.get(url.as_str()).send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        if status != 200 {
            Error::check_http(status, &text)?;
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| Error::Protocol(format!("the answer is not JSON ({e}): {text}")))?;
        Ok(if v.get("transaction").is_none_or(Value::is_null) { None } else { Some(v) })
    }

    #[cfg_attr(not(feature = "grpc"), allow(unused_variables))]
    fn http_base(&self, why_not: &str) -> Result<&str, Error> {
        match &self.inner.api {
            Api::Http(base) => Ok(base),
            #[cfg(feature = "grpc")]
            Api::Grpc { .. } => Err(Error::InvalidInput(why_not.to_owned())),
        }
    }

    async fn get_json(&self, url: &str) -> Result<Value, Error> {
        let resp = self.inner.http.get(url).send().await?;
        read_answer(resp).await
    }

    async fn post_json(&self, op: &str, body: &Value) -> Result<Value, Error> {
        let base = self.http_base("not an HTTP client")?;
        let resp = self
            .inner
            .http
            .post(format!("{base}/{op}"))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await?;
        read_answer(resp).await
    }

    /// `submit` / `prepare` / `abort` of a global transaction.
    pub(crate) async fn global_call(&self, op: GlobalOp, req: &TransRequest) -> Result<(), Error> {
        match &self.inner.api {
            Api::Http(_) => self.post_json(op.http_name(), &req.to_json()?).await.map(drop),
            #[cfg(feature = "grpc")]
            Api::Grpc { client, .. } => {
                let mut c = client.clone();
                let r = req.to_grpc();
                match op {
                    GlobalOp::Submit => c.submit(r).await?,
                    GlobalOp::Prepare => c.prepare(r).await?,
                    GlobalOp::Abort => c.abort(r).await?,
                };
                Ok(())
            }
        }
    }

    /// Registers a TCC branch (its confirm and cancel URLs).
    pub(crate) async fn register_tcc_branch(
        &self,
        gid: &str,
        branch_id: &str,
        payload: &Payload,
        confirm: &str,
        cancel: &str,
    ) -> Result<(), Error> {
        match &self.inner.api {
            Api::Http(_) => {
                let body = json!({
                    "gid": gid, "trans_type": "tcc", "branch_id": branch_id,
                    "data": payload.to_text()?, "confirm": confirm, "cancel": cancel,
                });
                self.post_json("registerBranch", &body).await.map(drop)
            }
            #[cfg(feature = "grpc")]
            Api::Grpc { client, .. } => {
                let r = dtx_proto::dtmgimp::DtmBranchRequest {
                    gid: gid.to_owned(),
                    trans_type: "tcc".into(),
                    branch_id: branch_id.to_owned(),
                    op: "try".into(),
                    data: [
                        ("confirm".to_owned(), confirm.to_owned()),
                        ("cancel".to_owned(), cancel.to_owned()),
                    ]
                    .into_iter()
                    .collect(),
                    busi_payload: payload.as_bytes().to_vec(),
                };
                client.clone().register_branch(r).await?;
                Ok(())
            }
        }
    }

    /// Registers an XA branch: the coordinator commits or rolls it back at `phase2_url`.
    pub(crate) async fn register_xa_branch(
        &self,
        gid: &str,
        branch_id: &str,
        phase2_url: &str,
    ) -> Result<(), Error> {
        match &self.inner.api {
            Api::Http(_) => {
                let body = json!({"gid": gid, "trans_type": "xa", "branch_id": branch_id, "url": phase2_url});
                self.post_json("registerBranch", &body).await.map(drop)
            }
            #[cfg(feature = "grpc")]
            Api::Grpc { client, .. } => {
                let r = dtx_proto::dtmgimp::DtmBranchRequest {
                    gid: gid.to_owned(),
                    trans_type: "xa".into(),
                    branch_id: branch_id.to_owned(),
                    op: "action".into(),
                    data: [("url".to_owned(), phase2_url.to_owned())].into_iter().collect(),
                    busi_payload: Vec::new(),
                };
                client.clone().register_branch(r).await?;
                Ok(())
            }
        }
    }

    /// Calls a participant the way the coordinator would (TCC try, the message check-back):
    /// HTTP for `http(s)://` URLs (POST with a payload, else GET; query `dtm`, `gid`,
    /// `trans_type`, `branch_id`, `op`), gRPC otherwise (`dtm-*` metadata). Returns the
    /// answer's body (HTTP) or reply message bytes (gRPC).
    pub(crate) async fn call_participant(
        &self,
        url: &str,
        info: &BranchInfo,
        payload: &Payload,
        call: &CallOptions<'_>,
    ) -> Result<Bytes, Error> {
        if url.starts_with("http://") || url.starts_with("https://") {
            let mut u =
                url::Url::parse(url).map_err(|e| Error::InvalidInput(format!("branch URL {url}: {e}")))?;
            u.query_pairs_mut()
                .append_pair("dtm", self.coordinator())
                .append_pair("gid", &info.gid)
                .append_pair("trans_type", &info.trans_type)
                .append_pair("branch_id", &info.branch_id)
                .append_pair("op", &info.op);
            if !info.phase2_url.is_empty() {
                u.query_pairs_mut().append_pair("phase2_url", &info.phase2_url);
            }
            // Like DTM's SDKs: a try (and an XA action) is always a POST (their empty body is
            // `null`); the check-back, which has no payload, a GET.
            let mut rb = if payload.as_bytes().is_empty() && !matches!(info.op.as_str(), "try" | "action") {
                self.inner.http.get(u)
            } else {
                self.inner
                    .http
                    .post(u)
                    .header("content-type", "application/json")
                    .body(payload.clone().into_bytes())
            };
            for (k, v) in call.headers {
                rb = rb.header(k.as_str(), v.as_str());
            }
            if let Some(t) = call.timeout {
                rb = rb.timeout(t);
            }
            let resp = rb.send().await?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await?;
            Error::check_http(status, &String::from_utf8_lossy(&body))?;
            Ok(body)
        } else {
            #[cfg(feature = "grpc")]
            {
                self.inner.channels.call(url, info, self.coordinator(), payload, call).await
            }
            #[cfg(not(feature = "grpc"))]
            {
                Err(Error::InvalidInput(format!(
                    "branch URL {url}: not http(s); gRPC needs the `grpc` feature"
                )))
            }
        }
    }
}

/// The HTTP client used unless the caller brings one.
fn default_http() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder().build().map_err(|e| Error::InvalidInput(format!("HTTP client: {e}")))
}

/// What a participant call sends besides the payload.
pub(crate) struct CallOptions<'a> {
    pub headers: &'a std::collections::BTreeMap<String, String>,
    pub timeout: Option<Duration>,
}

/// The three calls on a whole global transaction.
#[derive(Debug, Clone, Copy)]
pub(crate) enum GlobalOp {
    Submit,
    Prepare,
    Abort,
}

impl GlobalOp {
    fn http_name(self) -> &'static str {
        match self {
            GlobalOp::Submit => "submit",
            GlobalOp::Prepare => "prepare",
            GlobalOp::Abort => "abort",
        }
    }
}

/// An API answer: the result protocol, then the JSON body.
async fn read_answer(resp: reqwest::Response) -> Result<Value, Error> {
    let status = resp.status().as_u16();
    let text = resp.text().await?;
    Error::check_http(status, &text)?;
    serde_json::from_str(&text).map_err(|e| Error::Protocol(format!("the answer is not JSON ({e}): {text}")))
}
