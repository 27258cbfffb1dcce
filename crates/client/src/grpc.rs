//! gRPC (feature `grpc`): the raw-bytes calls this SDK makes to participants, and the helpers
//! for writing tonic participants.
//!
//! A tonic participant reads the branch from the request's `dtm-*` metadata with
//! [`branch_info`] and answers with `Result<Response<_>, Status>`; `?` on a
//! [`crate::Error`] turns FAILURE into `Aborted` and ONGOING into `FailedPrecondition`, which
//! is what the coordinator reads:
//!
//! ```
//! use dtx_client::{Error, grpc};
//! use tonic::{Request, Response, Status};
//!
//! async fn trans_out(request: Request<Vec<u8>>) -> Result<Response<()>, Status> {
//!     let branch = grpc::branch_info(&request)?; // InvalidArgument when not a branch call
//!     if branch.op == "action" && request.get_ref().is_empty() {
//!         return Err(Error::failure("empty transfer").into()); // Aborted: roll back
//!     }
//!     Ok(Response::new(()))
//! }
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let mut r = Request::new(vec![]);
//! for (k, v) in [("dtm-gid", "g1"), ("dtm-trans_type", "saga"), ("dtm-branch_id", "01"), ("dtm-op", "action")] {
//!     r.metadata_mut().insert(k, v.parse().unwrap());
//! }
//! assert_eq!(trans_out(r).await.unwrap_err().code(), tonic::Code::Aborted);
//! # }
//! ```

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::{Buf, BufMut, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::branch::BranchInfo;
use crate::client::CallOptions;
use crate::{Error, Payload};

/// The branch a gRPC request is for, from its `dtm-gid`, `dtm-trans_type`, `dtm-branch_id`,
/// `dtm-op` (and `dtm-dtm`) metadata. `InvalidArgument` when any of the four is missing.
pub fn branch_info<T>(request: &tonic::Request<T>) -> Result<BranchInfo, Status> {
    branch_info_from_metadata(request.metadata())
}

/// [`branch_info`] from a metadata map.
pub fn branch_info_from_metadata(md: &MetadataMap) -> Result<BranchInfo, Status> {
    let get = |k: &str| md.get(k).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    BranchInfo::new(get("dtm-gid"), get("dtm-trans_type"), get("dtm-branch_id"), get("dtm-op"))
        .map(|b| b.with_coordinator(get("dtm-dtm")).with_phase2_url(get("dtm-phase2_url")))
        .map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A channel to `addr` (`host:port` or `http://host:port`), connected on first use.
pub(crate) fn lazy_channel(addr: &str) -> Result<Channel, Error> {
    let uri = if addr.contains("://") { addr.to_owned() } else { format!("http://{addr}") };
    let endpoint =
        Endpoint::from_shared(uri).map_err(|e| Error::InvalidInput(format!("gRPC address {addr}: {e}")))?;
    Ok(endpoint.tcp_nodelay(true).connect_lazy())
}

/// Channels to participants, one per target.
#[derive(Debug, Default)]
pub(crate) struct Channels(Mutex<HashMap<String, Channel>>);

impl Channels {
    fn get(&self, target: &str) -> Result<Channel, Error> {
        let mut map = self.0.lock().map_err(|_| Error::Protocol("gRPC channel cache poisoned".into()))?;
        if let Some(c) = map.get(target) {
            return Ok(c.clone());
        }
        let c = lazy_channel(target)?;
        map.insert(target.to_owned(), c.clone());
        Ok(c)
    }

    /// A unary call of `host:port/package.Service/Method` with the payload as the request
    /// message bytes.
    pub(crate) async fn call(
        &self,
        url: &str,
        info: &BranchInfo,
        coordinator: &str,
        payload: &Payload,
        call: &CallOptions<'_>,
    ) -> Result<Bytes, Error> {
        let (target, method) =
            url.split_once('/').filter(|(t, m)| !t.is_empty() && m.contains('/')).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "gRPC branch URL {url}: expected host:port/package.Service/Method"
                ))
            })?;
        let path = PathAndQuery::try_from(format!("/{method}"))
            .map_err(|e| Error::InvalidInput(format!("gRPC branch URL {url}: {e}")))?;
        let channel = self.get(target)?;
        let mut request = tonic::Request::new(payload.clone().into_bytes());
        let md = request.metadata_mut();
        for (k, v) in call.headers {
            if let (Ok(k), Ok(v)) = (
                MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes()),
                MetadataValue::try_from(v.as_str()),
            ) {
                md.insert(k, v);
            }
        }
        for (k, v) in [
            ("dtm-gid", info.gid.as_str()),
            ("dtm-trans_type", info.trans_type.as_str()),
            ("dtm-branch_id", info.branch_id.as_str()),
            ("dtm-op", info.op.as_str()),
            ("dtm-dtm", coordinator),
        ] {
            let v =
                MetadataValue::try_from(v).map_err(|e| Error::InvalidInput(format!("metadata {k}: {e}")))?;
            md.insert(k, v);
        }
        if !info.phase2_url.is_empty() {
            let v = MetadataValue::try_from(info.phase2_url.as_str())
                .map_err(|e| Error::InvalidInput(format!("metadata dtm-phase2_url: {e}")))?;
            md.insert("dtm-phase2_url", v);
        }
        if let Some(t) = call.timeout {
            request.set_timeout(t);
        }
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| Error::Transport(format!("gRPC target {target}: {e}")))?;
        let reply = grpc.unary(request, path, RawCodec).await?;
        Ok(reply.into_inner())
    }
}

/// Passes message bytes through: payloads are already encoded messages.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

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
