//! The HTTP listener: HTTP/1.1 over TCP or TLS (`--tls-cert`, `--tls-key`), with a deadline on
//! the request headers (`--http-header-timeout`) and on the TLS handshake, so a client that
//! opens connections and sends nothing cannot hold them for ever. Body read deadlines are a
//! layer around the router ([`crate::body_timeout`], set in `app.rs`).

use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::HttpBody;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// A TLS certificate chain and key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {message}")]
pub struct TlsFileError {
    /// Which file (`certificate`, `key`, `CA`).
    pub what: &'static str,
    /// The path.
    pub path: String,
    /// Why.
    pub message: String,
}

/// The PEM certificates of `path` (a chain or a CA bundle).
pub fn load_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let err = |message: String| TlsFileError { what, path: path.display().to_string(), message };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// The PEM private key of `path` (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsFileError {
        what: "key",
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// A rustls server configuration for dtx's HTTP listener (HTTP/1.1).
pub fn server_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsFileError> {
    let chain = load_certs(cert, "certificate")?;
    let key_der = load_key(key)?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let bad = |e: rustls::Error| TlsFileError {
        what: "key",
        path: key.display().to_string(),
        message: e.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(bad)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(bad)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// How the HTTP listener serves.
#[derive(Clone)]
pub struct HttpServe {
    /// Deadline for a request's headers (and for a TLS handshake).
    pub header_timeout: Duration,
    /// TLS, if configured.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Connections served at once; one more gets [`OVERLOADED`] and is closed.
    pub max_connections: usize,
}

/// The accept queue asked of the kernel (it caps it at `net.core.somaxconn`). Tokio's default
/// is 1,024: a burst of connects beyond the queue has its SYNs dropped and the clients retry
/// after 1, 3, 7, 15 s... which is how an overload turns into minute-long waits.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds a listener with [`LISTEN_BACKLOG`].
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As std's bind: a restarted node can listen again while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What [`serve_http`] serves: a tower service of HTTP requests, cloned per connection.
pub trait HttpApp<B>:
    tower::Service<Request<Incoming>, Response = axum::http::Response<B>, Error = Infallible, Future: Send>
    + Clone
    + Send
    + 'static
{
}

impl<S, B> HttpApp<B> for S where
    S: tower::Service<
            Request<Incoming>,
            Response = axum::http::Response<B>,
            Error = Infallible,
            Future: Send,
        > + Clone
        + Send
        + 'static
{
}

/// The answer to a connection beyond `--max-connections`, sent after its request head, before any body is read or any work is done.
pub const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 85\r\n\r\n\
{\"code\":\"unavailable\",\"message\":\"overloaded: too many open connections; retry later\"}";

/// Serves `app` (a router, or a router inside layers) on `listener` until `stop`, then lets
/// open connections finish their requests.
pub async fn serve_http<S, B>(
    listener: TcpListener,
    app: S,
    opts: HttpServe,
    stop: CancellationToken,
) -> std::io::Result<()>
where
    S: HttpApp<B>,
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<axum::BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(opts.header_timeout);
    let builder = Arc::new(builder);
    let tls = opts.tls.map(TlsAcceptor::from);
    let connections = TaskTracker::new();
    let open = Arc::new(tokio::sync::Semaphore::new(opts.max_connections.max(1)));
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = open.clone().try_acquire_owned() else {
            connections.spawn(refuse(tcp, tls.is_some()));
            continue;
        };
        let (app, builder, tls, stop) = (app.clone(), builder.clone(), tls.clone(), stop.clone());
        let header_timeout = opts.header_timeout;
        connections.spawn(async move {
            let _permit = permit;
            let service = TowerToHyperService::new(app);
            let result = match tls {
                None => serve_one(&builder, TokioIo::new(tcp), service, stop).await,
                Some(acceptor) => match tokio::time::timeout(header_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => serve_one(&builder, TokioIo::new(stream), service, stop).await,
                    Ok(Err(e)) => Err(e.into()),
                    Err(_) => Err("TLS handshake timed out".into()),
                },
            };
            if let Err(e) = result {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Answers a connection over the cap with [`OVERLOADED`] (plain HTTP; a TLS one is just
/// closed: the handshake is the expensive part). The request head is read first, because
/// clients treat an answer that comes before their request as a broken connection, not as a
/// 503; then, after the answer, what the client still sends is read until it closes, briefly,
/// so that closing does not reset the connection before the client read the answer.
async fn refuse(mut tcp: tokio::net::TcpStream, tls: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if tls {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let mut head = Vec::with_capacity(1024);
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            let n = tcp.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        tcp.write_all(OVERLOADED).await?;
        tcp.shutdown().await?;
        while tcp.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn serve_one<I, S, B>(
    builder: &auto::Builder<TokioExecutor>,
    io: TokioIo<I>,
    service: TowerToHyperService<S>,
    stop: CancellationToken,
) -> Result<(), BoxError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: HttpApp<B>,
    B: HttpBody + Send + 'static,
    B::Data: Send,
    B::Error: Into<axum::BoxError>,
{
    let conn = builder.serve_connection_with_upgrades(io, service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn the_overloaded_answer_is_well_formed_http() {
        let text = std::str::from_utf8(OVERLOADED).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 "));
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert_eq!(length, body.len());
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "unavailable");
    }

    /// With one connection allowed, a second is answered 503 once it sent its request head, and
    /// the first is still served.
    #[tokio::test]
    async fn a_connection_over_the_cap_gets_503_at_once() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let opts = HttpServe { header_timeout: Duration::from_secs(5), tls: None, max_connections: 1 };
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_http(listener, app, opts, stop.clone()));
        let mut first = tokio::net::TcpStream::connect(addr).await.unwrap();
        // The first connection holds the only slot while it is open.
        first.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 1024];
        let n = first.read(&mut buf).await.unwrap();
        assert!(std::str::from_utf8(&buf[..n]).unwrap().starts_with("HTTP/1.1 200"));
        let mut second = tokio::net::TcpStream::connect(addr).await.unwrap();
        second
            .write_all(b"POST /api/dtmsvr/submit HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), second.read_to_end(&mut answer)).await.unwrap().unwrap();
        assert_eq!(answer, OVERLOADED);
        drop((first, second));
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
