//! gRPC end to end: the `dtmgimp.Dtm` front door driven by the generated client as DTM's gRPC
//! SDK drives it, and gRPC participants (a real tonic server, `busi.Busi`) called by dtx with the
//! payload bytes as they were sent, `dtm-*` metadata and the result mapping of spec 3.1.

use std::time::{Duration, Instant};

use dtx_tests::grpc::dtmgimp::{DtmBranchRequest, DtmRequest, DtmTopicRequest, DtmTransOptions};
use dtx_tests::grpc::{
    GrpcMsg, GrpcParticipant, GrpcReply, GrpcSaga, GrpcTcc, ReqGrpc, dtm_client, dtm_client_at,
    odd_req_bytes, req_bytes,
};
use dtx_tests::{
    Client, DtxProcess, Gate, Participant, Reply, TestServer, advance_to_due, branch, branch_statuses,
    eventually, free_port, status_of,
};
use prost::Message;
use serde_json::Value;
use tonic::Code;
use tonic::transport::Channel;

const HTTP_PAYLOAD: &str = r#"{"amount":30}"#;

/// The classic TransOut / TransIn saga over gRPC; step 1's payload is a non-canonical encoding
/// (see [`odd_req_bytes`]), step 2's a plain one.
fn trans_saga(p: &GrpcParticipant, gid: &str) -> GrpcSaga {
    GrpcSaga::new(gid).step(p.url("TransOut"), p.url("TransOutRevert"), odd_req_bytes(30, gid)).step(
        p.url("TransIn"),
        p.url("TransInRevert"),
        req_bytes(30),
    )
}

fn base_interval(s: &TestServer) -> u64 {
    s.engine().options().retry.retry_interval.as_secs()
}

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_default()
}

async fn channel(s: &TestServer) -> Channel {
    Channel::from_shared(format!("http://{}", s.grpc_addr()))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect")
}

// ---------------------------------------------------------------------------------------------
// The front door: NewGid, health, reflection, PrepareWorkflow.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_gid_over_grpc() {
    let s = TestServer::start().await;
    let mut dtm = dtm_client(&s).await;
    let a = dtm.new_gid(()).await.expect("NewGid").into_inner().gid;
    let b = dtm.new_gid(()).await.expect("NewGid").into_inner().gid;
    assert!(!a.is_empty(), "a gid");
    assert_ne!(a, b, "gids are unique");
    // A gid from NewGid is usable as is.
    let p = GrpcParticipant::spawn().await;
    dtm.submit(trans_saga(&p, &a).wait_result().request()).await.expect("Submit with a NewGid gid");
    assert_eq!(s.status(&a).await, "succeed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_serving_for_the_server_and_dtmgimp_dtm() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let s = TestServer::start().await;
    let mut health = HealthClient::new(channel(&s).await);
    for service in ["", "dtmgimp.Dtm"] {
        let r = health
            .check(HealthCheckRequest { service: service.into() })
            .await
            .unwrap_or_else(|e| panic!("Health/Check {service:?}: {e:?}"))
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health.check(HealthCheckRequest { service: "no.Such".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_dtmgimp_dtm_with_dtms_field_numbers() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

    let s = TestServer::start().await;
    let mut reflection = ServerReflectionClient::new(channel(&s).await);
    let mut ask = async |request: MessageRequest| -> ServerReflectionResponse {
        let req = ServerReflectionRequest { host: String::new(), message_request: Some(request) };
        let mut answers = reflection
            .server_reflection_info(futures::stream::iter([req]))
            .await
            .expect("ServerReflectionInfo")
            .into_inner();
        answers.message().await.expect("a reflection answer").expect("one answer")
    };

    let listed = ask(MessageRequest::ListServices(String::new())).await;
    let Some(MessageResponse::ListServicesResponse(list)) = listed.message_response else {
        panic!("not a service list: {listed:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in ["dtmgimp.Dtm", "grpc.health.v1.Health"] {
        assert!(names.contains(&expected), "{expected} is listed: {names:?}");
    }

    // The descriptor a client would build its stubs from: DTM's names and field numbers.
    let file = ask(MessageRequest::FileContainingSymbol("dtmgimp.Dtm".into())).await;
    let Some(MessageResponse::FileDescriptorResponse(files)) = file.message_response else {
        panic!("no file descriptor: {file:?}");
    };
    let fd = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).expect("a FileDescriptorProto"))
        .find(|f| f.package() == "dtmgimp")
        .expect("the dtmgimp file");
    let dtm = fd.service.iter().find(|s| s.name() == "Dtm").expect("service Dtm");
    let methods: Vec<&str> = dtm.method.iter().map(|m| m.name()).collect();
    assert_eq!(
        methods,
        [
            "NewGid",
            "Submit",
            "Prepare",
            "Abort",
            "RegisterBranch",
            "PrepareWorkflow",
            "Subscribe",
            "Unsubscribe",
            "DeleteTopic"
        ]
    );
    let fields = |message: &str| -> Vec<(String, i32)> {
        let m = fd.message_type.iter().find(|m| m.name() == message).unwrap_or_else(|| panic!("{message}"));
        m.field.iter().map(|f| (f.name().to_owned(), f.number())).collect()
    };
    let expect = |pairs: &[(&str, i32)]| -> Vec<(String, i32)> {
        pairs.iter().map(|(n, i)| ((*n).to_owned(), *i)).collect()
    };
    assert_eq!(
        fields("DtmRequest"),
        expect(&[
            ("Gid", 1),
            ("TransType", 2),
            ("TransOptions", 3),
            ("CustomedData", 4),
            ("BinPayloads", 5),
            ("QueryPrepared", 6),
            ("Steps", 7),
            ("ReqExtra", 8),
            ("RollbackReason", 9)
        ])
    );
    assert_eq!(
        fields("DtmTransOptions"),
        expect(&[
            ("WaitResult", 1),
            ("TimeoutToFail", 2),
            ("RetryInterval", 3),
            ("BranchHeaders", 5),
            ("RequestTimeout", 6),
            ("RetryLimit", 7)
        ])
    );
    assert_eq!(
        fields("DtmBranchRequest"),
        expect(&[("Gid", 1), ("TransType", 2), ("BranchID", 3), ("Op", 4), ("Data", 5), ("BusiPayload", 6)])
    );
    assert_eq!(fields("DtmTopicRequest"), expect(&[("Topic", 1), ("URL", 2), ("Remark", 3)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_workflow_is_unimplemented_with_a_message() {
    let s = TestServer::start().await;
    let mut dtm = dtm_client(&s).await;
    let req = DtmRequest { gid: "grpc-wf".into(), trans_type: "workflow".into(), ..DtmRequest::default() };
    let e = dtm.prepare_workflow(req).await.unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented, "{e:?}");
    assert!(e.message().contains("workflow"), "a clear message: {e:?}");
    assert!(s.query("grpc-wf").await["transaction"].is_null(), "nothing stored");
}

// ---------------------------------------------------------------------------------------------
// Sagas with gRPC participants.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_succeeds_with_dtm_metadata_and_the_payload_bytes_unchanged() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let saga = trans_saga(&p, "grpc-saga");
    dtm_client(&s).await.submit(saga.request()).await.expect("Submit");

    let q = s.wait_status("grpc-saga", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed"]);
    assert_eq!(q["transaction"]["protocol"], "grpc", "{q}");
    assert_eq!(q["transaction"]["trans_type"], "saga");
    assert_eq!(branch(&q, "01", "action")["url"], p.url("TransOut"));
    assert_eq!(branch(&q, "02", "compensate")["url"], p.url("TransInRevert"));

    let calls = p.calls();
    assert_eq!(p.methods(), ["TransOut", "TransIn"]);
    for (i, (call, branch_id)) in calls.iter().zip(["01", "02"]).enumerate() {
        assert_eq!(call.path, format!("/busi.Busi/{}", call.method));
        assert_eq!(call.md("dtm-gid"), "grpc-saga", "{call:?}");
        assert_eq!(call.md("dtm-trans_type"), "saga");
        assert_eq!(call.md("dtm-branch_id"), branch_id);
        assert_eq!(call.md("dtm-op"), "action");
        assert!(call.has_md("dtm-dtm") && call.md("dtm-dtm").is_empty(), "dtm-dtm is sent, empty: {call:?}");
        assert!(call.md("content-type").starts_with("application/grpc"), "{call:?}");
        assert_eq!(call.body, saga.payloads()[i], "the payload bytes, byte for byte");
        assert_eq!(call.req().amount, 30);
        let deadline = call.timeout().expect("a deadline (grpc-timeout)");
        assert!(
            deadline > Duration::from_millis(2500) && deadline <= Duration::from_secs(3),
            "the default request_timeout (3 s): {deadline:?}"
        );
    }
    // The odd encoding went through untouched (a re-encode would reorder and drop field 15).
    assert_eq!(
        calls[0].req(),
        ReqGrpc { amount: 30, trans_out_result: "out:grpc-saga".into(), trans_in_result: "grpc-saga".into() }
    );
    assert_ne!(calls[0].body, calls[0].req().encode_to_vec(), "the test payload is not prost's encoding");
    assert!(calls[0].ended() <= calls[1].start, "sequential: TransIn only after TransOut answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_failure_compensates_in_reverse_and_keeps_the_reason() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransIn", [GrpcReply::aborted("Insufficient balance")]);
    let saga = trans_saga(&p, "grpc-saga-fail");
    dtm_client(&s).await.submit(saga.request()).await.expect("Submit");

    let q = s.wait_status("grpc-saga-fail", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed", "succeed", "failed"]);
    let reason = text(&q["transaction"], "rollback_reason");
    assert!(reason.contains("Insufficient balance"), "rollback_reason: {reason}");
    assert_eq!(p.methods(), ["TransOut", "TransIn", "TransInRevert", "TransOutRevert"]);
    let revert_in = &p.calls_for("TransInRevert")[0];
    let revert_out = &p.calls_for("TransOutRevert")[0];
    assert_eq!((revert_in.md("dtm-branch_id"), revert_in.md("dtm-op")), ("02", "compensate"));
    assert_eq!((revert_out.md("dtm-branch_id"), revert_out.md("dtm-op")), ("01", "compensate"));
    assert_eq!(revert_out.md("dtm-trans_type"), "saga");
    assert_eq!(revert_out.body, saga.payloads()[0], "a compensation gets its step's payload, unchanged");
    assert_eq!(revert_in.body, saga.payloads()[1]);
    assert!(p.calls_for("TransIn")[0].ended() <= revert_in.start);
    assert!(revert_in.ended() <= revert_out.start, "step 2 is compensated before step 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_compensation_is_an_error_retried_until_ok() {
    // Spec 3.2: a compensation's FAILURE is not final, it is retried.
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransIn", [GrpcReply::aborted("no account")]);
    p.script("TransOutRevert", [GrpcReply::aborted("try later")]);
    dtm_client(&s).await.submit(trans_saga(&p, "grpc-comp-retry").request()).await.expect("Submit");
    let q = s.wait_idle("grpc-comp-retry").await;
    assert_eq!(status_of(&q), "aborting", "{q}");
    assert_eq!(branch(&q, "01", "compensate")["status"], "prepared");
    advance_to_due(&s, "grpc-comp-retry").await;
    assert_eq!(s.cron().await, 1);
    s.wait_status("grpc-comp-retry", "failed").await;
    assert_eq!(p.calls_for("TransOutRevert").len(), 2);
    assert_eq!(p.calls_for("TransIn").len(), 1, "a failed action is never retried");
}

/// A saga whose TransOut answers `first` (an ONGOING) stays submitted with its interval kept,
/// then succeeds once the clock reaches it again.
async fn ongoing_then_success(gid: &str, first: GrpcReply) {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransOut", [first]);
    dtm_client(&s).await.submit(trans_saga(&p, gid).request()).await.expect("Submit");
    let q = s.wait_idle(gid).await;
    assert_eq!(status_of(&q), "submitted", "{q}");
    assert_eq!(branch(&q, "01", "action")["status"], "prepared");
    assert_eq!(q["transaction"]["next_cron_interval"], base_interval(&s), "ONGOING keeps the interval: {q}");
    assert!(p.calls_for("TransIn").is_empty(), "step 2 waits for step 1");
    assert_eq!(s.cron().await, 0, "not due yet");

    advance_to_due(&s, gid).await;
    assert_eq!(s.cron().await, 1);
    s.wait_status(gid, "succeed").await;
    assert_eq!(p.methods(), ["TransOut", "TransOut", "TransIn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ongoing_via_failed_precondition_then_success() {
    ongoing_then_success("grpc-ongoing", GrpcReply::ongoing()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ongoing_via_aborted_with_message_ongoing_then_success() {
    ongoing_then_success("grpc-ongoing-legacy", GrpcReply::legacy_ongoing()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_three_times_then_success_with_backoff() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransOut", [GrpcReply::unavailable(), GrpcReply::unavailable(), GrpcReply::unavailable()]);
    let gid = "grpc-unavailable";
    dtm_client(&s).await.submit(trans_saga(&p, gid).request()).await.expect("Submit");
    let base = base_interval(&s);
    for n in 1..=3u32 {
        let q = s.wait_idle(gid).await;
        assert_eq!(status_of(&q), "submitted", "after call {n}: {q}");
        let out = branch(&q, "01", "action");
        assert_eq!(out["status"], "prepared");
        assert_eq!(out["attempts"], n);
        let last_error = text(out, "last_error");
        assert!(last_error.contains("Unavailable") && last_error.contains("the bank is closed"), "{q}");
        assert_eq!(q["transaction"]["next_cron_interval"], base << n, "an error doubles the interval: {q}");
        assert_eq!(s.cron().await, 0, "not due before its backoff");
        advance_to_due(&s, gid).await;
        assert_eq!(s.cron().await, 1, "retry {n}");
    }
    let q = s.wait_status(gid, "succeed").await;
    assert_eq!(branch(&q, "01", "action")["attempts"], 4);
    assert_eq!(p.methods(), ["TransOut", "TransOut", "TransOut", "TransOut", "TransIn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_codes_are_errors_not_failures() {
    // Spec 3.1: only Aborted is FAILURE; InvalidArgument, NotFound, Internal, Unimplemented...
    // are errors, retried with backoff, never a rollback.
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let codes = [Code::InvalidArgument, Code::NotFound, Code::Internal, Code::Unimplemented, Code::Unknown];
    p.script("TransIn", codes.map(|c| GrpcReply::status(c, "nope")));
    let gid = "grpc-other-codes";
    dtm_client(&s).await.submit(trans_saga(&p, gid).request()).await.expect("Submit");
    for code in codes {
        let q = s.wait_idle(gid).await;
        assert_eq!(status_of(&q), "submitted", "after {code:?}: {q}");
        assert!(text(branch(&q, "02", "action"), "last_error").contains(&format!("{code:?}")), "{q}");
        advance_to_due(&s, gid).await;
        assert_eq!(s.cron().await, 1);
    }
    s.wait_status(gid, "succeed").await;
    assert!(p.calls_for("TransOutRevert").is_empty(), "never rolled back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_method_on_the_participant_is_an_error() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let saga =
        GrpcSaga::new("grpc-no-method").step(p.url("NoSuchMethod"), p.url("TransOutRevert"), req_bytes(1));
    dtm_client(&s).await.submit(saga.request()).await.expect("Submit");
    let q = s.wait_idle("grpc-no-method").await;
    assert_eq!(status_of(&q), "submitted", "{q}");
    assert!(text(branch(&q, "01", "action"), "last_error").contains("Unimplemented"), "{q}");
    assert_eq!(p.methods(), ["NoSuchMethod"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_is_the_call_deadline() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransOut", [GrpcReply::ok().after(Duration::from_millis(2500))]);
    let mut saga = trans_saga(&p, "grpc-deadline").wait_result();
    saga.options.request_timeout = 1;
    let started = Instant::now();
    let e = dtm_client(&s).await.submit(saga.request()).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(e.code(), Code::FailedPrecondition, "still submitted: {e:?}");
    assert!(took < Duration::from_millis(2300), "the call was cut after ~1 s, not 2.5 s: took {took:?}");
    let call = &p.calls_for("TransOut")[0];
    let deadline = call.timeout().expect("grpc-timeout");
    assert!(deadline > Duration::from_millis(500) && deadline <= Duration::from_secs(1), "{deadline:?}");
    let q = s.query("grpc-deadline").await;
    let out = branch(&q, "01", "action");
    assert_eq!(out["status"], "prepared");
    let last_error = text(out, "last_error").to_ascii_lowercase();
    assert!(last_error.contains("timeout") || last_error.contains("deadline"), "{q}");
    assert_eq!(q["transaction"]["next_cron_interval"], base_interval(&s) * 2, "a timeout backs off: {q}");

    advance_to_due(&s, "grpc-deadline").await;
    assert_eq!(s.cron().await, 1);
    s.wait_status("grpc-deadline", "succeed").await;
    assert_eq!(p.calls_for("TransOut").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_result_success_is_ok() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let mut dtm = dtm_client(&s).await;
    dtm.submit(trans_saga(&p, "grpc-wait-ok").wait_result().request()).await.expect("Submit");
    // Answered only after the saga finished.
    assert_eq!(s.status("grpc-wait-ok").await, "succeed");
    assert_eq!(p.methods(), ["TransOut", "TransIn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_result_failure_is_aborted_with_the_reason() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransIn", [GrpcReply::aborted("Insufficient balance")]);
    let e = dtm_client(&s)
        .await
        .submit(trans_saga(&p, "grpc-wait-fail").wait_result().request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(e.message().contains("Insufficient balance"), "the participant's reason: {e:?}");
    assert_eq!(s.status("grpc-wait-fail").await, "failed");
    assert_eq!(p.methods(), ["TransOut", "TransIn", "TransInRevert", "TransOutRevert"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_result_ongoing_is_failed_precondition() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransOut", [GrpcReply::ongoing()]);
    let e = dtm_client(&s)
        .await
        .submit(trans_saga(&p, "grpc-wait-ongoing").wait_result().request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert_eq!(s.status("grpc-wait-ongoing").await, "submitted");
    advance_to_due(&s, "grpc-wait-ongoing").await;
    assert_eq!(s.cron().await, 1);
    s.wait_status("grpc-wait-ongoing", "succeed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_headers_arrive_as_lower_case_metadata_also_on_retries() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransOut", [GrpcReply::unavailable()]);
    p.script("TransIn", [GrpcReply::aborted("no account")]);
    let saga = trans_saga(&p, "grpc-headers")
        .header("test_header", "test")
        .header("X-Trace-Id", "abc-123")
        // Binary metadata travels base64-encoded, as grpc-go sends it.
        .header("trace-bin", "abc")
        // Headers cannot replace what identifies the branch, nor the deadline.
        .header("dtm-gid", "spoofed")
        .header("DTM-Op", "spoofed")
        .header("grpc-timeout", "1n");
    dtm_client(&s).await.submit(saga.request()).await.expect("Submit");
    let q = s.wait_idle("grpc-headers").await;
    assert_eq!(status_of(&q), "submitted");
    assert_eq!(p.methods(), ["TransOut"]);
    advance_to_due(&s, "grpc-headers").await;
    assert_eq!(s.cron().await, 1);
    s.wait_status("grpc-headers", "failed").await;
    let calls = p.calls();
    assert_eq!(p.methods(), ["TransOut", "TransOut", "TransIn", "TransInRevert", "TransOutRevert"]);
    for c in &calls {
        assert_eq!(c.md("test_header"), "test", "{c:?}");
        assert_eq!(c.md("x-trace-id"), "abc-123", "{c:?}");
        assert_eq!(c.md("trace-bin").trim_end_matches('='), "YWJj", "{c:?}");
        assert_eq!(c.md("dtm-gid"), "grpc-headers", "{c:?}");
        assert!(c.md("dtm-op") == "action" || c.md("dtm-op") == "compensate", "{c:?}");
        let deadline = c.timeout().expect("grpc-timeout");
        assert!(deadline > Duration::from_millis(2500), "request_timeout, not the header: {c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_saga_mixes_in_an_http_branch() {
    let s = TestServer::start().await;
    let g = GrpcParticipant::spawn().await;
    let h = Participant::spawn().await;
    let saga = GrpcSaga::new("grpc-mixed")
        .step(g.url("TransOut"), g.url("TransOutRevert"), req_bytes(30))
        .step(h.url("/TransIn"), h.url("/TransInRevert"), HTTP_PAYLOAD.as_bytes().to_vec());
    dtm_client(&s).await.submit(saga.wait_result().request()).await.expect("Submit");
    let q = s.query("grpc-mixed").await;
    assert_eq!(status_of(&q), "succeed", "{q}");
    assert_eq!(q["transaction"]["protocol"], "grpc");
    assert_eq!(g.methods(), ["TransOut"]);
    assert_eq!(h.paths(), ["/TransIn"]);
    let call = &h.calls()[0];
    assert_eq!(call.method, "POST");
    assert_eq!(call.param("gid"), "grpc-mixed");
    assert_eq!(call.param("trans_type"), "saga");
    assert_eq!(call.param("branch_id"), "02");
    assert_eq!(call.param("op"), "action");
    assert_eq!(call.body, HTTP_PAYLOAD.as_bytes());
    assert!(g.calls()[0].ended() <= call.start);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_saga_with_a_failing_http_branch_compensates_both_kinds() {
    let s = TestServer::start().await;
    let g = GrpcParticipant::spawn().await;
    let h = Participant::spawn().await;
    h.script("/TransIn", [Reply::failure("no such account")]);
    let saga = GrpcSaga::new("grpc-mixed-fail")
        .step(g.url("TransOut"), g.url("TransOutRevert"), req_bytes(30))
        .step(h.url("/TransIn"), h.url("/TransInRevert"), HTTP_PAYLOAD.as_bytes().to_vec());
    let e = dtm_client(&s).await.submit(saga.wait_result().request()).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
    assert!(e.message().contains("no such account"), "{e:?}");
    assert_eq!(h.paths(), ["/TransIn", "/TransInRevert"]);
    assert_eq!(g.methods(), ["TransOut", "TransOutRevert"]);
    assert!(h.calls()[1].ended() <= g.calls()[1].start, "reverse order across protocols");
    assert_eq!(g.calls()[1].md("dtm-op"), "compensate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_saga_via_customed_data_overlaps() {
    // The gRPC options have no Concurrent; a gRPC saga asks for it in CustomedData.
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransOut", [GrpcReply::ok().after(Duration::from_millis(300))]);
    p.script("TransIn", [GrpcReply::ok().after(Duration::from_millis(300))]);
    let mut saga = trans_saga(&p, "grpc-concurrent").wait_result();
    saga.custom_data = r#"{"concurrent":true,"orders":{}}"#.into();
    dtm_client(&s).await.submit(saga.request()).await.expect("Submit");
    assert_eq!(s.status("grpc-concurrent").await, "succeed");
    let (out, inn) = (&p.calls_for("TransOut")[0], &p.calls_for("TransIn")[0]);
    assert!(out.start < inn.ended() && inn.start < out.ended(), "the calls overlap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pivot_runs_last_and_its_failure_rolls_back_over_grpc() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransOut", [GrpcReply::aborted("card declined")]);
    // Step 1 has no compensation: the pivot, run after the step that can be rolled back.
    let saga = GrpcSaga::new("grpc-pivot").step(p.url("TransOut"), "", req_bytes(1)).step(
        p.url("TransIn"),
        p.url("TransInRevert"),
        req_bytes(2),
    );
    dtm_client(&s).await.submit(saga.request()).await.expect("Submit");
    let q = s.wait_status("grpc-pivot", "failed").await;
    assert_eq!(p.methods(), ["TransIn", "TransOut", "TransInRevert"]);
    assert!(text(&q["transaction"], "rollback_reason").contains("card declined"), "{q}");
    assert_eq!(p.calls_for("TransInRevert")[0].req().amount, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_in_flight_is_not_claimed_again() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let gate = Gate::new();
    p.script("TransOut", [GrpcReply::ok().blocked_by(&gate)]);
    dtm_client(&s).await.submit(trans_saga(&p, "grpc-owned").request()).await.expect("Submit");
    p.wait_calls("TransOut", 1).await;
    s.advance(Duration::from_secs(5));
    assert_eq!(s.cron().await, 0, "owned by the round in flight");
    gate.release();
    s.wait_status("grpc-owned", "succeed").await;
    assert_eq!(p.methods(), ["TransOut", "TransIn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participant_restarting_on_its_port_is_reached_again() {
    // Channels are cached per target: after the participant went away and came back, the
    // cached channel must reconnect.
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let port = p.addr().port();
    let mut dtm = dtm_client(&s).await;
    dtm.submit(trans_saga(&p, "grpc-restart-1").wait_result().request()).await.expect("first saga");
    p.stop().await;

    let e = dtm.submit(trans_saga(&p, "grpc-restart-2").wait_result().request()).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "the participant is down: {e:?}");
    let q = s.query("grpc-restart-2").await;
    assert_eq!(status_of(&q), "submitted");
    assert!(text(branch(&q, "01", "action"), "last_error").starts_with("grpc"), "{q}");

    let back = GrpcParticipant::spawn_on(port).await;
    advance_to_due(&s, "grpc-restart-2").await;
    assert_eq!(s.cron().await, 1);
    s.wait_status("grpc-restart-2", "succeed").await;
    assert_eq!(back.methods(), ["TransOut", "TransIn"]);
}

// ---------------------------------------------------------------------------------------------
// TCC over gRPC.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_over_grpc_confirms_newest_first() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let tcc = GrpcTcc::prepare(s.grpc_addr(), "grpc-tcc", DtmTransOptions::default()).await;
    let q = s.query("grpc-tcc").await;
    assert_eq!(status_of(&q), "prepared");
    assert_eq!(q["transaction"]["protocol"], "grpc");

    // Branch 01 registers non-canonical bytes; branch 02 the SDK's own encoding.
    let out_payload = odd_req_bytes(30, "tcc");
    tcc.register(&p, "01", "TransOut", &out_payload).await.expect("RegisterBranch 01");
    tcc.call_try(&p, "01", "TransOut", ReqGrpc::decode(out_payload.as_slice()).expect("decode"))
        .await
        .expect("try TransOut");
    let in_req = ReqGrpc { amount: 30, ..ReqGrpc::default() };
    tcc.branch(&p, "02", "TransIn", in_req.clone()).await.expect("try TransIn");
    let tries = p.calls();
    assert_eq!(p.methods(), ["TransOutTry", "TransInTry"]);
    for (call, branch_id) in tries.iter().zip(["01", "02"]) {
        assert_eq!(call.md("dtm-gid"), "grpc-tcc");
        assert_eq!(call.md("dtm-trans_type"), "tcc");
        assert_eq!(call.md("dtm-branch_id"), branch_id);
        assert_eq!(call.md("dtm-op"), "try");
        assert_eq!(call.md("dtm-dtm"), s.grpc_addr().to_string());
    }
    let q = s.query("grpc-tcc").await;
    assert_eq!(branch(&q, "01", "confirm")["url"], p.url("TransOutConfirm"));
    assert_eq!(branch(&q, "01", "cancel")["url"], p.url("TransOutCancel"));

    tcc.submit().await.expect("Submit");
    let q = s.wait_status("grpc-tcc", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed"]);
    assert_eq!(p.methods(), ["TransOutTry", "TransInTry", "TransInConfirm", "TransOutConfirm"]);
    let confirm_in = &p.calls_for("TransInConfirm")[0];
    let confirm_out = &p.calls_for("TransOutConfirm")[0];
    for (call, branch_id) in [(confirm_in, "02"), (confirm_out, "01")] {
        assert_eq!(call.md("dtm-gid"), "grpc-tcc");
        assert_eq!(call.md("dtm-trans_type"), "tcc");
        assert_eq!(call.md("dtm-branch_id"), branch_id);
        assert_eq!(call.md("dtm-op"), "confirm");
        assert_eq!(call.md("dtm-dtm"), "", "the server sends dtm-dtm empty");
    }
    assert_eq!(confirm_out.body, out_payload, "BusiPayload, byte for byte");
    assert_eq!(confirm_in.body, in_req.encode_to_vec());
    assert!(confirm_in.ended() <= confirm_out.start, "one at a time, newest first");

    // Registering after the end is refused.
    let late = tcc.register(&p, "03", "TransIn", &req_bytes(1)).await.unwrap_err();
    assert_eq!(late.code(), Code::Aborted, "{late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_over_grpc_abort_cancels_newest_first() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransInTry", [GrpcReply::aborted("no such account")]);
    let tcc = GrpcTcc::prepare(s.grpc_addr(), "grpc-tcc-abort", DtmTransOptions::default()).await;
    let req = ReqGrpc { amount: 30, ..ReqGrpc::default() };
    tcc.branch(&p, "01", "TransOut", req.clone()).await.expect("try TransOut");
    let e = tcc.branch(&p, "02", "TransIn", req.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");

    tcc.abort("try TransIn failed").await.expect("Abort");
    let q = s.wait_status("grpc-tcc-abort", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "prepared", "succeed", "prepared"]);
    assert_eq!(text(&q["transaction"], "rollback_reason"), "try TransIn failed", "{q}");
    assert_eq!(p.methods(), ["TransOutTry", "TransInTry", "TransInCancel", "TransOutCancel"]);
    for (call, branch_id) in
        [(&p.calls_for("TransInCancel")[0], "02"), (&p.calls_for("TransOutCancel")[0], "01")]
    {
        assert_eq!(call.md("dtm-branch_id"), branch_id);
        assert_eq!(call.md("dtm-op"), "cancel");
        assert_eq!(call.md("dtm-trans_type"), "tcc");
        assert_eq!(call.body, req.encode_to_vec());
    }
    // A finished TCC cannot be submitted any more.
    let e = tcc.submit().await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_confirm_errors_are_retried_over_grpc() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("TransOutConfirm", [GrpcReply::unavailable(), GrpcReply::aborted("not now")]);
    let tcc = GrpcTcc::prepare(s.grpc_addr(), "grpc-tcc-retry", DtmTransOptions::default()).await;
    tcc.branch(&p, "01", "TransOut", ReqGrpc { amount: 5, ..ReqGrpc::default() }).await.expect("try");
    tcc.submit().await.expect("Submit");
    for n in 1..=2 {
        let q = s.wait_idle("grpc-tcc-retry").await;
        assert_eq!(status_of(&q), "submitted", "after confirm {n}: {q}");
        advance_to_due(&s, "grpc-tcc-retry").await;
        assert_eq!(s.cron().await, 1);
    }
    s.wait_status("grpc-tcc-retry", "succeed").await;
    assert_eq!(p.calls_for("TransOutConfirm").len(), 3);
    assert!(p.calls_for("TransOutCancel").is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2-phase messages over gRPC.

fn trans_msg(p: &GrpcParticipant, gid: &str) -> GrpcMsg {
    GrpcMsg::new(gid, p.url("QueryPrepared"))
        .step(p.url("TransOut"), odd_req_bytes(30, gid))
        .step(p.url("TransIn"), req_bytes(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_prepare_then_submit_over_grpc() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let mut dtm = dtm_client(&s).await;
    let msg = trans_msg(&p, "grpc-msg");
    dtm.prepare(msg.request()).await.expect("Prepare");
    let q = s.query("grpc-msg").await;
    assert_eq!(status_of(&q), "prepared");
    assert_eq!(q["transaction"]["protocol"], "grpc");
    assert!(p.calls().is_empty());
    dtm.submit(msg.request()).await.expect("Submit");
    s.wait_status("grpc-msg", "succeed").await;
    assert_eq!(p.methods(), ["TransOut", "TransIn"], "no check-back for a submitted message");
    let expected = msg.request().bin_payloads;
    for ((call, branch_id), payload) in p.calls().iter().zip(["01", "02"]).zip(&expected) {
        assert_eq!(call.md("dtm-trans_type"), "msg");
        assert_eq!(call.md("dtm-branch_id"), branch_id);
        assert_eq!(call.md("dtm-op"), "action");
        assert_eq!(&call.body, payload, "byte for byte");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_never_submitted_is_checked_back_over_grpc_and_committed() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    // First an ONGOING in its old form (interval reset), then OK.
    p.script("QueryPrepared", [GrpcReply::legacy_ongoing()]);
    let msg = trans_msg(&p, "grpc-msg-check");
    dtm_client(&s).await.prepare(msg.request()).await.expect("Prepare");
    let q = s.query("grpc-msg-check").await;
    assert_eq!(q["transaction"]["query_prepared"], p.url("QueryPrepared"));

    s.advance(Duration::from_secs(30));
    assert_eq!(s.cron().await, 0, "not checked back before the 35 s timeout");
    s.advance(Duration::from_secs(6));
    assert_eq!(s.cron().await, 1);
    let q = s.wait_idle("grpc-msg-check").await;
    assert_eq!(status_of(&q), "prepared", "ONGOING: still prepared: {q}");
    assert_eq!(q["transaction"]["next_cron_interval"], base_interval(&s));
    assert_eq!(p.methods(), ["QueryPrepared"]);

    advance_to_due(&s, "grpc-msg-check").await;
    assert_eq!(s.cron().await, 1);
    let q = s.wait_status("grpc-msg-check", "succeed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed"]);
    assert_eq!(p.methods(), ["QueryPrepared", "QueryPrepared", "TransOut", "TransIn"]);
    for check in p.calls_for("QueryPrepared") {
        assert_eq!(check.md("dtm-gid"), "grpc-msg-check");
        assert_eq!(check.md("dtm-trans_type"), "msg");
        assert_eq!(check.md("dtm-branch_id"), "00");
        assert_eq!(check.md("dtm-op"), "msg");
        assert!(check.body.is_empty(), "the check-back sends an empty message");
    }
    let out = &p.calls_for("TransOut")[0];
    assert_eq!(out.body, msg.request().bin_payloads[0]);
    assert_eq!((out.md("dtm-branch_id"), out.md("dtm-op")), ("01", "action"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_check_back_aborted_fails_without_actions() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    p.script("QueryPrepared", [GrpcReply::aborted("the order was rolled back")]);
    let mut dtm = dtm_client(&s).await;
    let msg = trans_msg(&p, "grpc-msg-check-fail");
    dtm.prepare(msg.request()).await.expect("Prepare");
    s.advance(Duration::from_secs(36));
    assert_eq!(s.cron().await, 1);
    let q = s.wait_status("grpc-msg-check-fail", "failed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "prepared"], "the actions never ran");
    assert_eq!(p.methods(), ["QueryPrepared"]);
    s.advance(Duration::from_secs(3600));
    assert_eq!(s.cron().await, 0, "final");
    let e = dtm.submit(msg.request()).await.unwrap_err();
    assert_eq!(e.code(), Code::Aborted, "a failed message cannot be submitted: {e:?}");
    assert_eq!(p.methods(), ["QueryPrepared"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_abort_over_grpc_fails_a_prepared_message() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let mut dtm = dtm_client(&s).await;
    let msg = trans_msg(&p, "grpc-msg-abort");
    dtm.prepare(msg.request()).await.expect("Prepare");
    let mut req = msg.request();
    req.rollback_reason = "changed my mind".into();
    dtm.abort(req).await.expect("Abort");
    let q = s.query("grpc-msg-abort").await;
    assert_eq!(status_of(&q), "failed");
    assert_eq!(text(&q["transaction"], "rollback_reason"), "changed my mind");
    assert!(p.calls().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Topics over gRPC.

fn topic(topic: &str, url: &str, remark: &str) -> DtmTopicRequest {
    DtmTopicRequest { topic: topic.into(), url: url.into(), remark: remark.into() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_unsubscribe_delete_topic_over_grpc() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let h = Participant::spawn().await;
    let mut dtm = dtm_client(&s).await;
    dtm.subscribe(topic("grpc-topic", &h.url("/TransIn1"), "first")).await.expect("Subscribe");
    dtm.subscribe(topic("grpc-topic", &h.url("/TransIn2"), "second")).await.expect("Subscribe");
    let again = dtm.subscribe(topic("grpc-topic", &h.url("/TransIn1"), "")).await.unwrap_err();
    assert_eq!(again.code(), Code::Aborted, "already subscribed: {again:?}");
    for (t, u) in [("", h.url("/A")), ("t", String::new()), ("t", "ftp://h/x".into())] {
        let e = dtm.subscribe(topic(t, &u, "")).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "Subscribe({t:?}, {u:?}): {e:?}");
    }
    let (code, reply) = c.get("queryKV", &[("cat", "topics"), ("key", "grpc-topic")]).await;
    assert_eq!(code, 200, "{reply}");
    let v = text(&reply["kv"][0], "v");
    assert!(v.contains("/TransIn1") && v.contains("/TransIn2") && v.contains("second"), "{reply}");

    // A gRPC message fans out to the subscribers (HTTP ones here).
    let msg = GrpcMsg::new("grpc-topic-msg", "").step("topic://grpc-topic", HTTP_PAYLOAD.as_bytes().to_vec());
    dtm.submit(msg.request()).await.expect("Submit a topic message");
    let q = s.wait_status("grpc-topic-msg", "succeed").await;
    assert_eq!(branch(&q, "01-01", "action")["url"], h.url("/TransIn1"));
    assert_eq!(branch(&q, "01-02", "action")["url"], h.url("/TransIn2"));
    let mut paths = h.paths();
    paths.sort();
    assert_eq!(paths, ["/TransIn1", "/TransIn2"]);

    dtm.unsubscribe(topic("grpc-topic", &h.url("/TransIn1"), "")).await.expect("Unsubscribe");
    let e = dtm.unsubscribe(topic("grpc-topic", &h.url("/TransIn1"), "")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    dtm.delete_topic(topic("grpc-topic", "", "")).await.expect("DeleteTopic");
    let e = dtm.delete_topic(topic("grpc-topic", "", "")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    let e = dtm
        .submit(GrpcMsg::new("grpc-topic-gone", "").step("topic://grpc-topic", vec![]).request())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "the topic is gone: {e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_participant_can_subscribe_to_a_topic() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let mut dtm = dtm_client(&s).await;
    dtm.subscribe(topic("grpc-subscribers", &p.url("TransIn"), "")).await.expect("Subscribe a gRPC url");
    let msg = GrpcMsg::new("grpc-topic-grpc", "").step("topic://grpc-subscribers", req_bytes(7));
    dtm.submit(msg.request()).await.expect("Submit");
    s.wait_status("grpc-topic-grpc", "succeed").await;
    let call = &p.calls_for("TransIn")[0];
    assert_eq!(call.req().amount, 7);
    assert_eq!((call.md("dtm-branch_id"), call.md("dtm-op")), ("01", "action"));
}

// ---------------------------------------------------------------------------------------------
// Bad input.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_and_nothing_is_stored() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let mut dtm = dtm_client(&s).await;
    let good = |gid: &str| trans_saga(&p, gid).request();
    let cases: Vec<(&str, DtmRequest)> = vec![
        ("empty gid", DtmRequest { gid: String::new(), ..good("x") }),
        ("unknown trans type", DtmRequest { trans_type: "sagaa".into(), ..good("grpc-bad-type") }),
        ("empty trans type", DtmRequest { trans_type: String::new(), ..good("grpc-bad-no-type") }),
        ("xa (not supported)", DtmRequest { trans_type: "xa".into(), ..good("grpc-bad-xa") }),
        ("payload count", DtmRequest { bin_payloads: vec![req_bytes(1)], ..good("grpc-bad-payloads") }),
        ("malformed Steps", DtmRequest { steps: r#"[{"action":"#.into(), ..good("grpc-bad-steps") }),
        (
            "Steps not an array",
            DtmRequest { steps: r#"{"action":"x"}"#.into(), ..good("grpc-bad-steps-obj") },
        ),
        ("no steps", DtmRequest { steps: String::new(), bin_payloads: vec![], ..good("grpc-bad-no-steps") }),
        (
            "gRPC url without a method",
            DtmRequest {
                steps: r#"[{"action":"127.0.0.1:1","compensate":""},{"action":"","compensate":""}]"#.into(),
                ..good("grpc-bad-url")
            },
        ),
        (
            "url with a scheme that is not http",
            DtmRequest {
                steps: r#"[{"action":"dns:///h:1/a.B/C","compensate":""},{"action":"","compensate":""}]"#
                    .into(),
                ..good("grpc-bad-scheme")
            },
        ),
        ("negative option", {
            let mut r = good("grpc-bad-option");
            r.trans_options = Some(DtmTransOptions { timeout_to_fail: -1, ..DtmTransOptions::default() });
            r
        }),
        ("bad branch header", {
            let mut r = good("grpc-bad-header");
            let mut o = DtmTransOptions::default();
            o.branch_headers.insert("bad header".into(), "v".into());
            r.trans_options = Some(o);
            r
        }),
    ];
    for (what, req) in cases {
        let gid = req.gid.clone();
        for op in ["Submit", "Prepare"] {
            let answer = match op {
                "Submit" => dtm.submit(req.clone()).await,
                _ => dtm.prepare(req.clone()).await,
            };
            let e = answer.expect_err(what);
            assert_eq!(e.code(), Code::InvalidArgument, "{op} with {what}: {e:?}");
            assert!(!e.message().is_empty(), "{op} with {what}: a message");
        }
        if !gid.is_empty() {
            assert!(s.query(&gid).await["transaction"].is_null(), "{what}: nothing stored");
        }
    }
    assert!(p.calls().is_empty());

    // RegisterBranch: bad input too.
    let tcc = GrpcTcc::prepare(s.grpc_addr(), "grpc-bad-register", DtmTransOptions::default()).await;
    let ok = DtmBranchRequest {
        gid: tcc.gid().into(),
        trans_type: "tcc".into(),
        branch_id: "01".into(),
        op: "try".into(),
        data: [
            ("confirm".to_owned(), p.url("TransOutConfirm")),
            ("cancel".to_owned(), p.url("TransOutCancel")),
        ]
        .into(),
        busi_payload: req_bytes(1),
    };
    for (what, req) in [
        ("empty gid", DtmBranchRequest { gid: String::new(), ..ok.clone() }),
        ("empty branch id", DtmBranchRequest { branch_id: String::new(), ..ok.clone() }),
        ("empty trans type", DtmBranchRequest { trans_type: String::new(), ..ok.clone() }),
        (
            "confirm without a method",
            DtmBranchRequest {
                data: [("confirm".to_owned(), "127.0.0.1:1".to_owned())].into(),
                ..ok.clone()
            },
        ),
    ] {
        let e = dtm.register_branch(req).await.expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "RegisterBranch with {what}: {e:?}");
    }
    let q = s.query("grpc-bad-register").await;
    assert_eq!(q["branches"].as_array().map(Vec::len), Some(0), "no branch registered: {q}");
    dtm.register_branch(ok).await.expect("the good registration");
}

// ---------------------------------------------------------------------------------------------
// The real binary.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dtx_binary_serves_grpc_on_the_chosen_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dtx.log");
    let db = format!("sqlite://{}", dir.path().join("dtx.db").display());
    let grpc_port = free_port();
    let grpc_listen = format!("127.0.0.1:{grpc_port}");
    let mut dtx = DtxProcess::start(&db, free_port(), &["--grpc-listen", &grpc_listen], &log).await;
    let mut dtm = dtm_client_at(grpc_listen.parse().expect("address")).await;
    let gid = dtm.new_gid(()).await.expect("NewGid").into_inner().gid;
    assert!(!gid.is_empty());

    let p = GrpcParticipant::spawn().await;
    dtm.submit(trans_saga(&p, &gid).wait_result().request()).await.expect("a gRPC saga against the binary");
    let q = Client::new(dtx.base_url()).query(&gid).await;
    assert_eq!(status_of(&q), "succeed", "{q}");
    assert_eq!(p.methods(), ["TransOut", "TransIn"]);
    assert!(dtx.terminate(Duration::from_secs(10)).await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_a_grpc_action_then_restart_finishes_the_saga() {
    const FLAGS: [&str; 6] = ["--lease", "1s", "--poll-interval", "100ms", "--retry-interval", "1s"];
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dtx.log");
    let db = format!("sqlite://{}", dir.path().join("dtx.db").display());
    let p = GrpcParticipant::spawn().await;
    let gate = Gate::new();
    // The first TransIn hangs until released; any later call answers OK.
    p.script("TransIn", [GrpcReply::ok().blocked_by(&gate)]);

    let grpc_listen = format!("127.0.0.1:{}", free_port());
    let flags: Vec<&str> = FLAGS.iter().copied().chain(["--grpc-listen", &grpc_listen]).collect();
    let mut dtx = DtxProcess::start(&db, free_port(), &flags, &log).await;
    let saga = trans_saga(&p, "grpc-crash");
    dtm_client_at(grpc_listen.parse().expect("address")).await.submit(saga.request()).await.expect("Submit");
    p.wait_calls("TransIn", 1).await;
    dtx.kill();
    gate.release();

    let dtx = DtxProcess::start(&db, free_port(), &FLAGS, &log).await;
    let c = Client::new(dtx.base_url());
    let q = eventually(Duration::from_secs(15), "grpc-crash to succeed after the restart", || async {
        let q = c.query("grpc-crash").await;
        (status_of(&q) == "succeed").then_some(q)
    })
    .await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed"]);
    assert_eq!(p.calls_for("TransOut").len(), 1, "step 1 is not repeated: {:?}", p.methods());
    let ins = p.calls_for("TransIn");
    assert_eq!(ins.len(), 2, "step 2 again after the restart: {:?}", p.methods());
    for call in &ins {
        assert_eq!(
            (call.md("dtm-gid"), call.md("dtm-branch_id"), call.md("dtm-op")),
            ("grpc-crash", "02", "action")
        );
        assert_eq!(call.body, saga.payloads()[1]);
    }
    assert!(p.methods().iter().all(|m| !m.ends_with("Revert")), "no compensation: {:?}", p.methods());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_request_timeout_is_accepted_and_works() {
    // RequestTimeout is any non-negative int64; a deadline too long to write in grpc-timeout
    // (8 digits, at most 99999999 hours) is no deadline in practice.
    let s = TestServer::start().await;
    let g = GrpcParticipant::spawn().await;
    let h = Participant::spawn().await;
    let mut saga = GrpcSaga::new("grpc-huge-timeout")
        .step(g.url("TransOut"), g.url("TransOutRevert"), req_bytes(30))
        .step(h.url("/TransIn"), h.url("/TransInRevert"), HTTP_PAYLOAD.as_bytes().to_vec())
        .wait_result();
    saga.options.request_timeout = i64::MAX;
    dtm_client(&s).await.submit(saga.request()).await.expect("Submit");
    assert_eq!(s.status("grpc-huge-timeout").await, "succeed");
    assert_eq!(g.methods(), ["TransOut"]);
    assert_eq!(g.calls()[0].md("grpc-timeout"), "99999999H");
    assert_eq!(h.paths(), ["/TransIn"]);
}
