//! Calling participants, as DTM does (spec section 4): HTTP (4.2) or gRPC (4.4).

pub mod grpc;
mod http;
mod json_rpc;
mod limit;
mod net;
pub(crate) mod parsed;

pub(crate) use net::check_urls;
pub use net::{BuildError, ParticipantTls};

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use dtx_core::{Op, Outcome, TransType};
use tracing::{Instrument, debug};

/// One branch call.
#[derive(Debug, Clone)]
pub struct CallRequest {
    /// The participant URL (already validated); empty = succeed without calling.
    pub url: String,
    /// Global id.
    pub gid: String,
    /// Mode, sent as `trans_type`.
    pub trans_type: TransType,
    /// Branch id, sent as `branch_id`.
    pub branch_id: String,
    /// Op, sent as `op` (unless `op_name` says otherwise).
    pub op: Op,
    /// Sent as `op` instead of the op's name: the workflow callback carries the workflow's name.
    pub op_name: Option<String>,
    /// The stored request body.
    pub payload: Bytes,
    /// `branch_headers` of the transaction.
    pub headers: BTreeMap<String, String>,
    /// Deadline of the call.
    pub timeout: Duration,
    /// The transaction's protocol is `json-rpc`: an HTTP URL naming a `method` is called as a
    /// JSON-RPC 2.0 request (spec 4.3).
    pub json_rpc: bool,
}

/// Who the engine calls participants through. Production uses [`Participants`] (HTTP and
/// gRPC); tests plug in scripted participants. Only the engine's effect executor holds it, so
/// no round can call anyone without first persisting the attempt.
#[async_trait::async_trait]
pub trait Caller: Send + Sync + 'static {
    /// Calls a branch and reads the answer per the result protocol.
    async fn call(&self, req: &CallRequest) -> Outcome;
}

#[async_trait::async_trait]
impl Caller for Participants {
    async fn call(&self, req: &CallRequest) -> Outcome {
        Participants::call(self, req).await
    }
}

/// How participants are called (from [`crate::EngineOptions`]).
#[derive(Debug, Clone)]
pub struct ParticipantOptions {
    /// Calls in flight at once on this node.
    pub max_calls: usize,
    /// Calls in flight at once to one `host:port`.
    pub max_calls_per_host: usize,
    /// gRPC channels kept open.
    pub grpc_channels: usize,
    /// TLS to participants.
    pub tls: ParticipantTls,
    /// Which addresses may be called.
    pub policy: std::sync::Arc<dtx_core::allow::Policy>,
}

impl ParticipantOptions {
    /// The participant settings of the engine's options.
    pub fn of(o: &crate::EngineOptions) -> ParticipantOptions {
        ParticipantOptions {
            max_calls: o.max_outbound_calls,
            max_calls_per_host: o.max_outbound_calls_per_host,
            grpc_channels: o.grpc_channel_cache,
            tls: o.participant_tls.clone(),
            policy: std::sync::Arc::new(policy_of(o)),
        }
    }
}

/// The address policy of the engine's options: the allowlist and dtx's own listeners.
pub fn policy_of(o: &crate::EngineOptions) -> dtx_core::allow::Policy {
    let mut p = dtx_core::allow::Policy::new(o.participant_allow.clone());
    for a in &o.own_listeners {
        p.deny_own(*a);
    }
    p
}

impl Default for ParticipantOptions {
    fn default() -> Self {
        ParticipantOptions::of(&crate::EngineOptions::default())
    }
}

/// The participant caller: one shared, connection-pooling HTTP client and a gRPC channel per
/// target, behind the outbound call caps.
#[derive(Clone)]
pub struct Participants {
    http: http::HttpClient,
    grpc: std::sync::Arc<grpc::GrpcCaller>,
    limits: std::sync::Arc<limit::CallLimits>,
    policy: std::sync::Arc<dtx_core::allow::Policy>,
    observer: std::sync::Arc<dyn crate::Observer>,
    /// Span export (`None`: no call span at all, the default).
    export: Option<std::sync::Arc<dyn crate::trace_context::SpanExport>>,
}

impl std::fmt::Debug for Participants {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Participants").finish_non_exhaustive()
    }
}

/// How a URL is called (spec 4.1): `http://` / `https://` over HTTP, anything else over gRPC.
pub fn is_http_url(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

impl CallRequest {
    /// The `op` sent with the call.
    pub fn op_text(&self) -> &str {
        self.op_name.as_deref().unwrap_or(self.op.as_str())
    }
}

impl Participants {
    /// Builds the shared client with the default options.
    pub fn new() -> Result<Participants, BuildError> {
        Participants::observed(std::sync::Arc::new(crate::NoObserver), &ParticipantOptions::default())
    }

    /// [`Participants::new`] with `opts`, reporting every call to `observer`.
    pub fn observed(
        observer: std::sync::Arc<dyn crate::Observer>,
        opts: &ParticipantOptions,
    ) -> Result<Participants, BuildError> {
        let http = http::HttpClient::new(opts.policy.clone(), &opts.tls)?;
        Ok(Participants {
            http,
            grpc: std::sync::Arc::new(grpc::GrpcCaller::new(
                opts.grpc_channels,
                net::grpc_tls(&opts.tls),
                opts.policy.clone(),
            )),
            policy: opts.policy.clone(),
            limits: std::sync::Arc::new(limit::CallLimits::new(opts.max_calls, opts.max_calls_per_host)),
            observer,
            export: None,
        })
    }

    /// Gives every call a `participant_call` span linked for export (crate::trace_context).
    pub fn with_span_export(
        mut self,
        export: std::sync::Arc<dyn crate::trace_context::SpanExport>,
    ) -> Participants {
        self.export = Some(export);
        self
    }

    /// Calls a branch and reads the answer per the result protocol.
    pub async fn call(&self, req: &CallRequest) -> Outcome {
        if req.url.is_empty() {
            return Outcome::Success;
        }
        let started = std::time::Instant::now();
        let outcome = match &self.export {
            None => self.call_url(req, None).await,
            Some(export) => {
                // A child of the round's span; the participant learns its id (trace_context).
                let span = tracing::debug_span!("participant_call", gid = %req.gid, branch_id = %req.branch_id,
                    op = %req.op_text(), url = %req.url, outcome = tracing::field::Empty);
                let exported = export.traceparent_of(&span);
                let outcome = self.call_url(req, exported.as_deref()).instrument(span.clone()).await;
                span.record("outcome", outcome.name());
                outcome
            }
        };
        self.observer.branch_called(req, &outcome, started.elapsed());
        outcome
    }

    async fn call_url(&self, req: &CallRequest, exported: Option<&str>) -> Outcome {
        if !is_http_url(&req.url) {
            let outcome = self.grpc.call(req, &self.limits, exported).await;
            debug!(gid = %req.gid, branch_id = %req.branch_id, op = %req.op_text(), url = %req.url, ?outcome, "grpc branch call");
            return outcome;
        }
        let url = match parsed::parse(&req.url) {
            Ok(u) => u,
            Err(e) => return Outcome::Error(format!("bad participant url {}: {e}", req.url)),
        };
        // A literal IP never reaches the resolver: check it (with its port) here.
        let port = url.port_or_known_default().unwrap_or(80);
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        if let Some(ip) = literal
            && let Err(e) = self.policy.check(None, std::net::SocketAddr::new(ip, port))
        {
            return Outcome::Error(format!("refused: {e}"));
        }
        let host = &url[url::Position::BeforeHost..url::Position::AfterPort];
        let _permit = match self.limits.acquire(host, req.timeout).await {
            Ok(p) => p,
            Err(e) => return Outcome::Error(e),
        };
        if req.json_rpc && req.url.contains("method") {
            let outcome = json_rpc::call(&self.http, url.as_str(), req, exported).await;
            debug!(gid = %req.gid, branch_id = %req.branch_id, op = %req.op_text(), url = %req.url, ?outcome, "json-rpc branch call");
            return outcome;
        }
        // DTM sends a body only when there is one (its SDKs always send at least `null`); XA
        // phase two is always a POST, with an empty body.
        let method = if req.payload.is_empty() && req.trans_type != TransType::Xa {
            ::http::Method::GET
        } else {
            ::http::Method::POST
        };
        let outcome =
            match http_request(method, with_branch_query(&url, req), req, exported, req.payload.clone()) {
                Err(e) => Outcome::Error(e),
                Ok(request) => match self.http.send(request, req.timeout).await {
                    Ok(answer) => Outcome::from_http(answer.status, &answer.body),
                    Err(e) => Outcome::Error(e),
                },
            };
        debug!(gid = %req.gid, branch_id = %req.branch_id, op = %req.op_text(), url = %req.url, ?outcome, "branch call");
        outcome
    }
}

/// `url` with DTM's query parameters, the branch's identity (a JSON-RPC call carries it in its
/// params instead), form-encoded after the URL's own query as `Url::query_pairs_mut` would
/// append them, written straight into the request's URI text (no copy of the kept parse, no
/// re-serialisation). A fragment is not part of a request URI and is left out.
fn with_branch_query(url: &url::Url, req: &CallRequest) -> String {
    let base = &url[..url::Position::AfterQuery];
    let pairs = [
        ("gid", req.gid.as_str()),
        ("trans_type", req.trans_type.as_str()),
        ("branch_id", req.branch_id.as_str()),
        ("op", req.op_text()),
    ];
    let mut uri = String::with_capacity(base.len() + 48 + pairs.iter().map(|(_, v)| v.len()).sum::<usize>());
    uri.push_str(base);
    uri.push_str(match url.query() {
        None => "?",
        Some("") => "",
        Some(_) => "&",
    });
    for (i, (name, value)) in pairs.into_iter().enumerate() {
        if i > 0 {
            uri.push('&');
        }
        uri.push_str(name);
        uri.push('=');
        uri.extend(url::form_urlencoded::byte_serialize(value.as_bytes()));
    }
    uri
}

/// The HTTP request of a branch call to `uri`: JSON, with the transaction's `branch_headers`
/// (a stored traceparent goes out as a child context, crate::trace_context).
fn http_request(
    method: ::http::Method,
    uri: String,
    req: &CallRequest,
    exported: Option<&str>,
    body: Bytes,
) -> Result<::http::Request<http::Body>, String> {
    let mut builder = ::http::Request::builder()
        .method(method)
        .uri(uri)
        .header(::http::header::CONTENT_TYPE, "application/json");
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), crate::trace_context::outgoing_as(k, v, exported).as_ref());
    }
    builder.body(http::Body::new(body)).map_err(|e| format!("bad request to {}: {e}", req.url))
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn the_branch_query_is_what_query_pairs_mut_appends() {
        let mut req = CallRequest {
            url: String::new(),
            gid: "g 1&x=ü/+".into(),
            trans_type: TransType::Saga,
            branch_id: "01".into(),
            op: Op::Action,
            op_name: None,
            payload: Bytes::new(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(1),
            json_rpc: false,
        };
        for (u, op_name) in [
            ("http://svc:8081/api/TransOut", None),
            ("http://svc:8081/api/TransOut?x=1&y=%20", None),
            ("http://svc:8081/api/TransOut?", None),
            ("https://bücher.example/a/b", Some("wf name")),
            ("http://[::1]:9/", None),
        ] {
            req.op_name = op_name.map(str::to_owned);
            let mut old = url::Url::parse(u).expect("url");
            old.query_pairs_mut()
                .append_pair("gid", &req.gid)
                .append_pair("trans_type", req.trans_type.as_str())
                .append_pair("branch_id", &req.branch_id)
                .append_pair("op", req.op_text());
            let new = with_branch_query(&url::Url::parse(u).expect("url"), &req);
            assert_eq!(new, String::from(old), "{u}");
            assert!(new.parse::<::http::Uri>().is_ok(), "{new}");
        }
        // A fragment stays out of the request URI.
        let new = with_branch_query(&url::Url::parse("http://h/p?a=1#frag").expect("url"), &req);
        assert!(new.starts_with("http://h/p?a=1&gid=") && !new.contains('#'), "{new}");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use dtx_core::allow::{AllowList, Policy};
    use dtx_core::{Op, Outcome, TransType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A loopback HTTP server answering every request with `reply`; counts connections.
    async fn server(reply: &'static str) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counted = hits.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    if reply.is_empty() {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                    }
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        (addr, hits)
    }

    fn call(url: String) -> CallRequest {
        CallRequest {
            url,
            gid: "g".into(),
            trans_type: TransType::Saga,
            branch_id: "01".into(),
            op: Op::Action,
            payload: bytes::Bytes::new(),
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(5),
            json_rpc: false,
            op_name: None,
        }
    }

    fn participants(allow: &str) -> Participants {
        let opts = ParticipantOptions {
            policy: Arc::new(Policy::new(AllowList::parse(allow).unwrap())),
            ..ParticipantOptions::default()
        };
        Participants::observed(Arc::new(crate::NoObserver), &opts).unwrap()
    }

    #[tokio::test]
    async fn refused_addresses_are_never_connected_to_after_dns_either() {
        let (addr, hits) = server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let p = participants("10.0.0.0/8");
        for url in
            [format!("http://127.0.0.1:{}/a", addr.port()), format!("http://localhost:{}/a", addr.port())]
        {
            let Outcome::Error(e) = p.call(&call(url.clone())).await else { panic!("{url} was called") };
            assert!(e.contains("not in --participant-allow") || e.contains("refused"), "{url}: {e}");
        }
        let Outcome::Error(e) = p.call(&call(format!("localhost:{}/a.B/C", addr.port()))).await else {
            panic!("gRPC call went through")
        };
        assert!(e.contains("not ready") || e.contains("refused"), "{e}");
        assert_eq!(hits.load(Ordering::SeqCst), 0, "no connection was made");
        let allowed = participants("localhost, 127.0.0.1");
        assert_eq!(
            allowed.call(&call(format!("http://localhost:{}/a", addr.port()))).await,
            Outcome::Success
        );
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        let (target, target_hits) = server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        let reply: &'static str = Box::leak(
            format!("HTTP/1.1 302 Found\r\nlocation: http://{target}/x\r\ncontent-length: 0\r\n\r\n")
                .into_boxed_str(),
        );
        let (redirecting, _) = server(reply).await;
        let p = participants("");
        let out = p.call(&call(format!("http://{redirecting}/a"))).await;
        assert!(matches!(&out, Outcome::Error(e) if e.contains("302")), "{out:?}");
        assert_eq!(target_hits.load(Ordering::SeqCst), 0, "the redirect went nowhere");
    }

    #[tokio::test]
    async fn a_call_beyond_the_per_host_cap_waits_then_gives_up() {
        // Answers nothing: the first call holds its slot until its own timeout.
        let (addr, hits) = server("").await;
        let opts = ParticipantOptions { max_calls_per_host: 1, ..ParticipantOptions::default() };
        let p = Participants::observed(Arc::new(crate::NoObserver), &opts).unwrap();
        let url = format!("http://{addr}/a");
        let first = {
            let (p, mut req) = (p.clone(), call(url.clone()));
            req.timeout = Duration::from_secs(2);
            tokio::spawn(async move { p.call(&req).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut second = call(url);
        second.timeout = Duration::from_millis(300);
        let out = p.call(&second).await;
        assert!(matches!(&out, Outcome::Error(e) if e.contains("too many calls")), "{out:?}");
        assert_eq!(hits.load(Ordering::SeqCst), 1, "the second call never connected");
        let first = first.await.unwrap();
        assert!(matches!(&first, Outcome::Error(e) if e.contains("timed out")), "{first:?}");
    }
}
