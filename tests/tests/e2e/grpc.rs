//! gRPC end to end: the `dtmgimp.Dtm` front door (NewGid, health, reflection, topics, bad
//! input, the real binary) driven by the generated client as DTM's gRPC SDK drives it.

use std::time::Duration;

use dtx_tests::grpc::dtmgimp::{DtmBranchRequest, DtmRequest, DtmTopicRequest, DtmTransOptions};
use dtx_tests::grpc::{
    GrpcMsg, GrpcParticipant, GrpcReply, GrpcSaga, GrpcTcc, dtm_client, dtm_client_at, req_bytes,
};
use dtx_tests::{
    Client, DtxProcess, Gate, Participant, TestServer, advance_to_due, branch, branch_statuses, eventually,
    free_port, status_of,
};
use prost::Message;
use tonic::Code;

use crate::common::*;

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
async fn workflow_over_grpc_records_steps_finishes_and_calls_its_grpc_callback() {
    // What the gRPC workflow SDK does: PrepareWorkflow, RegisterBranch (status and op in Data,
    // the step's result as BusiPayload), Submit with ReqExtra; dtx calls the callback
    // (`.../Execute`) with a WorkflowData message while the workflow stays prepared.
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let mut dtm = dtm_client(&s).await;
    let custom = r#"{"name":"wf-grpc","data":"aW5wdXQ="}"#; // input = b"input"
    let prepare = |gid: &str| DtmRequest {
        gid: gid.into(),
        trans_type: "workflow".into(),
        customed_data: custom.into(),
        query_prepared: p.url("Execute"),
        ..DtmRequest::default()
    };
    let reply = dtm.prepare_workflow(prepare("grpc-wf")).await.expect("PrepareWorkflow").into_inner();
    let t = reply.transaction.expect("transaction");
    assert_eq!((t.gid.as_str(), t.status.as_str()), ("grpc-wf", "prepared"));
    assert!(reply.progresses.is_empty());
    let step = DtmBranchRequest {
        gid: "grpc-wf".into(),
        trans_type: "workflow".into(),
        branch_id: "01".into(),
        op: String::new(),
        data: [("status".to_owned(), "succeed".to_owned()), ("op".to_owned(), "action".to_owned())].into(),
        busi_payload: b"step-1".to_vec(),
    };
    dtm.register_branch(step).await.expect("RegisterBranch");
    let reply = dtm.prepare_workflow(prepare("grpc-wf")).await.expect("again").into_inner();
    assert_eq!(reply.progresses.len(), 1);
    let pr = &reply.progresses[0];
    assert_eq!((pr.branch_id.as_str(), pr.op.as_str(), pr.status.as_str()), ("01", "action", "succeed"));
    assert_eq!(pr.bin_data, b"step-1");

    // Not finished yet: once due, dtx calls the callback with WorkflowData{Data = input}.
    advance_to_due(&s, "grpc-wf").await;
    s.cron().await;
    let call = p.wait_calls("Execute", 1).await.remove(0);
    assert_eq!(call.body, [&[0x0a, 5][..], b"input"].concat(), "WorkflowData {{ Data: input }}");
    assert_eq!(call.md("dtm-op"), "wf-grpc");
    assert_eq!(call.md("dtm-gid"), "grpc-wf");
    assert_eq!(call.md("dtm-branch_id"), "00");
    assert_eq!(call.md("dtm-trans_type"), "workflow");

    let submit = DtmRequest {
        gid: "grpc-wf".into(),
        trans_type: "workflow".into(),
        req_extra: [
            ("status".to_owned(), "failed".to_owned()),
            ("rollback_reason".to_owned(), "step 02 refused".to_owned()),
        ]
        .into(),
        ..DtmRequest::default()
    };
    dtm.submit(submit).await.expect("Submit");
    let t = dtm
        .prepare_workflow(prepare("grpc-wf"))
        .await
        .expect("finished")
        .into_inner()
        .transaction
        .expect("t");
    assert_eq!((t.status.as_str(), t.rollback_reason.as_str()), ("failed", "step 02 refused"));
    // A workflow cannot be aborted, nor registered into once finished.
    let abort = DtmRequest { gid: "grpc-wf".into(), trans_type: "workflow".into(), ..DtmRequest::default() };
    assert_eq!(dtm.abort(abort).await.unwrap_err().code(), Code::Aborted);
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
        (
            "workflow submit without req_extra.status",
            DtmRequest { trans_type: "workflow".into(), ..good("grpc-bad-workflow") },
        ),
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

/// Regression (issue 8, defect 4): the gid rule lived only in the HTTP front door, so over gRPC
/// a gid with a space, a NUL (PostgreSQL then failed with 500) or of 129 bytes was stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_gids_are_invalid_argument_over_grpc_and_nothing_is_stored() {
    let s = TestServer::start().await;
    let p = GrpcParticipant::spawn().await;
    let mut dtm = dtm_client(&s).await;
    let long = "g".repeat(129);
    for (what, gid) in [("a space", "grpc bad gid"), ("a NUL", "grpc\0gid"), ("129 bytes", long.as_str())] {
        let req = DtmRequest { gid: gid.to_owned(), ..trans_saga(&p, "placeholder").request() };
        for op in ["Submit", "Prepare", "Abort"] {
            let answer = match op {
                "Submit" => dtm.submit(req.clone()).await,
                "Prepare" => dtm.prepare(DtmRequest { trans_type: "tcc".into(), ..req.clone() }).await,
                _ => dtm.abort(req.clone()).await,
            };
            let e = answer.expect_err(what);
            assert_eq!(e.code(), Code::InvalidArgument, "{op} with {what}: {e:?}");
            assert!(e.message().contains("gid"), "{op} with {what}: the message names the gid: {e:?}");
        }
        let e = dtm
            .register_branch(DtmBranchRequest {
                gid: gid.to_owned(),
                trans_type: "tcc".into(),
                branch_id: "01".into(),
                op: "try".into(),
                data: Default::default(),
                busi_payload: req_bytes(1),
            })
            .await
            .expect_err(what);
        assert_eq!(e.code(), Code::InvalidArgument, "RegisterBranch with {what}: {e:?}");
    }
    let stored = s.engine().list(&dtx_store::ListFilter { limit: 100, ..Default::default() }).await;
    assert_eq!(stored.expect("list").len(), 0, "nothing stored");
    assert!(p.calls().is_empty());
}

// ---------------------------------------------------------------------------------------------
// The real binary.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dtx_binary_serves_grpc_on_the_chosen_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dtx.log");
    let db = dtx_tests::sqlite_url(dir.path());
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
    let db = dtx_tests::sqlite_url(dir.path());
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
    // Step 1's success was to be written with the saga's end (ADR 21), so it runs again.
    assert_eq!(p.calls_for("TransOut").len(), 2, "step 1 again after the restart: {:?}", p.methods());
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
    // (8 digits, at most 99999999 hours) is no deadline in practice. The server's maximum
    // (--max-request-timeout) refuses it by default; raised, it is accepted.
    let s = TestServer::spawn(|c| c.engine.limits.request_timeout = std::time::Duration::MAX).await;
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
