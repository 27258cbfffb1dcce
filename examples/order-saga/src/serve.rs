//! Serving a service on a listener until told to stop.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server: its address and how to stop it.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// How long a stop waits for open connections to close.
const STOP_GRACE: Duration = Duration::from_secs(3);

impl Running {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes the connections (gracefully, then by force), and returns when
    /// the port is free.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(STOP_GRACE, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves an axum router on `listener`.
pub fn http(listener: TcpListener, router: axum::Router) -> Result<Running, crate::Error> {
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let stopped = async {
            let _ = rx.await;
        };
        if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
            tracing::error!(%addr, error = %e, "HTTP server stopped with an error");
        }
    });
    Ok(Running { addr, stop: Some(tx), task: Some(task) })
}

/// Serves the inventory's tonic service on `listener`.
pub fn grpc(
    listener: TcpListener,
    service: crate::proto::inventory_server::InventoryServer<crate::inventory::InventoryService>,
) -> Result<Running, crate::Error> {
    let addr = listener.local_addr()?;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let stopped = async {
            let _ = rx.await;
        };
        let served = tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stopped,
            )
            .await;
        if let Err(e) = served {
            tracing::error!(%addr, error = %e, "gRPC server stopped with an error");
        }
    });
    Ok(Running { addr, stop: Some(tx), task: Some(task) })
}
