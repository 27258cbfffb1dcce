//! 2-phase messages end to end: prepare / submit as DTM's SDK sends them, the check-back of a
//! message never submitted, delays, retries (DTM's msg tests).

use std::time::Duration;

use dtx_tests::{
    Client, Gate, Msg, Participant, Reply, TestServer, advance_to_due, branch, branch_statuses, status_of,
    time_ms,
};
use serde_json::json;

const PAYLOAD_OUT: &str = r#"{"amount":30,"who":"out"}"#;
const PAYLOAD_IN: &str = r#"{"amount":30,"who":"in"}"#;

/// The classic TransOut / TransIn message, checked back at `/QueryPrepared`.
fn trans_msg(p: &Participant, gid: &str) -> Msg {
    Msg::new(gid, p.url("/QueryPrepared"))
        .step(p.url("/TransOut"), PAYLOAD_OUT)
        .step(p.url("/TransIn"), PAYLOAD_IN)
}

fn action_calls(p: &Participant) -> Vec<String> {
    p.calls().into_iter().filter(|c| c.param("op") == "action").map(|c| c.path).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_then_submit_runs_the_actions_in_order() {
    prepare_then_submit_runs_the_actions_in_order_on(&TestServer::start().await).await;
}

/// [`prepare_then_submit_runs_the_actions_in_order`] on a given server (also run on MySQL / MariaDB: `mysql.rs`).
pub(crate) async fn prepare_then_submit_runs_the_actions_in_order_on(s: &TestServer) {
    let c = Client::of(s);
    let p = Participant::spawn().await;
    let msg = trans_msg(&p, "msg-normal");
    let (code, reply) = c.prepare(&msg.json()).await;
    assert_eq!(code, 200, "{reply}");
    let q = s.query("msg-normal").await;
    assert_eq!(status_of(&q), "prepared");
    assert_eq!(branch_statuses(&q), ["prepared", "prepared"]);
    assert_eq!(q["transaction"]["query_prepared"], p.url("/QueryPrepared"));
    assert!(p.calls().is_empty(), "nothing is called while prepared");

    let (code, reply) = c.submit(&msg.json()).await;
    assert_eq!(code, 200, "{reply}");
    let q = s.wait_status("msg-normal", "succeed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed"]);
    assert_eq!(branch(&q, "01", "action")["url"], p.url("/TransOut"));
    assert_eq!(branch(&q, "02", "action")["attempts"], 1);

    let calls = p.calls();
    let paths: Vec<&str> = calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/TransOut", "/TransIn"], "no check-back for a submitted message");
    for (call, (branch_id, payload)) in calls.iter().zip([("01", PAYLOAD_OUT), ("02", PAYLOAD_IN)]) {
        assert_eq!(call.method, "POST");
        assert_eq!(call.param("gid"), "msg-normal");
        assert_eq!(call.param("trans_type"), "msg");
        assert_eq!(call.param("branch_id"), branch_id);
        assert_eq!(call.param("op"), "action");
        assert_eq!(call.body, payload.as_bytes());
    }
    assert!(calls[0].ended() <= calls[1].start, "sequential by default");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_without_prepare_runs_the_actions() {
    submit_without_prepare_runs_the_actions_on(&TestServer::start().await).await;
}

/// [`submit_without_prepare_runs_the_actions`] on a given server (also run on MySQL / MariaDB: `mysql.rs`).
pub(crate) async fn submit_without_prepare_runs_the_actions_on(s: &TestServer) {
    let c = Client::of(s);
    let p = Participant::spawn().await;
    let (code, reply) = c.submit(&trans_msg(&p, "msg-direct").json()).await;
    assert_eq!(code, 200, "{reply}");
    let q = s.wait_status("msg-direct", "succeed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed"]);
    assert_eq!(action_calls(&p), ["/TransOut", "/TransIn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_actions_overlap() {
    // DTM's TestMsgConcurrent.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/TransOut", [Reply::ok().blocked_by(&gate)]);
    let msg = trans_msg(&p, "msg-concurrent").option("concurrent", json!(true));
    c.prepare(&msg.json()).await;
    assert_eq!(c.submit(&msg.json()).await.0, 200);

    // TransIn is called and answered while TransOut is held (both calls start at once; either
    // request may reach the participant first).
    p.wait_answered("/TransIn", 1).await;
    let out = p.wait_calls("/TransOut", 1).await;
    assert_eq!(out.len(), 1);
    assert!(out[0].end.is_none(), "TransOut is still in flight");
    gate.release();
    let q = s.wait_status("msg-concurrent", "succeed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed"]);
    let out = &p.calls_for("/TransOut")[0];
    let inn = &p.calls_for("/TransIn")[0];
    // Sequentially, TransIn (step 2) would start only after TransOut (step 1) answered.
    assert!(inn.start < out.ended(), "the calls overlap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_step_two_only_after_step_one_succeeded() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    p.script("/TransOut", [Reply::error()]);
    assert_eq!(c.submit(&trans_msg(&p, "msg-seq").json()).await.0, 200);
    let q = s.wait_idle("msg-seq").await;
    assert_eq!(status_of(&q), "submitted");
    assert_eq!(branch_statuses(&q), ["prepared", "prepared"]);
    assert!(p.calls_for("/TransIn").is_empty(), "step 2 waits for step 1");
    let b = branch(&q, "01", "action");
    assert_eq!(b["attempts"], 1);
    assert!(b["last_error"].as_str().unwrap_or_default().contains("500"), "{q}");
    assert_eq!(branch(&q, "02", "action")["attempts"], 0);

    advance_to_due(&s, "msg-seq").await;
    assert_eq!(s.cron().await, 1);
    s.wait_status("msg-seq", "succeed").await;
    let outs = p.calls_for("/TransOut");
    let ins = p.calls_for("/TransIn");
    assert_eq!((outs.len(), ins.len()), (2, 1));
    assert!(ins[0].start >= outs[1].ended(), "step 2 after step 1's success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_submitted_is_checked_back_after_the_default_timeout_and_committed() {
    // DTM's TestMsgOptionsTimeout.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    assert_eq!(c.prepare(&trans_msg(&p, "msg-checkback").json()).await.0, 200);
    let q = s.query("msg-checkback").await;
    let t = &q["transaction"];
    assert_eq!(time_ms(&t["next_cron_time"]), time_ms(&t["create_time"]) + 35_000, "{q}");

    s.advance(Duration::from_secs(30));
    assert_eq!(s.cron().await, 0, "not checked back before the 35 s timeout");
    assert!(p.calls().is_empty());
    s.advance(Duration::from_secs(6));
    assert_eq!(s.cron().await, 1);
    let q = s.wait_status("msg-checkback", "succeed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed"]);
    assert_eq!(p.paths(), ["/QueryPrepared", "/TransOut", "/TransIn"]);
    let check = &p.calls_for("/QueryPrepared")[0];
    assert_eq!(check.method, "GET");
    assert!(check.body.is_empty());
    assert_eq!(check.param("gid"), "msg-checkback");
    assert_eq!(check.param("trans_type"), "msg");
    assert_eq!(check.param("branch_id"), "00");
    assert_eq!(check.param("op"), "msg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_submitted_is_checked_back_after_its_own_timeout() {
    // DTM's TestMsgOptionsTimeoutCustom.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let msg = trans_msg(&p, "msg-checkback-custom").option("timeout_to_fail", json!(120));
    assert_eq!(c.prepare(&msg.json()).await.0, 200);
    s.advance(Duration::from_secs(60));
    assert_eq!(s.cron().await, 0, "still within its 120 s");
    s.advance(Duration::from_secs(61));
    assert_eq!(s.cron().await, 1);
    s.wait_status("msg-checkback-custom", "succeed").await;
    assert_eq!(p.paths(), ["/QueryPrepared", "/TransOut", "/TransIn"]);
}

/// A never-submitted message whose check-back answers `reply` ends `failed` without calling
/// its actions.
async fn check_back_fails(gid: &str, reply: Reply) {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    p.script("/QueryPrepared", [reply]);
    assert_eq!(c.prepare(&trans_msg(&p, gid).json()).await.0, 200);
    s.advance(Duration::from_secs(36));
    assert_eq!(s.cron().await, 1);
    let q = s.wait_status(gid, "failed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "prepared"], "the actions never ran");
    assert!(q["transaction"].get("rollback_reason").is_some(), "{q}");
    assert_eq!(p.paths(), ["/QueryPrepared"]);
    // Final: the cron never comes back to it, the client cannot submit it any more.
    s.advance(Duration::from_secs(3600));
    assert_eq!(s.cron().await, 0);
    let (code, reply) = c.submit(&trans_msg(&p, gid).json()).await;
    assert_eq!(code, 409, "{reply}");
    assert_eq!(p.paths(), ["/QueryPrepared"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_back_failure_fails_the_message() {
    // DTM's TestMsgTimeoutFailed / TestMsgOptionsTimeoutFailed.
    check_back_fails("msg-checkback-409", Reply::failure("the order was rolled back")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_check_back_failure_body_fails_the_message() {
    // An old participant: 200 with {"dtm_result":"FAILURE"} (DTM's TestTccOld* rule).
    check_back_fails("msg-checkback-legacy", Reply::status(200, r#"{"dtm_result":"FAILURE"}"#)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclear_check_back_answers_keep_the_message_prepared_until_a_clear_one() {
    // DTM's TestMsgTimeoutSuccess, with every kind of unclear answer: an error, a call slower
    // than request_timeout, ONGOING. Only the final 200 commits.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    p.script("/QueryPrepared", [Reply::error(), Reply::ok().after(Duration::from_secs(3)), Reply::ongoing()]);
    let msg = trans_msg(&p, "msg-unclear").option("request_timeout", json!(1));
    assert_eq!(c.prepare(&msg.json()).await.0, 200);
    s.advance(Duration::from_secs(36));

    let base = s.engine().options().retry.retry_interval.as_secs();
    // (check-back, what it answers, the interval after it: errors back off, ONGOING does not)
    for (n, answer, interval) in [(1, "500", 2 * base), (2, "timeout", 4 * base), (3, "425", base)] {
        let started = std::time::Instant::now();
        assert_eq!(s.cron().await, 1, "check-back {n}");
        if answer == "timeout" {
            let took = started.elapsed();
            assert!(took < Duration::from_millis(2500), "cut at request_timeout (1 s), took {took:?}");
        }
        let q = s.wait_idle("msg-unclear").await;
        assert_eq!(status_of(&q), "prepared", "after check-back {n} ({answer}): {q}");
        assert_eq!(q["transaction"]["next_cron_interval"], interval, "after check-back {n} ({answer}): {q}");
        assert_eq!(branch_statuses(&q), ["prepared", "prepared"]);
        assert_eq!(p.calls_for("/QueryPrepared").len(), n);
        assert!(action_calls(&p).is_empty(), "no action before a clear commit");
        assert_eq!(s.cron().await, 0, "asked again only later");
        advance_to_due(&s, "msg-unclear").await;
    }
    assert_eq!(s.cron().await, 1, "check-back 4");
    let q = s.wait_status("msg-unclear", "succeed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed"]);
    assert_eq!(p.calls_for("/QueryPrepared").len(), 4);
    assert_eq!(action_calls(&p), ["/TransOut", "/TransIn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn action_failure_is_retried_never_rolled_back() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    p.script("/TransIn", [Reply::failure("not yet"), Reply::failure("still not")]);
    assert_eq!(c.submit(&trans_msg(&p, "msg-action-409").json()).await.0, 200);
    for attempt in 1..=2 {
        let q = s.wait_idle("msg-action-409").await;
        assert_eq!(status_of(&q), "submitted", "a msg never rolls back: {q}");
        assert_eq!(branch_statuses(&q), ["succeed", "prepared"]);
        let b = branch(&q, "02", "action");
        assert_eq!(b["attempts"], attempt);
        assert!(b["last_error"].as_str().unwrap_or_default().contains("409"), "{q}");
        advance_to_due(&s, "msg-action-409").await;
        assert_eq!(s.cron().await, 1);
    }
    let q = s.wait_status("msg-action-409", "succeed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed"]);
    assert_eq!(p.calls_for("/TransOut").len(), 1);
    assert_eq!(p.calls_for("/TransIn").len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_submit_runs_only_after_the_delay() {
    // DTM's TestMsgDelayNormal.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let (code, reply) = c.submit(&trans_msg(&p, "msg-delay").delay(10).json()).await;
    assert_eq!(code, 200, "{reply}");
    let q = s.query("msg-delay").await;
    assert_eq!(status_of(&q), "submitted");
    assert_eq!(branch_statuses(&q), ["prepared", "prepared"]);
    assert!(q["transaction"].get("owner").is_none(), "no round runs now: {q}");
    assert_eq!(s.cron().await, 0);
    s.advance(Duration::from_secs(5));
    assert_eq!(s.cron().await, 0, "5 s into a 10 s delay");
    assert!(p.calls().is_empty());
    s.advance(Duration::from_secs(6));
    assert_eq!(s.cron().await, 1);
    let q = s.wait_status("msg-delay", "succeed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed"]);
    assert_eq!(p.paths(), ["/TransOut", "/TransIn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delay_sent_with_the_submit_of_a_prepared_message() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let msg = trans_msg(&p, "msg-prepared-delay");
    assert_eq!(c.prepare(&msg.json()).await.0, 200);
    let (code, reply) = c.submit(&msg.clone().delay(10).json()).await;
    assert_eq!(code, 200, "{reply}");
    let q = s.query("msg-prepared-delay").await;
    assert_eq!(status_of(&q), "submitted");
    assert!(q["transaction"].get("owner").is_none(), "{q}");
    s.advance(Duration::from_secs(5));
    assert_eq!(s.cron().await, 0, "5 s into a 10 s delay");
    assert!(p.calls().is_empty());
    s.advance(Duration::from_secs(6));
    assert_eq!(s.cron().await, 1);
    s.wait_status("msg-prepared-delay", "succeed").await;
    assert_eq!(p.paths(), ["/TransOut", "/TransIn"], "no check-back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_of_a_prepared_message_fails_it_at_once() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    assert_eq!(c.prepare(&trans_msg(&p, "msg-abort").json()).await.0, 200);
    let (code, reply) = c
        .abort(&json!({"gid": "msg-abort", "trans_type": "msg", "rollback_reason": "local tx rolled back"}))
        .await;
    assert_eq!(code, 200, "{reply}");
    let q = s.query("msg-abort").await;
    assert_eq!(status_of(&q), "failed", "failed at once, no round: {q}");
    assert_eq!(q["transaction"]["rollback_reason"], "local tx rolled back");
    assert_eq!(branch_statuses(&q), ["prepared", "prepared"]);
    s.advance(Duration::from_secs(3600));
    assert_eq!(s.cron().await, 0);
    assert!(p.calls().is_empty(), "neither a check-back nor an action: {:?}", p.paths());
    let (code, _) = c.submit(&trans_msg(&p, "msg-abort").json()).await;
    assert_eq!(code, 409, "submit after abort");
    let (code, _) = c.abort(&json!({"gid": "msg-abort", "trans_type": "msg"})).await;
    assert_eq!(code, 409, "abort of a failed msg");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn msg_idempotency() {
    // DTM's TestMsgAbnormal.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let msg = trans_msg(&p, "msg-abnormal");
    assert_eq!(c.prepare(&msg.json()).await.0, 200);
    let (code, reply) = c.prepare(&msg.json()).await;
    assert_eq!(code, 200, "prepare twice: {reply}");
    assert_eq!(branch_statuses(&s.query("msg-abnormal").await).len(), 2, "no extra rows");
    assert_eq!(c.submit(&msg.json()).await.0, 200);
    s.wait_status("msg-abnormal", "succeed").await;
    let (code, reply) = c.prepare(&msg.json()).await;
    assert_eq!(code, 409, "prepare after submit: {reply}");
    let (code, _) = c.submit(&msg.json()).await;
    assert_eq!(code, 409, "submit after succeed");
    let (code, _) = c.abort(&json!({"gid": "msg-abnormal", "trans_type": "msg"})).await;
    assert_eq!(code, 409, "abort after succeed");
    assert_eq!(action_calls(&p), ["/TransOut", "/TransIn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submit_racing_the_check_back_is_not_acknowledged_and_dropped() {
    // The check-back of a late message is in flight when the client's submit arrives. The
    // round holding the message decides it; the submit must not answer SUCCESS as if it had
    // been applied (here the check-back then says FAILURE: the actions never run).
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/QueryPrepared", [Reply::failure("rolled back").blocked_by(&gate)]);
    let msg = trans_msg(&p, "msg-race");
    assert_eq!(c.prepare(&msg.json()).await.0, 200);
    s.advance(Duration::from_secs(36));
    let engine = s.engine().clone();
    let cron = tokio::spawn(async move { engine.run_once().await.expect("run_once") });
    p.wait_calls("/QueryPrepared", 1).await;

    let (code, reply) = c.submit(&msg.json()).await;
    assert_eq!(code, 425, "the submit was not applied: {reply}");
    assert_eq!(reply["dtm_result"], "ONGOING");
    let waiting = msg.clone().option("wait_result", json!(true));
    let (code, reply) = c.submit(&waiting.json()).await;
    assert_eq!(code, 425, "with wait_result too: {reply}");

    gate.release();
    assert_eq!(cron.await.expect("cron task"), 1);
    let q = s.wait_status("msg-race", "failed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "prepared"]);
    assert!(action_calls(&p).is_empty(), "{:?}", p.paths());
    // Once decided, a submit gets the final answer.
    let (code, reply) = c.submit(&msg.json()).await;
    assert_eq!(code, 409, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_racing_the_check_back_is_not_acknowledged_and_dropped() {
    // The check-back is in flight and will answer SUCCESS: an abort arriving meanwhile cannot
    // be applied, and must not be acknowledged (the message is then delivered).
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/QueryPrepared", [Reply::ok().blocked_by(&gate)]);
    assert_eq!(c.prepare(&trans_msg(&p, "msg-abort-race").json()).await.0, 200);
    s.advance(Duration::from_secs(36));
    let engine = s.engine().clone();
    let cron = tokio::spawn(async move { engine.run_once().await.expect("run_once") });
    p.wait_calls("/QueryPrepared", 1).await;

    let (code, reply) = c.abort(&json!({"gid": "msg-abort-race", "trans_type": "msg"})).await;
    assert_eq!(code, 425, "the abort was not applied: {reply}");
    gate.release();
    assert_eq!(cron.await.expect("cron task"), 1);
    s.wait_status("msg-abort-race", "succeed").await;
    assert_eq!(action_calls(&p), ["/TransOut", "/TransIn"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_resets_do_not_cut_a_delay_short() {
    // resetCronTime / resetNextCronTime make a transaction due now; a delayed message then
    // still waits for its delay (DTM checks the delay in every round).
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    assert_eq!(c.submit(&trans_msg(&p, "msg-long-delay").delay(3600).json()).await.0, 200);
    let create = time_ms(&s.query("msg-long-delay").await["transaction"]["create_time"]);
    let (code, reply) = c.get("resetCronTime", &[("timeout", "60")]).await;
    assert_eq!((code, reply["succeed_count"].clone()), (200, json!(1)), "{reply}");
    assert_eq!(s.cron().await, 1);
    let q = s.wait_idle("msg-long-delay").await;
    assert_eq!(status_of(&q), "submitted");
    assert_eq!(
        time_ms(&q["transaction"]["next_cron_time"]),
        create + 3_600_000,
        "due when the delay ends: {q}"
    );
    assert_eq!(c.reset_next_cron_time("msg-long-delay").await.0, 200);
    assert_eq!(s.cron().await, 1);
    s.wait_idle("msg-long-delay").await;
    assert!(p.calls().is_empty(), "the delay holds: {:?}", p.paths());

    s.advance(Duration::from_secs(3601));
    assert_eq!(s.cron().await, 1);
    s.wait_status("msg-long-delay", "succeed").await;
    assert_eq!(p.paths(), ["/TransOut", "/TransIn"]);
}
