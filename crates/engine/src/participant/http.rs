//! The HTTP client of participant calls: hyper's pooled HTTP/1.1 client over a connector that
//! resolves names through the address policy, with rustls for `https://` (ADR 15: reqwest's
//! request builder, tower layers and URL re-parsing cost ~5 µs of CPU per call on top of this).
//!
//! What reqwest was configured to do, this keeps: no proxy (hyper has none), no redirects
//! (hyper follows none: a 3xx is an answer), TCP_NODELAY, idle connections kept 90 s, and
//! every address a name resolves to checked before a connection is made.

use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dtx_core::allow::Policy;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::net::{BuildError, ParticipantTls, client_tls, resolve_checked};

/// A request body: participant payloads are whole in memory.
pub(crate) type Body = Full<Bytes>;

type Connector = hyper_rustls::HttpsConnector<HttpConnector<CheckedResolver>>;

/// The shared, connection-pooling client.
#[derive(Clone)]
pub(crate) struct HttpClient {
    inner: Client<Connector, Body>,
}

/// An answer: the status code and the body's first [`MAX_READ_BODY`] bytes.
pub(crate) struct Answer {
    pub status: u16,
    pub body: String,
}

/// Bodies are only read to look for the legacy `FAILURE` / `ONGOING` markers (and JSON-RPC's
/// `error`).
const MAX_READ_BODY: usize = 64 * 1024;

impl HttpClient {
    /// The client, with TLS per `tls` and name resolution checked against `policy`.
    pub(crate) fn new(policy: Arc<Policy>, tls: &ParticipantTls) -> Result<HttpClient, BuildError> {
        let mut http = HttpConnector::new_with_resolver(CheckedResolver(policy));
        http.set_nodelay(true);
        // The TLS layer decides by scheme; the TCP connector must accept https:// URIs.
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_tls(tls)?)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(512)
            .pool_timer(TokioTimer::new())
            .build(connector);
        Ok(HttpClient { inner })
    }

    /// Sends `req` and reads the answer, all within `timeout`. `Err` says what went wrong, in
    /// the words participant health reads (`timed out`, `connection failed`, ...).
    pub(crate) async fn send(&self, req: http::Request<Body>, timeout: Duration) -> Result<Answer, String> {
        let exchange = async {
            let resp = self.inner.request(req).await.map_err(|e| describe_send(&e))?;
            let status = resp.status().as_u16();
            let mut body = resp.into_body();
            let mut buf = Vec::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| chain("reading the answer failed", &e))?;
                if let Ok(data) = frame.into_data() {
                    let room = MAX_READ_BODY.saturating_sub(buf.len());
                    buf.extend_from_slice(&data[..data.len().min(room)]);
                    if buf.len() >= MAX_READ_BODY {
                        break;
                    }
                }
            }
            Ok(Answer { status, body: String::from_utf8_lossy(&buf).into_owned() })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(format!("timed out: no complete answer within {timeout:?}")),
        }
    }
}

/// A send error, with its causes (refused by the address policy, a TLS certificate error, ...).
fn describe_send(e: &hyper_util::client::legacy::Error) -> String {
    if e.is_connect() { chain("connection failed", e) } else { chain("error sending request", e) }
}

/// `what: e: cause: cause ...`.
fn chain(what: &str, e: &dyn std::error::Error) -> String {
    let mut text = format!("{what}: {e}");
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The connector's resolver: only addresses the policy allows reach the connector. The port is
/// not known here (port 0: see [`Policy::check`]); the URL's own host and port are checked per
/// call. A literal IP never reaches a resolver: the caller checks it.
#[derive(Clone)]
pub(crate) struct CheckedResolver(Arc<Policy>);

impl tower::Service<Name> for CheckedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.0.clone();
        Box::pin(async move {
            let addrs = resolve_checked(&policy, name.as_str(), 0).await.map_err(|e| e.to_string())?;
            Ok(addrs.into_iter())
        })
    }
}
