//! Operating dtx: Prometheus metrics after known traffic (real participants on loopback, HTTP
//! and gRPC), readiness, and retention end to end.

use std::time::Duration;

use dtx_tests::{Client, Gate, Participant, Reply, Saga, TestServer, eventually};
use serde_json::json;

/// The sum of the samples of `name` whose labels include every pair of `labels`.
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name).then_some((rest, value))
        })
        .filter(|(rest, _)| labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
        .map(|(_, v)| v.parse::<f64>().unwrap_or_else(|_| panic!("{name}: bad value {v}")))
        .sum()
}

pub(crate) async fn scrape(s: &TestServer) -> String {
    let resp = s.http().get(format!("{}/api/metrics", s.root_url())).send().await.expect("scrape");
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().expect("content type").to_owned();
    assert!(ct.contains("openmetrics-text") || ct.contains("text/plain"), "{ct}");
    resp.text().await.expect("body")
}

fn two_steps(p: &Participant, gid: &str) -> Saga {
    Saga::new(gid).step(p.url("/TransOut"), p.url("/TransOutRevert"), "{}").step(
        p.url("/TransIn"),
        p.url("/TransInRevert"),
        "{}",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_with_dtms_names_and_labels() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let host = p.url("").trim_start_matches("http://").trim_end_matches('/').to_owned();

    // 1: succeeds at once. 2: TransIn errors once (500), succeeds in the next round.
    // 3: TransIn fails (409) and is compensated.
    s.submit(&two_steps(&p, "m-ok").json()).await;
    s.wait_status("m-ok", "succeed").await;
    p.script("/TransIn", [Reply::error()]);
    s.submit(&two_steps(&p, "m-retry").json()).await;
    s.wait_idle("m-retry").await;
    s.advance(Duration::from_secs(60));
    assert_eq!(s.cron().await, 1);
    s.wait_status("m-retry", "succeed").await;
    p.script("/TransIn", [Reply::failure("no")]);
    s.submit(&two_steps(&p, "m-fail").json()).await;
    s.wait_status("m-fail", "failed").await;
    // A refused submit, and one gRPC call.
    let (code, _) = s.submit(&json!({"gid": "", "trans_type": "saga"})).await;
    assert_eq!(code, 400);
    let mut dtm = dtx_tests::grpc::dtm_client(&s).await;
    dtm.new_gid(()).await.expect("NewGid");

    let m = scrape(&s).await;
    assert_eq!(sample(&m, "dtm_server_info", &[("grpc_version", "tonic-0.14")]), 1.0, "{m}");
    let http = |api, status| {
        sample(&m, "dtm_server_process_total", &[("type", "http"), ("api", api), ("status", status)])
    };
    assert_eq!(http("submit", "ok"), 3.0, "{m}");
    assert_eq!(http("submit", "fail"), 1.0, "{m}");
    assert!(http("query", "ok") >= 4.0, "{m}");
    assert_eq!(
        sample(&m, "dtm_server_process_total", &[("type", "grpc"), ("api", "newgid"), ("status", "ok")]),
        1.0,
        "{m}"
    );
    assert_eq!(sample(&m, "dtm_server_response_duration_count", &[("type", "http"), ("api", "submit")]), 4.0);
    // Branches: TransOut ok x3; TransIn ok x2 (m-ok, m-retry's retry), fail x2 (500, 409);
    // compensations of m-fail: both steps (TransIn was attempted).
    let branch = |id, op, status| {
        sample(
            &m,
            "dtm_branch_process_total",
            &[("model", "saga"), ("branchid", id), ("branchtype", op), ("status", status)],
        )
    };
    assert_eq!(branch("01", "action", "ok"), 3.0, "{m}");
    assert_eq!(branch("02", "action", "ok"), 2.0, "{m}");
    assert_eq!(branch("02", "action", "fail"), 2.0, "{m}");
    assert_eq!(branch("01", "compensate", "ok"), 1.0, "{m}");
    assert_eq!(branch("02", "compensate", "ok"), 1.0, "{m}");
    let calls = |outcome| sample(&m, "dtx_participant_calls_total", &[("host", &host), ("outcome", outcome)]);
    assert_eq!((calls("success"), calls("error"), calls("failure")), (7.0, 1.0, 1.0), "{m}");
    // Rounds: m-ok 1 (finished), m-retry 2 (pending, then finished), m-fail 1 (finished).
    assert_eq!(
        sample(&m, "dtm_transaction_process_total", &[("model", "saga"), ("status", "ok")]),
        3.0,
        "{m}"
    );
    assert_eq!(
        sample(&m, "dtm_transaction_process_total", &[("model", "saga"), ("status", "fail")]),
        1.0,
        "{m}"
    );
    assert_eq!(sample(&m, "dtm_transaction_handled_duration_count", &[("model", "saga")]), 4.0, "{m}");
    assert_eq!(sample(&m, "dtx_rounds_in_flight", &[]), 0.0, "{m}");
    assert_eq!(sample(&m, "dtx_claimed_total", &[]), 1.0, "{m}");
    // That claim took a released row: not a lease takeover.
    assert!(m.contains("dtx_lease_takeovers_total"), "{m}");
    assert_eq!(sample(&m, "dtx_lease_takeovers_total", &[]), 0.0, "{m}");
    assert_eq!(sample(&m, "dtx_transactions", &[("status", "succeed")]), 2.0, "{m}");
    assert_eq!(sample(&m, "dtx_transactions", &[("status", "failed")]), 1.0, "{m}");
    assert_eq!(sample(&m, "dtx_due_backlog", &[]), 0.0, "{m}");
    assert_eq!(sample(&m, "dtx_store_commit_duration_seconds_count", &[("op", "create")]), 3.0, "{m}");
    assert_eq!(sample(&m, "dtx_store_write_queue_depth", &[]), 0.0, "{m}");
    assert_eq!(sample(&m, "dtx_fenced_writes_total", &[]), 0.0, "{m}");
    assert!(!m.contains("gid="), "no per-gid label: {m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_stopped_round_counts_a_fenced_write_and_the_backlog_shows_due_work() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/TransIn", [Reply::ok().blocked_by(&gate)]);
    s.submit(&two_steps(&p, "m-fenced").json()).await;
    p.wait_calls("/TransIn", 1).await;
    let m = scrape(&s).await;
    assert_eq!(sample(&m, "dtx_rounds_in_flight", &[]), 1.0, "{m}");
    let (code, _) = c.force_stop("m-fenced").await;
    assert_eq!(code, 200);
    gate.release();
    eventually(Duration::from_secs(5), "a fenced write", || async {
        (sample(&scrape(&s).await, "dtx_fenced_writes_total", &[]) == 1.0).then_some(())
    })
    .await;

    // Two sagas left due (their participant errors), then the clock moves past their retry.
    p.script("/TransOut", [Reply::error(), Reply::error()]);
    for gid in ["m-due-1", "m-due-2"] {
        s.submit(&two_steps(&p, gid).json()).await;
        s.wait_idle(gid).await;
    }
    assert_eq!(sample(&scrape(&s).await, "dtx_due_backlog", &[]), 0.0);
    s.advance(Duration::from_secs(3600));
    let m = scrape(&s).await;
    assert_eq!(sample(&m, "dtx_due_backlog", &[]), 2.0, "{m}");
    assert_eq!(sample(&m, "dtx_transactions", &[("status", "submitted")]), 2.0, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_statements_count_what_a_saga_sends_to_the_database() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let before = sample(&scrape(&s).await, "dtx_store_statements_total", &[]);
    s.submit(&two_steps(&p, "m-stmts").json()).await;
    s.wait_status("m-stmts", "succeed").await;
    let after = sample(&scrape(&s).await, "dtx_store_statements_total", &[]);
    // At least the insert of the global row and its four branch rows, and the final update.
    assert!(after - before >= 6.0, "{before} -> {after}");
}
