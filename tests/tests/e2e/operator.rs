//! Operator actions: forceStop (also of a round in flight, which is fenced out),
//! resetNextCronTime and resetCronTime (spec 2.3, 7.5).

use std::time::Duration;

use dtx_engine::RoundEnd;
use dtx_tests::{
    Client, Gate, Msg, Participant, Reply, Saga, Tcc, TestServer, advance_to_due, branch, branch_statuses,
    due_in_ms, status_of, time_ms,
};
use serde_json::{Value, json};

fn two_steps(p: &Participant, gid: &str) -> Saga {
    Saga::new(gid).step(p.url("/A1"), p.url("/C1"), "{}").step(p.url("/A2"), p.url("/C2"), "{}")
}

/// Checks the answer of a forceStop that worked, and the stopped transaction.
async fn assert_force_stopped(s: &TestServer, c: &Client, gid: &str) -> Value {
    let (code, reply) = c.force_stop(gid).await;
    assert_eq!(code, 200, "forceStop {gid}: {reply}");
    assert_eq!(reply["dtm_result"], "SUCCESS");
    let q = s.query(gid).await;
    let t = &q["transaction"];
    assert_eq!(t["status"], "failed", "{q}");
    assert!(t.get("rollback_time").is_some(), "{q}");
    assert!(t.get("owner").is_none(), "a stopped transaction is owned by nobody: {q}");
    assert!(t["rollback_reason"].as_str().unwrap_or_default().contains("force"), "{q}");
    q
}

/// Releases `gate`'s call and waits for the round that made it to end: fenced out by the
/// stop at its next write, it ends abandoned (and what it did meanwhile is then all there is).
async fn release_and_settle(s: &TestServer, gate: &Gate, gid: &str) {
    let mut rounds = s.rounds();
    gate.release();
    assert_eq!(rounds.ended(gid).await, RoundEnd::Abandoned, "the stopped round was fenced out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_stop_of_a_saga_waiting_on_an_ongoing_action() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    p.script("/A1", [Reply::ongoing()]);
    s.submit(&two_steps(&p, "stop-ongoing").json()).await;
    let q = s.wait_idle("stop-ongoing").await;
    assert_eq!(status_of(&q), "submitted");

    let q = assert_force_stopped(&s, &c, "stop-ongoing").await;
    assert_eq!(branch_statuses(&q), ["prepared"; 4], "nothing is compensated by a forceStop");
    s.advance(Duration::from_secs(3600));
    assert_eq!(s.cron().await, 0, "a stopped transaction is never due");
    assert_eq!(p.paths(), ["/A1"], "nobody else is called");

    let (code, reply) = c.force_stop("stop-ongoing").await;
    assert_eq!(code, 409, "forceStop of a failed transaction: {reply}");
    assert_eq!(reply["dtm_result"], "FAILURE");
    let (code, _) = s.submit(&two_steps(&p, "stop-ongoing").json()).await;
    assert_eq!(code, 409, "a stopped saga cannot be submitted again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_stop_refuses_finished_and_unknown_transactions() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let saga = two_steps(&p, "stop-done").wait_result();
    assert_eq!(s.submit(&saga.json()).await.0, 200);
    assert_eq!(s.status("stop-done").await, "succeed");
    let (code, reply) = c.force_stop("stop-done").await;
    assert_eq!(code, 409, "forceStop of a succeeded saga: {reply}");
    assert_eq!(s.status("stop-done").await, "succeed", "unchanged");

    let (code, reply) = c.force_stop("stop-nobody").await;
    assert_eq!(code, 404, "unknown gid: {reply}");
    let (code, reply) = c.post("forceStop", &json!({})).await;
    assert_eq!(code, 400, "no gid: {reply}");
    let (code, reply) = c.post_raw("forceStop", "{oops").await;
    assert_eq!(code, 400, "malformed: {reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_stop_of_a_prepared_tcc_cancels_nothing() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let tcc = Tcc::prepare(&c, "stop-tcc", json!({})).await;
    tcc.branch(&p, "01", "TransOut", "{}").await;
    assert_force_stopped(&s, &c, "stop-tcc").await;
    s.advance(Duration::from_secs(3600));
    assert_eq!(s.cron().await, 0, "not due at its timeout any more");
    assert_eq!(tcc.submit().await.0, 409);
    assert_eq!(tcc.register(&p, "02", "TransIn", "{}").await.0, 409);
    assert_eq!(p.paths(), ["/TransOutTry"], "no confirm, no cancel");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_stop_fences_out_a_saga_round_in_flight() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A1", [Reply::ok().blocked_by(&gate)]);
    s.submit(&two_steps(&p, "stop-inflight").json()).await;
    p.wait_calls("/A1", 1).await;

    let stopped = assert_force_stopped(&s, &c, "stop-inflight").await;
    release_and_settle(&s, &gate, "stop-inflight").await;
    assert_eq!(p.paths(), ["/A1"], "the fenced round calls nobody else");
    let q = s.query("stop-inflight").await;
    assert_eq!(q, stopped, "the fenced round wrote nothing");
    s.advance(Duration::from_secs(3600));
    assert_eq!(s.cron().await, 0);
    assert_eq!(p.paths(), ["/A1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_stop_fences_out_a_tcc_round_in_flight() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/B3Confirm", [Reply::ok().blocked_by(&gate)]);
    let tcc = Tcc::prepare(&c, "stop-tcc-inflight", json!({})).await;
    for (id, service) in [("01", "B1"), ("02", "B2"), ("03", "B3")] {
        tcc.branch(&p, id, service, "{}").await;
    }
    assert_eq!(tcc.submit().await.0, 200);
    p.wait_calls("/B3Confirm", 1).await;

    let stopped = assert_force_stopped(&s, &c, "stop-tcc-inflight").await;
    release_and_settle(&s, &gate, "stop-tcc-inflight").await;
    let confirms: Vec<String> = p.paths().into_iter().filter(|p| p.ends_with("Confirm")).collect();
    assert_eq!(confirms, ["/B3Confirm"], "no other confirm after the stop");
    assert_eq!(s.query("stop-tcc-inflight").await, stopped, "the fenced round wrote nothing");
    s.advance(Duration::from_secs(3600));
    assert_eq!(s.cron().await, 0);
    assert!(p.paths().iter().all(|p| !p.ends_with("Cancel")), "{:?}", p.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_stop_fences_out_a_msg_round_in_flight() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A1", [Reply::ok().blocked_by(&gate)]);
    let msg = Msg::new("stop-msg-inflight", p.url("/QueryPrepared"))
        .step(p.url("/A1"), "{}")
        .step(p.url("/A2"), "{}");
    assert_eq!(c.submit(&msg.json()).await.0, 200);
    p.wait_calls("/A1", 1).await;

    let stopped = assert_force_stopped(&s, &c, "stop-msg-inflight").await;
    release_and_settle(&s, &gate, "stop-msg-inflight").await;
    assert_eq!(p.paths(), ["/A1"], "the fenced round starts no other action");
    assert_eq!(s.query("stop-msg-inflight").await, stopped, "the fenced round wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_stop_fences_out_a_check_back_in_flight() {
    // The check-back of a late message is in flight when an operator stops the message; the
    // check-back then says "committed": the fenced round must not deliver it.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/QueryPrepared", [Reply::ok().blocked_by(&gate)]);
    let msg = Msg::new("stop-check-back", p.url("/QueryPrepared")).step(p.url("/A1"), "{}");
    assert_eq!(c.prepare(&msg.json()).await.0, 200);
    s.advance(Duration::from_secs(36));
    let engine = s.engine().clone();
    let cron = tokio::spawn(async move { engine.run_once().await.expect("run_once") });
    p.wait_calls("/QueryPrepared", 1).await;

    let stopped = assert_force_stopped(&s, &c, "stop-check-back").await;
    release_and_settle(&s, &gate, "stop-check-back").await;
    assert_eq!(cron.await.expect("cron task"), 1);
    assert_eq!(p.paths(), ["/QueryPrepared"], "the fenced round delivers nothing");
    assert_eq!(s.query("stop-check-back").await, stopped, "the fenced round wrote nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_next_cron_time_retries_a_backed_off_saga_now() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    p.script("/A1", [Reply::error(), Reply::error(), Reply::error()]);
    s.submit(&two_steps(&p, "reset-one").json()).await;
    s.wait_idle("reset-one").await;
    for _ in 0..2 {
        advance_to_due(&s, "reset-one").await;
        assert_eq!(s.cron().await, 1);
        s.wait_idle("reset-one").await;
    }
    let base = s.engine().options().retry.retry_interval.as_secs();
    let q = s.query("reset-one").await;
    assert_eq!(q["transaction"]["next_cron_interval"], 8 * base, "backed off three times: {q}");
    assert!(due_in_ms(&s, &q) > 60_000, "far ahead: {q}");
    assert_eq!(branch(&q, "01", "action")["attempts"], 3);
    assert_eq!(s.cron().await, 0);

    let (code, reply) = c.reset_next_cron_time("reset-one").await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(reply["dtm_result"], "SUCCESS");
    let q = s.query("reset-one").await;
    let t = &q["transaction"];
    assert_eq!(time_ms(&t["next_cron_time"]), s.now_ms(), "due now: {q}");
    assert_eq!(t["next_cron_interval"], base, "the backoff is reset: {q}");
    assert_eq!(status_of(&q), "submitted");

    // No clock change: the cron runs it at once.
    assert_eq!(s.cron().await, 1);
    let q = s.wait_status("reset-one", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed"]);
    assert_eq!(p.calls_for("/A1").len(), 4);

    // Any status, as DTM: a finished one is not due for all that.
    let (code, reply) = c.reset_next_cron_time("reset-one").await;
    assert_eq!(code, 200, "{reply}");
    assert_eq!(s.cron().await, 0);
    let (code, reply) = c.reset_next_cron_time("reset-nobody").await;
    assert_eq!(code, 404, "unknown gid: {reply}");
    let (code, reply) = c.post("resetNextCronTime", &json!({})).await;
    assert_eq!(code, 400, "no gid: {reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_cron_time_pulls_back_what_is_scheduled_too_far_ahead() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    // Three due in 1000 s, one in 100 s, one finished.
    for i in 0..3 {
        Tcc::prepare(&c, &format!("far-{i}"), json!({"timeout_to_fail": 1000})).await;
    }
    Tcc::prepare(&c, "near", json!({"timeout_to_fail": 100})).await;
    assert_eq!(s.submit(&two_steps(&p, "done").wait_result().json()).await.0, 200);

    let reset = |params: Vec<(&'static str, &'static str)>| {
        let c = c.clone();
        async move {
            let (code, reply) = c.get("resetCronTime", &params).await;
            assert_eq!(code, 200, "{params:?}: {reply}");
            (reply["has_remaining"].as_bool().expect("has_remaining"), reply["succeed_count"].clone())
        }
    };
    let params = vec![("timeout", "500"), ("limit", "2")];
    assert_eq!(reset(params.clone()).await, (true, json!(2)), "a full batch: maybe more");
    assert_eq!(reset(params.clone()).await, (false, json!(1)));
    assert_eq!(reset(params.clone()).await, (false, json!(0)));
    for i in 0..3 {
        let q = s.query(&format!("far-{i}")).await;
        assert_eq!(time_ms(&q["transaction"]["next_cron_time"]), s.now_ms(), "{q}");
    }
    let near = s.query("near").await;
    assert_eq!(due_in_ms(&s, &near), 100_000, "within the window: untouched");

    // Due now: the cron takes them, finds nothing to do yet, and gives them back.
    assert_eq!(s.cron().await, 3);
    for i in 0..3 {
        let q = s.query(&format!("far-{i}")).await;
        assert_eq!(status_of(&q), "prepared");
        assert_eq!(due_in_ms(&s, &q), 1_000_000, "due at its timeout again: {q}");
    }
    // The default window is 3 × timeout_to_fail (105 s): the 1000 s ones only.
    assert_eq!(reset(vec![]).await, (false, json!(3)));
    assert_eq!(due_in_ms(&s, &s.query("near").await), 100_000);
    assert!(p.paths().iter().all(|p| p == "/A1" || p == "/A2"), "{:?}", p.paths());

    for bad in [("limit", "0"), ("limit", "x"), ("timeout", "-1")] {
        let (code, reply) = c.get("resetCronTime", &[bad]).await;
        assert_eq!(code, 400, "{bad:?}: {reply}");
    }
}
