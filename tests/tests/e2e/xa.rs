//! XA on the wire (DTM's xa tests): the test plays the client and the participants' SDK
//! (prepare, registerBranch per branch, submit or abort); dtx runs phase two on scripted HTTP
//! participants: `commit` (or `rollback`) on every branch, oldest first, one at a time, POST
//! with an empty body. Real databases under XA: dtx-client's e2e suite (`xa.rs` there).

use std::time::Duration;

use dtx_tests::{
    Client, DtxProcess, Gate, Participant, Reply, TestServer, advance_to_due, assert_timeout_reason,
    branch_statuses, free_port, sqlite_url, status_of,
};
use serde_json::{Value, json};

use crate::crash::FLAGS;

fn body(gid: &str) -> Value {
    json!({"gid": gid, "trans_type": "xa"})
}

/// registerBranch as DTM's XA SDK sends it: `url` = the branch's phase-two URL, no data.
async fn register(c: &Client, gid: &str, branch_id: &str, url: &str) -> (u16, Value) {
    c.register_branch(&json!({"gid": gid, "trans_type": "xa", "branch_id": branch_id, "url": url})).await
}

/// Prepares `gid` and registers branches `01`.. on `/B1`, `/B2`... of `p`.
async fn prepared(c: &Client, p: &Participant, gid: &str, n: usize) {
    let (code, reply) = c.prepare(&body(gid)).await;
    assert_eq!(code, 200, "{reply}");
    for i in 1..=n {
        let (code, reply) = register(c, gid, &format!("{i:02}"), &p.url(&format!("/B{i}"))).await;
        assert_eq!(code, 200, "{reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xa_commits_oldest_first_one_at_a_time_with_post_and_an_empty_body() {
    // DTM's TestXaNormal.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    // A slow commit would overlap with the next one if they ran concurrently.
    p.script("/B1", [Reply::ok().after(Duration::from_millis(150))]);
    prepared(&c, &p, "xa-normal", 3).await;
    let q = s.query("xa-normal").await;
    let rows: Vec<String> = q["branches"]
        .as_array()
        .expect("branches")
        .iter()
        .map(|b| {
            format!(
                "{} {} {}",
                b["branch_id"].as_str().unwrap_or(""),
                b["op"].as_str().unwrap_or(""),
                b["url"].as_str().unwrap_or("")
            )
        })
        .collect();
    let want: Vec<String> = (1..=3)
        .flat_map(|i| ["rollback", "commit"].map(|op| format!("{i:02} {op} {}", p.url(&format!("/B{i}")))))
        .collect();
    assert_eq!(rows, want, "a rollback row, then a commit row, per branch, both on its URL");
    assert!(p.calls().is_empty(), "nothing is called before submit");

    let (code, reply) = c.submit(&body("xa-normal")).await;
    assert_eq!(code, 200, "{reply}");
    let q = s.wait_status("xa-normal", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed", "prepared", "succeed"]);
    let calls = p.calls();
    assert_eq!(calls.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["/B1", "/B2", "/B3"]);
    for (i, call) in calls.iter().enumerate() {
        assert_eq!(call.method, "POST", "XA phase two is a POST even without a payload");
        assert!(call.body.is_empty(), "empty body: {:?}", call.body);
        assert_eq!(call.param("gid"), "xa-normal");
        assert_eq!(call.param("trans_type"), "xa");
        assert_eq!(call.param("branch_id"), format!("{:02}", i + 1));
        assert_eq!(call.param("op"), "commit");
    }
    assert!(calls[0].ended() <= calls[1].start, "one at a time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xa_abort_rolls_back_every_branch_retrying_until_success() {
    // DTM's TestXaRollback, with a rollback that fails first (FAILURE counts as an error).
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    p.script("/B2", [Reply::failure("not yet"), Reply::ok()]);
    prepared(&c, &p, "xa-abort", 2).await;
    let mut abort = body("xa-abort");
    abort["rollback_reason"] = json!("branch 03 failed locally");
    let (code, reply) = c.abort(&abort).await;
    assert_eq!(code, 200, "{reply}");
    // The first round stops at 02's refusal; a later one rolls it back.
    let mut rounds = s.rounds();
    while s.status("xa-abort").await != "failed" {
        advance_to_due(&s, "xa-abort").await;
        s.cron().await;
        let _ = tokio::time::timeout(Duration::from_millis(200), rounds.ended("xa-abort")).await;
    }
    let q = s.query("xa-abort").await;
    assert_eq!(branch_statuses(&q), ["succeed", "prepared", "succeed", "prepared"]);
    assert_eq!(q["transaction"]["rollback_reason"], "branch 03 failed locally");
    let calls = p.calls();
    assert!(calls.iter().all(|c| c.param("op") == "rollback"), "never a commit");
    assert_eq!(calls.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["/B1", "/B2", "/B2"]);
    // Abort twice is fine; submit after abort is refused; so is a late registration.
    assert_eq!(c.abort(&body("xa-abort")).await.0, 409, "finished: nothing to abort");
    assert_eq!(c.submit(&body("xa-abort")).await.0, 409);
    assert_eq!(register(&c, "xa-abort", "03", &p.url("/B3")).await.0, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xa_past_its_timeout_rolls_back_and_the_client_cannot_submit() {
    // DTM's TestXaTimeout.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let mut b = body("xa-timeout");
    b["timeout_to_fail"] = json!(5);
    assert_eq!(c.prepare(&b).await.0, 200);
    assert_eq!(register(&c, "xa-timeout", "01", &p.url("/B1")).await.0, 200);
    // Before the timeout a cron round does nothing.
    s.cron().await;
    assert_eq!(s.status("xa-timeout").await, "prepared");
    assert!(p.calls().is_empty());

    advance_to_due(&s, "xa-timeout").await;
    s.cron().await;
    let q = s.wait_status("xa-timeout", "failed").await;
    assert_timeout_reason(q["transaction"]["rollback_reason"].as_str().unwrap_or_default());
    assert_eq!(branch_statuses(&q), ["succeed", "prepared"]);
    assert_eq!(p.only_call("/B1").param("op"), "rollback");
    let (code, reply) = c.submit(&body("xa-timeout")).await;
    assert_eq!(code, 409, "{reply}");
    assert_eq!(register(&c, "xa-timeout", "02", &p.url("/B2")).await.0, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xa_requests_are_idempotent_as_in_dtm() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    prepared(&c, &p, "xa-idem", 1).await;
    assert_eq!(c.prepare(&body("xa-idem")).await.0, 200, "prepare of a prepared gid is a no-op");
    // The same registration again is a client retry; another URL for the same branch is not.
    assert_eq!(register(&c, "xa-idem", "01", &p.url("/B1")).await.0, 200);
    let (code, reply) = register(&c, "xa-idem", "01", &p.url("/Other")).await;
    assert_eq!(code, 409, "{reply}");
    let (code, reply) = register(&c, "xa-idem", "02", "").await;
    assert_eq!(code, 400, "an XA branch needs its phase-two URL: {reply}");
    assert_eq!(s.query("xa-idem").await["branches"].as_array().map(Vec::len), Some(2));

    let mut submit = body("xa-idem");
    submit["wait_result"] = json!(true);
    assert_eq!(c.submit(&submit).await.0, 200);
    assert_eq!(s.status("xa-idem").await, "succeed");
    // A submit of a finished XA, and an abort of it, are refused.
    assert_eq!(c.submit(&body("xa-idem")).await.0, 409);
    assert_eq!(c.abort(&body("xa-idem")).await.0, 409);
    assert_eq!(p.calls_for("/B1").len(), 1, "committed once");
    assert_eq!(status_of(&s.query("xa-idem").await), "succeed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_an_xa_commit_then_restart_commits_the_rest() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("dtx.log");
    let p = Participant::spawn().await;
    let gate = Gate::new();
    // Commits run oldest first: 01 answers, 02 hangs until released (then answers 200).
    p.script("/B2", [Reply::ok().blocked_by(&gate)]);

    let mut dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    let c = Client::new(dtx.base_url());
    prepared(&c, &p, "crash-xa", 3).await;
    let (code, reply) = c.submit(&body("crash-xa")).await;
    assert_eq!(code, 200, "{reply}");
    p.wait_calls("/B2", 1).await;
    assert!(p.only_call("/B1").end.is_some(), "branch 01 was committed first");
    dtx.kill();
    gate.release();

    let dtx = DtxProcess::start(&sqlite_url(dir.path()), free_port(), FLAGS, &log).await;
    let q = dtx.wait_status("crash-xa", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed", "prepared", "succeed"]);
    // 01's success was to be written with the end (ADR 21), so it is committed again first.
    let (c1, c2, c3) = (p.calls_for("/B1"), p.calls_for("/B2"), p.only_call("/B3"));
    assert_eq!(c1.len(), 2, "branch 01 committed again after the restart: {c1:?}");
    assert!((1..=2).contains(&c2.len()), "branch 02 committed once or twice: {c2:?}");
    assert!(c1[0].ended() <= c2[0].start, "01 before 02");
    assert!(c1[1].ended() <= c2.last().expect("a commit of 02").start, "01 before 02 after the restart");
    assert!(c3.start >= c2.last().expect("a commit of 02").ended(), "03 only after 02 succeeded");
    assert!(p.calls().iter().all(|c| c.param("op") == "commit"), "no rollback ever ran");
}
