//! Sagas with gRPC participants (a real tonic server, `busi.Busi`) called by dtx with the
//! payload bytes as they were sent, `dtm-*` metadata and the result mapping of spec 3.1.

use std::time::{Duration, Instant};

use dtx_tests::grpc::{GrpcParticipant, GrpcReply, GrpcSaga, ReqGrpc, dtm_client, req_bytes};
use dtx_tests::{Gate, Participant, Reply, TestServer, advance_to_due, branch, branch_statuses, status_of};
use prost::Message;
use tonic::Code;

use crate::common::*;

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
