//! Where participant calls may go and how they get there (issue 12): the address policy
//! ([`dtx_core::allow::Policy`]) applied after DNS resolution, TLS to participants (system roots
//! plus `--participant-ca-file`, an optional client certificate), for HTTP (a resolver that
//! drops refused addresses, `http.rs`) and gRPC (a connector that resolves, checks, connects).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use dtx_core::allow::Policy;
use futures::future::BoxFuture;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tonic::codegen::http::Uri;

/// TLS to participants: PEM bytes, read from the configured files at start.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ParticipantTls {
    /// Extra trusted CA certificates (besides the system roots).
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and private key for mutual TLS.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Call gRPC participants over TLS.
    pub grpc_tls: bool,
}

impl std::fmt::Debug for ParticipantTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParticipantTls")
            .field("ca", &self.ca_pem.as_ref().map(|c| c.len()))
            .field("client_identity", &self.identity_pem.as_ref().map(|_| "***"))
            .field("grpc_tls", &self.grpc_tls)
            .finish()
    }
}

/// Why no address of a host may be connected to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AddrError {
    /// The name did not resolve (maybe not yet: DNS is not the policy).
    #[error("cannot resolve {0}")]
    Unresolved(String),
    /// The policy refuses every address.
    #[error("{0}")]
    Refused(String),
}

/// The addresses `host:port` resolves to that `policy` allows; an error when none is (or the
/// name does not resolve). A literal IP is checked without a lookup.
pub(crate) async fn resolve_checked(
    policy: &Policy,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, AddrError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        let addr = SocketAddr::new(ip, port);
        policy.check(None, addr).map_err(AddrError::Refused)?;
        return Ok(vec![addr]);
    }
    let found = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| AddrError::Unresolved(format!("{bare}: {e}")))?;
    let mut allowed = Vec::new();
    let mut refused = None;
    for addr in found {
        match policy.check(Some(bare), addr) {
            Ok(()) => allowed.push(addr),
            Err(e) => refused = refused.or(Some(e)),
        }
    }
    if allowed.is_empty() {
        return Err(match refused {
            Some(e) => AddrError::Refused(e),
            None => AddrError::Unresolved(format!("{bare}: no address")),
        });
    }
    Ok(allowed)
}

/// Checks, before anything is stored, every participant URL of a request: each host's
/// addresses after DNS resolution. A name that does not resolve yet is left to the call-time
/// check (DNS may lag a deployment); a refused address is the client's error.
pub(crate) async fn check_urls<'a>(
    policy: Option<&Policy>,
    urls: impl IntoIterator<Item = &'a str>,
) -> Result<(), String> {
    let Some(policy) = policy else {
        return Ok(());
    };
    let mut seen: Vec<(String, u16)> = Vec::new();
    for u in urls {
        let Some((host, port)) = host_port(u) else {
            continue;
        };
        if seen.iter().any(|(h, p)| *h == host && *p == port) {
            continue;
        }
        // A slow DNS must not hold a submit: the call-time check still applies.
        match tokio::time::timeout(SUBMIT_LOOKUP_TIMEOUT, resolve_checked(policy, &host, port)).await {
            Ok(Ok(_) | Err(AddrError::Unresolved(_))) | Err(_) => {}
            Ok(Err(AddrError::Refused(e))) => return Err(format!("participant {u} refused: {e}")),
        }
        seen.push((host, port));
    }
    Ok(())
}

/// How long a submit waits for one name's DNS answer.
const SUBMIT_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The host and port a participant URL connects to (None: nothing to call, or not parseable,
/// which validation reports).
fn host_port(u: &str) -> Option<(String, u16)> {
    if u.is_empty() || u.starts_with("topic://") {
        return None;
    }
    if super::is_http_url(u) {
        let parsed = super::parsed::parse(u).ok()?;
        return Some((parsed.host_str()?.to_owned(), parsed.port_or_known_default()?));
    }
    let parsed = super::parsed::parse_grpc(u).ok()?;
    let (host, port) = parsed.target.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// The gRPC channels' connector: resolves the target, keeps the allowed addresses, connects to
/// the first that answers. tonic adds TLS on top when the endpoint has it.
#[derive(Clone)]
pub(crate) struct CheckedConnector(pub(crate) Arc<Policy>);

impl tower::Service<Uri> for CheckedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = std::io::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let policy = self.0.clone();
        Box::pin(async move {
            let refused = |m: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, m);
            let host = uri.host().ok_or_else(|| refused(format!("{uri}: no host")))?;
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
            let addrs =
                resolve_checked(&policy, host, port).await.map_err(|e| refused(format!("refused: {e}")))?;
            let mut last = None;
            for addr in addrs {
                match TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(TokioIo::new(s));
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(last.unwrap_or_else(|| refused(format!("{host}: no address"))))
        })
    }
}

/// Building the participant caller failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A certificate or key could not be used.
    #[error("participant TLS: {0}")]
    Tls(String),
}

/// The HTTP client's TLS, so that a host without system roots (a minimal container) still
/// starts and calls http:// participants: rustls with the system roots (rustls-native-certs)
/// plus `--participant-ca-file`, and the client certificate.
pub(crate) fn client_tls(tls: &ParticipantTls) -> Result<rustls::ClientConfig, BuildError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| BuildError::Tls(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(ca) = &tls.ca_pem {
        for cert in CertificateDer::pem_slice_iter(ca) {
            roots.add(cert.map_err(|e| bad("CA file", &e))?).map_err(|e| bad("CA file", &e))?;
        }
    }
    if roots.is_empty() {
        tracing::warn!(
            "no trusted root certificates (no system store, no --participant-ca-file): \
             https:// participants will be refused"
        );
    }
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol versions", &e))?
        .with_root_certificates(roots);
    let config = match &tls.identity_pem {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("client certificate", &e))?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| bad("client key", &e))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| bad("client certificate", &e))?
        }
    };
    // ALPN (http/1.1 only) is set by the connector (`enable_http1`); it refuses a preset one.
    Ok(config)
}

/// The gRPC channels' TLS (native roots, the configured CA and client certificate), when on.
pub(crate) fn grpc_tls(tls: &ParticipantTls) -> Option<tonic::transport::ClientTlsConfig> {
    if !tls.grpc_tls {
        return None;
    }
    let mut c = tonic::transport::ClientTlsConfig::new().with_native_roots();
    if let Some(ca) = &tls.ca_pem {
        c = c.ca_certificate(tonic::transport::Certificate::from_pem(ca));
    }
    if let Some((cert, key)) = &tls.identity_pem {
        c = c.identity(tonic::transport::Identity::from_pem(cert, key));
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dtx_core::allow::AllowList;

    #[tokio::test]
    async fn names_are_checked_on_what_they_resolve_to() {
        let open = Policy::default();
        assert_eq!(resolve_checked(&open, "127.0.0.1", 80).await.unwrap().len(), 1);
        assert!(!resolve_checked(&open, "localhost", 80).await.unwrap().is_empty());
        let e = resolve_checked(&open, "169.254.169.254", 80).await.unwrap_err();
        assert!(e.to_string().contains("link-local"), "{e}");
        let only_ten = Policy::new(AllowList::parse("10.0.0.0/8").unwrap());
        let e = resolve_checked(&only_ten, "localhost", 80).await.unwrap_err();
        assert!(e.to_string().contains("not in --participant-allow"), "{e}");
        let mut own = Policy::default();
        own.deny_own("0.0.0.0:36789".parse().unwrap());
        assert!(resolve_checked(&own, "localhost", 36789).await.is_err(), "localhost is this dtx");
        assert!(resolve_checked(&own, "[::1]", 36789).await.is_err());
        let urls = ["http://127.0.0.1:5/a", "127.0.0.1:6/p.S/M", "topic://t", "", "http://nowhere.invalid/x"];
        assert_eq!(check_urls(Some(&open), urls).await, Ok(()), "unresolvable names wait for the call");
        let e = check_urls(Some(&open), ["http://127.0.0.1:5/a", "http://169.254.169.254/latest"])
            .await
            .unwrap_err();
        assert!(e.contains("169.254.169.254/latest") && e.contains("link-local"), "{e}");
        assert!(check_urls(Some(&own), ["localhost:36789/p.S/M"]).await.is_err(), "gRPC URLs too");
    }
}
