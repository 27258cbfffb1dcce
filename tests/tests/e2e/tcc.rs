//! TCC end to end, driven over plain HTTP as DTM's SDKs do: the test is the client (prepare,
//! registerBranch + try per branch, submit or abort); dtx runs phase two (DTM's tcc tests).

use std::time::Duration;

use dtx_tests::{
    Client, Gate, Participant, Reply, Tcc, TestServer, advance_to_due, assert_timeout_reason, branch,
    branch_statuses, status_of, time_ms,
};
use serde_json::{Value, json};

const PAYLOAD: &str = r#"{"amount":30}"#;

fn message(reply: &Value) -> &str {
    reply["message"].as_str().unwrap_or_default()
}

/// Every call to `p` whose `op` query parameter is `op`.
fn ops(p: &Participant, op: &str) -> Vec<String> {
    p.calls().into_iter().filter(|c| c.param("op") == op).map(|c| c.path).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_normal_confirms_newest_first_one_at_a_time() {
    tcc_normal_confirms_newest_first_one_at_a_time_on(&TestServer::start().await).await;
}

/// [`tcc_normal_confirms_newest_first_one_at_a_time`] on a given server (also run on MySQL / MariaDB: `mysql.rs`).
pub(crate) async fn tcc_normal_confirms_newest_first_one_at_a_time_on(s: &TestServer) {
    // DTM's TestTccNormal.
    let c = Client::of(s);
    let p = Participant::spawn().await;
    // A slow confirm would overlap with the next one if they ran concurrently.
    p.script("/TransInConfirm", [Reply::ok().after(Duration::from_millis(150))]);

    let tcc = Tcc::prepare(&c, "tcc-normal", json!({})).await;
    assert_eq!(tcc.branch(&p, "01", "TransOut", PAYLOAD).await, 200);
    assert_eq!(tcc.branch(&p, "02", "TransIn", PAYLOAD).await, 200);
    let q = s.query("tcc-normal").await;
    assert_eq!(status_of(&q), "prepared");
    let rows: Vec<(String, String)> = q["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .map(|b| {
            (b["branch_id"].as_str().expect("branch_id").to_owned(), b["op"].as_str().expect("op").to_owned())
        })
        .collect();
    let expected = [("01", "cancel"), ("01", "confirm"), ("02", "cancel"), ("02", "confirm")];
    assert_eq!(rows, expected.map(|(b, o)| (b.to_owned(), o.to_owned())), "cancel row, then confirm row");
    assert_eq!(branch(&q, "01", "confirm")["url"], p.url("/TransOutConfirm"));
    assert_eq!(branch(&q, "01", "cancel")["url"], p.url("/TransOutCancel"));
    assert_eq!(branch(&q, "02", "confirm")["bin_data"], "eyJhbW91bnQiOjMwfQ==");
    assert!(ops(&p, "confirm").is_empty() && ops(&p, "cancel").is_empty(), "nothing before submit");

    let (code, reply) = tcc.submit().await;
    assert_eq!(code, 200, "{reply}");
    let q = s.wait_status("tcc-normal", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed"]);
    assert!(q["transaction"].get("finish_time").is_some(), "{q}");
    assert!(q["transaction"].get("rollback_reason").is_none(), "{q}");
    assert_eq!(branch(&q, "01", "confirm")["attempts"], 1);
    assert_eq!(branch(&q, "01", "cancel")["attempts"], 0);

    assert_eq!(p.paths(), ["/TransOutTry", "/TransInTry", "/TransInConfirm", "/TransOutConfirm"]);
    let confirm_in = &p.calls_for("/TransInConfirm")[0];
    let confirm_out = &p.calls_for("/TransOutConfirm")[0];
    assert!(confirm_in.ended() <= confirm_out.start, "one at a time, branch 02 first");
    for (call, branch_id) in [(confirm_in, "02"), (confirm_out, "01")] {
        assert_eq!(call.method, "POST");
        assert_eq!(call.param("gid"), "tcc-normal");
        assert_eq!(call.param("trans_type"), "tcc");
        assert_eq!(call.param("branch_id"), branch_id);
        assert_eq!(call.param("op"), "confirm");
        assert_eq!(call.body, PAYLOAD.as_bytes());
    }
    // The tries were the test's own calls, with the SDK's query.
    let try_out = &p.calls_for("/TransOutTry")[0];
    assert_eq!((try_out.param("op"), try_out.param("branch_id")), ("try", "01"));
    assert!(ops(&p, "cancel").is_empty(), "no cancel: {:?}", p.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_rollback_cancels_newest_first_and_keeps_the_reason() {
    tcc_rollback_cancels_newest_first_and_keeps_the_reason_on(&TestServer::start().await).await;
}

/// [`tcc_rollback_cancels_newest_first_and_keeps_the_reason`] on a given server (also run through JSON-RPC: `json_rpc.rs`).
pub(crate) async fn tcc_rollback_cancels_newest_first_and_keeps_the_reason_on(s: &TestServer) {
    // DTM's TestTccRollback: the second try fails, the client aborts; branch 01's cancel is
    // ONGOING once, so the cron finishes the rollback.
    let c = Client::of(s);
    let p = Participant::spawn().await;
    p.script("/TransInTry", [Reply::failure("Insufficient balance")]);
    p.script("/TransOutCancel", [Reply::ongoing()]);

    let tcc = Tcc::prepare(&c, "tcc-rollback", json!({})).await;
    assert_eq!(tcc.branch(&p, "01", "TransOut", PAYLOAD).await, 200);
    assert_eq!(tcc.branch(&p, "02", "TransIn", PAYLOAD).await, 409);
    let reason = "try of branch 02 failed: Insufficient balance FAILURE";
    let (code, reply) = tcc.abort(reason).await;
    assert_eq!(code, 200, "{reply}");

    let q = s.wait_idle("tcc-rollback").await;
    assert_eq!(status_of(&q), "aborting", "{q}");
    assert_eq!(branch_statuses(&q), ["prepared", "prepared", "succeed", "prepared"]);
    assert_eq!(q["transaction"]["rollback_reason"], reason);
    assert_eq!(branch(&q, "01", "cancel")["last_error"], "ONGOING");
    assert_eq!(s.cron().await, 0, "not due before the retry interval");

    advance_to_due(s, "tcc-rollback").await;
    assert_eq!(s.cron().await, 1);
    let q = s.wait_status("tcc-rollback", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "prepared", "succeed", "prepared"]);
    assert_eq!(q["transaction"]["rollback_reason"], reason, "the client's reason, kept to the end");
    assert!(q["transaction"].get("rollback_time").is_some(), "{q}");

    assert_eq!(
        p.paths(),
        ["/TransOutTry", "/TransInTry", "/TransInCancel", "/TransOutCancel", "/TransOutCancel"]
    );
    let cancel_in = &p.calls_for("/TransInCancel")[0];
    assert_eq!((cancel_in.param("branch_id"), cancel_in.param("op")), ("02", "cancel"));
    assert_eq!(cancel_in.body, PAYLOAD.as_bytes());
    assert!(cancel_in.ended() <= p.calls_for("/TransOutCancel")[0].start);
    assert!(ops(&p, "confirm").is_empty(), "no confirm: {:?}", p.paths());
}

/// A TCC with one registered branch times out: the cron cancels it; the client's later
/// registerBranch, submit and abort are refused (DTM's TestTccTimeout).
pub(crate) async fn times_out_and_is_cancelled(s: &TestServer, gid: &str, prepare_extra: Value) {
    let c = Client::of(s);
    let p = Participant::spawn().await;
    let tcc = Tcc::prepare(&c, gid, prepare_extra).await;
    assert_eq!(tcc.branch(&p, "01", "TransOut", PAYLOAD).await, 200);
    let q = s.query(gid).await;
    let t = &q["transaction"];
    assert!(t.get("owner").is_none(), "a prepared tcc is not owned: {q}");
    assert_eq!(time_ms(&t["next_cron_time"]), time_ms(&t["create_time"]) + 5000, "due at its timeout: {q}");

    s.advance(Duration::from_secs(4));
    assert_eq!(s.cron().await, 0, "not due before its timeout");
    assert_eq!(s.status(gid).await, "prepared");
    s.advance(Duration::from_millis(1500));
    // Timed out, not yet processed: registering is already refused.
    let (code, reply) = tcc.register(&p, "02", "TransIn", PAYLOAD).await;
    assert_eq!(code, 409, "{reply}");
    assert_eq!(reply["dtm_result"], "FAILURE");

    assert_eq!(s.cron().await, 1);
    let q = s.wait_status(gid, "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "prepared"], "branch 02 was never stored");
    let reason = q["transaction"]["rollback_reason"].as_str().unwrap_or_default();
    assert_timeout_reason(reason);
    let cancel = &p.calls_for("/TransOutCancel");
    assert_eq!(cancel.len(), 1, "{:?}", p.paths());
    assert_eq!((cancel[0].param("branch_id"), cancel[0].param("op")), ("01", "cancel"));
    assert_eq!(cancel[0].param("gid"), gid);

    // The client is late: every further request is refused.
    let (code, reply) = tcc.register(&p, "02", "TransIn", PAYLOAD).await;
    assert_eq!(code, 409, "registerBranch after the timeout: {reply}");
    let (code, reply) = tcc.submit().await;
    assert_eq!(code, 409, "submit after the timeout: {reply}");
    assert!(message(&reply).contains("failed"), "{reply}");
    let (code, reply) = tcc.abort("late").await;
    assert_eq!(code, 409, "abort after the timeout: {reply}");
    let q2 = s.query(gid).await;
    assert_eq!(branch_statuses(&q2), ["succeed", "prepared"]);
    assert_eq!(q2["transaction"]["rollback_reason"], reason, "the timeout reason stays");
    assert!(ops(&p, "confirm").is_empty(), "no confirm: {:?}", p.paths());
    s.advance(Duration::from_secs(60));
    assert_eq!(s.cron().await, 0, "a failed tcc is never due again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_timeout_to_fail_of_the_transaction() {
    let s = TestServer::start().await;
    times_out_and_is_cancelled(&s, "tcc-timeout", json!({"timeout_to_fail": 5})).await;
    let reason = s.query("tcc-timeout").await["transaction"]["rollback_reason"].clone();
    assert_eq!(reason, "Timeout after 5 seconds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_timeout_to_fail_of_the_server() {
    let s = TestServer::spawn(|c| c.engine.timeout_to_fail = Duration::from_secs(5)).await;
    times_out_and_is_cancelled(&s, "tcc-timeout-default", json!({})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_errors_are_retried_with_backoff_until_success() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    p.script("/TransOutConfirm", [Reply::error(), Reply::error()]);
    let tcc = Tcc::prepare(&c, "tcc-confirm-retry", json!({})).await;
    tcc.branch(&p, "01", "TransOut", PAYLOAD).await;
    tcc.branch(&p, "02", "TransIn", PAYLOAD).await;
    assert_eq!(tcc.submit().await.0, 200);

    let base = s.engine().options().retry.retry_interval.as_secs();
    for (attempt, factor) in [(1u64, 2u64), (2, 4)] {
        let q = s.wait_idle("tcc-confirm-retry").await;
        assert_eq!(status_of(&q), "submitted", "{q}");
        assert_eq!(branch_statuses(&q), ["prepared", "prepared", "prepared", "succeed"]);
        let t = &q["transaction"];
        assert_eq!(t["next_cron_interval"], base * factor, "after error {attempt}: {q}");
        let b = branch(&q, "01", "confirm");
        assert_eq!(b["attempts"], attempt, "{q}");
        let err = b["last_error"].as_str().unwrap_or_default();
        assert!(err.contains("500") && err.contains("participant exploded"), "last_error: {err}");
        assert_eq!(s.cron().await, 0, "not due before the backoff interval");
        advance_to_due(&s, "tcc-confirm-retry").await;
        assert_eq!(s.cron().await, 1);
    }
    let q = s.wait_status("tcc-confirm-retry", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed"]);
    let b = branch(&q, "01", "confirm");
    assert_eq!(b["attempts"], 3);
    assert!(b.get("last_error").is_none(), "cleared on success: {q}");
    assert_eq!(p.calls_for("/TransOutConfirm").len(), 3);
    assert_eq!(p.calls_for("/TransInConfirm").len(), 1, "a confirmed branch is not called again");
    assert!(ops(&p, "cancel").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_failure_is_retried_and_never_turns_into_a_cancel() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    p.script("/TransInConfirm", [Reply::failure("not now"), Reply::failure("still not")]);
    let tcc = Tcc::prepare(&c, "tcc-confirm-409", json!({})).await;
    tcc.branch(&p, "01", "TransOut", PAYLOAD).await;
    tcc.branch(&p, "02", "TransIn", PAYLOAD).await;
    assert_eq!(tcc.submit().await.0, 200);

    for attempt in 1..=2 {
        let q = s.wait_idle("tcc-confirm-409").await;
        assert_eq!(status_of(&q), "submitted", "FAILURE of a confirm is not a rollback: {q}");
        assert_eq!(branch_statuses(&q), ["prepared"; 4]);
        let b = branch(&q, "02", "confirm");
        assert_eq!(b["attempts"], attempt);
        assert!(b["last_error"].as_str().unwrap_or_default().contains("409"), "{q}");
        assert!(p.calls_for("/TransOutConfirm").is_empty(), "the round stops at the first non-success");
        advance_to_due(&s, "tcc-confirm-409").await;
        assert_eq!(s.cron().await, 1);
    }
    s.wait_status("tcc-confirm-409", "succeed").await;
    assert_eq!(p.calls_for("/TransInConfirm").len(), 3);
    assert_eq!(p.calls_for("/TransOutConfirm").len(), 1);
    assert!(ops(&p, "cancel").is_empty(), "{:?}", p.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_branch_ids_are_confirmed_newest_first() {
    // DTM's TestTccNested: the try of branch 02 opens a nested TCC, whose branch is 0201.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let tcc = Tcc::prepare(&c, "tcc-nested", json!({})).await;
    assert_eq!(tcc.branch(&p, "01", "TransOut", PAYLOAD).await, 200);
    assert_eq!(tcc.branch(&p, "02", "TransIn", PAYLOAD).await, 200);
    assert_eq!(tcc.branch(&p, "0201", "TransInNested", PAYLOAD).await, 200);
    assert_eq!(tcc.submit().await.0, 200);
    let q = s.wait_status("tcc-nested", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed", "prepared", "succeed"]);
    assert_eq!(branch(&q, "0201", "confirm")["url"], p.url("/TransInNestedConfirm"));
    let confirms: Vec<(String, String)> = p
        .calls()
        .into_iter()
        .filter(|c| c.param("op") == "confirm")
        .map(|c| (c.path.clone(), c.param("branch_id").to_owned()))
        .collect();
    let expected = [("/TransInNestedConfirm", "0201"), ("/TransInConfirm", "02"), ("/TransOutConfirm", "01")];
    assert_eq!(confirms, expected.map(|(p, b)| (p.to_owned(), b.to_owned())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_confirm_and_cancel_urls_succeed_without_a_call() {
    // DTM's TestTccHeaders: branches with empty phase-two URLs.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let tcc = Tcc::prepare(&c, "tcc-empty-urls", json!({})).await;
    let body = dtx_tests::client::tcc_register_body("tcc-empty-urls", "01", PAYLOAD, "", "");
    let (code, reply) = c.register_branch(&body).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(tcc.submit().await.0, 200);
    let q = s.wait_status("tcc-empty-urls", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_submit_and_abort_follow_dtm_idempotency_rules() {
    prepare_submit_and_abort_follow_dtm_idempotency_rules_on(&TestServer::start().await).await;
}

/// [`prepare_submit_and_abort_follow_dtm_idempotency_rules`] on a given server (also run on MySQL / MariaDB: `mysql.rs`).
pub(crate) async fn prepare_submit_and_abort_follow_dtm_idempotency_rules_on(s: &TestServer) {
    // Spec 6.7 (DTM's TestMsgAbnormal / TestTccCoverPanic shapes, for TCC).
    let c = Client::of(s);
    let p = Participant::spawn().await;
    p.script("/TransOutConfirm", [Reply::error()]);
    let tcc = Tcc::prepare(&c, "tcc-idem", json!({})).await;
    let (code, reply) = c.prepare(&tcc.body()).await;
    assert_eq!(code, 200, "prepare twice is fine: {reply}");
    assert_eq!(reply["dtm_result"], "SUCCESS");
    tcc.branch(&p, "01", "TransOut", PAYLOAD).await;
    assert_eq!(tcc.submit().await.0, 200);

    // Submitted, its confirm failed once: still submitted.
    let q = s.wait_idle("tcc-idem").await;
    assert_eq!(status_of(&q), "submitted");
    let (code, reply) = c.prepare(&tcc.body()).await;
    assert_eq!(code, 409, "prepare after submit: {reply}");
    assert_eq!(reply["dtm_result"], "FAILURE");
    let (code, reply) = tcc.abort("too late").await;
    assert_eq!(code, 409, "abort of a submitted tcc: {reply}");
    let (code, reply) = tcc.register(&p, "02", "TransIn", PAYLOAD).await;
    assert_eq!(code, 409, "registerBranch after submit: {reply}");
    let q = s.query("tcc-idem").await;
    assert_eq!(status_of(&q), "submitted");
    assert!(q["transaction"].get("rollback_reason").is_none(), "{q}");
    assert_eq!(branch_statuses(&q).len(), 2);

    // Submitting a submitted tcc reprocesses it.
    let (code, reply) = tcc.submit().await;
    assert_eq!(code, 200, "submit of a submitted tcc: {reply}");
    s.wait_status("tcc-idem", "succeed").await;
    let (code, reply) = tcc.submit().await;
    assert_eq!(code, 409, "submit after succeed: {reply}");
    assert!(message(&reply).contains("succeed"), "{reply}");
    let (code, reply) = c.prepare(&tcc.body()).await;
    assert_eq!(code, 409, "prepare after succeed: {reply}");
    let (code, _) = tcc.abort("too late").await;
    assert_eq!(code, 409, "abort after succeed");
    assert_eq!(p.calls_for("/TransOutConfirm").len(), 2);
    assert!(ops(&p, "cancel").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_twice_is_fine_until_the_tcc_has_failed() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    p.script("/TransOutCancel", [Reply::error()]);
    let tcc = Tcc::prepare(&c, "tcc-abort-twice", json!({})).await;
    tcc.branch(&p, "01", "TransOut", PAYLOAD).await;
    let (code, reply) = tcc.abort("first").await;
    assert_eq!(code, 200, "{reply}");
    let q = s.wait_idle("tcc-abort-twice").await;
    assert_eq!(status_of(&q), "aborting", "{q}");
    assert_eq!(q["transaction"]["rollback_reason"], "first");

    let (code, reply) = tcc.abort("second").await;
    assert_eq!(code, 200, "abort of an aborting tcc: {reply}");
    let q = s.wait_status("tcc-abort-twice", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "prepared"]);
    assert_eq!(q["transaction"]["rollback_reason"], "first", "an aborting tcc keeps its first reason");
    assert_eq!(p.calls_for("/TransOutCancel").len(), 2);

    let (code, reply) = tcc.abort("third").await;
    assert_eq!(code, 409, "abort of a failed tcc: {reply}");
    let (code, _) = tcc.submit().await;
    assert_eq!(code, 409, "submit of a failed tcc");
    assert!(ops(&p, "confirm").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_branch_rules() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let tcc = Tcc::prepare(&c, "tcc-register", json!({})).await;
    let body = dtx_tests::client::tcc_register_body(
        "tcc-register",
        "01",
        PAYLOAD,
        &p.url("/TransOutConfirm"),
        &p.url("/TransOutCancel"),
    );
    let (code, reply) = c.register_branch(&body).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["dtm_result"], "SUCCESS");
    let before = s.query("tcc-register").await;
    assert_eq!(branch_statuses(&before), ["prepared", "prepared"]);

    // The same registration again (a client retry): accepted, nothing added.
    let (code, reply) = c.register_branch(&body).await;
    assert_eq!(code, 200, "duplicate registration: {reply}");
    // The legacy alias is the same route.
    let (code, reply) = c.post("registerTccBranch", &body).await;
    assert_eq!(code, 200, "registerTccBranch: {reply}");
    assert_eq!(s.query("tcc-register").await["branches"], before["branches"], "no extra rows");

    // The same branch id with other URLs or data: refused, the stored rows unchanged.
    for (key, value) in
        [("confirm", p.url("/Other")), ("cancel", p.url("/Other")), ("data", r#"{"amount":31}"#.to_owned())]
    {
        let mut other = body.clone();
        other[key] = json!(value);
        let (code, reply) = c.register_branch(&other).await;
        assert_eq!(code, 409, "{key} differs: {reply}");
        assert_eq!(reply["dtm_result"], "FAILURE");
    }
    assert_eq!(s.query("tcc-register").await["branches"], before["branches"], "rows unchanged");

    // Unknown gid: 409, as DTM (no prepared transaction with that gid).
    let mut unknown = body.clone();
    unknown["gid"] = json!("tcc-nobody");
    let (code, reply) = c.register_branch(&unknown).await;
    assert_eq!(code, 409, "unknown gid: {reply}");
    assert_eq!(s.query("tcc-nobody").await["transaction"], Value::Null);

    // Not a flat object of strings, or missing keys: 400.
    let mut number = body.clone();
    number["branch_id"] = json!(2);
    let (code, reply) = c.register_branch(&number).await;
    assert_eq!(code, 400, "a number: {reply}");
    let mut object = body.clone();
    object["data"] = json!({"amount": 30});
    let (code, reply) = c.register_branch(&object).await;
    assert_eq!(code, 400, "an object: {reply}");
    let (code, reply) = c.post_raw("registerBranch", "{not json").await;
    assert_eq!(code, 400, "malformed: {reply}");
    let mut no_branch = body.clone();
    no_branch.as_object_mut().unwrap().remove("branch_id");
    let (code, reply) = c.register_branch(&no_branch).await;
    assert_eq!(code, 400, "no branch_id: {reply}");
    let mut saga = body.clone();
    saga["trans_type"] = json!("saga");
    let (code, reply) = c.register_branch(&saga).await;
    assert_eq!(code, 400, "trans_type saga: {reply}");
    let mut bad_url = body.clone();
    bad_url["branch_id"] = json!("02");
    bad_url["confirm"] = json!("ftp://h/x");
    let (code, reply) = c.register_branch(&bad_url).await;
    assert_eq!(code, 400, "bad confirm url: {reply}");
    assert_eq!(s.query("tcc-register").await["branches"], before["branches"], "nothing stored");

    // A saga's gid cannot take TCC branches.
    let saga_body = dtx_tests::Saga::new("saga-not-tcc").step(p.url("/A"), p.url("/C"), "{}").wait_result();
    assert_eq!(s.submit(&saga_body.json()).await.0, 200);
    let mut on_saga = body.clone();
    on_saga["gid"] = json!("saga-not-tcc");
    let (code, reply) = c.register_branch(&on_saga).await;
    assert_eq!(code, 409, "a saga gid: {reply}");

    // Still fine to finish the TCC.
    assert_eq!(tcc.submit().await.0, 200);
    s.wait_status("tcc-register", "succeed").await;
    assert_eq!(p.calls_for("/TransOutConfirm").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_phase_two_is_taken_over_when_the_lease_expires_not_at_the_timeout() {
    // A prepared tcc is due at its timeout; once submitted (or aborted) it is due at once, held
    // only by the lease of the round, so another node takes it over if that round dies.
    let s = TestServer::spawn(|c| c.engine.lease = Duration::from_secs(1)).await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/TransOutConfirm", [Reply::ok().blocked_by(&gate)]);
    p.script("/TransInCancel", [Reply::ok().blocked_by(&gate)]);
    let submitted = Tcc::prepare(&c, "tcc-stuck-confirm", json!({"timeout_to_fail": 1000})).await;
    submitted.branch(&p, "01", "TransOut", PAYLOAD).await;
    let aborted = Tcc::prepare(&c, "tcc-stuck-cancel", json!({"timeout_to_fail": 1000})).await;
    aborted.branch(&p, "01", "TransIn", PAYLOAD).await;
    assert_eq!(submitted.submit().await.0, 200);
    assert_eq!(aborted.abort("no").await.0, 200);
    p.wait_calls("/TransOutConfirm", 1).await;
    p.wait_calls("/TransInCancel", 1).await;
    for gid in ["tcc-stuck-confirm", "tcc-stuck-cancel"] {
        let q = s.query(gid).await;
        assert!(q["transaction"].get("owner").is_some(), "{q}");
        assert!(dtx_tests::due_in_ms(&s, &q) <= 0, "due now, behind the lease: {q}");
    }
    assert_eq!(s.cron().await, 0, "the lease keeps others away");
    // The rounds die (their node stalls: no renewal fires) and the lease runs out.
    s.stall(Duration::from_secs(2));
    assert_eq!(s.cron().await, 2, "taken over once the lease expired");
    s.wait_status("tcc-stuck-confirm", "succeed").await;
    s.wait_status("tcc-stuck-cancel", "failed").await;
    assert_eq!(p.calls_for("/TransOutConfirm").len(), 2);
    assert_eq!(p.calls_for("/TransInCancel").len(), 2);
    gate.release();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_result_answers_the_outcome_of_phase_two() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    // submit with wait_result: the answer comes after the confirms.
    let tcc = Tcc::prepare(&c, "tcc-wait", json!({})).await;
    tcc.branch(&p, "01", "TransOut", PAYLOAD).await;
    let (code, reply) = c.submit(&json!({"gid": "tcc-wait", "trans_type": "tcc", "wait_result": true})).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(s.status("tcc-wait").await, "succeed", "already done when submit answers");

    // A confirm without success: 425, still submitted.
    p.script("/TransInConfirm", [Reply::error()]);
    let tcc = Tcc::prepare(&c, "tcc-wait-err", json!({})).await;
    tcc.branch(&p, "01", "TransIn", PAYLOAD).await;
    let (code, reply) =
        c.submit(&json!({"gid": "tcc-wait-err", "trans_type": "tcc", "wait_result": true})).await;
    assert_eq!(code, 425, "{reply}");
    assert_eq!(reply["dtm_result"], "ONGOING");
    assert_eq!(s.status("tcc-wait-err").await, "submitted");

    // abort uses the wait_result stored at prepare.
    let tcc = Tcc::prepare(&c, "tcc-wait-abort", json!({"wait_result": true})).await;
    tcc.branch(&p, "01", "TransOut", PAYLOAD).await;
    let (code, reply) = tcc.abort("no").await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(s.status("tcc-wait-abort").await, "failed", "already cancelled when abort answers");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_of_the_prepare_apply_to_phase_two() {
    // branch_headers and request_timeout given at prepare are used by the confirms.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    p.script("/TransOutConfirm", [Reply::ok().after(Duration::from_secs(3))]);
    let extra = json!({"branch_headers": {"x-trace-id": "trace-1"}, "request_timeout": 1});
    let tcc = Tcc::prepare(&c, "tcc-options", extra).await;
    tcc.branch(&p, "01", "TransOut", PAYLOAD).await;
    let started = std::time::Instant::now();
    let (code, reply) =
        c.submit(&json!({"gid": "tcc-options", "trans_type": "tcc", "wait_result": true})).await;
    assert_eq!(code, 425, "the slow confirm timed out: {reply}");
    assert!(started.elapsed() < Duration::from_millis(2500), "cut at 1 s: {:?}", started.elapsed());
    let q = s.query("tcc-options").await;
    let err = branch(&q, "01", "confirm")["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(err.contains("timed out"), "{err}");

    advance_to_due(&s, "tcc-options").await;
    assert_eq!(s.cron().await, 1);
    s.wait_status("tcc-options", "succeed").await;
    let confirms = p.calls_for("/TransOutConfirm");
    assert_eq!(confirms.len(), 2);
    assert!(confirms.iter().all(|c| c.header("x-trace-id") == "trace-1"), "{confirms:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcc_without_branches() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    // Submitted straight away (no prepare), or prepared then aborted: nothing to call.
    let (code, reply) =
        c.submit(&json!({"gid": "tcc-empty", "trans_type": "tcc", "wait_result": true})).await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(s.status("tcc-empty").await, "succeed");
    let tcc = Tcc::prepare(&c, "tcc-empty-abort", json!({"wait_result": true})).await;
    assert_eq!(tcc.abort("changed my mind").await.0, 200);
    let q = s.query("tcc-empty-abort").await;
    assert_eq!(status_of(&q), "failed");
    assert_eq!(q["branches"], json!([]));
    let (code, reply) = c.abort(&json!({"gid": "tcc-nobody", "trans_type": "tcc"})).await;
    assert_eq!(code, 404, "abort of an unknown gid: {reply}");
}
