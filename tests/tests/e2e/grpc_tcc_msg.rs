//! TCC and 2-phase messages over gRPC: the client registers, submits and aborts over gRPC;
//! dtx calls confirm / cancel / actions / the check-back over gRPC.

use std::time::Duration;

use dtx_tests::grpc::dtmgimp::DtmTransOptions;
use dtx_tests::grpc::{
    GrpcMsg, GrpcParticipant, GrpcReply, GrpcTcc, ReqGrpc, dtm_client, odd_req_bytes, req_bytes,
};
use dtx_tests::{TestServer, advance_to_due, branch, branch_statuses, status_of};
use prost::Message;
use tonic::Code;

use crate::common::*;

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
