//! The dtx server in process, driven by a manual clock.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use dtx_engine::{Clock, Engine, EngineEvent, ManualClock, RoundEnd};
use dtx_server::{Config, Server};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

/// A running in-process dtx server. The scheduler is off: [`TestServer::cron`] runs due work.
///
/// Time is the manual clock's alone: leases, lease renewals, immediate-retry pauses and
/// scheduler polls all wait on it, so nothing of that happens unless the test moves it
/// ([`TestServer::advance`], [`TestServer::stall`], [`TestServer::advance_while`]).
pub struct TestServer {
    base: String,
    grpc: SocketAddr,
    engine: Engine,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    /// [`TestServer::via_json_rpc`]: the test talks to it through `/api/json-rpc`.
    json_rpc: std::sync::atomic::AtomicBool,
    // Last: the database files outlive the server handle.
    _dir: TempDir,
}

impl TestServer {
    /// A server with the test defaults.
    pub async fn start() -> TestServer {
        TestServer::spawn(|_| {}).await
    }

    /// A server with the test defaults (loopback port 0, temporary database, scheduler off),
    /// then `tweak` applied to the configuration.
    pub async fn spawn(tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::spawn_on(tweak, None).await
    }

    /// [`TestServer::spawn`] on a node whose own (manual) clock is `skew` ahead of the wall
    /// clock, built as production builds it: corrected to the store's shared clock when the
    /// store has one. [`TestServer::now_ms`] reads the node's own clock; the engine runs on the
    /// corrected one.
    pub async fn spawn_skewed(skew: Duration, tweak: impl FnOnce(&mut Config)) -> TestServer {
        TestServer::spawn_on(tweak, Some(skew)).await
    }

    async fn spawn_on(tweak: impl FnOnce(&mut Config), skew: Option<Duration>) -> TestServer {
        if std::env::var_os("RUST_LOG").is_some() {
            dtx_server::telemetry::init(dtx_server::config::LogFormat::Pretty);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            http_listen: "127.0.0.1:0".parse().expect("loopback address"),
            grpc_listen: "127.0.0.1:0".parse().expect("loopback address"),
            database_url: format!("sqlite://{}", dir.path().join("dtx.db").display()).into(),
            // A test database need not survive power loss.
            sqlite_full_sync: false,
            ..Config::default()
        };
        config.engine.scheduler_enabled = false;
        tweak(&mut config);

        let clock = Arc::new(ManualClock::starting_now());
        let dyn_clock: Arc<dyn Clock> = clock.clone();
        let server = match skew {
            None => Server::build_with_clock(&config, dyn_clock).await,
            Some(skew) => {
                clock.advance(skew);
                Server::build_synced(&config, dyn_clock).await
            }
        }
        .expect("build the dtx server");
        let base = format!("http://{}/api/dtmsvr", server.http_addr());
        let grpc = server.grpc_addr();
        let engine = server.engine();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let stop = async {
                let _ = rx.await;
            };
            if let Err(e) = server.run(stop).await {
                eprintln!("dtx server stopped with an error: {e}");
            }
        });
        let http = reqwest::Client::builder().no_proxy().build().expect("http client");
        TestServer {
            base,
            grpc,
            engine,
            clock,
            http,
            shutdown: Some(tx),
            json_rpc: Default::default(),
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT/api/dtmsvr`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `http://127.0.0.1:PORT` (for `/api/ping`).
    pub fn root_url(&self) -> &str {
        self.base.trim_end_matches("/api/dtmsvr")
    }

    /// The gRPC address (`dtmgimp.Dtm`, health, reflection): `127.0.0.1:PORT`.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The clock the engine reads.
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// A plain HTTP client (no proxy).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The node's own (manual) clock, in milliseconds since the epoch: the engine's "now",
    /// except on a [`TestServer::spawn_skewed`] node, whose engine runs on the corrected clock.
    pub fn now_ms(&self) -> i64 {
        self.clock.now().0
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// Moves "now" forward without firing any timer: the node stalled (its lease renewals are
    /// late), so its leases can expire under running rounds.
    pub fn stall(&self, by: Duration) {
        self.clock.stall(by);
    }

    /// Runs `fut`, moving the clock forward (100 ms every few real milliseconds) while it is
    /// pending: for requests whose processing waits on engine timers (immediate retries).
    pub async fn advance_while<T>(&self, fut: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return out,
                _ = tokio::time::sleep(Duration::from_millis(5)) => self.clock.advance(Duration::from_millis(100)),
            }
        }
    }

    /// Round ends and scheduler polls from now on (subscribe before the action they follow).
    pub fn rounds(&self) -> Rounds {
        Rounds(self.engine.events())
    }

    /// Runs one scheduler step: claims what is due now, processes it, returns how many.
    pub async fn cron(&self) -> usize {
        self.engine.run_once().await.expect("run_once")
    }

    /// From now on [`TestServer::submit`] and every [`crate::Client::of`] this server go
    /// through the JSON-RPC endpoint (`/api/json-rpc`) instead of the HTTP routes: the same
    /// test code then runs over the other transport.
    pub fn via_json_rpc(&self) {
        self.json_rpc.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether [`TestServer::via_json_rpc`] is on.
    pub fn is_json_rpc(&self) -> bool {
        self.json_rpc.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `POST /submit` with a JSON body (through JSON-RPC after [`TestServer::via_json_rpc`]).
    pub async fn submit(&self, body: &Value) -> (u16, Value) {
        if self.is_json_rpc() {
            return crate::Client::of(self).submit(body).await;
        }
        self.submit_raw(body.to_string()).await
    }

    /// `POST /submit` with raw bytes.
    pub async fn submit_raw(&self, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/submit", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("submit request");
        read(resp).await
    }

    /// `GET <base><path_and_query>` (e.g. `/query?gid=x`).
    pub async fn get(&self, path_and_query: &str) -> (u16, Value) {
        let resp = self.http.get(format!("{}{path_and_query}", self.base)).send().await.expect("GET");
        read(resp).await
    }

    /// `GET /query?gid=`; panics unless 200.
    pub async fn query(&self, gid: &str) -> Value {
        let (status, body) = self.get(&format!("/query?gid={gid}")).await;
        assert_eq!(status, 200, "query {gid}: {body}");
        body
    }

    /// The global status ("" when unknown).
    pub async fn status(&self, gid: &str) -> String {
        crate::status_of(&self.query(gid).await)
    }

    /// The branch statuses in row order.
    pub async fn statuses(&self, gid: &str) -> Vec<String> {
        crate::branch_statuses(&self.query(gid).await)
    }

    /// Waits (up to 5 s) until `gid` has `status` and no round owns it; returns the query.
    pub async fn wait_status(&self, gid: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let q = self.query(gid).await;
            let t = &q["transaction"];
            if t["status"] == status && t.get("owner").is_none() {
                return q;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("{gid} never reached {status} (released); last query: {q}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (up to 5 s) until no round owns `gid` (a background round released it).
    pub async fn wait_idle(&self, gid: &str) -> Value {
        crate::eventually(Duration::from_secs(5), &format!("{gid} to be released"), || async {
            let q = self.query(gid).await;
            let t = &q["transaction"];
            (!t.is_null() && t.get("owner").is_none()).then_some(q)
        })
        .await
    }
}

/// A subscription to the engine's events: "the round ended" instead of "nothing happened
/// within some sleep".
pub struct Rounds(tokio::sync::broadcast::Receiver<EngineEvent>);

impl Rounds {
    /// Waits (up to 5 s) for the next end of a round of `gid`.
    pub async fn ended(&mut self, gid: &str) -> RoundEnd {
        let wait = async {
            loop {
                match self.0.recv().await {
                    Ok(EngineEvent::RoundEnded { gid: g, end }) if g == gid => return end,
                    Ok(_) => {}
                    Err(e) => panic!("engine events: {e}"),
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .unwrap_or_else(|_| panic!("no round of {gid} ended within 5 s"))
    }

    /// How many scheduler polls happened since the last look (without waiting).
    pub fn drain_polls(&mut self) -> usize {
        let mut n = 0;
        while let Ok(event) = self.0.try_recv() {
            if matches!(event, EngineEvent::Polled { .. }) {
                n += 1;
            }
        }
        n
    }

    /// Moves the clock by small steps until the scheduler loop has made one more claim
    /// attempt (it polls on the clock); returns how many it claimed.
    pub async fn next_poll(&mut self, s: &TestServer) -> usize {
        for _ in 0..500 {
            s.advance(Duration::from_millis(10));
            let polled = tokio::time::timeout(Duration::from_millis(50), async {
                loop {
                    match self.0.recv().await {
                        Ok(EngineEvent::Polled { claimed }) => return claimed,
                        Ok(_) => {}
                        Err(e) => panic!("engine events: {e}"),
                    }
                }
            })
            .await;
            if let Ok(claimed) = polled {
                return claimed;
            }
        }
        panic!("the scheduler never polled");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Reads a response as (status, JSON); a non-JSON body becomes a JSON string.
pub async fn read(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("response body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}
