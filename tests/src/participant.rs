//! A scripted HTTP participant on loopback.
//!
//! Every path has a queue of [`Reply`]s; a call takes the next one, or answers
//! `200 {"dtm_result":"SUCCESS"}` when the queue is empty. Every call is recorded ([`Call`]) with
//! its start and end instants, so tests can check ordering and overlap.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A gate a scripted reply waits on until the test releases it (holds a call in flight).
#[derive(Clone, Debug)]
pub struct Gate {
    open: Arc<watch::Sender<bool>>,
}

impl Default for Gate {
    fn default() -> Self {
        Gate::new()
    }
}

impl Gate {
    /// A closed gate.
    pub fn new() -> Gate {
        Gate { open: Arc::new(watch::channel(false).0) }
    }

    /// Opens the gate: every call waiting on it (now or later) goes on.
    pub fn release(&self) {
        self.open.send_replace(true);
    }

    pub(crate) async fn wait(&self) {
        let mut rx = self.open.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|open| *open).await;
    }
}

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Response body.
    pub body: String,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
    /// Wait for this gate before answering.
    pub gate: Option<Gate>,
}

impl Reply {
    /// Any status and body.
    pub fn status(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, body: body.into(), delay: None, gate: None }
    }

    /// `200 {"dtm_result":"SUCCESS"}`.
    pub fn ok() -> Reply {
        Reply::status(200, r#"{"dtm_result":"SUCCESS"}"#)
    }

    /// `409` FAILURE with a business reason.
    pub fn failure(reason: &str) -> Reply {
        Reply::status(409, serde_json::json!({"dtm_result": "FAILURE", "message": reason}).to_string())
    }

    /// `425` ONGOING.
    pub fn ongoing() -> Reply {
        Reply::status(425, r#"{"dtm_result":"ONGOING"}"#)
    }

    /// `500` with a plain error text.
    pub fn error() -> Reply {
        Reply::status(500, "participant exploded")
    }

    /// Answers only after `d`.
    pub fn after(mut self, d: Duration) -> Reply {
        self.delay = Some(d);
        self
    }

    /// Answers only once `gate` is released.
    pub fn blocked_by(mut self, gate: &Gate) -> Reply {
        self.gate = Some(gate.clone());
        self
    }
}

/// One call the participant received.
#[derive(Clone, Debug)]
pub struct Call {
    /// Request path (`/TransOut`).
    pub path: String,
    /// HTTP method.
    pub method: String,
    /// Query parameters (`gid`, `trans_type`, `branch_id`, `op`).
    pub query: HashMap<String, String>,
    /// Request headers, names lower-case.
    pub headers: HashMap<String, String>,
    /// Request body bytes.
    pub body: Vec<u8>,
    /// When the call arrived.
    pub start: Instant,
    /// When the answer was sent (`None` while in flight, or if the caller went away).
    pub end: Option<Instant>,
    /// The status answered (0 while in flight).
    pub status: u16,
}

impl Call {
    /// A query parameter ("" when absent).
    pub fn param(&self, key: &str) -> &str {
        self.query.get(key).map(String::as_str).unwrap_or_default()
    }

    /// A header ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(&name.to_ascii_lowercase()).map(String::as_str).unwrap_or_default()
    }

    /// The end instant; panics if the call never ended.
    pub fn ended(&self) -> Instant {
        self.end.unwrap_or_else(|| panic!("call to {} never ended", self.path))
    }
}

#[derive(Default)]
struct Inner {
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    calls: Mutex<Vec<Call>>,
    /// While set, every call gets this reply (an outage answering 5xx), scripts untouched.
    outage: Mutex<Option<Reply>>,
    /// Set to stop serving: the listener closes, so connections are refused.
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// The participant server. Dropping it does not stop the server (it ends with the runtime).
#[derive(Clone)]
pub struct Participant {
    addr: SocketAddr,
    inner: Arc<Inner>,
    scheme: &'static str,
}

impl Participant {
    /// Starts a participant on `127.0.0.1:<free port>`.
    pub async fn spawn() -> Participant {
        Participant::spawn_on(0).await
    }

    /// Starts a participant on `127.0.0.1:<port>` (a participant coming back on its address).
    pub async fn spawn_on(port: u16) -> Participant {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind participant");
        Participant::serve(listener)
    }

    fn serve(listener: TcpListener) -> Participant {
        let addr = listener.local_addr().expect("participant addr");
        let inner = Arc::new(Inner::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        *inner.stop.lock().expect("stop lock") = Some(stop);
        let app = Router::new().fallback(handle).with_state(inner.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Participant { addr, inner, scheme: "http" }
    }

    /// Starts an HTTPS participant on `127.0.0.1:<free port>` with the given rustls server
    /// configuration (served by dtx's own listener code); its URLs are `https://`.
    pub async fn spawn_tls(tls: Arc<rustls::ServerConfig>) -> Participant {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind participant");
        let addr = listener.local_addr().expect("participant addr");
        let inner = Arc::new(Inner::default());
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let opts = dtx_server::listen::HttpServe {
            header_timeout: Duration::from_secs(10),
            tls: Some(tls),
            max_connections: 4096,
        };
        // Never stopped: it ends with the test's runtime.
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(async move {
            let _ = dtx_server::listen::serve_http(listener, app, opts, stop).await;
        });
        Participant { addr, inner, scheme: "https" }
    }

    /// Starts a participant on a free port below the ephemeral range, so that after
    /// [`Participant::shut_down`] no outgoing connection takes its port and it can come back on
    /// it ([`Participant::spawn_on`]).
    pub async fn spawn_restartable() -> Participant {
        // Spread by process (nextest runs each test in its own process) and by attempt.
        let seed = std::process::id() as u64
            ^ std::time::SystemTime::UNIX_EPOCH.elapsed().unwrap_or_default().as_nanos() as u64;
        for attempt in 0..200u64 {
            let port = 20_000 + ((seed.wrapping_mul(2_654_435_761) + attempt * 7_919) % 12_000) as u16;
            if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)).await {
                return Participant::serve(listener);
            }
        }
        panic!("no free port below the ephemeral range");
    }

    /// Stops serving: the listener closes (connections are refused) and open connections
    /// close once idle.
    pub fn shut_down(&self) {
        if let Some(stop) = self.inner.stop.lock().expect("stop lock").take() {
            let _ = stop.send(());
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// While `Some`, every call is answered with this reply (recorded as usual); `None` ends
    /// the outage.
    pub fn set_outage(&self, reply: Option<Reply>) {
        *self.inner.outage.lock().expect("outage lock") = reply;
    }

    /// `http://127.0.0.1:PORT<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    /// Appends scripted replies for `path` (served in order, then the default 200).
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        let mut scripts = self.inner.scripts.lock().expect("scripts lock");
        scripts.entry(path.to_owned()).or_default().extend(replies);
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<Call> {
        self.inner.calls.lock().expect("calls lock").clone()
    }

    /// The calls to `path`, in arrival order.
    pub fn calls_for(&self, path: &str) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.path == path).collect()
    }

    /// The one call of `path`; panics unless it was called exactly once.
    pub fn only_call(&self, path: &str) -> Call {
        let mut calls = self.calls_for(path);
        assert_eq!(calls.len(), 1, "{path} is called exactly once: {calls:?}");
        calls.remove(0)
    }

    /// The paths called, in arrival order.
    pub fn paths(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.path).collect()
    }

    /// Waits (up to 10 s) until `path` has received at least `n` calls; returns them.
    pub async fn wait_calls(&self, path: &str, n: usize) -> Vec<Call> {
        crate::eventually(Duration::from_secs(10), &format!("{n} call(s) to {path}"), || async {
            let calls = self.calls_for(path);
            (calls.len() >= n).then_some(calls)
        })
        .await
    }

    /// Waits (up to 10 s) until at least `n` calls to `path` have been answered.
    pub async fn wait_answered(&self, path: &str, n: usize) -> Vec<Call> {
        crate::eventually(Duration::from_secs(10), &format!("{n} answered call(s) to {path}"), || async {
            let calls = self.calls_for(path);
            (calls.iter().filter(|c| c.end.is_some()).count() >= n).then_some(calls)
        })
        .await
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let outage = inner.outage.lock().expect("outage lock").clone();
    let reply = match outage {
        Some(reply) => reply,
        None => {
            let mut scripts = inner.scripts.lock().expect("scripts lock");
            scripts.get_mut(&path).and_then(VecDeque::pop_front).unwrap_or_else(Reply::ok)
        }
    };
    let headers = headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let index = {
        let mut calls = inner.calls.lock().expect("calls lock");
        calls.push(Call {
            path,
            method: method.to_string(),
            query,
            headers,
            body: body.to_vec(),
            start: Instant::now(),
            end: None,
            status: 0,
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
        calls[index].status = reply.status;
    }
    let status = StatusCode::from_u16(reply.status).expect("scripted status code");
    (status, [("content-type", "application/json")], reply.body).into_response()
}
