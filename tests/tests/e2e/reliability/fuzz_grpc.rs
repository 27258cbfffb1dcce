//! Fuzzing the gRPC API: every `dtmgimp.Dtm` method gets protobuf bodies generated from valid
//! requests, then mutated (fields replaced by random values, and the encoded bytes themselves
//! truncated, flipped, spliced), sent as raw bytes. No answer may be a server-side failure
//! (`Internal`, `Unknown`, `DataLoss`; `Unimplemented` only for `PrepareWorkflow`, a mode this
//! version does not run), the server keeps answering, and a refused request stores nothing.

use std::collections::HashSet;

use bytes::Bytes;
use dtx_engine::participant::grpc::RawCodec;
use dtx_proto::dtmgimp::{DtmBranchRequest, DtmRequest, DtmTopicRequest, DtmTransOptions};
use dtx_tests::{Participant, TestServer};
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

use super::fuzz::{mutate_bytes, random_text};
use super::{Rng, size};

const METHODS: &[&str] = &[
    "Submit",
    "Prepare",
    "Abort",
    "RegisterBranch",
    "PrepareWorkflow",
    "Subscribe",
    "Unsubscribe",
    "DeleteTopic",
    "NewGid",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_grpc_bodies_on_sqlite_get_no_server_errors_and_store_nothing_when_refused() {
    let s = TestServer::start().await;
    fuzz_grpc(&s, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_grpc_bodies_on_postgres_get_no_server_errors_and_store_nothing_when_refused() {
    let test = "fuzzed_grpc_bodies_on_postgres_get_no_server_errors_and_store_nothing_when_refused";
    let Some(url) = dtx_store_postgres::testing::fresh_database(test).await else { return };
    let s = TestServer::spawn(|c| c.database_url = url.into()).await;
    fuzz_grpc(&s, "postgres").await;
}

fn text(rng: &mut Rng, valid: &str) -> String {
    match rng.below(4) {
        0 => random_text(rng),
        1 => String::new(),
        _ => valid.to_owned(),
    }
}

fn number(rng: &mut Rng, valid: i64) -> i64 {
    *rng.pick(&[valid, valid, 0, -1, i64::MAX, i64::MIN, 3_600_000])
}

/// A DtmRequest near a valid one: each field valid, empty or random.
fn request(rng: &mut Rng, gid: &str, p: &Participant) -> DtmRequest {
    let modes = ["saga", "tcc", "msg", "xa", "workflow"];
    let mode = (*rng.pick(&modes)).to_owned();
    let steps = format!(
        r#"[{{"action":"{}","compensate":"{}"}},{{"action":"{}"}}]"#,
        p.url("/A1"),
        p.url("/C1"),
        p.url("/A2")
    );
    let steps = if rng.chance(70) { steps } else { random_text(rng) };
    let n_payloads = *rng.pick(&[0usize, 1, 2, 2, 3]);
    DtmRequest {
        gid: text(rng, gid),
        trans_type: text(rng, &mode),
        trans_options: rng.chance(70).then(|| DtmTransOptions {
            wait_result: rng.chance(30),
            timeout_to_fail: number(rng, 60),
            retry_interval: number(rng, 1),
            branch_headers: [(text(rng, "x-a"), text(rng, "v"))].into_iter().collect(),
            request_timeout: number(rng, 3),
            retry_limit: number(rng, 5),
        }),
        customed_data: text(rng, r#"{"concurrent":false}"#),
        bin_payloads: (0..n_payloads).map(|_| random_text(rng).into_bytes()).collect(),
        query_prepared: text(rng, &p.url("/qp")),
        steps,
        req_extra: Default::default(),
        rollback_reason: text(rng, "fuzz"),
    }
}

fn body(rng: &mut Rng, method: &str, gid: &str, p: &Participant) -> Vec<u8> {
    match method {
        "RegisterBranch" => DtmBranchRequest {
            gid: text(rng, gid),
            trans_type: text(rng, "tcc"),
            branch_id: text(rng, "01"),
            op: text(rng, "try"),
            data: [
                ("confirm".to_owned(), text(rng, &p.url("/confirm"))),
                ("cancel".to_owned(), text(rng, &p.url("/cancel"))),
            ]
            .into_iter()
            .collect(),
            busi_payload: random_text(rng).into_bytes(),
        }
        .encode_to_vec(),
        "Subscribe" | "Unsubscribe" | "DeleteTopic" => DtmTopicRequest {
            topic: text(rng, "fuzz-topic"),
            url: text(rng, &p.url("/sub")),
            remark: text(rng, ""),
        }
        .encode_to_vec(),
        "NewGid" => Vec::new(),
        _ => request(rng, gid, p).encode_to_vec(),
    }
}

async fn call(channel: &Channel, method: &str, bytes: Vec<u8>) -> Result<(), tonic::Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let path =
        tonic::codegen::http::uri::PathAndQuery::try_from(format!("/dtmgimp.Dtm/{method}")).expect("path");
    grpc.unary(tonic::Request::new(Bytes::from(bytes)), path, RawCodec).await.map(|_| ())
}

/// The gid a (possibly mutated) body names, when it still decodes.
fn gid_of(method: &str, bytes: &[u8]) -> Option<String> {
    let gid = match method {
        "RegisterBranch" => DtmBranchRequest::decode(bytes).ok()?.gid,
        "Subscribe" | "Unsubscribe" | "DeleteTopic" | "NewGid" => return None,
        _ => DtmRequest::decode(bytes).ok()?.gid,
    };
    (!gid.is_empty()).then_some(gid)
}

async fn fuzz_grpc(s: &TestServer, backend: &str) {
    let per_method = super::fuzz_bodies().unwrap_or_else(|| size(60, 100_000));
    let mut rng = Rng::seeded(&format!("grpc fuzz on {backend}"));
    let p = Participant::spawn().await;
    let channel = Channel::from_shared(format!("http://{}", s.grpc_addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let prefix = format!("gz{}-", rng.next() % 1_000_000);
    let mut known = HashSet::new();
    let (mut sent, mut refused) = (0u64, 0u64);
    for method in METHODS {
        for i in 0..per_method {
            let gid = format!("{prefix}{method}-{i}");
            let mut bytes = body(&mut rng, method, &gid, &p);
            if rng.chance(40) {
                mutate_bytes(&mut rng, &mut bytes);
            }
            let named = gid_of(method, &bytes);
            let fresh = named.as_ref().is_some_and(|g| !known.contains(g));
            let result = call(&channel, method, bytes.clone()).await;
            sent += 1;
            match result {
                Ok(()) => {
                    if let Some(g) = named {
                        known.insert(g);
                    }
                }
                Err(status) => {
                    let code = status.code();
                    let server_fault = matches!(code, Code::Internal | Code::Unknown | Code::DataLoss)
                        || (code == Code::Unimplemented && *method != "PrepareWorkflow")
                        || code == Code::Unavailable;
                    assert!(!server_fault, "{method} answered {status:?} to {bytes:?}");
                    if matches!(code, Code::InvalidArgument | Code::Unimplemented) {
                        refused += 1;
                        if let Some(g) = named.filter(|_| fresh) {
                            let stored = s.engine().load(&g).await.ok().flatten();
                            assert!(stored.is_none(), "{method} refused ({status:?}) but stored {g}");
                        }
                    } else if let Some(g) = named {
                        // FAILURE / ONGOING / not found: the gid may exist (a retried body).
                        known.insert(g);
                    }
                }
            }
        }
    }
    let ping = s.http().get(format!("{}/api/ping", s.root_url())).send().await.expect("still serving");
    assert_eq!(ping.status(), 200);
    println!("grpc fuzz on {backend}: {sent} requests, {refused} refused (InvalidArgument), 0 server errors");
}
