//! Wiring: open the store, build the engine, bind the listeners, run until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use dtx_engine::{Clock, Engine, StoreClock, SystemClock};
use dtx_store::Store;
use dtx_store_mysql::{MySqlOptions, MySqlStore};
use dtx_store_postgres::{PgOptions, PgStore};
use dtx_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use tokio::net::TcpListener;
use tracing::{info, warn};

use dtx_proto::dtmgimp::dtm_server::DtmServer;
use tokio_util::sync::CancellationToken;
use tonic::transport::server::TcpIncoming;

use crate::admin;
use crate::api::{self, AppState};
use crate::auth::{GrpcAuthLayer, Tokens};
use crate::config::{Backend, Config};
use crate::grpc::{BadBodyLayer, DtmService, GrpcMetricsLayer};
use crate::guarded_store::{Guard, GuardedStore};
use crate::health::{self, Readiness};
use crate::listen::{self, HttpServe};
use crate::metrics::{self, Metrics};
use crate::observed_store::ObservedStore;

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened.
    #[error("cannot open the store at {url}: {source}")]
    Store {
        /// The database URL.
        url: String,
        /// Why.
        #[source]
        source: dtx_store::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The engine could not be built.
    #[error("cannot start the engine: {0}")]
    Engine(#[from] dtx_engine::Error),
    /// Serving failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Grpc(String),
    /// The TLS certificate or key of the listeners could not be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// A built server: store open, listener bound, not yet serving.
pub struct Server {
    engine: Engine,
    listener: TcpListener,
    http_addr: SocketAddr,
    max_body_bytes: usize,
    grpc_listener: TcpListener,
    grpc_addr: SocketAddr,
    /// The engine's clock and the store it follows, when the store has a shared clock.
    clock_sync: Option<(Arc<StoreClock>, Arc<dyn Store>)>,
    metrics: Arc<Metrics>,
    retention: dtx_engine::RetentionOptions,
    tokens: Tokens,
    http_serve: HttpServe,
    http_body_timeout: std::time::Duration,
    grpc_tls: Option<tonic::transport::ServerTlsConfig>,
}

/// How often a node re-measures its clock against the store's shared clock: clocks drift by
/// milliseconds a minute at worst, and one measurement is three cheap queries.
const CLOCK_SYNC_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// A node clock further than this from the store's is worth a warning: NTP is not doing its job.
const CLOCK_SKEW_WARNING_MS: i64 = 5_000;

impl Server {
    /// Opens the store and binds the HTTP listener (port 0 picks a free port). The engine runs
    /// on the system clock, corrected to the store's shared clock when it has one (PostgreSQL).
    pub async fn build(config: &Config) -> Result<Server, Error> {
        Server::build_synced(config, Arc::new(SystemClock)).await
    }

    /// [`Server::build`] on the wall clock `base`, corrected to the store's shared clock when the
    /// store has one, and kept corrected while the server runs (tests pass a skewed `base`).
    pub async fn build_synced(config: &Config, base: Arc<dyn Clock>) -> Result<Server, Error> {
        let store = open(config).await?;
        let clock = Arc::new(StoreClock::new(base.clone()));
        let synced = clock
            .sync(store.as_ref())
            .await
            .map_err(|source| Error::Store { url: config.database_url.to_string(), source })?;
        if let Some(offset) = synced
            && offset.abs() > CLOCK_SKEW_WARNING_MS
        {
            warn!(
                offset_ms = offset,
                "this node's clock is far from the database's; dtx runs on the database's timeline"
            );
        }
        // Without a shared clock (SQLite) the base clock is the timeline, uncorrected.
        match synced {
            Some(_) => {
                let sync = (clock.clone(), store.clone());
                Server::assemble(config, store, clock, Some(sync)).await
            }
            None => Server::assemble(config, store, base, None).await,
        }
    }

    /// [`Server::build`] with a clock used as given, never corrected (tests drive time with a
    /// `ManualClock`).
    pub async fn build_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Server, Error> {
        let store = open(config).await?;
        Server::assemble(config, store, clock, None).await
    }

    async fn assemble(
        config: &Config,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        clock_sync: Option<(Arc<StoreClock>, Arc<dyn Store>)>,
    ) -> Result<Server, Error> {
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn Store> = Arc::new(ObservedStore::new(store, metrics.clone()));
        let guard = Guard {
            name: match crate::config::backend_of(config.database_url.expose()) {
                Some(Backend::Postgres) => "PostgreSQL",
                Some(Backend::MySql) => "MySQL",
                _ => "SQLite",
            },
            deadline: config.store_timeout,
            max_queued_writes: config.max_queued_writes,
            shed_after: config.engine.shed_after,
        };
        let store: Arc<dyn Store> = Arc::new(GuardedStore::new(store, guard));
        let listener = listen::bind(config.http_listen)
            .map_err(|source| Error::Bind { addr: config.http_listen, source })?;
        let http_addr =
            listener.local_addr().map_err(|source| Error::Bind { addr: config.http_listen, source })?;
        let grpc_listener = listen::bind(config.grpc_listen)
            .map_err(|source| Error::Bind { addr: config.grpc_listen, source })?;
        let grpc_addr =
            grpc_listener.local_addr().map_err(|source| Error::Bind { addr: config.grpc_listen, source })?;
        // dtx never calls itself as a participant (a loop, or a way around the tokens).
        let mut engine_opts = config.engine.clone();
        engine_opts.own_listeners = vec![http_addr, grpc_addr];
        // Spans are linked to the stored trace context only while they are exported.
        let export = config
            .otlp_endpoint
            .as_ref()
            .map(|_| Arc::new(crate::telemetry::OtelSpans) as Arc<dyn dtx_engine::trace_context::SpanExport>);
        let engine = Engine::instrumented(store, engine_opts, clock, metrics.clone(), export)?;
        let (http_tls, grpc_tls) = match &config.tls {
            None => (None, None),
            Some((cert, key)) => {
                let http = listen::server_tls(cert, key).map_err(|e| Error::Tls(e.to_string()))?;
                let read = |p: &std::path::Path| {
                    std::fs::read(p).map_err(|e| Error::Tls(format!("{}: {e}", p.display())))
                };
                let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
                (Some(http), Some(tonic::transport::ServerTlsConfig::new().identity(identity)))
            }
        };
        let tokens = Tokens::new(
            config.admin_token.as_ref().map(|t| t.expose()),
            config.api_token.as_ref().map(|t| t.expose()),
        );
        warn_if_exposed(&tokens, http_addr, grpc_addr);
        Ok(Server {
            engine,
            listener,
            http_addr,
            max_body_bytes: config.max_body_bytes,
            grpc_listener,
            grpc_addr,
            clock_sync,
            metrics,
            retention: config.retention,
            tokens,
            http_serve: HttpServe {
                header_timeout: config.http_header_timeout,
                tls: http_tls,
                max_connections: config.max_connections,
            },
            http_body_timeout: config.http_body_timeout,
            grpc_tls,
        })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    /// The engine (tests call `run_once` on it).
    pub fn engine(&self) -> Engine {
        self.engine.clone()
    }

    /// Serves the HTTP and gRPC APIs and runs the scheduler until `shutdown` resolves, then
    /// stops claiming, lets in-flight rounds finish or release, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
        let stop = CancellationToken::new();
        tokio::spawn({
            let stop = stop.clone();
            async move {
                shutdown.await;
                stop.cancel();
            }
        });
        let state = AppState { engine: self.engine.clone(), max_body_bytes: self.max_body_bytes };
        let readiness = Arc::new(Readiness::new(self.engine.clone()));
        let routes = api::router(state)
            .merge(
                axum::Router::new()
                    .route("/api/metrics", axum::routing::get(metrics::handler))
                    .with_state((self.metrics.clone(), self.engine.clone())),
            )
            .merge(
                axum::Router::new()
                    .route("/api/ready", axum::routing::get(health::ready))
                    .with_state(readiness.clone()),
            )
            .merge(admin::router(self.engine.clone()));
        // The layers wrap the router once, not each route: `Router::layer` boxes every route's
        // stack and clones it and boxes its futures on every request (ADR 28: ~5,700
        // instructions per request). So they run before a route is matched, also for a path
        // no route serves (the metrics' label comes from the path, `metrics::http_api`).
        let app = tower::ServiceBuilder::new()
            .layer(tower_http::trace::TraceLayer::new_for_http())
            .layer(metrics::ApiMetricsLayer::<metrics::Http>::new(self.metrics.clone()))
            .layer(crate::body_timeout::BodyTimeoutLayer(self.http_body_timeout))
            .layer(crate::auth::HttpAuthLayer(self.tokens.clone()))
            // Bodies are limited by the handlers themselves, so that an oversized body gets a
            // 400 in the envelope like any other bad input.
            .layer(axum::extract::DefaultBodyLimit::disable())
            .service(routes);
        info!(http = %self.http_addr, grpc = %self.grpc_addr, "dtx serving");
        let scheduler = {
            let engine = self.engine.clone();
            tokio::spawn(async move { engine.run().await })
        };
        if let Some((clock, store)) = self.clock_sync {
            tokio::spawn(keep_synced(clock, store, stop.clone()));
        }
        let retention = {
            let engine = self.engine.clone();
            let opts = self.retention;
            tokio::spawn(async move { engine.run_retention(opts).await })
        };
        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        tokio::spawn(health::follow(readiness, health_reporter, stop.clone()));
        // The listeners close only after the drain, so that wait_result clients get their
        // answers and health checkers see NOT_SERVING meanwhile.
        let listeners = CancellationToken::new();
        let grpc = tokio::spawn({
            let stop = stop.clone();
            let serving = serve_grpc(
                self.engine.clone(),
                self.grpc_listener,
                health_service,
                self.metrics.clone(),
                self.tokens.clone(),
                GrpcLimits { max_message: self.max_body_bytes, tls: self.grpc_tls },
                listeners.clone(),
            );
            async move {
                let result = serving.await;
                // A front door that fails takes the node down.
                stop.cancel();
                result
            }
        });
        let http = tokio::spawn({
            let stop = stop.clone();
            let serving = listen::serve_http(self.listener, app, self.http_serve, listeners.clone());
            async move {
                let result = serving.await;
                stop.cancel();
                result
            }
        });
        stop.cancelled().await;
        // Shutdown, in order: no new claims (and requests that would start a round get 503),
        // NOT_SERVING (health::follow), in-flight rounds drained within the grace period, then
        // the listeners close.
        info!("shutting down: no new claims, draining in-flight rounds");
        self.engine.stop_claiming();
        self.engine.shutdown().await;
        listeners.cancel();
        let _ = scheduler.await;
        let _ = retention.await;
        // Connections still open (a client waiting on a round the grace period gave up on)
        // get a moment, not for ever.
        let (served, grpc_served) =
            match tokio::time::timeout(CLOSE_LISTENERS, async { (http.await, grpc.await) }).await {
                Ok(both) => both,
                Err(_) => {
                    warn!("connections still open after the drain; closing them");
                    return Ok(());
                }
            };
        match served {
            Ok(result) => result.map_err(Error::Serve)?,
            Err(e) => return Err(Error::Serve(std::io::Error::other(e.to_string()))),
        }
        match grpc_served {
            Ok(result) => result,
            Err(e) => Err(Error::Grpc(e.to_string())),
        }
    }
}

/// Without tokens anyone who reaches a non-loopback listener may read payloads and force-stop
/// transactions: say so at start.
fn warn_if_exposed(tokens: &Tokens, http: SocketAddr, grpc: SocketAddr) {
    if let Some(message) = exposure_warning(tokens, &[http, grpc]) {
        warn!("{message}");
    }
}

/// The start-up warning for listeners beyond loopback without the tokens that guard them.
fn exposure_warning(tokens: &Tokens, listeners: &[SocketAddr]) -> Option<String> {
    let exposed: Vec<String> =
        listeners.iter().filter(|a| !a.ip().is_loopback()).map(ToString::to_string).collect();
    if exposed.is_empty() {
        return None;
    }
    let exposed = exposed.join(", ");
    if tokens.is_open() {
        Some(format!(
            "no --admin-token or --api-token is set and dtx listens beyond loopback ({exposed}): anyone \
             who reaches it can read payloads, submit, force-stop and subscribe"
        ))
    } else if !tokens.guards_api() {
        Some(format!(
            "no --api-token is set and dtx listens beyond loopback ({exposed}): anyone who reaches it \
             can submit and read payloads with query"
        ))
    } else {
        None
    }
}

/// How long open connections may take to finish once the listeners close.
const CLOSE_LISTENERS: std::time::Duration = std::time::Duration::from_secs(2);

/// An engine over the configured store, on the store-corrected system clock, with no
/// listener and no scheduler (`dtx purge`).
pub(crate) async fn open_engine(config: &Config) -> Result<Engine, Error> {
    let store = open(config).await?;
    let clock = Arc::new(StoreClock::new(Arc::new(SystemClock)));
    clock
        .sync(store.as_ref())
        .await
        .map_err(|source| Error::Store { url: config.database_url.to_string(), source })?;
    Ok(Engine::new(store, config.engine.clone(), clock)?)
}

/// Re-measures the clock offset every [`CLOCK_SYNC_EVERY`] until `stop`. A failed measurement
/// keeps the last offset: the store logs its own outages.
async fn keep_synced(clock: Arc<StoreClock>, store: Arc<dyn Store>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(CLOCK_SYNC_EVERY) => {}
        }
        if let Err(e) = clock.sync(store.as_ref()).await {
            tracing::debug!(error = %e, "clock synchronisation skipped");
        }
    }
}

/// Opens the store, naming the (redacted) URL in the error.
async fn open(config: &Config) -> Result<Arc<dyn Store>, Error> {
    open_store(config).await.map_err(|source| Error::Store { url: config.database_url.to_string(), source })
}

/// What bounds the gRPC front door.
struct GrpcLimits {
    /// Largest request message (`--max-body-bytes`, as for HTTP).
    max_message: usize,
    /// TLS (`--tls-cert`, `--tls-key`).
    tls: Option<tonic::transport::ServerTlsConfig>,
}

/// The gRPC front door: `dtmgimp.Dtm`, plus the standard health service and server reflection.
/// Health follows readiness ([`health::follow`]); every call is counted ([`GrpcMetricsLayer`]).
async fn serve_grpc(
    engine: Engine,
    listener: TcpListener,
    health_service: tonic_health::pb::health_server::HealthServer<
        impl tonic_health::pb::health_server::Health,
    >,
    metrics: Arc<Metrics>,
    tokens: Tokens,
    limits: GrpcLimits,
    stop: CancellationToken,
) -> Result<(), Error> {
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(dtx_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| Error::Grpc(e.to_string()))?;
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = limits.tls {
        builder = builder.tls_config(tls).map_err(|e| Error::Tls(e.to_string()))?;
    }
    builder
        .layer(GrpcMetricsLayer::new(metrics))
        .layer(GrpcAuthLayer(tokens))
        .layer(BadBodyLayer)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(DtmServer::new(DtmService::new(engine)).max_decoding_message_size(limits.max_message))
        .serve_with_incoming_shutdown(
            // Nagle off, as on the HTTP side: a small reply must not wait for a delayed ACK.
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop.cancelled_owned(),
        )
        .await
        .map_err(|e| Error::Grpc(e.to_string()))
}

/// Opens the backend the database URL's scheme names (validated by the configuration).
async fn open_store(config: &Config) -> Result<Arc<dyn Store>, dtx_store::Error> {
    let url = config.database_url.expose();
    Ok(match crate::config::backend_of(url) {
        Some(Backend::Postgres) => {
            Arc::new(PgStore::open(url, PgOptions::with_pool_size(config.postgres_pool_size)).await?)
        }
        Some(Backend::MySql) => {
            Arc::new(MySqlStore::open(url, MySqlOptions::with_pool_size(config.mysql_pool_size)).await?)
        }
        Some(Backend::Sqlite) => {
            let opts = SqliteOptions {
                synchronous: if config.sqlite_full_sync { Synchronous::Full } else { Synchronous::Normal },
                ..SqliteOptions::default()
            };
            Arc::new(SqliteStore::open(url, opts).await?)
        }
        None => {
            return Err(dtx_store::Error::Internal(anyhow::anyhow!(
                "unsupported database URL scheme (expected sqlite:, postgres: or mysql:)"
            )));
        }
    })
}

/// The URL with its password masked, for messages and logs.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            // Only fails for URLs that cannot have a password, which this one has.
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_beyond_loopback_without_tokens_warns() {
        let any: SocketAddr = "0.0.0.0:36789".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:36790".parse().unwrap();
        let open = Tokens::default();
        assert!(exposure_warning(&open, &[any, lo]).unwrap().contains("0.0.0.0:36789"));
        assert_eq!(exposure_warning(&open, &[lo]), None, "loopback only: quiet");
        let admin = Tokens::new(Some("admin-token"), None);
        assert!(exposure_warning(&admin, &[any]).unwrap().contains("--api-token"));
        assert_eq!(exposure_warning(&Tokens::new(Some("admin-token"), Some("api-token")), &[any]), None);
    }
}
