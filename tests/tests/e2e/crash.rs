//! kill -9 of the real `dtx` binary mid-saga, then a restart on the same database: the saga
//! resumes from its stored branch states, skips nothing and never compensates an action that
//! was not attempted.
//!
//! Needs the `dtx` binary next to the test binaries (`cargo build -p dtx-server`; a workspace
//! `cargo test` builds it).

use std::time::Duration;

use dtx_tests::{
    DtxProcess, Gate, Participant, Reply, Saga, branch_statuses, free_port, server::read, sqlite_url,
};
use serde_json::Value;

pub(crate) const FLAGS: &[&str] = &["--lease", "1s", "--poll-interval", "100ms", "--retry-interval", "1s"];

fn three_steps(p: &Participant, gid: &str) -> Value {
    Saga::new(gid)
        .step(p.url("/A1"), p.url("/C1"), r#"{"step":1}"#)
        .step(p.url("/A2"), p.url("/C2"), r#"{"step":2}"#)
        .step(p.url("/A3"), p.url("/C3"), r#"{"step":3}"#)
        .json()
}

async fn submit(http: &reqwest::Client, dtx: &DtxProcess, body: &Value) {
    let resp = http.post(format!("{}/submit", dtx.base_url())).json(body).send().await.expect("submit");
    let (code, reply) = read(resp).await;
    assert_eq!(code, 200, "{reply}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_an_action_then_restart_finishes_the_saga() {
    kill_during_step_two_then_restart(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_step_writes_a_step_done_before_a_kill_is_not_called_again() {
    kill_during_step_two_then_restart(true).await;
}

/// kill -9 while step 2's call is in flight, then a restart. By default (ADR 21) a saga on
/// SQLite writes its results at its end, so step 1's success was not on record yet: step 1
/// runs again, then step 2. With `--write-each-branch=true` each result is written before the
/// next call, so only step 2 (whose answer was lost) runs again.
async fn kill_during_step_two_then_restart(step_writes: bool) {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dtx.log");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let p = Participant::spawn().await;
    let gate = Gate::new();
    // The first call of step 2 hangs until released; any later call answers 200.
    p.script("/A2", [Reply::ok().blocked_by(&gate)]);
    let flags: Vec<&str> = FLAGS
        .iter()
        .copied()
        .chain(["--write-each-branch", if step_writes { "true" } else { "false" }])
        .collect();

    let mut dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), &flags, &log).await;
    submit(&http, &dtx, &three_steps(&p, "crash-forward")).await;
    p.wait_calls("/A2", 1).await;
    dtx.kill();
    gate.release();

    let dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), &flags, &log).await;
    let q = dtx.wait_status("crash-forward", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed", "prepared", "succeed"]);

    let a1 = p.calls_for("/A1");
    let a2 = p.calls_for("/A2");
    let a3 = p.only_call("/A3");
    let expected_a1 = if step_writes { 1 } else { 2 };
    assert_eq!(a1.len(), expected_a1, "step 1 calls: {a1:?}");
    assert!((1..=2).contains(&a2.len()), "step 2 ran once or twice: {a2:?}");
    assert!(a1[0].ended() <= a2[0].start, "step 2 after step 1");
    let (a1_last, a2_last) = (a1.last().expect("a step-1 call"), a2.last().expect("a step-2 call"));
    assert!(a1_last.ended() <= a2_last.start, "after the restart too, step 2 after step 1");
    // The last step-2 call is the one whose answer reached dtx.
    assert!(a3.start >= a2_last.ended(), "step 3 only after step 2 succeeded");
    assert!(p.calls().iter().all(|c| c.param("op") == "action"), "no compensation ran: {:?}", p.paths());
    assert!(a2.iter().all(|c| c.param("gid") == "crash-forward" && c.param("branch_id") == "02"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_a_compensation_then_restart_finishes_the_rollback() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dtx.log");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A3", [Reply::failure("out of stock")]);
    p.script("/C2", [Reply::ok().blocked_by(&gate)]);

    let mut dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    submit(&http, &dtx, &three_steps(&p, "crash-rollback")).await;
    p.wait_calls("/C2", 1).await;
    dtx.kill();
    gate.release();

    let dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    let q = dtx.wait_status("crash-rollback", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed", "succeed", "succeed", "succeed", "failed"]);
    let reason = q["transaction"]["rollback_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("out of stock"), "{reason}");

    // No action ran again after the failure.
    let a1 = p.only_call("/A1");
    let a2 = p.only_call("/A2");
    let a3 = p.only_call("/A3");
    assert!(a1.ended() <= a2.start && a2.ended() <= a3.start);
    // Compensations in reverse order: 3 (the failed step too), 2 (re-run after the crash), 1.
    let c3 = p.only_call("/C3");
    let c2 = p.calls_for("/C2");
    let c1 = p.only_call("/C1");
    assert!((1..=2).contains(&c2.len()), "compensation 2 ran once or twice: {c2:?}");
    assert!(c3.start >= a3.ended());
    assert!(c2[0].start >= c3.ended(), "step 2 is compensated after step 3");
    assert!(c1.start >= c2.last().expect("a C2 call").ended(), "step 1 is compensated last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_longer_than_the_lease_keeps_the_saga_to_its_round() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dtx.log");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let p = Participant::spawn().await;
    // 2.5 leases long: the round must renew its lease, or its own scheduler would claim the
    // saga again and call the participant a second time.
    p.script("/A1", [Reply::ok().after(Duration::from_millis(2500))]);
    let dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    let mut body = three_steps(&p, "long-call");
    body["request_timeout"] = serde_json::json!(5);
    submit(&http, &dtx, &body).await;
    dtx.wait_status("long-call", "succeed").await;
    p.only_call("/A1");
    assert_eq!(p.paths(), ["/A1", "/A2", "/A3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_call_in_flight_finish_and_hands_the_saga_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dtx.log");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A2", [Reply::ok().blocked_by(&gate)]);

    let mut dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    submit(&http, &dtx, &three_steps(&p, "sigterm")).await;
    p.wait_calls("/A2", 1).await;
    let stopping = dtx.terminate(Duration::from_secs(10));
    tokio::pin!(stopping);
    // Still waiting for the call in flight...
    tokio::select! {
        status = &mut stopping => panic!("dtx exited ({status}) while a call was in flight"),
        _ = tokio::time::sleep(Duration::from_millis(300)) => {}
    }
    gate.release();
    let status = stopping.await;
    assert!(status.success(), "graceful shutdown exits 0: {status}");
    assert!(p.calls_for("/A3").is_empty(), "no new call is started while shutting down");

    let dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    let q = dtx.wait_status("sigterm", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed", "prepared", "succeed"]);
    // The answer of the call in flight was recorded: step 2 is not called again.
    assert_eq!(p.paths(), ["/A1", "/A2", "/A3"]);
}
