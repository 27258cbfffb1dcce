//! gRPC on both sides of dtx.
//!
//! - [`GrpcParticipant`]: a real gRPC server on loopback serving `busi.Busi`
//!   (`tests/proto/busi.proto`), scripted like the HTTP [`Participant`](crate::Participant):
//!   per method a queue of [`GrpcReply`]s (OK when empty), every call recorded ([`GrpcCall`])
//!   with its metadata and the request bytes exactly as they arrived. The server is hand-written
//!   over a pass-through codec so that nothing is decoded and re-encoded on the way.
//! - The client side of `dtmgimp.Dtm` as DTM's gRPC SDK (dtmgrpc) speaks it: [`dtm_client`],
//!   [`GrpcSaga`] / [`GrpcMsg`] request builders, [`GrpcTcc`] (prepare, try with `dtm-*`
//!   metadata, RegisterBranch, submit / abort).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
// The participant side reuses dtx's own pass-through codec, so it records the bytes exactly as
// they arrive.
use dtx_engine::participant::grpc::RawCodec;
use dtx_proto::dtmgimp::dtm_client::DtmClient;
use dtx_proto::dtmgimp::{DtmBranchRequest, DtmRequest, DtmTransOptions};
use prost::Message;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::metadata::MetadataValue;
use tonic::server::{NamedService, UnaryService};
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Status};

use crate::{Gate, TestServer};

/// The generated code of `tests/proto/busi.proto` (messages and `busi_client::BusiClient`).
#[allow(missing_docs, clippy::all, clippy::unwrap_used)]
pub mod busi {
    tonic::include_proto!("busi");
}

pub use busi::ReqGrpc;
pub use dtx_proto::dtmgimp;

/// The participant's service name.
pub const SERVICE: &str = "busi.Busi";

/// The methods `busi.Busi` declares; any other method answers `Unimplemented`.
pub const METHODS: [&str; 11] = [
    "TransOut",
    "TransOutRevert",
    "TransIn",
    "TransInRevert",
    "TransOutTry",
    "TransOutConfirm",
    "TransOutCancel",
    "TransInTry",
    "TransInConfirm",
    "TransInCancel",
    "QueryPrepared",
];

/// One scripted answer of the gRPC participant.
#[derive(Clone, Debug)]
pub struct GrpcReply {
    /// The status code (`Ok` = an empty `google.protobuf.Empty` reply).
    pub code: Code,
    /// The status message.
    pub message: String,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Wait for this gate before answering.
    pub gate: Option<Gate>,
}

impl GrpcReply {
    /// Any status.
    pub fn status(code: Code, message: impl Into<String>) -> GrpcReply {
        GrpcReply { code, message: message.into(), delay: None, gate: None }
    }

    /// `OK` (SUCCESS).
    pub fn ok() -> GrpcReply {
        GrpcReply::status(Code::Ok, "")
    }

    /// `Aborted` with a business reason (FAILURE).
    pub fn aborted(reason: &str) -> GrpcReply {
        GrpcReply::status(Code::Aborted, reason)
    }

    /// `FailedPrecondition` (ONGOING).
    pub fn ongoing() -> GrpcReply {
        GrpcReply::status(Code::FailedPrecondition, "ONGOING")
    }

    /// `Aborted` with the message exactly `ONGOING` (the pre-v1.10 ONGOING).
    pub fn legacy_ongoing() -> GrpcReply {
        GrpcReply::status(Code::Aborted, "ONGOING")
    }

    /// `Unavailable` (an error: retried with backoff).
    pub fn unavailable() -> GrpcReply {
        GrpcReply::status(Code::Unavailable, "the bank is closed")
    }

    /// Answers only after `d`.
    pub fn after(mut self, d: Duration) -> GrpcReply {
        self.delay = Some(d);
        self
    }

    /// Answers only once `gate` is released.
    pub fn blocked_by(mut self, gate: &Gate) -> GrpcReply {
        self.gate = Some(gate.clone());
        self
    }
}

/// One call the gRPC participant received.
#[derive(Clone, Debug)]
pub struct GrpcCall {
    /// The method name (`TransOut`), without the service.
    pub method: String,
    /// The full path (`/busi.Busi/TransOut`).
    pub path: String,
    /// Request metadata (names lower-case, as HTTP/2 carries them).
    pub metadata: HashMap<String, String>,
    /// The request message bytes as they arrived (not decoded and re-encoded).
    pub body: Vec<u8>,
    /// When the call arrived.
    pub start: Instant,
    /// When the answer was sent (`None` while in flight, or if the caller gave up).
    pub end: Option<Instant>,
    /// The code answered (`None` while in flight).
    pub code: Option<Code>,
}

impl GrpcCall {
    /// A metadata value ("" when absent).
    pub fn md(&self, key: &str) -> &str {
        self.metadata.get(key).map(String::as_str).unwrap_or_default()
    }

    /// Whether the metadata has `key` (even with an empty value).
    pub fn has_md(&self, key: &str) -> bool {
        self.metadata.contains_key(key)
    }

    /// The request decoded as `ReqGrpc`.
    pub fn req(&self) -> ReqGrpc {
        ReqGrpc::decode(self.body.as_slice())
            .unwrap_or_else(|e| panic!("call to {} did not carry a ReqGrpc: {e}", self.method))
    }

    /// The `grpc-timeout` the caller set (its deadline), if any.
    pub fn timeout(&self) -> Option<Duration> {
        parse_grpc_timeout(self.md("grpc-timeout"))
    }

    /// The end instant; panics if the call never ended.
    pub fn ended(&self) -> Instant {
        self.end.unwrap_or_else(|| panic!("call to {} never ended", self.method))
    }
}

/// Parses a `grpc-timeout` header value (`<digits><unit>`, unit one of H M S m u n).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let unit = v.chars().last()?;
    let n: u64 = v[..v.len() - unit.len_utf8()].parse().ok()?;
    Some(match unit {
        'H' => Duration::from_secs(n * 3600),
        'M' => Duration::from_secs(n * 60),
        'S' => Duration::from_secs(n),
        'm' => Duration::from_millis(n),
        'u' => Duration::from_micros(n),
        'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[derive(Default)]
struct Inner {
    scripts: Mutex<HashMap<String, VecDeque<GrpcReply>>>,
    calls: Mutex<Vec<GrpcCall>>,
}

/// What stops a participant's server: the shutdown signal and the serving task.
type Stopper = (oneshot::Sender<()>, tokio::task::JoinHandle<()>);

/// The gRPC participant. Dropping it does not stop the server (it ends with the runtime);
/// [`GrpcParticipant::stop`] does.
#[derive(Clone)]
pub struct GrpcParticipant {
    addr: SocketAddr,
    inner: Arc<Inner>,
    stop: Arc<Mutex<Option<Stopper>>>,
}

impl GrpcParticipant {
    /// Starts a participant on `127.0.0.1:<free port>`.
    pub async fn spawn() -> GrpcParticipant {
        GrpcParticipant::spawn_on(0).await
    }

    /// Starts a participant on `127.0.0.1:<port>` (a participant coming back on its address).
    pub async fn spawn_on(port: u16) -> GrpcParticipant {
        GrpcParticipant::spawn_with(port, None).await
    }

    /// Starts a participant on `127.0.0.1:<free port>` serving TLS (`tls`).
    pub async fn spawn_tls(tls: tonic::transport::ServerTlsConfig) -> GrpcParticipant {
        GrpcParticipant::spawn_with(0, Some(tls)).await
    }

    async fn spawn_with(port: u16, tls: Option<tonic::transport::ServerTlsConfig>) -> GrpcParticipant {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind the gRPC participant");
        let addr = listener.local_addr().expect("gRPC participant addr");
        let inner = Arc::new(Inner::default());
        let service = BusiService { inner: inner.clone() };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = rx.await;
            };
            let mut builder = tonic::transport::Server::builder();
            if let Some(tls) = tls {
                builder = builder.tls_config(tls).expect("participant TLS");
            }
            let served = builder
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stopped)
                .await;
            if let Err(e) = served {
                eprintln!("gRPC participant stopped with an error: {e}");
            }
        });
        GrpcParticipant { addr, inner, stop: Arc::new(Mutex::new(Some((tx, task)))) }
    }

    /// Stops serving (graceful: connections get GOAWAY) and waits until the port is closed.
    pub async fn stop(&self) {
        let taken = self.stop.lock().expect("stop lock").take();
        if let Some((tx, task)) = taken {
            let _ = tx.send(());
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("the gRPC participant stops within 5 s")
                .expect("the gRPC participant task");
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT/busi.Busi/<method>`: a gRPC branch URL.
    pub fn url(&self, method: &str) -> String {
        format!("{}/{SERVICE}/{method}", self.addr)
    }

    /// Appends scripted replies for `method` (served in order, then OK).
    pub fn script(&self, method: &str, replies: impl IntoIterator<Item = GrpcReply>) {
        let mut scripts = self.inner.scripts.lock().expect("scripts lock");
        scripts.entry(method.to_owned()).or_default().extend(replies);
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<GrpcCall> {
        self.inner.calls.lock().expect("calls lock").clone()
    }

    /// The calls to `method`, in arrival order.
    pub fn calls_for(&self, method: &str) -> Vec<GrpcCall> {
        self.calls().into_iter().filter(|c| c.method == method).collect()
    }

    /// The methods called, in arrival order.
    pub fn methods(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.method).collect()
    }

    /// Waits (up to 10 s) until `method` has received at least `n` calls; returns them.
    pub async fn wait_calls(&self, method: &str, n: usize) -> Vec<GrpcCall> {
        crate::eventually(Duration::from_secs(10), &format!("{n} gRPC call(s) to {method}"), || async {
            let calls = self.calls_for(method);
            (calls.len() >= n).then_some(calls)
        })
        .await
    }
}

/// `busi.Busi`, hand-written over [`RawCodec`]: records, then answers from the script.
#[derive(Clone)]
struct BusiService {
    inner: Arc<Inner>,
}

impl NamedService for BusiService {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for BusiService
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let path = req.uri().path().to_owned();
        let handler = Handler { inner: self.inner.clone(), path };
        Box::pin(async move { Ok(tonic::server::Grpc::new(RawCodec).unary(handler, req).await) })
    }
}

struct Handler {
    inner: Arc<Inner>,
    path: String,
}

impl UnaryService<Bytes> for Handler {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let inner = self.inner.clone();
        let path = self.path.clone();
        Box::pin(async move {
            let method = path.strip_prefix(&format!("/{SERVICE}/")).unwrap_or_default().to_owned();
            let reply = if METHODS.contains(&method.as_str()) {
                let mut scripts = inner.scripts.lock().expect("scripts lock");
                scripts.get_mut(&method).and_then(VecDeque::pop_front).unwrap_or_else(GrpcReply::ok)
            } else {
                GrpcReply::status(Code::Unimplemented, format!("no method {path}"))
            };
            let metadata = request
                .metadata()
                .clone()
                .into_headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect();
            let index = {
                let mut calls = inner.calls.lock().expect("calls lock");
                calls.push(GrpcCall {
                    method,
                    path,
                    metadata,
                    body: request.into_inner().to_vec(),
                    start: Instant::now(),
                    end: None,
                    code: None,
                });
                calls.len() - 1
            };
            if let Some(gate) = &reply.gate {
                gate.wait().await;
            }
            if let Some(d) = reply.delay {
                tokio::time::sleep(d).await;
            }
            {
                let mut calls = inner.calls.lock().expect("calls lock");
                calls[index].end = Some(Instant::now());
                calls[index].code = Some(reply.code);
            }
            match reply.code {
                // google.protobuf.Empty encodes to zero bytes.
                Code::Ok => Ok(tonic::Response::new(Bytes::new())),
                code => Err(Status::new(code, reply.message)),
            }
        })
    }
}

/// A `dtmgimp.Dtm` client of the gRPC address `addr`.
pub async fn dtm_client_at(addr: SocketAddr) -> DtmClient<Channel> {
    DtmClient::connect(format!("http://{addr}"))
        .await
        .unwrap_or_else(|e| panic!("connect to dtmgimp.Dtm at {addr}: {e}"))
}

/// A `dtmgimp.Dtm` client of an in-process test server.
pub async fn dtm_client(s: &TestServer) -> DtmClient<Channel> {
    dtm_client_at(s.grpc_addr()).await
}

/// `ReqGrpc{Amount, TransOutResult, TransInResult}` encoded (canonically, by prost).
pub fn req_bytes(amount: i64) -> Vec<u8> {
    ReqGrpc { amount, ..ReqGrpc::default() }.encode_to_vec()
}

/// A `ReqGrpc` encoded the way prost would never encode it: fields in reverse order, then a
/// field `ReqGrpc` does not know (number 15). It decodes fine, but any decode + re-encode on the
/// way to the participant would change the bytes.
pub fn odd_req_bytes(amount: i64, note: &str) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::string::encode(3, &note.to_owned(), &mut out);
    prost::encoding::string::encode(2, &format!("out:{note}"), &mut out);
    prost::encoding::int64::encode(1, &amount, &mut out);
    prost::encoding::bytes::encode(15, &b"unknown to ReqGrpc".to_vec(), &mut out);
    out
}

/// A saga `DtmRequest` under construction (dtmgrpc's `SagaGrpc` wire format).
#[derive(Clone, Debug, Default)]
pub struct GrpcSaga {
    gid: String,
    steps: Vec<(String, String)>,
    payloads: Vec<Vec<u8>>,
    /// The options sent (`TransOptions`).
    pub options: DtmTransOptions,
    /// `CustomedData` (JSON text: orders, concurrent).
    pub custom_data: String,
}

impl GrpcSaga {
    /// An empty saga with this gid.
    pub fn new(gid: &str) -> GrpcSaga {
        GrpcSaga { gid: gid.to_owned(), ..GrpcSaga::default() }
    }

    /// Adds a step with its payload (an encoded message).
    pub fn step(
        mut self,
        action: impl Into<String>,
        compensate: impl Into<String>,
        payload: Vec<u8>,
    ) -> GrpcSaga {
        self.steps.push((action.into(), compensate.into()));
        self.payloads.push(payload);
        self
    }

    /// `WaitResult = true`.
    pub fn wait_result(mut self) -> GrpcSaga {
        self.options.wait_result = true;
        self
    }

    /// Adds a branch header.
    pub fn header(mut self, k: &str, v: &str) -> GrpcSaga {
        self.options.branch_headers.insert(k.to_owned(), v.to_owned());
        self
    }

    /// The payloads, in step order.
    pub fn payloads(&self) -> &[Vec<u8>] {
        &self.payloads
    }

    /// The request: `Steps` is the JSON text of `[{"action","compensate"}...]`.
    pub fn request(&self) -> DtmRequest {
        let steps: Vec<_> = self.steps.iter().map(|(a, c)| json!({"action": a, "compensate": c})).collect();
        DtmRequest {
            gid: self.gid.clone(),
            trans_type: "saga".into(),
            trans_options: Some(self.options.clone()),
            customed_data: self.custom_data.clone(),
            bin_payloads: self.payloads.clone(),
            steps: serde_json::Value::Array(steps).to_string(),
            ..DtmRequest::default()
        }
    }
}

/// A 2-phase message `DtmRequest` (dtmgrpc's `MsgGrpc` wire format).
#[derive(Clone, Debug, Default)]
pub struct GrpcMsg {
    gid: String,
    query_prepared: String,
    actions: Vec<String>,
    payloads: Vec<Vec<u8>>,
    /// The options sent (`TransOptions`).
    pub options: DtmTransOptions,
}

impl GrpcMsg {
    /// An empty message with this gid and check-back URL.
    pub fn new(gid: &str, query_prepared: impl Into<String>) -> GrpcMsg {
        GrpcMsg { gid: gid.to_owned(), query_prepared: query_prepared.into(), ..GrpcMsg::default() }
    }

    /// Adds a step (`msg.Add(action, payload)`).
    pub fn step(mut self, action: impl Into<String>, payload: Vec<u8>) -> GrpcMsg {
        self.actions.push(action.into());
        self.payloads.push(payload);
        self
    }

    /// The request: `Steps` is the JSON text of `[{"action"}...]`.
    pub fn request(&self) -> DtmRequest {
        let steps: Vec<_> = self.actions.iter().map(|a| json!({"action": a})).collect();
        DtmRequest {
            gid: self.gid.clone(),
            trans_type: "msg".into(),
            trans_options: Some(self.options.clone()),
            bin_payloads: self.payloads.clone(),
            steps: serde_json::Value::Array(steps).to_string(),
            query_prepared: self.query_prepared.clone(),
            ..DtmRequest::default()
        }
    }
}

/// A TCC over gRPC, driven as dtmgrpc's `TccGlobalTransaction` does.
#[derive(Clone, Debug)]
pub struct GrpcTcc {
    dtm: DtmClient<Channel>,
    dtm_addr: SocketAddr,
    gid: String,
}

impl GrpcTcc {
    /// `Prepare{Gid, TransType:"tcc", TransOptions}`; panics unless OK.
    pub async fn prepare(dtm_addr: SocketAddr, gid: &str, options: DtmTransOptions) -> GrpcTcc {
        let mut dtm = dtm_client_at(dtm_addr).await;
        let tcc = GrpcTcc { dtm: dtm.clone(), dtm_addr, gid: gid.to_owned() };
        let mut req = tcc.request();
        req.trans_options = Some(options);
        dtm.prepare(req).await.unwrap_or_else(|e| panic!("Prepare {gid}: {e:?}"));
        tcc
    }

    /// The gid.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// `DtmRequest{Gid, TransType:"tcc"}`.
    pub fn request(&self) -> DtmRequest {
        DtmRequest { gid: self.gid.clone(), trans_type: "tcc".into(), ..DtmRequest::default() }
    }

    /// `RegisterBranch` with `<service>Confirm` / `<service>Cancel` of `p` and `payload`.
    pub async fn register(
        &self,
        p: &GrpcParticipant,
        branch_id: &str,
        service: &str,
        payload: &[u8],
    ) -> Result<(), Status> {
        let data = HashMap::from([
            ("confirm".to_owned(), p.url(&format!("{service}Confirm"))),
            ("cancel".to_owned(), p.url(&format!("{service}Cancel"))),
        ]);
        let req = DtmBranchRequest {
            gid: self.gid.clone(),
            trans_type: "tcc".into(),
            branch_id: branch_id.to_owned(),
            op: "try".into(),
            data,
            busi_payload: payload.to_vec(),
        };
        self.dtm.clone().register_branch(req).await.map(|_| ())
    }

    /// Calls `<service>Try` of `p` itself, with dtmgrpc's metadata (`dtm-gid`,
    /// `dtm-trans_type=tcc`, `dtm-branch_id`, `dtm-op=try`, `dtm-dtm`).
    pub async fn call_try(
        &self,
        p: &GrpcParticipant,
        branch_id: &str,
        service: &str,
        req: ReqGrpc,
    ) -> Result<(), Status> {
        let mut client = busi::busi_client::BusiClient::connect(format!("http://{}", p.addr()))
            .await
            .unwrap_or_else(|e| panic!("connect to the participant: {e}"));
        let mut request = tonic::Request::new(req);
        let md = request.metadata_mut();
        let dtm = self.dtm_addr.to_string();
        for (k, v) in [
            ("dtm-gid", self.gid.as_str()),
            ("dtm-trans_type", "tcc"),
            ("dtm-branch_id", branch_id),
            ("dtm-op", "try"),
            ("dtm-dtm", dtm.as_str()),
        ] {
            md.insert(k, MetadataValue::try_from(v).expect("ascii metadata"));
        }
        let answer = match service {
            "TransOut" => client.trans_out_try(request).await,
            "TransIn" => client.trans_in_try(request).await,
            other => panic!("no try method for {other}"),
        };
        answer.map(|_| ())
    }

    /// One SDK branch call: RegisterBranch (must be OK), then the try, called by the test.
    pub async fn branch(
        &self,
        p: &GrpcParticipant,
        branch_id: &str,
        service: &str,
        req: ReqGrpc,
    ) -> Result<(), Status> {
        self.register(p, branch_id, service, &req.encode_to_vec())
            .await
            .unwrap_or_else(|e| panic!("RegisterBranch {}/{branch_id}: {e:?}", self.gid));
        self.call_try(p, branch_id, service, req).await
    }

    /// `Submit{Gid, TransType:"tcc"}`.
    pub async fn submit(&self) -> Result<(), Status> {
        self.dtm.clone().submit(self.request()).await.map(|_| ())
    }

    /// `Abort{Gid, TransType:"tcc", RollbackReason}`.
    pub async fn abort(&self, reason: &str) -> Result<(), Status> {
        let mut req = self.request();
        req.rollback_reason = reason.to_owned();
        self.dtm.clone().abort(req).await.map(|_| ())
    }
}
