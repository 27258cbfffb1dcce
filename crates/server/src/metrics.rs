//! Prometheus metrics at `GET /api/metrics` (DTM's path), with `prometheus-client`.
//!
//! DTM's families keep DTM's names and labels, so existing dashboards and alerts keep working:
//! `dtm_server_info`, `dtm_server_process_total`, `dtm_server_response_duration`,
//! `dtm_transaction_process_total`, `dtm_transaction_handled_duration`,
//! `dtm_branch_process_total`. dtx's own families start with `dtx_`. No family has a gid
//! label (DTM dropped its own for cardinality, dtm-labs/dtm#33).
//!
//! Updates are atomic counters / gauges (histograms take the crate's short mutex); label sets
//! are looked up under the family's read lock. The store-derived gauges (per-status counts, due
//! backlog) are read from the store when scraped, within [`SCRAPE_STORE_DEADLINE`].

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use dtx_core::{GlobalStatus, Outcome, Timestamp};
use dtx_engine::participant::CallRequest;
use dtx_engine::{Engine, Observer, RoundEnd, RoundInfo};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod api_names;

pub use api_names::http_api;

/// How long a scrape waits for the store's counts before answering without them.
pub const SCRAPE_STORE_DEADLINE: Duration = Duration::from_secs(2);

/// Go client's default buckets (seconds), as DTM's histograms use them.
const DEFAULT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Store commit latencies are much shorter than API calls: 0.25 ms to ~4 s.
const COMMIT_BUCKETS: [f64; 15] = [
    0.00025, 0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048,
    4.096,
];

const STATUSES: [GlobalStatus; 5] = [
    GlobalStatus::Prepared,
    GlobalStatus::Submitted,
    GlobalStatus::Aborting,
    GlobalStatus::Succeed,
    GlobalStatus::Failed,
];

fn default_histogram() -> Histogram {
    Histogram::new(DEFAULT_BUCKETS)
}

fn commit_histogram() -> Histogram {
    Histogram::new(COMMIT_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InfoLabels {
    gin_version: &'static str,
    grpc_version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabels {
    r#type: &'static str,
    api: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ApiLabels {
    r#type: &'static str,
    api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelStatus {
    model: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Model {
    model: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BranchLabels {
    model: &'static str,
    branchid: String,
    branchtype: &'static str,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostOutcome {
    host: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoundLabels {
    model: &'static str,
    end: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    op: &'static str,
}

/// Every metric of a dtx node. Shared (`Arc`) by the engine (as its [`Observer`]), the HTTP
/// and gRPC middlewares, the observed store and the retention task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    server_process: Family<ProcessLabels, Counter>,
    server_duration: Family<ApiLabels, Histogram, fn() -> Histogram>,
    transaction_process: Family<ModelStatus, Counter>,
    transaction_handled: Family<Model, Histogram, fn() -> Histogram>,
    branch_process: Family<BranchLabels, Counter>,
    rounds_in_flight: Gauge,
    rounds: Family<RoundLabels, Counter>,
    forward_only_retries: Family<Model, Counter>,
    participant_calls: Family<HostOutcome, Counter>,
    fenced_writes: Counter,
    claimed: Counter,
    lease_takeovers: Counter,
    purged: Counter,
    due_backlog: Gauge,
    transactions: Family<StatusLabel, Gauge>,
    store_queue: Gauge,
    store_commit: Family<OpLabel, Histogram, fn() -> Histogram>,
    store_errors: Family<OpLabel, Counter>,
    scrape_store_errors: Counter<u64, AtomicU64>,
    /// Follows `dtx_store::sql::statements()` (brought up to date when scraped; the lock keeps
    /// two scrapes at once from adding the same statements twice).
    store_statements: Counter,
    statements_sync: std::sync::Mutex<()>,
    hosts_down: Gauge,
    host_probes: Family<HostLabel, Counter>,
    held_calls: Family<HostLabel, Counter>,
    resumed: Family<HostLabel, Counter>,
    /// Handles of the label sets met on every request and participant call (see [`Seen`]).
    seen_api: Seen<ApiHandles>,
    seen_branch: Seen<Counter>,
    seen_host: Seen<Counter>,
}

/// A request's handles in `dtm_server_response_duration` and `dtm_server_process_total`.
#[derive(Clone, Debug)]
struct ApiHandles {
    duration: Histogram,
    ok: Counter,
    fail: Counter,
}

/// Most values of one label remembered per combination of the fixed labels: past it, a new
/// value is counted through its family as before, just not remembered.
const SEEN_VALUES: usize = 1024;

type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Metric handles by the label values they were created for: a family's lookup hashes its
/// label struct with SipHash and needs the struct built (owned strings) first, ~1,500
/// instructions per API request and per participant call; this is a foldhash lookup under a
/// read lock. Handles share their family's value (counters and histograms are `Arc`s inside).
/// The key: up to three labels that are constants, and one free-text label (bounded by
/// [`SEEN_VALUES`]).
#[derive(Debug)]
struct Seen<V>(std::sync::RwLock<FastMap<[&'static str; 3], Values<V>>>);

/// The handles of one combination of the fixed labels, by the free-text label's value.
type Values<V> = FastMap<Box<str>, V>;

impl<V> Default for Seen<V> {
    fn default() -> Self {
        Seen(std::sync::RwLock::default())
    }
}

impl<V: Clone> Seen<V> {
    fn get(&self, fixed: [&'static str; 3], value: &str, make: impl FnOnce() -> V) -> V {
        if let Ok(map) = self.0.read()
            && let Some(v) = map.get(&fixed).and_then(|m| m.get(value))
        {
            return v.clone();
        }
        let v = make();
        if let Ok(mut map) = self.0.write() {
            let values = map.entry(fixed).or_default();
            if values.len() < SEEN_VALUES {
                values.insert(value.into(), v.clone());
            }
        }
        v
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Builds and registers every family.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let info = Family::<InfoLabels, Gauge>::default();
        info.get_or_create(&InfoLabels { gin_version: "axum-0.8", grpc_version: "tonic-0.14" }).set(1);
        registry.register("dtm_server_info", "The information of this dtx server (DTM's family)", info);
        let m = Metrics {
            server_process: Family::default(),
            server_duration: Family::new_with_constructor(default_histogram),
            transaction_process: Family::default(),
            transaction_handled: Family::new_with_constructor(default_histogram),
            branch_process: Family::default(),
            rounds_in_flight: Gauge::default(),
            rounds: Family::default(),
            forward_only_retries: Family::default(),
            participant_calls: Family::default(),
            fenced_writes: Counter::default(),
            claimed: Counter::default(),
            lease_takeovers: Counter::default(),
            purged: Counter::default(),
            due_backlog: Gauge::default(),
            transactions: Family::default(),
            store_queue: Gauge::default(),
            store_commit: Family::new_with_constructor(commit_histogram),
            store_errors: Family::default(),
            scrape_store_errors: Counter::default(),
            store_statements: Counter::default(),
            statements_sync: std::sync::Mutex::new(()),
            hosts_down: Gauge::default(),
            host_probes: Family::default(),
            held_calls: Family::default(),
            resumed: Family::default(),
            seen_api: Seen::default(),
            seen_branch: Seen::default(),
            seen_host: Seen::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "dtm_server_process",
            "API requests (type http/grpc, api, status ok/fail)",
            m.server_process.clone(),
        );
        r.register(
            "dtm_server_response_duration",
            "API request durations in seconds",
            m.server_duration.clone(),
        );
        r.register(
            "dtm_transaction_process",
            "Processing rounds per mode; ok = the round finished the transaction",
            m.transaction_process.clone(),
        );
        r.register(
            "dtm_transaction_handled_duration",
            "Seconds from a transaction's creation to the end of each of its rounds",
            m.transaction_handled.clone(),
        );
        r.register(
            "dtm_branch_process",
            "Participant calls (model, branchid, branchtype = op, status ok/fail)",
            m.branch_process.clone(),
        );
        r.register(
            "dtx_rounds_in_flight",
            "Processing rounds running on this node",
            m.rounds_in_flight.clone(),
        );
        r.register(
            "dtx_rounds",
            "Ended rounds per mode and end (finished, pending, abandoned)",
            m.rounds.clone(),
        );
        r.register(
            "dtx_forward_only_retry_rounds",
            "Rounds of sagas past their pivot (forward only) that ended still unfinished",
            m.forward_only_retries.clone(),
        );
        r.register(
            "dtx_participant_calls",
            "Participant calls per host and outcome (success, failure, ongoing, error)",
            m.participant_calls.clone(),
        );
        r.register(
            "dtx_fenced_writes",
            "Writes refused because this node had lost the transaction (taken over or force-stopped)",
            m.fenced_writes.clone(),
        );
        r.register("dtx_claimed", "Due transactions claimed by this node's scheduler", m.claimed.clone());
        r.register(
            "dtx_lease_takeovers",
            "Claims of transactions whose owner's lease had expired (that node died, stalled or stopped mid-round)",
            m.lease_takeovers.clone(),
        );
        r.register("dtx_transactions_purged", "Finished transactions deleted by retention", m.purged.clone());
        r.register(
            "dtx_due_backlog",
            "Unfinished transactions due now and not leased by any node (read from the store when scraped)",
            m.due_backlog.clone(),
        );
        r.register(
            "dtx_transactions",
            "Transactions in the store per status (read from the store when scraped)",
            m.transactions.clone(),
        );
        r.register(
            "dtx_store_write_queue_depth",
            "Store writes of this node queued or being committed",
            m.store_queue.clone(),
        );
        r.register(
            "dtx_store_commit_duration_seconds",
            "Time from queuing a store write to its durable commit, per operation",
            m.store_commit.clone(),
        );
        r.register("dtx_store_errors", "Failed store operations per operation", m.store_errors.clone());
        r.register(
            "dtx_store_statements",
            "SQL statements this node sent to its database (reads, writes, transaction control)",
            m.store_statements.clone(),
        );
        r.register(
            "dtx_metrics_store_scrape_errors",
            "Scrapes whose store counts failed or timed out",
            m.scrape_store_errors.clone(),
        );
        r.register(
            "dtx_participant_hosts_down",
            "Participant hosts this node sees down (their calls are held, one probe per interval)",
            m.hosts_down.clone(),
        );
        r.register("dtx_participant_probes", "Probe calls to down hosts", m.host_probes.clone());
        r.register(
            "dtx_participant_held_calls",
            "Calls not made because their host was down (the transaction waits for the host)",
            m.held_calls.clone(),
        );
        r.register(
            "dtx_participant_resumed_transactions",
            "Held transactions made due when their host came back",
            m.resumed.clone(),
        );
        Metrics { registry, ..m }
    }

    /// One HTTP or gRPC API request (`kind` = `http` / `grpc`); `api` is lower-cased here.
    pub fn api_request(&self, kind: &'static str, api: &str, ok: bool, elapsed: Duration) {
        let handles = self.seen_api.get([kind, "", ""], api, || {
            let api = api.to_ascii_lowercase();
            let process = |status| {
                self.server_process.get_or_create_owned(&ProcessLabels {
                    r#type: kind,
                    api: api.clone(),
                    status,
                })
            };
            ApiHandles {
                duration: self
                    .server_duration
                    .get_or_create_owned(&ApiLabels { r#type: kind, api: api.clone() }),
                ok: process("ok"),
                fail: process("fail"),
            }
        });
        handles.duration.observe(elapsed.as_secs_f64());
        if ok {
            handles.ok.inc()
        } else {
            handles.fail.inc()
        };
    }

    /// A store write started (queue depth up).
    pub fn store_write_started(&self) {
        self.store_queue.inc();
    }

    /// A store write ended after `elapsed` (queue depth down).
    pub fn store_write_ended(&self, op: &'static str, ok: bool, elapsed: Duration) {
        self.store_queue.dec();
        if ok {
            self.store_commit.get_or_create(&OpLabel { op }).observe(elapsed.as_secs_f64());
        } else {
            self.store_errors.get_or_create(&OpLabel { op }).inc();
        }
    }

    /// The text exposition (OpenMetrics), after refreshing the store-derived gauges.
    pub async fn render(&self, engine: &Engine) -> String {
        match tokio::time::timeout(SCRAPE_STORE_DEADLINE, engine.status_counts()).await {
            Ok(Ok(counts)) => {
                self.due_backlog.set(i64::try_from(counts.due).unwrap_or(i64::MAX));
                for status in STATUSES {
                    let n = counts.by_status.iter().find(|(s, _)| *s == status).map_or(0, |(_, n)| *n);
                    self.transactions
                        .get_or_create(&StatusLabel { status: status.as_str() })
                        .set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "metrics: store counts unavailable");
                self.scrape_store_errors.inc();
            }
            Err(_) => {
                tracing::debug!("metrics: store counts timed out");
                self.scrape_store_errors.inc();
            }
        }
        if let Ok(_sync) = self.statements_sync.lock() {
            let sent = dtx_store::sql::statements();
            self.store_statements.inc_by(sent.saturating_sub(self.store_statements.get()));
        }
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// `host[:port]` of a participant URL (`http://host:port/path` or gRPC's `host:port/Svc/Method`).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

impl Observer for Metrics {
    fn round_started(&self, _round: &RoundInfo) {
        self.rounds_in_flight.inc();
    }

    fn round_ended(&self, round: &RoundInfo, end: &RoundEnd, now: Timestamp) {
        self.rounds_in_flight.dec();
        let model = round.trans_type.as_str();
        let (status, end_name) = match end {
            RoundEnd::Finished { .. } => ("ok", "finished"),
            RoundEnd::Pending { .. } => ("fail", "pending"),
            RoundEnd::Abandoned => ("fail", "abandoned"),
        };
        self.transaction_process.get_or_create(&ModelStatus { model, status }).inc();
        self.rounds.get_or_create(&RoundLabels { model, end: end_name }).inc();
        let age = (now.as_millis() - round.create_time.as_millis()).max(0) as f64 / 1000.0;
        self.transaction_handled.get_or_create(&Model { model }).observe(age);
        if round.forward_only && !matches!(end, RoundEnd::Finished { .. }) {
            self.forward_only_retries.get_or_create(&Model { model }).inc();
        }
    }

    fn branch_called(&self, call: &CallRequest, outcome: &Outcome, _elapsed: Duration) {
        let status = if matches!(outcome, Outcome::Success) { "ok" } else { "fail" };
        let (model, branchtype) = (call.trans_type.as_str(), call.op.as_str());
        self.seen_branch
            .get([model, branchtype, status], &call.branch_id, || {
                self.branch_process.get_or_create_owned(&BranchLabels {
                    model,
                    branchid: call.branch_id.clone(),
                    branchtype,
                    status,
                })
            })
            .inc();
        let host = host_of(&call.url);
        self.seen_host
            .get([outcome.name(), "", ""], host, || {
                self.participant_calls
                    .get_or_create_owned(&HostOutcome { host: host.to_owned(), outcome: outcome.name() })
            })
            .inc();
    }

    fn fenced(&self) {
        self.fenced_writes.inc();
    }

    fn claimed(&self, n: usize) {
        self.claimed.inc_by(n as u64);
    }

    fn taken_over(&self, n: usize) {
        self.lease_takeovers.inc_by(n as u64);
    }

    fn purged(&self, n: u64) {
        self.purged.inc_by(n);
    }

    fn host_down(&self, _host: &str) {
        self.hosts_down.inc();
    }

    fn host_up(&self, _host: &str, _down_for: Duration) {
        self.hosts_down.dec();
    }

    fn host_probed(&self, host: &str) {
        self.host_probes.get_or_create(&HostLabel { host: host_of(host).to_owned() }).inc();
    }

    fn call_held(&self, host: &str) {
        self.held_calls.get_or_create(&HostLabel { host: host_of(host).to_owned() }).inc();
    }

    fn resumed(&self, host: &str, n: u64) {
        self.resumed.get_or_create(&HostLabel { host: host_of(host).to_owned() }).inc_by(n);
    }
}

/// How a protocol names an API request and judges its answer, for [`ApiMetrics`].
pub trait ApiProtocol: Clone + Send + Sync + 'static {
    /// The `type` label.
    const KIND: &'static str;
    /// What is kept of the request to name its API once it is answered.
    type Name: Send + 'static;
    /// Read from the request before it is handed on.
    fn name<B>(req: &axum::http::Request<B>) -> Self::Name;
    /// The `api` label.
    fn api(name: &Self::Name) -> &str;
    /// The `status` label: ok or fail.
    fn ok<R>(resp: &axum::http::Response<R>) -> bool;
}

/// HTTP: `api` is the last segment of the matched route (a parameter segment names its parent,
/// e.g. `topic`), so unknown paths and parameters never create label values; fail from 400 on.
#[derive(Clone, Copy, Debug)]
pub struct Http;

impl ApiProtocol for Http {
    const KIND: &'static str = "http";
    type Name = &'static str;

    fn name<B>(req: &axum::http::Request<B>) -> &'static str {
        http_api(req.uri().path())
    }

    fn api(name: &&'static str) -> &'static str {
        name
    }

    fn ok<R>(resp: &axum::http::Response<R>) -> bool {
        resp.status().as_u16() < 400
    }
}

/// Wraps the routes of protocol `P`: DTM's `dtm_server_*` families for every request.
#[derive(Clone)]
pub struct ApiMetricsLayer<P> {
    metrics: Arc<Metrics>,
    protocol: std::marker::PhantomData<P>,
}

impl<P: ApiProtocol> ApiMetricsLayer<P> {
    /// Counts into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> ApiMetricsLayer<P> {
        ApiMetricsLayer { metrics, protocol: std::marker::PhantomData }
    }
}

impl<S, P: ApiProtocol> tower::Layer<S> for ApiMetricsLayer<P> {
    type Service = ApiMetrics<S, P>;

    fn layer(&self, inner: S) -> ApiMetrics<S, P> {
        ApiMetrics { inner, metrics: self.metrics.clone(), protocol: std::marker::PhantomData }
    }
}

/// See [`ApiMetricsLayer`]. A plain service rather than `axum::middleware::from_fn`, whose
/// per-request boxing of the inner stack showed in the profile of every API call.
#[derive(Clone)]
pub struct ApiMetrics<S, P> {
    inner: S,
    metrics: Arc<Metrics>,
    protocol: std::marker::PhantomData<P>,
}

impl<S, P, B, R> tower::Service<axum::http::Request<B>> for ApiMetrics<S, P>
where
    S: tower::Service<axum::http::Request<B>, Response = axum::http::Response<R>>,
    S::Future: Send + 'static,
    P: ApiProtocol,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: axum::http::Request<B>) -> Self::Future {
        let name = P::name(&req);
        let started = Instant::now();
        let answer = self.inner.call(req);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = answer.await;
            let ok = result.as_ref().is_ok_and(P::ok);
            metrics.api_request(P::KIND, P::api(&name), ok, started.elapsed());
            result
        })
    }
}

/// `GET /api/metrics`.
pub async fn handler(State((metrics, engine)): State<(Arc<Metrics>, Engine)>) -> Response {
    let body = metrics.render(&engine).await;
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(host_of("http://127.0.0.1:8081/api/TransOut"), "127.0.0.1:8081");
        assert_eq!(host_of("localhost:50051/busi.Busi/TransIn"), "localhost:50051");
    }

    fn exposition(m: &Metrics) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &m.registry).unwrap();
        text
    }

    fn call(branch_id: &str, url: &str) -> CallRequest {
        CallRequest {
            url: url.into(),
            gid: "g".into(),
            trans_type: dtx_core::TransType::Saga,
            branch_id: branch_id.into(),
            op: dtx_core::Op::Action,
            op_name: None,
            payload: Default::default(),
            headers: Default::default(),
            timeout: Duration::from_secs(1),
            json_rpc: false,
        }
    }

    /// The remembered handles count into the families' own series: what a scrape shows is what
    /// counting through the families showed, past the cap of remembered values too.
    #[test]
    fn remembered_handles_count_into_their_families() {
        let m = Metrics::new();
        for ok in [true, true, false] {
            m.api_request("http", "Submit", ok, Duration::from_millis(3));
        }
        m.api_request("grpc", "Submit", true, Duration::from_millis(3));
        for _ in 0..2 {
            m.branch_called(&call("01", "http://h1:1/a"), &Outcome::Success, Duration::ZERO);
        }
        m.branch_called(&call("01", "http://h1:1/a"), &Outcome::Failure("no".into()), Duration::ZERO);
        m.branch_called(&call("02", "http://h2:2/a"), &Outcome::Success, Duration::ZERO);
        for i in 0..SEEN_VALUES + 5 {
            m.branch_called(&call(&format!("x{i}"), "http://h3:3/a"), &Outcome::Success, Duration::ZERO);
        }
        m.branch_called(
            &call(&format!("x{}", SEEN_VALUES + 1), "http://h3:3/a"),
            &Outcome::Success,
            Duration::ZERO,
        );
        let text = exposition(&m);
        let has = |line: &str| assert!(text.lines().any(|l| l == line), "{line} missing from\n{text}");
        has(r#"dtm_server_process_total{type="http",api="submit",status="ok"} 2"#);
        has(r#"dtm_server_process_total{type="http",api="submit",status="fail"} 1"#);
        has(r#"dtm_server_process_total{type="grpc",api="submit",status="ok"} 1"#);
        has(r#"dtm_server_response_duration_count{type="http",api="submit"} 3"#);
        has(r#"dtm_branch_process_total{model="saga",branchid="01",branchtype="action",status="ok"} 2"#);
        has(r#"dtm_branch_process_total{model="saga",branchid="01",branchtype="action",status="fail"} 1"#);
        has(r#"dtm_branch_process_total{model="saga",branchid="02",branchtype="action",status="ok"} 1"#);
        let past_cap = format!(
            r#"dtm_branch_process_total{{model="saga",branchid="x{}",branchtype="action",status="ok"}} 2"#,
            SEEN_VALUES + 1
        );
        has(&past_cap);
        has(r#"dtx_participant_calls_total{host="h1:1",outcome="success"} 2"#);
        has(r#"dtx_participant_calls_total{host="h1:1",outcome="failure"} 1"#);
        has(&format!(r#"dtx_participant_calls_total{{host="h3:3",outcome="success"}} {}"#, SEEN_VALUES + 6));
    }
}
