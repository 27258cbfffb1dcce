//! kill -9 of the real `dtx` binary during TCC phase two and during a 2-phase message, then a
//! restart on the same database: the transaction resumes from its stored branch states (as
//! soon as the lease of the dead process expires), skips nothing, and never switches to the
//! other phase.
//!
//! Needs the `dtx` binary next to the test binaries (`cargo build -p dtx-server`; a workspace
//! `cargo test` builds it).

use std::time::Duration;

use dtx_tests::{
    Client, DtxProcess, Gate, Msg, Participant, Reply, Tcc, branch_statuses, free_port, sqlite_url,
};
use serde_json::json;

use crate::crash::FLAGS;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_a_confirm_then_restart_confirms_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dtx.log");
    let p = Participant::spawn().await;
    let gate = Gate::new();
    // Confirms run newest first: 03 answers, 02 hangs until released (then answers 200).
    p.script("/B2Confirm", [Reply::ok().blocked_by(&gate)]);

    let mut dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    let c = Client::new(dtx.base_url());
    let tcc = Tcc::prepare(&c, "crash-tcc", json!({})).await;
    for (id, service) in [("01", "B1"), ("02", "B2"), ("03", "B3")] {
        assert_eq!(tcc.branch(&p, id, service, &format!(r#"{{"branch":"{id}"}}"#)).await, 200);
    }
    let (code, reply) = tcc.submit().await;
    assert_eq!(code, 200, "{reply}");
    p.wait_calls("/B2Confirm", 1).await;
    assert!(p.only_call("/B3Confirm").end.is_some(), "branch 03 was confirmed first");
    dtx.kill();
    gate.release();

    let dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    let q = dtx.wait_status("crash-tcc", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed", "prepared", "succeed"]);

    // 03's success was to be written with the end (ADR 21), so it is confirmed again first.
    let c3 = p.calls_for("/B3Confirm");
    let c2 = p.calls_for("/B2Confirm");
    let c1 = p.only_call("/B1Confirm");
    assert_eq!(c3.len(), 2, "branch 03 confirmed again after the restart: {c3:?}");
    assert!((1..=2).contains(&c2.len()), "branch 02 confirmed once or twice: {c2:?}");
    assert!(c3[0].ended() <= c2[0].start, "03 before 02");
    assert!(c3[1].ended() <= c2.last().expect("a confirm of 02").start, "03 before 02 after the restart");
    assert!(c1.start >= c2.last().expect("a confirm of 02").ended(), "01 only after 02 succeeded");
    assert!(c2.iter().all(|c| c.param("branch_id") == "02" && c.param("op") == "confirm"));
    assert_eq!(c1.body, br#"{"branch":"01"}"#);
    assert!(p.paths().iter().all(|path| !path.ends_with("Cancel")), "no cancel ever ran: {:?}", p.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_a_cancel_then_restart_cancels_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dtx.log");
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/B2Cancel", [Reply::ok().blocked_by(&gate)]);

    let mut dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    let c = Client::new(dtx.base_url());
    let tcc = Tcc::prepare(&c, "crash-tcc-cancel", json!({})).await;
    for (id, service) in [("01", "B1"), ("02", "B2"), ("03", "B3")] {
        tcc.branch(&p, id, service, "{}").await;
    }
    let (code, reply) = tcc.abort("try of 04 failed").await;
    assert_eq!(code, 200, "{reply}");
    p.wait_calls("/B2Cancel", 1).await;
    dtx.kill();
    gate.release();

    let dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    let q = dtx.wait_status("crash-tcc-cancel", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "prepared", "succeed", "prepared", "succeed", "prepared"]);
    assert_eq!(q["transaction"]["rollback_reason"], "try of 04 failed");
    p.only_call("/B3Cancel");
    p.only_call("/B1Cancel");
    assert!((1..=2).contains(&p.calls_for("/B2Cancel").len()));
    assert!(p.paths().iter().all(|path| !path.ends_with("Confirm")), "no confirm ever ran: {:?}", p.paths());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_a_msg_action_then_restart_delivers_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dtx.log");
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A1", [Reply::ok().blocked_by(&gate)]);

    let mut dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    let c = Client::new(dtx.base_url());
    let msg =
        Msg::new("crash-msg", p.url("/QueryPrepared")).step(p.url("/A1"), "{}").step(p.url("/A2"), "{}");
    assert_eq!(c.prepare(&msg.json()).await.0, 200);
    let (code, reply) = c.submit(&msg.json()).await;
    assert_eq!(code, 200, "{reply}");
    p.wait_calls("/A1", 1).await;
    dtx.kill();
    gate.release();

    let dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    let q = dtx.wait_status("crash-msg", "succeed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed"]);
    let a1 = p.calls_for("/A1");
    assert!((1..=2).contains(&a1.len()), "{a1:?}");
    let a2 = p.only_call("/A2");
    assert!(a2.start >= a1.last().expect("an A1 call").ended());
    assert!(p.calls_for("/QueryPrepared").is_empty(), "a submitted message is never checked back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_longer_than_the_lease_keep_the_transaction_to_its_round() {
    // 2.5 leases long: the round must renew its lease while it waits, or its own scheduler
    // would claim the transaction again and call the participant a second time, concurrently.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dtx.log");
    let p = Participant::spawn().await;
    let slow = || Reply::ok().after(Duration::from_millis(2500));
    p.script("/B1Confirm", [slow()]);
    p.script("/QueryPrepared", [slow()]);
    let dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    let c = Client::new(dtx.base_url());

    // A TCC confirm.
    let tcc = Tcc::prepare(&c, "long-confirm", json!({"request_timeout": 5})).await;
    tcc.branch(&p, "01", "B1", "{}").await;
    assert_eq!(tcc.submit().await.0, 200);
    // A msg check-back: the message is prepared with a 1 s timeout and never submitted.
    let msg = Msg::new("long-check-back", p.url("/QueryPrepared"))
        .step(p.url("/A1"), "{}")
        .option("request_timeout", json!(5))
        .option("timeout_to_fail", json!(1));
    assert_eq!(c.prepare(&msg.json()).await.0, 200);

    dtx.wait_status("long-confirm", "succeed").await;
    dtx.wait_status("long-check-back", "succeed").await;
    p.only_call("/B1Confirm");
    p.only_call("/QueryPrepared");
    p.only_call("/A1");
}
