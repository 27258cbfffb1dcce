//! The coordinator: a dtx started in this process (temporary SQLite store), or one already
//! running elsewhere.

use std::time::Duration;

use dtx_server::{Config, Server};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where dtx's APIs are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The HTTP API base, `http://host:port/api/dtmsvr` (query).
    pub http: String,
    /// The gRPC API, `host:port` (transactions with gRPC branches are submitted there).
    pub grpc: String,
}

impl Endpoints {
    /// A running dtx at `url` (`http://host:36789`, with or without `/api/dtmsvr`); its gRPC
    /// API at `grpc`, or on the same host at port 36790.
    pub fn external(url: &str, grpc: Option<&str>) -> Result<Endpoints, crate::Error> {
        let trimmed = url.trim_end_matches('/');
        let parsed =
            reqwest::Url::parse(trimmed).map_err(|e| crate::Error::Config(format!("--dtx {url}: {e}")))?;
        let host = parsed.host_str().ok_or_else(|| crate::Error::Config(format!("--dtx {url}: no host")))?;
        let http = if trimmed.ends_with("/api/dtmsvr") {
            trimmed.to_owned()
        } else {
            format!("{trimmed}/api/dtmsvr")
        };
        let grpc = grpc.map(str::to_owned).unwrap_or_else(|| format!("{host}:36790"));
        Ok(Endpoints { http, grpc })
    }
}

/// A dtx running in this process until dropped or [`Embedded::stop`]ped.
#[derive(Debug)]
pub struct Embedded {
    endpoints: Endpoints,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    // Last: the store outlives the server.
    _dir: TempDir,
}

impl Embedded {
    /// Starts dtx on loopback ports with a temporary SQLite store, the real clock and the
    /// scheduler on, and short retry intervals so that retried branches are retried quickly.
    pub async fn start() -> Result<Embedded, crate::Error> {
        let dir = tempfile::tempdir()?;
        let mut config = Config {
            http_listen: ([127, 0, 0, 1], 0).into(),
            grpc_listen: ([127, 0, 0, 1], 0).into(),
            database_url: format!("sqlite://{}", dir.path().join("dtx.db").display()).into(),
            // A throwaway store need not survive power loss.
            sqlite_full_sync: false,
            ..Config::default()
        };
        // Retries after 0.25 s, then 0.5 s, 1 s, 2 s: an outage of a few seconds is over
        // within a few retries, and the whole run stays well under a minute.
        config.engine.retry.retry_interval = Duration::from_millis(250);
        config.engine.retry.max_interval = Duration::from_secs(2);
        config.engine.poll_interval = Duration::from_millis(100);
        let server = Server::build(&config).await?;
        let endpoints = Endpoints {
            http: format!("http://{}/api/dtmsvr", server.http_addr()),
            grpc: server.grpc_addr().to_string(),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = rx.await;
            };
            if let Err(e) = server.run(stop).await {
                tracing::error!(error = %e, "the embedded dtx stopped with an error");
            }
        });
        Ok(Embedded { endpoints, stop: Some(tx), task: Some(task), _dir: dir })
    }

    /// Its endpoints.
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// Stops it (in-flight rounds finish or are released).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn external_endpoints_accept_the_base_or_the_api_url() {
        let e = Endpoints::external("http://10.0.0.5:36789", None).unwrap();
        assert_eq!(
            e,
            Endpoints { http: "http://10.0.0.5:36789/api/dtmsvr".into(), grpc: "10.0.0.5:36790".into() }
        );
        let e = Endpoints::external("http://h:1/api/dtmsvr/", Some("h:2")).unwrap();
        assert_eq!(e, Endpoints { http: "http://h:1/api/dtmsvr".into(), grpc: "h:2".into() });
        assert!(Endpoints::external("not a url", None).is_err());
    }
}
