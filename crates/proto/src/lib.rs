//! `dtx-proto`: the generated code of `proto/dtmgimp.proto`, the DTM-compatible coordinator
//! API (`dtmgimp.Dtm`), plus its file descriptor set for gRPC server reflection.

#![allow(missing_docs, clippy::all)] // generated code

/// The `dtmgimp` package: messages, `dtm_client::DtmClient`, `dtm_server::{Dtm, DtmServer}`.
pub mod dtmgimp {
    tonic::include_proto!("dtmgimp");
}

/// The encoded file descriptor set (for `tonic-reflection`).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("dtx_descriptor");
