//! Calling participants over gRPC (spec 4.4): `host:port/package.Service/Method`, a unary call
//! whose request message is the stored payload bytes, sent as they are (no re-encoding).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use dtx_core::Outcome;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{BinaryMetadataKey, BinaryMetadataValue, MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::participant::CallRequest;

/// A gRPC target and method parsed from a branch URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrpcUrl {
    /// `host:port`.
    pub target: String,
    /// `/package.Service/Method`.
    pub method: String,
}

/// Splits `host:port/package.Service/Method` at the first `/`.
pub fn parse_grpc_url(url: &str) -> Result<GrpcUrl, String> {
    if url.contains("://") {
        return Err(format!("'{url}': a gRPC branch is host:port/package.Service/Method, without a scheme"));
    }
    let Some((target, method)) = url.split_once('/') else {
        return Err(format!("'{url}': a gRPC branch is host:port/package.Service/Method"));
    };
    let (host, port) = target.rsplit_once(':').ok_or_else(|| format!("'{url}': the target needs a port"))?;
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("'{url}': '{target}' is not host:port"));
    }
    let mut parts = method.split('/');
    let (Some(service), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("'{url}': the method must be package.Service/Method"));
    };
    if service.is_empty() || name.is_empty() {
        return Err(format!("'{url}': the method must be package.Service/Method"));
    }
    let method = format!("/{method}");
    PathAndQuery::try_from(method.as_str()).map_err(|e| format!("'{url}': bad method path: {e}"))?;
    Ok(GrpcUrl { target: target.to_owned(), method })
}

/// Reads a gRPC answer per the result protocol: OK = success, `Aborted` = FAILURE (unless the
/// message is exactly `ONGOING`, the pre-1.10 convention), `FailedPrecondition` = ONGOING,
/// anything else = error.
pub fn outcome_of(status: &Status) -> Outcome {
    match status.code() {
        tonic::Code::Ok => Outcome::Success,
        tonic::Code::Aborted if status.message() == "ONGOING" => Outcome::Ongoing,
        tonic::Code::Aborted => Outcome::Failure(format!("grpc Aborted: {}", status.message())),
        tonic::Code::FailedPrecondition => Outcome::Ongoing,
        code => Outcome::Error(format!("grpc {code:?}: {}", status.message())),
    }
}

/// The longest deadline `grpc-timeout` can carry: 99999999 hours.
const MAX_GRPC_TIMEOUT: Duration = Duration::from_secs(99_999_999 * 3600);

/// Channels are cached per target: one HTTP/2 connection serves every call to it. The cache is
/// bounded: beyond `cap` targets the least recently used channel is dropped (closed once its
/// calls in flight end).
pub(crate) struct GrpcCaller {
    channels: Mutex<ChannelCache>,
    cap: usize,
    tls: Option<tonic::transport::ClientTlsConfig>,
    policy: std::sync::Arc<dtx_core::allow::Policy>,
}

#[derive(Debug, Default)]
struct ChannelCache {
    map: HashMap<String, (Channel, u64)>,
    tick: u64,
}

impl GrpcCaller {
    pub(crate) fn new(
        cap: usize,
        tls: Option<tonic::transport::ClientTlsConfig>,
        policy: std::sync::Arc<dtx_core::allow::Policy>,
    ) -> GrpcCaller {
        GrpcCaller { channels: Mutex::default(), cap: cap.max(1), tls, policy }
    }

    /// Targets with a cached channel (tests).
    #[cfg(test)]
    fn cached(&self) -> Vec<String> {
        let cache = self.channels.lock().map(|c| c.map.keys().cloned().collect());
        let mut v: Vec<String> = cache.unwrap_or_default();
        v.sort();
        v
    }

    fn channel(&self, target: &str) -> Result<Channel, String> {
        let mut cache = self.channels.lock().map_err(|_| "grpc channel cache poisoned".to_owned())?;
        cache.tick += 1;
        let tick = cache.tick;
        if let Some((c, used)) = cache.map.get_mut(target) {
            *used = tick;
            return Ok(c.clone());
        }
        if cache.map.len() >= self.cap {
            // A scan only when a new target arrives at a full cache.
            let oldest = cache.map.iter().min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                cache.map.remove(&k);
            }
        }
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{target}"))
            .map_err(|e| format!("bad grpc target {target}: {e}"))?
            .tcp_nodelay(true);
        if let Some(tls) = &self.tls {
            endpoint = endpoint.tls_config(tls.clone()).map_err(|e| format!("grpc TLS for {target}: {e}"))?;
        }
        // Our connector: the address connected to passes the policy after DNS resolution.
        let channel = endpoint.connect_with_connector_lazy(super::net::CheckedConnector(self.policy.clone()));
        cache.map.insert(target.to_owned(), (channel.clone(), tick));
        Ok(channel)
    }

    pub(crate) async fn call(
        &self,
        req: &CallRequest,
        limits: &super::limit::CallLimits,
        exported: Option<&str>,
    ) -> Outcome {
        let url = match super::parsed::parse_grpc(&req.url) {
            Ok(u) => u,
            Err(e) => return Outcome::Error(e),
        };
        let _permit = match limits.acquire(&url.target, req.timeout).await {
            Ok(p) => p,
            Err(e) => return Outcome::Error(e),
        };
        let channel = match self.channel(&url.target) {
            Ok(c) => c,
            Err(e) => return Outcome::Error(e),
        };
        let mut request = tonic::Request::new(req.payload.clone());
        let md = request.metadata_mut();
        // branch_headers first, so that the dtm-* values and the deadline set below replace
        // any header of the same name: they identify the branch (barriers key on them).
        for (k, v) in &req.headers {
            let k = k.to_ascii_lowercase();
            if k.ends_with("-bin") {
                // Binary metadata: the value's bytes, base64-encoded on the wire (as grpc-go).
                if let Ok(key) = BinaryMetadataKey::from_bytes(k.as_bytes()) {
                    md.insert_bin(key, BinaryMetadataValue::from_bytes(v.as_bytes()));
                }
            } else if let (Ok(key), Ok(value)) = (
                MetadataKey::from_bytes(k.as_bytes()),
                // A stored traceparent goes out as a child context (crate::trace_context).
                MetadataValue::try_from(crate::trace_context::outgoing_as(&k, v, exported).as_ref()),
            ) {
                md.insert(key, value);
            }
        }
        let pairs = [
            ("dtm-gid", req.gid.as_str()),
            ("dtm-trans_type", req.trans_type.as_str()),
            ("dtm-branch_id", req.branch_id.as_str()),
            ("dtm-op", req.op_text()),
            ("dtm-dtm", ""),
        ];
        for (k, v) in pairs {
            if let Ok(value) = MetadataValue::try_from(v) {
                md.insert(k, value);
            }
        }
        // grpc-timeout has at most 8 digits (tonic panics beyond 99999999 hours); any
        // non-negative int64 of seconds is a valid request_timeout, so clamp.
        request.set_timeout(req.timeout.min(MAX_GRPC_TIMEOUT));
        let mut grpc = tonic::client::Grpc::new(channel);
        if let Err(e) = grpc.ready().await {
            return Outcome::Error(format!("grpc target {} not ready: {e}", url.target));
        }
        let path = match PathAndQuery::try_from(url.method.as_str()) {
            Ok(p) => p,
            Err(e) => return Outcome::Error(format!("bad grpc method {}: {e}", url.method)),
        };
        match grpc.unary(request, path, RawCodec).await {
            Ok(_) => Outcome::Success,
            Err(status) => outcome_of(&status),
        }
    }
}

/// Passes message bytes through unchanged: the payload is already an encoded protobuf message.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_at_the_first_slash() {
        let u = parse_grpc_url("localhost:58081/busi.Busi/TransIn").unwrap();
        assert_eq!(u.target, "localhost:58081");
        assert_eq!(u.method, "/busi.Busi/TransIn");
        for bad in [
            "localhost:58081",
            "http://h:1/a.B/C",
            "h/a.B/C",
            "h:x/a.B/C",
            "h:1/a.B",
            "h:1/a.B/C/D",
            ":1/a.B/C",
        ] {
            assert!(parse_grpc_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn the_channel_cache_evicts_the_least_recently_used() {
        let c = GrpcCaller::new(2, None, std::sync::Arc::default());
        c.channel("a:1").unwrap();
        c.channel("b:1").unwrap();
        c.channel("a:1").unwrap();
        c.channel("c:1").unwrap();
        assert_eq!(c.cached(), ["a:1", "c:1"], "b was the least recently used");
    }

    #[test]
    fn status_codes_map_per_protocol() {
        assert_eq!(outcome_of(&Status::ok("")), Outcome::Success);
        assert_eq!(outcome_of(&Status::aborted("ONGOING")), Outcome::Ongoing);
        assert!(matches!(outcome_of(&Status::aborted("no money")), Outcome::Failure(_)));
        assert_eq!(outcome_of(&Status::failed_precondition("wait")), Outcome::Ongoing);
        assert!(matches!(outcome_of(&Status::unavailable("down")), Outcome::Error(_)));
        assert!(matches!(outcome_of(&Status::internal("x")), Outcome::Error(_)));
    }

    #[test]
    fn grpc_answers_read_as_host_health_signals() {
        use dtx_core::health::{Signal, signal_of};
        let signal = |s: Status| signal_of(&outcome_of(&s));
        for down in [
            Status::unavailable("x"),
            Status::deadline_exceeded("x"),
            Status::internal("x"),
            Status::unknown("x"),
        ] {
            assert_eq!(signal(down.clone()), Signal::Failure, "{down:?}");
        }
        for up in [
            Status::ok(""),
            Status::aborted("FAILURE"),
            Status::aborted("ONGOING"),
            Status::failed_precondition("wait"),
            Status::invalid_argument("x"),
            Status::not_found("x"),
            Status::unimplemented("x"),
        ] {
            assert_eq!(signal(up.clone()), Signal::Up, "{up:?}");
        }
    }
}
