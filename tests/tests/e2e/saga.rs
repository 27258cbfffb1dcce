//! Sagas end to end: the in-process server, real participants on loopback (DTM's saga tests).

use std::time::Duration;

use dtx_tests::{Gate, Participant, Reply, Saga, TestServer, branch, branch_statuses, status_of, time_ms};
use serde_json::{Value, json};

const PAYLOAD: &str = r#"{"amount":30}"#;

/// The classic TransOut / TransIn saga.
fn trans_saga(p: &Participant, gid: &str) -> Saga {
    Saga::new(gid).step(p.url("/TransOut"), p.url("/TransOutRevert"), PAYLOAD).step(
        p.url("/TransIn"),
        p.url("/TransInRevert"),
        PAYLOAD,
    )
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_normal_succeeds_and_calls_participants_like_dtm() {
    saga_normal_succeeds_and_calls_participants_like_dtm_on(&TestServer::start().await).await;
}

/// [`saga_normal_succeeds_and_calls_participants_like_dtm`] on a given server (also run on MySQL / MariaDB: `mysql.rs`).
pub(crate) async fn saga_normal_succeeds_and_calls_participants_like_dtm_on(s: &TestServer) {
    let p = Participant::spawn().await;
    let (code, reply) = s.submit(&trans_saga(&p, "saga-normal").json()).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["dtm_result"], "SUCCESS");

    let q = s.wait_status("saga-normal", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed"]);
    assert!(q["transaction"].get("rollback_reason").is_none(), "{q}");
    assert!(q["transaction"].get("finish_time").is_some(), "{q}");
    // bin_data is the payload, base64.
    assert_eq!(branch(&q, "01", "action")["bin_data"], "eyJhbW91bnQiOjMwfQ==");
    assert_eq!(branch(&q, "01", "compensate")["url"], p.url("/TransOutRevert"));

    let calls = p.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/TransOut", "/TransIn"]);
    for (call, branch_id) in calls.iter().zip(["01", "02"]) {
        assert_eq!(call.method, "POST");
        assert_eq!(call.param("gid"), "saga-normal");
        assert_eq!(call.param("trans_type"), "saga");
        assert_eq!(call.param("branch_id"), branch_id);
        assert_eq!(call.param("op"), "action");
        assert_eq!(call.body, PAYLOAD.as_bytes(), "the payload bytes, unchanged");
        assert!(call.header("content-type").starts_with("application/json"), "{call:?}");
    }
    assert!(calls[0].ended() <= calls[1].start, "sequential: TransIn only after TransOut answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_rollback_compensates_in_reverse_order_including_the_failed_step() {
    saga_rollback_compensates_in_reverse_order_including_the_failed_step_on(&TestServer::start().await).await;
}

/// [`saga_rollback_compensates_in_reverse_order_including_the_failed_step`] on a given server (also run on MySQL / MariaDB: `mysql.rs`).
pub(crate) async fn saga_rollback_compensates_in_reverse_order_including_the_failed_step_on(s: &TestServer) {
    let p = Participant::spawn().await;
    p.script("/TransIn", [Reply::failure("Insufficient balance")]);
    let (code, _) = s.submit(&trans_saga(&p, "saga-rollback").json()).await;
    assert_eq!(code, 200);

    let q = s.wait_status("saga-rollback", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed", "succeed", "failed"]);
    let reason = q["transaction"]["rollback_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("Insufficient balance"), "rollback_reason: {reason}");
    assert!(q["transaction"].get("rollback_time").is_some(), "{q}");

    assert_eq!(p.paths(), ["/TransOut", "/TransIn", "/TransInRevert", "/TransOutRevert"]);
    let comp_in = &p.calls_for("/TransInRevert")[0];
    let comp_out = &p.calls_for("/TransOutRevert")[0];
    assert_eq!((comp_in.param("branch_id"), comp_in.param("op")), ("02", "compensate"));
    assert_eq!((comp_out.param("branch_id"), comp_out.param("op")), ("01", "compensate"));
    assert_eq!(comp_out.body, PAYLOAD.as_bytes());
    assert!(p.calls_for("/TransIn")[0].ended() <= comp_in.start);
    assert!(comp_in.ended() <= comp_out.start, "step 2 is compensated before step 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ongoing_is_polled_at_the_fixed_retry_interval() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransOut", [Reply::ongoing(), Reply::ongoing()]);
    s.submit(&trans_saga(&p, "saga-ongoing").json()).await;

    let base = s.engine().options().retry.retry_interval;
    for round in 1..=2 {
        let q = s.wait_idle("saga-ongoing").await;
        let t = &q["transaction"];
        assert_eq!(status_of(&q), "submitted", "round {round}: {q}");
        assert_eq!(branch_statuses(&q), ["prepared"; 4]);
        // Fixed, not doubled; jitter (±10 %) only moves next_cron_time.
        assert_eq!(t["next_cron_interval"], base.as_secs(), "round {round}: {q}");
        let due_in = time_ms(&t["next_cron_time"]) - s.now_ms();
        let base_ms = base.as_millis() as i64;
        assert!(
            (base_ms * 9 / 10..=base_ms * 11 / 10).contains(&due_in),
            "round {round}: due in {due_in} ms"
        );
        let out = branch(&q, "01", "action");
        assert_eq!(out["attempts"], round, "{q}");
        assert_eq!(out["last_error"], "ONGOING");
        assert_eq!(s.cron().await, 0, "not due yet");
        s.advance(base.mul_f64(1.15));
        assert_eq!(s.cron().await, 1);
    }
    let q = s.wait_status("saga-ongoing", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed"]);
    assert_eq!(p.calls_for("/TransOut").len(), 3);
    assert_eq!(p.calls_for("/TransIn").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_back_off_exponentially_and_are_visible_per_branch() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransIn", [Reply::error(), Reply::error(), Reply::error()]);
    s.submit(&trans_saga(&p, "saga-backoff").json()).await;

    let base = s.engine().options().retry.retry_interval.as_secs();
    for (attempt, factor) in [(1u64, 2u64), (2, 4), (3, 8)] {
        let q = s.wait_idle("saga-backoff").await;
        assert_eq!(status_of(&q), "submitted", "{q}");
        assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "prepared"]);
        let t = &q["transaction"];
        assert_eq!(t["next_cron_interval"], base * factor, "after error {attempt}: {q}");
        let due_in = time_ms(&t["next_cron_time"]) - s.now_ms();
        let expect = (base * factor * 1000) as i64;
        assert!(
            (expect * 9 / 10..=expect * 11 / 10).contains(&due_in),
            "due in {due_in} ms, expected ~{expect}"
        );
        let b = branch(&q, "02", "action");
        assert_eq!(b["attempts"], attempt, "{q}");
        let err = b["last_error"].as_str().unwrap_or_default();
        assert!(err.contains("500") && err.contains("participant exploded"), "last_error: {err}");

        assert_eq!(s.cron().await, 0, "not due before the backoff interval");
        s.advance(Duration::from_secs(base * factor).mul_f64(1.15));
        assert_eq!(s.cron().await, 1);
    }
    let q = s.wait_status("saga-backoff", "succeed").await;
    let b = branch(&q, "02", "action");
    assert_eq!(b["attempts"], 4);
    assert!(b.get("last_error").is_none(), "cleared on success: {q}");
    assert_eq!(p.calls_for("/TransOut").len(), 1, "a succeeded action is not called again");
    assert_eq!(p.calls_for("/TransIn").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_saga_respects_orders_and_overlaps_independent_steps() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A0", [Reply::ok().after(Duration::from_millis(200))]);
    p.script("/A2", [Reply::ok().blocked_by(&gate)]);
    let saga = Saga::new("saga-con")
        .step(p.url("/A0"), p.url("/C0"), r#"{"step":0}"#)
        .step(p.url("/A1"), p.url("/C1"), r#"{"step":1}"#)
        .step(p.url("/A2"), p.url("/C2"), r#"{"step":2}"#)
        .concurrent(json!({"1": [0]}));
    let custom: Value =
        serde_json::from_str(saga.json()["custom_data"].as_str().unwrap_or_default()).unwrap();
    assert_eq!(
        custom,
        json!({"orders": {"1": [0]}, "concurrent": true}),
        "a JSON string, as the Go SDK sends it"
    );
    s.submit(&saga.json()).await;

    // Step 1 completes while step 2 is still held in flight: they overlap.
    let a1 = p.wait_answered("/A1", 1).await;
    let a2 = p.calls_for("/A2");
    assert_eq!(a2.len(), 1);
    assert!(a2[0].end.is_none(), "step 2 is still in flight");
    let a0 = &p.calls_for("/A0")[0];
    assert!(a1[0].start >= a0.ended(), "step 1 starts only after step 0 succeeded");
    assert!(a2[0].start < a0.ended(), "step 2 ran concurrently with step 0");
    assert_eq!(s.status("saga-con").await, "submitted");

    gate.release();
    let q = s.wait_status("saga-con", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed", "prepared", "succeed"]);
    assert_eq!(q["transaction"]["custom_data"], saga.json()["custom_data"], "stored as sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rollback_order_never_starts_a_dependent_step() {
    // DTM's TestSagaConRollbackOrder.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/A0", [Reply::failure("no stock")]);
    let saga = Saga::new("saga-con-order")
        .step(p.url("/A0"), p.url("/C0"), PAYLOAD)
        .step(p.url("/A1"), p.url("/C1"), PAYLOAD)
        .concurrent(json!({"1": [0]}));
    s.submit(&saga.json()).await;
    let q = s.wait_status("saga-con-order", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "failed", "prepared", "prepared"]);
    assert_eq!(p.paths(), ["/A0", "/C0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_saga_second_step_failure_compensates_both() {
    // DTM's TestSagaConRollbackOrder2.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/A1", [Reply::failure("no stock")]);
    let saga = Saga::new("saga-con-order2")
        .step(p.url("/A0"), p.url("/C0"), PAYLOAD)
        .step(p.url("/A1"), p.url("/C1"), PAYLOAD)
        .concurrent(json!({"1": [0]}));
    s.submit(&saga.json()).await;
    let q = s.wait_status("saga-con-order2", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed", "succeed", "failed"]);
    assert_eq!(p.paths(), ["/A0", "/A1", "/C1", "/C0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pivot_runs_last_and_its_failure_rolls_everything_back() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/Pivot", [Reply::failure("card declined")]);
    // Step 0 cannot be rolled back (no compensation): it is the pivot and runs after 1 and 2.
    let saga = Saga::new("saga-pivot")
        .step(p.url("/Pivot"), "", r#"{"step":0}"#)
        .step(p.url("/A1"), p.url("/C1"), r#"{"step":1}"#)
        .step(p.url("/A2"), p.url("/C2"), r#"{"step":2}"#);
    s.submit(&saga.json()).await;

    let q = s.wait_status("saga-pivot", "failed").await;
    assert_eq!(p.paths(), ["/A1", "/A2", "/Pivot", "/C2", "/C1"]);
    let pivot = &p.calls_for("/Pivot")[0];
    assert!(pivot.start >= p.calls_for("/A1")[0].ended());
    assert!(pivot.start >= p.calls_for("/A2")[0].ended());
    assert_eq!(branch(&q, "01", "action")["status"], "failed");
    for id in ["02", "03"] {
        assert_eq!(branch(&q, id, "action")["status"], "succeed");
        assert_eq!(branch(&q, id, "compensate")["status"], "succeed");
    }
    let reason = q["transaction"]["rollback_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("card declined"), "{reason}");
    assert!(q["transaction"].get("forward_only").is_none(), "{q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pivot_waits_for_every_rollbackable_step() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A1", [Reply::ok().blocked_by(&gate)]);
    let saga = Saga::new("saga-con-pivot")
        .step(p.url("/Pivot"), "", PAYLOAD)
        .step(p.url("/A1"), p.url("/C1"), PAYLOAD)
        .step(p.url("/A2"), p.url("/C2"), PAYLOAD)
        .concurrent(json!({}));
    s.submit(&saga.json()).await;
    // A2 runs while A1 is held: the rollbackable steps run concurrently...
    p.wait_answered("/A2", 1).await;
    // A1 started at the same time, but its request may reach the participant after A2's.
    assert!(p.wait_calls("/A1", 1).await[0].end.is_none());
    gate.release();

    let q = s.wait_status("saga-con-pivot", "succeed").await;
    let (a1, a2) = (&p.calls_for("/A1")[0], &p.calls_for("/A2")[0]);
    let pivot = &p.calls_for("/Pivot")[0];
    // ...and the pivot waited for all of them.
    assert!(pivot.start >= a1.ended() && pivot.start >= a2.ended(), "the pivot runs alone, last");
    assert_eq!(q["transaction"]["forward_only"], true, "past the pivot: {q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_pivot_failure_is_retried_never_rolled_back() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/Ship", [Reply::failure("carrier down"), Reply::failure("carrier down")]);
    // A0 rollbackable, then the pivot /Charge, then /Ship (also no compensation).
    // timeout_to_fail no longer applies once past the point of no return.
    let saga = Saga::new("saga-forward")
        .step(p.url("/A0"), p.url("/C0"), PAYLOAD)
        .step(p.url("/Charge"), "", PAYLOAD)
        .step(p.url("/Ship"), "", PAYLOAD)
        .option("timeout_to_fail", json!(15));
    s.submit(&saga.json()).await;

    let base = s.engine().options().retry.retry_interval.as_secs();
    for (round, factor) in [(1u64, 2u64), (2, 4)] {
        let q = s.wait_idle("saga-forward").await;
        let t = &q["transaction"];
        assert_eq!(status_of(&q), "submitted", "round {round}: {q}");
        assert_eq!(t["forward_only"], true, "{q}");
        assert!(t.get("rollback_reason").is_none(), "{q}");
        assert_eq!(t["next_cron_interval"], base * factor, "FAILURE past the pivot backs off like an error");
        let ship = branch(&q, "03", "action");
        assert_eq!(ship["status"], "prepared");
        assert_eq!(ship["attempts"], round);
        assert!(ship["last_error"].as_str().unwrap_or_default().contains("carrier down"), "{q}");
        s.advance(Duration::from_secs(base * factor).mul_f64(1.15));
        assert_eq!(s.cron().await, 1);
    }
    let q = s.wait_status("saga-forward", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed", "prepared", "succeed"]);
    assert_eq!(p.paths(), ["/A0", "/Charge", "/Ship", "/Ship", "/Ship"]);
    assert!(p.calls().iter().all(|c| c.param("op") == "action"), "no compensation ever ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_urls_count_as_success() {
    // DTM's TestSagaEmptyUrl.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let saga = Saga::new("saga-empty").step(p.url("/A0"), p.url("/C0"), PAYLOAD).step("", "", PAYLOAD).step(
        "",
        p.url("/C2"),
        PAYLOAD,
    );
    let (code, _) = s.submit(&saga.json()).await;
    assert_eq!(code, 200);
    let q = s.wait_status("saga-empty", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed", "prepared", "succeed"]);
    assert_eq!(p.paths(), ["/A0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_compensations_count_as_success_in_a_rollback() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/A2", [Reply::failure("nope")]);
    let saga = Saga::new("saga-empty-rollback")
        .step(p.url("/A0"), p.url("/C0"), PAYLOAD)
        .step("", "", PAYLOAD)
        .step(p.url("/A2"), p.url("/C2"), PAYLOAD);
    s.submit(&saga.json()).await;
    let q = s.wait_status("saga-empty-rollback", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed", "succeed", "succeed", "succeed", "failed"]);
    assert_eq!(p.paths(), ["/A0", "/A2", "/C2", "/C0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_steps_data_payloads_work() {
    // The old Python SDK: payloads in steps[].data, no `payloads` key.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let body = json!({
        "gid": "saga-legacy",
        "trans_type": "saga",
        "steps": [
            {"data": "{\"amount\": 30}", "action": p.url("/TransOut"), "compensate": p.url("/TransOutRevert")},
            {"data": "{\"amount\": 31}", "action": p.url("/TransIn"), "compensate": p.url("/TransInRevert")},
        ],
    });
    let (code, reply) = s.submit(&body).await;
    assert_eq!(code, 200, "{reply}");
    s.wait_status("saga-legacy", "succeed").await;
    let calls = p.calls();
    assert_eq!(calls[0].body, br#"{"amount": 30}"#);
    assert_eq!(calls[1].body, br#"{"amount": 31}"#);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_bodies_with_nulls_work() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let steps = json!([
        {"action": p.url("/TransOut"), "compensate": p.url("/TransOutRevert")},
        {"action": p.url("/TransIn"), "compensate": p.url("/TransInRevert")},
    ]);
    // dtmcli-py's TransBase, serialised as is; and the variant with null headers.
    let bodies = [
        json!({"gid": "py-1", "trans_type": "saga", "custom_data": null, "steps": steps,
               "payloads": [PAYLOAD, PAYLOAD], "query_prepared": null, "protocol": null,
               "wait_result": false, "timeout_to_fail": 0, "request_timeout": 8, "retry_interval": 0,
               "passthrough_headers": [], "branch_headers": {}, "concurrent": false}),
        json!({"gid": "py-2", "trans_type": "saga", "custom_data": null, "protocol": null,
               "passthrough_headers": null, "steps": steps, "payloads": [PAYLOAD, PAYLOAD]}),
    ];
    for body in bodies {
        let gid = body["gid"].as_str().unwrap_or_default().to_owned();
        let (code, reply) = s.submit(&body).await;
        assert_eq!(code, 200, "{gid}: {reply}");
        let q = s.wait_status(&gid, "succeed").await;
        assert_eq!(q["transaction"]["protocol"], "http", "{q}");
    }
    assert_eq!(p.calls().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmit_reprocesses_a_submitted_saga_and_refuses_a_finished_one() {
    // DTM's TestSagaAbnormal.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransOut", [Reply::ongoing()]);
    let body = trans_saga(&p, "saga-again").json();
    s.submit(&body).await;
    let q = s.wait_idle("saga-again").await;
    assert_eq!(status_of(&q), "submitted");

    // Same gid while submitted: accepted, processed again from the stored branches.
    let (code, reply) = s.submit(&body).await;
    assert_eq!(code, 200, "{reply}");
    let q = s.wait_status("saga-again", "succeed").await;
    assert_eq!(q["branches"].as_array().map(Vec::len), Some(4), "no duplicated rows: {q}");
    assert_eq!(branch(&q, "01", "action")["attempts"], 2);
    assert_eq!(p.paths(), ["/TransOut", "/TransOut", "/TransIn"]);

    // After succeed: refused with FAILURE, nothing runs.
    let (code, reply) = s.submit(&body).await;
    assert_eq!(code, 409, "{reply}");
    assert_eq!(reply["dtm_result"], "FAILURE");
    assert!(reply["message"].as_str().unwrap_or_default().contains("succeed"), "{reply}");
    assert_eq!(p.calls().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmit_of_a_failed_saga_is_refused() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransIn", [Reply::failure("no")]);
    let body = trans_saga(&p, "saga-failed-again").json();
    s.submit(&body).await;
    s.wait_status("saga-failed-again", "failed").await;
    let (code, reply) = s.submit(&body).await;
    assert_eq!(code, 409, "{reply}");
    assert!(reply["message"].as_str().unwrap_or_default().contains("failed"), "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_failure_and_ongoing_bodies_are_honoured() {
    // Old participants answer 200 with the result in the body.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransOut", [Reply::status(200, r#"{"dtm_result":"ONGOING"}"#)]);
    p.script("/TransIn", [Reply::status(200, r#"{"dtm_result":"FAILURE"}"#)]);
    s.submit(&trans_saga(&p, "saga-legacy-results").json()).await;
    let q = s.wait_idle("saga-legacy-results").await;
    assert_eq!(status_of(&q), "submitted");
    assert_eq!(branch(&q, "01", "action")["last_error"], "ONGOING");
    s.advance(secs(12.0));
    assert_eq!(s.cron().await, 1);
    let q = s.wait_status("saga-legacy-results", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed", "succeed", "failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_lists_are_in_dtm_row_order() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    s.submit(&trans_saga(&p, "saga-rows").wait_result().json()).await;
    let q = s.query("saga-rows").await;
    let rows: Vec<(Value, Value)> = q["branches"]
        .as_array()
        .map(|bs| bs.iter().map(|b| (b["branch_id"].clone(), b["op"].clone())).collect())
        .unwrap_or_default();
    assert_eq!(
        rows,
        [
            (json!("01"), json!("compensate")),
            (json!("01"), json!("action")),
            (json!("02"), json!("compensate")),
            (json!("02"), json!("action")),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_that_is_down_is_retried_until_it_is_back() {
    let s = TestServer::start().await;
    let port = dtx_tests::free_port();
    let down = format!("http://127.0.0.1:{port}");
    let saga = Saga::new("saga-down")
        .step(format!("{down}/TransOut"), format!("{down}/TransOutRevert"), PAYLOAD)
        .step(format!("{down}/TransIn"), format!("{down}/TransInRevert"), PAYLOAD);
    s.submit(&saga.json()).await;
    let q = s.wait_idle("saga-down").await;
    assert_eq!(status_of(&q), "submitted");
    let err = branch(&q, "01", "action")["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(err.contains("connect"), "a refused connection is an error: {err}");
    assert_eq!(q["transaction"]["next_cron_interval"], 20, "and backs off");

    let p = Participant::spawn_on(port).await;
    s.advance(secs(25.0));
    assert_eq!(s.cron().await, 1);
    s.wait_status("saga-down", "succeed").await;
    assert_eq!(p.paths(), ["/TransOut", "/TransIn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_submits_during_a_round_never_call_a_participant_twice() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/TransOut", [Reply::ok().blocked_by(&gate)]);
    let body = trans_saga(&p, "saga-dup").json();
    assert_eq!(s.submit(&body).await.0, 200);
    p.wait_calls("/TransOut", 1).await;

    let dups = (0..5).map(|_| s.submit(&body));
    for (code, reply) in futures::future::join_all(dups).await {
        assert_eq!(code, 200, "a submitted saga may be submitted again: {reply}");
    }
    gate.release();
    s.wait_status("saga-dup", "succeed").await;
    assert_eq!(p.paths(), ["/TransOut", "/TransIn"], "the round in flight kept the saga to itself");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_sagas_at_once_all_finish() {
    let s = std::sync::Arc::new(TestServer::start().await);
    let p = Participant::spawn().await;
    p.script("/TransIn", vec![Reply::failure("no"); 10]);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (s, p) = (s.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            let gid = format!("many-{i:02}");
            let (code, reply) = s.submit(&trans_saga(&p, &gid).wait_result().json()).await;
            (gid, code, reply)
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (gid, code, reply) = t.await.unwrap();
        let status = s.status(&gid).await;
        match code {
            200 => {
                assert_eq!(status, "succeed", "{gid}");
                ok += 1;
            }
            409 => {
                assert_eq!(status, "failed", "{gid}: {reply}");
                failed += 1;
            }
            _ => panic!("{gid}: {code} {reply}"),
        }
    }
    assert_eq!((ok, failed), (30, 10));
    assert_eq!(p.calls_for("/TransOut").len(), 40);
    assert_eq!(p.calls_for("/TransOutRevert").len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_keep_their_query_and_payloads_keep_their_bytes() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let payload = r#"{"name":"Zoë ✓","note":"a\nb","n":1.50}"#;
    let saga = Saga::new("saga-bytes").step(format!("{}?tenant=7", p.url("/A")), p.url("/C"), payload);
    s.submit(&saga.wait_result().json()).await;
    let call = &p.calls_for("/A")[0];
    assert_eq!(call.body, payload.as_bytes());
    assert_eq!(call.param("tenant"), "7", "the URL's own query is kept");
    assert_eq!(call.param("gid"), "saga-bytes");
    assert_eq!(call.param("op"), "action");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_saga_waits_for_an_uncertain_pivot() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/Pivot", [Reply::error()]);
    let saga = Saga::new("saga-pivot-uncertain")
        .step(p.url("/A0"), p.url("/C0"), PAYLOAD)
        .step(p.url("/Pivot"), "", PAYLOAD)
        .option("timeout_to_fail", json!(5));
    s.submit(&saga.json()).await;
    let q = s.wait_idle("saga-pivot-uncertain").await;
    assert_eq!(status_of(&q), "submitted");

    // Timed out, but the pivot may have taken effect: it is retried, not rolled back around.
    s.advance(secs(30.0));
    assert_eq!(s.cron().await, 1);
    let q = s.wait_status("saga-pivot-uncertain", "succeed").await;
    assert_eq!(q["transaction"]["forward_only"], true);
    assert_eq!(p.paths(), ["/A0", "/Pivot", "/Pivot"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncertain_pivot_that_finally_fails_rolls_back() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/Pivot", [Reply::error(), Reply::failure("declined")]);
    let saga = Saga::new("saga-pivot-fails-later")
        .step(p.url("/A0"), p.url("/C0"), PAYLOAD)
        .step(p.url("/Pivot"), "", PAYLOAD)
        .option("timeout_to_fail", json!(5));
    s.submit(&saga.json()).await;
    s.wait_idle("saga-pivot-fails-later").await;
    s.advance(secs(30.0));
    assert_eq!(s.cron().await, 1);
    let q = s.wait_status("saga-pivot-fails-later", "failed").await;
    assert_eq!(p.paths(), ["/A0", "/Pivot", "/Pivot", "/C0"]);
    let reason = q["transaction"]["rollback_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("declined"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rollback_waits_for_the_action_in_flight_before_compensating_it() {
    // DTM's TestSagaConRollbackNormal, with the second action held in flight.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A0", [Reply::failure("no stock")]);
    p.script("/A1", [Reply::ok().blocked_by(&gate)]);
    let saga = Saga::new("saga-con-inflight")
        .step(p.url("/A0"), p.url("/C0"), PAYLOAD)
        .step(p.url("/A1"), p.url("/C1"), PAYLOAD)
        .concurrent(json!({}));
    s.submit(&saga.json()).await;
    p.wait_calls("/A1", 1).await;
    p.wait_answered("/A0", 1).await;
    gate.release();
    let q = s.wait_status("saga-con-inflight", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "failed", "succeed", "succeed"]);
    let a1 = &p.calls_for("/A1")[0];
    let c1 = &p.calls_for("/C1")[0];
    assert!(c1.start >= a1.ended(), "no compensation before its action answered");
    assert_eq!(p.calls_for("/C0").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_first_submits_of_one_gid_create_it_once() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let body = trans_saga(&p, "saga-race").json();
    let replies = futures::future::join_all((0..6).map(|_| s.submit(&body))).await;
    for (code, reply) in &replies {
        // Accepted, or refused because the first one already finished.
        assert!(*code == 200 || *code == 409, "{code}: {reply}");
    }
    assert!(replies.iter().any(|(code, _)| *code == 200));
    let q = s.wait_status("saga-race", "succeed").await;
    assert_eq!(q["branches"].as_array().map(Vec::len), Some(4));
    assert_eq!(p.paths(), ["/TransOut", "/TransIn"], "each action ran once");
}
