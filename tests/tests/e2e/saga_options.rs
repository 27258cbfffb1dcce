//! Per-transaction options: timeout_to_fail, retry_limit, wait_result, branch_headers,
//! request_timeout, retry_interval (DTM's saga_options tests).

use std::time::{Duration, Instant};

use dtx_tests::{Participant, Reply, Saga, TestServer, branch, branch_statuses, status_of, time_ms};
use serde_json::json;

const PAYLOAD: &str = r#"{"amount":30}"#;

fn trans_saga(p: &Participant, gid: &str) -> Saga {
    Saga::new(gid).step(p.url("/TransOut"), p.url("/TransOutRevert"), PAYLOAD).step(
        p.url("/TransIn"),
        p.url("/TransInRevert"),
        PAYLOAD,
    )
}

fn message(reply: &serde_json::Value) -> &str {
    reply["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_to_fail_rolls_back_the_in_flight_action_only() {
    // DTM's TestSagaOptionsTimeout.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransOut", [Reply::ongoing()]);
    s.submit(&trans_saga(&p, "opt-timeout").option("timeout_to_fail", json!(5)).json()).await;
    let q = s.wait_idle("opt-timeout").await;
    assert_eq!(status_of(&q), "submitted");
    let t = &q["transaction"];
    assert_eq!(
        time_ms(&t["next_cron_time"]),
        time_ms(&t["create_time"]) + 5000,
        "due again at the timeout, before the 10 s retry interval: {q}"
    );

    s.advance(Duration::from_secs(6));
    assert_eq!(s.cron().await, 1, "a saga with a timeout is due when it times out");
    let q = s.wait_status("opt-timeout", "failed").await;
    // The attempted (ongoing) action is compensated; the never-started one is not.
    assert_eq!(branch_statuses(&q), ["succeed", "prepared", "prepared", "prepared"]);
    let reason = q["transaction"]["rollback_reason"].as_str().unwrap_or_default();
    let digits = reason.strip_prefix("Timeout after ").and_then(|r| r.strip_suffix(" seconds"));
    assert!(
        digits.is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
        "reason should match ^Timeout after \\d+ seconds$: {reason}"
    );
    assert_eq!(p.paths(), ["/TransOut", "/TransOutRevert"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_to_fail_is_checked_at_the_start_of_a_round() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransOut", [Reply::error()]);
    s.submit(&trans_saga(&p, "opt-timeout-err").option("timeout_to_fail", json!(30)).json()).await;
    let q = s.wait_idle("opt-timeout-err").await;
    assert_eq!(status_of(&q), "submitted");
    // Well past both the timeout and the backoff: the next round rolls back without calling
    // the action again.
    s.advance(Duration::from_secs(60));
    assert_eq!(s.cron().await, 1);
    let q = s.wait_status("opt-timeout-err", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "prepared", "prepared", "prepared"]);
    assert_eq!(p.paths(), ["/TransOut", "/TransOutRevert"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_limit_allows_immediate_retries_within_a_round() {
    // DTM's TestSagaGlobalTransWithRetryLimitYes.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransIn", [Reply::error(), Reply::error(), Reply::error()]);
    let saga = trans_saga(&p, "opt-retry-yes").option("retry_limit", json!(3)).wait_result();
    // Immediate retries pause (on the engine's clock) between attempts.
    let (code, reply) = s.advance_while(s.submit(&saga.json())).await;
    assert_eq!(code, 200, "{reply}");
    let q = s.query("opt-retry-yes").await;
    assert_eq!(status_of(&q), "succeed");
    assert_eq!(branch(&q, "02", "action")["attempts"], 4);
    assert_eq!(p.calls_for("/TransIn").len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_limit_exhausted_rolls_back() {
    // DTM's TestSagaGlobalTransWithRetryLimitNo.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransIn", vec![Reply::error(); 5]);
    let saga = trans_saga(&p, "opt-retry-no").option("retry_limit", json!(1)).wait_result();
    let (code, reply) = s.advance_while(s.submit(&saga.json())).await;
    assert_eq!(code, 409, "{reply}");
    let q = s.wait_status("opt-retry-no", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed", "succeed", "prepared"]);
    assert_eq!(
        q["transaction"]["rollback_reason"],
        "retry limit exhausted: more than 1 immediate retries (retry_limit)"
    );
    assert_eq!(p.calls_for("/TransIn").len(), 2, "the first call and one immediate retry");
    assert_eq!(p.paths()[3..], ["/TransInRevert", "/TransOutRevert"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_result_success_replies_after_the_saga_finished() {
    // DTM's TestSagaOptionsNormalWait.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransIn", [Reply::ok().after(Duration::from_millis(200))]);
    let (code, reply) = s.submit(&trans_saga(&p, "opt-wait").wait_result().json()).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["dtm_result"], "SUCCESS");
    // No waiting: the statuses are final when the reply arrives.
    let q = s.query("opt-wait").await;
    assert_eq!(status_of(&q), "succeed");
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_result_failure_replies_409_with_the_reason() {
    // DTM's TestSagaOptionsRollbackWait.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransIn", [Reply::failure("Insufficient balance")]);
    let (code, reply) = s.submit(&trans_saga(&p, "opt-wait-fail").wait_result().json()).await;
    assert_eq!(code, 409, "{reply}");
    assert_eq!(reply["dtm_result"], "FAILURE");
    assert!(message(&reply).contains("Insufficient balance"), "{reply}");
    let q = s.query("opt-wait-fail").await;
    assert_eq!(status_of(&q), "failed");
    assert_eq!(branch_statuses(&q), ["succeed", "succeed", "succeed", "failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_result_ongoing_replies_425_and_cron_finishes() {
    // DTM's TestSagaOptionsCommittedOngoingWait.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransOut", [Reply::ongoing()]);
    let (code, reply) = s.submit(&trans_saga(&p, "opt-wait-ongoing").wait_result().json()).await;
    assert_eq!(code, 425, "{reply}");
    assert_eq!(reply["dtm_result"], "ONGOING");
    assert_eq!(s.status("opt-wait-ongoing").await, "submitted");
    s.advance(Duration::from_secs(12));
    assert_eq!(s.cron().await, 1);
    s.wait_status("opt-wait-ongoing", "succeed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_result_with_a_failing_compensation_still_reports_failure() {
    // DTM's TestSagaFailed: the rollback is decided even though a compensation must be retried.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransIn", [Reply::failure("Insufficient balance")]);
    p.script("/TransOutRevert", [Reply::error()]);
    let (code, reply) = s.submit(&trans_saga(&p, "opt-wait-aborting").wait_result().json()).await;
    assert_eq!(code, 409, "{reply}");
    let q = s.query("opt-wait-aborting").await;
    assert_eq!(status_of(&q), "aborting");
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "succeed", "failed"]);
    s.advance(Duration::from_secs(25));
    assert_eq!(s.cron().await, 1);
    let q = s.wait_status("opt-wait-aborting", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed", "succeed", "failed"]);
    assert_eq!(p.calls_for("/TransOutRevert").len(), 2);
    assert_eq!(p.calls_for("/TransIn").len(), 1, "a failed action is never retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_headers_are_sent_on_every_call_including_cron_retries() {
    // DTM's TestSagaHeaders and TestSagaHeadersYes1.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransOut", [Reply::error()]);
    let saga = trans_saga(&p, "opt-headers").option("branch_headers", json!({"test_header": "test"}));
    s.submit(&saga.json()).await;
    let q = s.wait_idle("opt-headers").await;
    assert_eq!(status_of(&q), "submitted");
    s.advance(Duration::from_secs(25));
    assert_eq!(s.cron().await, 1);
    s.wait_status("opt-headers", "succeed").await;
    let calls = p.calls();
    assert_eq!(calls.len(), 3);
    for c in &calls {
        assert_eq!(c.header("test_header"), "test", "{c:?}");
        assert!(c.header("content-type").starts_with("application/json"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_counts_a_slow_answer_as_an_error() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransOut", [Reply::ok().after(Duration::from_secs(2))]);
    let saga = trans_saga(&p, "opt-req-timeout").option("request_timeout", json!(1)).wait_result();
    let started = Instant::now();
    let (code, reply) = s.submit(&saga.json()).await;
    let took = started.elapsed();
    assert_eq!(code, 425, "{reply}");
    assert!(took < Duration::from_millis(1900), "the call was cut after ~1 s, took {took:?}");
    let q = s.query("opt-req-timeout").await;
    assert_eq!(status_of(&q), "submitted");
    let out = branch(&q, "01", "action");
    assert_eq!(out["status"], "prepared");
    assert!(out["last_error"].as_str().unwrap_or_default().contains("timed out"), "{q}");
    let base = s.engine().options().retry.retry_interval.as_secs();
    assert_eq!(q["transaction"]["next_cron_interval"], base * 2, "a timeout backs off like an error");

    s.advance(Duration::from_secs(base * 3));
    assert_eq!(s.cron().await, 1);
    s.wait_status("opt-req-timeout", "succeed").await;
    assert_eq!(p.calls_for("/TransOut").len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_long_enough_succeeds() {
    // DTM's TestSagaGlobalTransWithRequestTimeout.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransOut", [Reply::ok().after(Duration::from_millis(1200))]);
    let saga = trans_saga(&p, "opt-req-timeout-ok").option("request_timeout", json!(6)).wait_result();
    let (code, reply) = s.submit(&saga.json()).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(s.status("opt-req-timeout-ok").await, "succeed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_interval_option_sets_the_base_interval() {
    // DTM's TestSagaOptionsRetryOngoing / RetryError.
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransOut", [Reply::ongoing()]);
    p.script("/TransIn", [Reply::error()]);
    s.submit(&trans_saga(&p, "opt-interval").option("retry_interval", json!(150)).json()).await;

    let q = s.wait_idle("opt-interval").await;
    assert_eq!(q["transaction"]["next_cron_interval"], 150, "ongoing keeps the interval: {q}");
    s.advance(Duration::from_secs(170));
    assert_eq!(s.cron().await, 1);

    let q = s.wait_idle("opt-interval").await;
    let t = &q["transaction"];
    assert_eq!(t["next_cron_interval"], 300, "an error doubles it: {q}");
    let due_in = time_ms(&t["next_cron_time"]) - s.now_ms();
    assert!((270_000..=330_000).contains(&due_in), "due in {due_in} ms");
    s.advance(Duration::from_secs(180));
    assert_eq!(s.cron().await, 0, "not due within 180 s");
    s.advance(Duration::from_secs(180));
    assert_eq!(s.cron().await, 1);
    s.wait_status("opt-interval", "succeed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_are_stored_and_shown_by_query() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let saga = trans_saga(&p, "opt-stored")
        .option("retry_interval", json!(7))
        .option("timeout_to_fail", json!(600))
        .option("branch_headers", json!({"x-trace": "abc"}))
        .wait_result();
    s.submit(&saga.json()).await;
    let q = s.query("opt-stored").await;
    let options: serde_json::Value =
        serde_json::from_str(q["transaction"]["options"].as_str().unwrap_or_default()).unwrap();
    assert_eq!(options["retry_interval"], 7, "{options}");
    assert_eq!(options["timeout_to_fail"], 600, "{options}");
    // Keys shown, values never (they often carry participant credentials).
    assert_eq!(options["branch_headers"]["x-trace"], "***", "{options}");
    assert_eq!(options["wait_result"], true, "{options}");
    assert_eq!(options["concurrent"], false, "{options}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_headers_are_sent_on_compensations_too() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransIn", [Reply::failure("no")]);
    let saga = trans_saga(&p, "opt-headers-rollback").option("branch_headers", json!({"x-tenant": "t-1"}));
    s.submit(&saga.json()).await;
    s.wait_status("opt-headers-rollback", "failed").await;
    let calls = p.calls();
    assert_eq!(calls.len(), 4);
    assert!(calls.iter().all(|c| c.header("x-tenant") == "t-1"), "{calls:?}");
}
