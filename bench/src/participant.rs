//! The benchmark's participants: a real HTTP server (axum) and a real gRPC server (tonic) on
//! loopback. Both answer SUCCESS at once and tell the driver when a transaction's counted calls
//! have all arrived (that is when a saga, a TCC or a message is done, seen from outside).
//!
//! Paths: `step` is a counted forward call (saga action, TCC confirm, msg action); `undo`
//! (compensation, cancel), `try` and `check` (msg check-back) answer but are not counted.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::any;
use bytes::Bytes;
use dtx_engine::participant::grpc::RawCodec;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;

/// The gRPC participant's service name.
pub const GRPC_SERVICE: &str = "bench.Busi";

/// Counted calls still to come for a transaction, and who to tell when none is left.
type Waiter = (u32, Option<oneshot::Sender<()>>);

/// Waiters for transactions' counted calls, shared by both participants.
#[derive(Default)]
pub struct Completions {
    waiting: Mutex<HashMap<String, Waiter>>,
    /// Every call received (counted or not).
    pub calls: AtomicU64,
}

impl Completions {
    /// Registers a transaction that is done after `count` counted calls.
    pub fn expect(&self, gid: &str, count: u32) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        if let Ok(mut w) = self.waiting.lock() {
            w.insert(gid.to_owned(), (count, Some(tx)));
        }
        rx
    }

    /// Forgets a transaction (it timed out in the driver).
    pub fn forget(&self, gid: &str) {
        if let Ok(mut w) = self.waiting.lock() {
            w.remove(gid);
        }
    }

    fn arrived(&self, gid: &str, counted: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !counted {
            return;
        }
        let Ok(mut w) = self.waiting.lock() else { return };
        let done = match w.get_mut(gid) {
            Some((left, tx)) => {
                *left = left.saturating_sub(1);
                if *left == 0 { tx.take().map(|tx| tx.send(())) } else { None }
            }
            None => None,
        };
        if done.is_some() {
            w.remove(gid);
        }
    }
}

/// A running HTTP participant; [`HttpParticipant::stop`] closes its port (outage drills).
pub struct HttpParticipant {
    addr: SocketAddr,
    stop: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

impl HttpParticipant {
    /// Serves on `127.0.0.1:port` (0 = any free port).
    pub async fn start(port: u16, completions: Arc<Completions>) -> anyhow::Result<HttpParticipant> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let app = Router::new().route("/busi/{kind}", any(http_call)).with_state(completions);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = rx.await;
            };
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stopped).await {
                eprintln!("bench HTTP participant stopped: {e}");
            }
        });
        Ok(HttpParticipant { addr, stop: Some((tx, task)) })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits until the port is closed.
    pub async fn stop(mut self) {
        if let Some((tx, task)) = self.stop.take() {
            let _ = tx.send(());
            let _ = task.await;
        }
    }
}

async fn http_call(
    State(completions): State<Arc<Completions>>,
    Path(kind): Path<String>,
    uri: http::Uri,
) -> (StatusCode, &'static str) {
    // Only `gid` is read (no map of every parameter): the participant's cost is part of the
    // baseline and shares the cores with the coordinator.
    let query = uri.query().unwrap_or_default().as_bytes();
    let gid = url::form_urlencoded::parse(query).find(|(k, _)| k == "gid").map(|(_, v)| v);
    completions.arrived(gid.as_deref().unwrap_or_default(), kind == "step");
    (StatusCode::OK, r#"{"dtm_result":"SUCCESS"}"#)
}

/// A running gRPC participant (`bench.Busi/<Kind>`, any message: the bytes are not decoded).
pub struct GrpcParticipant {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl GrpcParticipant {
    /// Serves on `127.0.0.1:<free port>`.
    pub async fn start(completions: Arc<Completions>) -> anyhow::Result<GrpcParticipant> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let service = Busi { completions };
        tokio::spawn(async move {
            let stopped = async {
                let _ = rx.await;
            };
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stopped)
                .await;
            if let Err(e) = served {
                eprintln!("bench gRPC participant stopped: {e}");
            }
        });
        Ok(GrpcParticipant { addr, _stop: tx })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

#[derive(Clone)]
struct Busi {
    completions: Arc<Completions>,
}

impl NamedService for Busi {
    const NAME: &'static str = GRPC_SERVICE;
}

impl<B> Service<http::Request<B>> for Busi
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
        let counted = req.uri().path().ends_with("/Step");
        let handler = Answer { completions: self.completions.clone(), counted };
        Box::pin(async move { Ok(tonic::server::Grpc::new(RawCodec).unary(handler, req).await) })
    }
}

struct Answer {
    completions: Arc<Completions>,
    counted: bool,
}

impl UnaryService<Bytes> for Answer {
    type Response = Bytes;
    type Future = BoxFuture<tonic::Response<Bytes>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let gid =
            request.metadata().get("dtm-gid").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        self.completions.arrived(&gid, self.counted);
        Box::pin(async { Ok(tonic::Response::new(Bytes::new())) })
    }
}
