//! Wiring: open the store, build the engine, bind the listeners, run until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use dtx_engine::{Clock, Engine, SystemClock};
use dtx_store::Store;
use dtx_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};
use tokio::net::TcpListener;
use tracing::info;

use crate::api::{self, AppState};
use crate::config::Config;

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
}

/// A built server: store open, listener bound, not yet serving.
pub struct Server {
    engine: Engine,
    listener: TcpListener,
    http_addr: SocketAddr,
    max_body_bytes: usize,
}

impl Server {
    /// Opens the store and binds the HTTP listener (port 0 picks a free port).
    pub async fn build(config: &Config) -> Result<Server, Error> {
        Server::build_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`Server::build`] with a chosen clock (tests drive time with a `ManualClock`).
    pub async fn build_with_clock(config: &Config, clock: Arc<dyn Clock>) -> Result<Server, Error> {
        let opts = SqliteOptions {
            synchronous: if config.sqlite_full_sync { Synchronous::Full } else { Synchronous::Normal },
            ..SqliteOptions::default()
        };
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&config.database_url, opts)
                .await
                .map_err(|source| Error::Store { url: config.database_url.clone(), source })?,
        );
        let engine = Engine::new(store, config.engine.clone(), clock)?;
        let listener = TcpListener::bind(config.http_listen)
            .await
            .map_err(|source| Error::Bind { addr: config.http_listen, source })?;
        let http_addr =
            listener.local_addr().map_err(|source| Error::Bind { addr: config.http_listen, source })?;
        Ok(Server { engine, listener, http_addr, max_body_bytes: config.max_body_bytes })
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The engine (tests call `run_once` on it).
    pub fn engine(&self) -> Engine {
        self.engine.clone()
    }

    /// Serves the API and runs the scheduler until `shutdown` resolves, then stops claiming,
    /// lets in-flight rounds finish or release, and returns.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), Error> {
        let state = AppState { engine: self.engine.clone(), max_body_bytes: self.max_body_bytes };
        let app = api::router(state);
        info!(http = %self.http_addr, "dtx serving");
        let scheduler = {
            let engine = self.engine.clone();
            tokio::spawn(async move { engine.run().await })
        };
        let served = axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await;
        info!("shutting down: no new claims, finishing in-flight rounds");
        self.engine.shutdown().await;
        let _ = scheduler.await;
        served.map_err(Error::Serve)
    }
}
