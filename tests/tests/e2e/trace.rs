//! W3C trace context: a `traceparent` sent with a submit reaches every participant call as a
//! child context (same trace id and flags, a span id of its own per call, retries included),
//! with `tracestate` passed on; an invalid one is ignored.

use std::time::Duration;

use dtx_tests::{Participant, Reply, Saga, TestServer};

const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

async fn submit_traced(s: &TestServer, body: &serde_json::Value, traceparent: &str) -> u16 {
    let resp = s
        .http()
        .post(format!("{}/submit", s.base_url()))
        .header("traceparent", traceparent)
        .header("tracestate", "vendor=abc")
        .json(body)
        .send()
        .await
        .expect("submit");
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_submitters_trace_reaches_every_participant_call_including_retries() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransIn", [Reply::error()]);
    let saga = Saga::new("traced").step(p.url("/TransOut"), p.url("/TransOutRevert"), "{}").step(
        p.url("/TransIn"),
        p.url("/TransInRevert"),
        "{}",
    );
    assert_eq!(submit_traced(&s, &saga.json(), PARENT).await, 200);
    s.wait_idle("traced").await;
    s.advance(Duration::from_secs(60));
    assert_eq!(s.cron().await, 1, "the retry round");
    s.wait_status("traced", "succeed").await;

    let calls = p.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/TransOut", "/TransIn", "/TransIn"], "one retried call");
    let mut spans = Vec::new();
    for call in &calls {
        let tp = call.header("traceparent");
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!(parts[0], "00");
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "the submitter's trace id: {tp}");
        assert_eq!(parts[3], "01", "flags kept: {tp}");
        assert_ne!(parts[2], "00f067aa0ba902b7", "a child span, not the submitter's: {tp}");
        assert_eq!(parts[2].len(), 16);
        assert_eq!(call.header("tracestate"), "vendor=abc");
        spans.push(parts[2].to_owned());
    }
    spans.sort();
    spans.dedup();
    assert_eq!(spans.len(), 3, "a span id of its own per call: {spans:?}");
    // Stored with the transaction (so rounds after a restart carry it too); `query` shows the
    // branch_headers keys only (issue 12: their values are never returned).
    let stored = s.engine().load("traced").await.expect("load").expect("stored");
    assert_eq!(stored.global.options.branch_headers.get("traceparent").map(String::as_str), Some(PARENT));
    let q = s.query("traced").await;
    assert!(!q.to_string().contains(PARENT) && q.to_string().contains("traceparent"), "{q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_traceparent_is_ignored() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let saga = Saga::new("untraced").step(p.url("/A"), p.url("/C"), "{}");
    assert_eq!(submit_traced(&s, &saga.json(), "00-zz-bad-01").await, 200);
    s.wait_status("untraced", "succeed").await;
    assert_eq!(p.only_call("/A").header("traceparent"), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_metadata_trace_reaches_grpc_participants() {
    use dtx_tests::grpc::{GrpcParticipant, GrpcReply, GrpcSaga, dtm_client};
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransIn", [GrpcReply::unavailable()]);
    let saga = GrpcSaga::new("grpc-traced")
        .step(p.url("TransOut"), p.url("TransOutRevert"), b"{}".to_vec())
        .step(p.url("TransIn"), p.url("TransInRevert"), b"{}".to_vec());
    let mut request = tonic::Request::new(saga.request());
    request.metadata_mut().insert("traceparent", PARENT.parse().expect("metadata"));
    dtm_client(&s).await.submit(request).await.expect("Submit");
    s.wait_idle("grpc-traced").await;
    s.advance(Duration::from_secs(60));
    assert_eq!(s.cron().await, 1);
    s.wait_status("grpc-traced", "succeed").await;
    let calls = p.calls();
    assert_eq!(calls.len(), 3, "TransOut, TransIn unavailable, TransIn again");
    let mut spans = Vec::new();
    for call in &calls {
        let tp = call.metadata.get("traceparent").cloned().unwrap_or_default();
        assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && tp.ends_with("-01"), "{tp}");
        assert!(!tp.contains("00f067aa0ba902b7"), "a child span: {tp}");
        spans.push(tp);
    }
    spans.sort();
    spans.dedup();
    assert_eq!(spans.len(), 3);
}
