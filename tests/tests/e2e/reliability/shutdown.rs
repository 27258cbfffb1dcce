//! Shutdown (issue 12 item 5): on SIGTERM the node stops claiming, reports NOT_SERVING on gRPC
//! health, refuses new rounds with 503 + Retry-After, drains its in-flight rounds within the
//! grace period and exits; what it did not finish is taken over after a restart. A wait_result
//! client that disconnects does not cancel its round.

use std::time::{Duration, Instant};

use dtx_tests::{DtxProcess, Gate, Participant, Reply, Saga, TestServer, free_port, server::read};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn health(port: u16) -> Option<i32> {
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .ok()?
        .connect()
        .await
        .ok()?;
    let r =
        HealthClient::new(channel).check(HealthCheckRequest { service: "dtmgimp.Dtm".into() }).await.ok()?;
    Some(r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_claiming_reports_not_serving_drains_and_hands_work_over() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dtx_tests::sqlite_url(dir.path());
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A1", [Reply::ok().blocked_by(&gate)]);
    let grpc_port = free_port();
    let grpc_flag = format!("--grpc-listen=127.0.0.1:{grpc_port}");
    let flags = ["--shutdown-grace", "10s", "--lease", "2s", "--poll-interval", "100ms", grpc_flag.as_str()];
    let mut dtx = DtxProcess::start(&db, free_port(), &flags, &dir.path().join("dtx.log")).await;
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    assert_eq!(health(grpc_port).await, Some(ServingStatus::Serving as i32));

    let saga =
        Saga::new("drain-1").step(p.url("/A1"), p.url("/C1"), "{}").step(p.url("/A2"), p.url("/C2"), "{}");
    let (code, reply) = read(
        http.post(format!("{}/submit", dtx.base_url())).json(&saga.json()).send().await.expect("submit"),
    )
    .await;
    assert_eq!(code, 200, "{reply}");
    p.wait_calls("/A1", 1).await;

    dtx.signal_term();
    // NOT_SERVING while the round drains, listeners still open.
    let started = Instant::now();
    loop {
        if health(grpc_port).await == Some(ServingStatus::NotServing as i32) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "health never said NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // New work is refused, with a hint to retry elsewhere.
    let late = Saga::new("drain-late").step(p.url("/A1"), p.url("/C1"), "{}");
    let resp =
        http.post(format!("{}/submit", dtx.base_url())).json(&late.json()).send().await.expect("answered");
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    // The in-flight call ends; the round starts no new call and hands the saga back.
    gate.release();
    let status = dtx.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "dtx exits cleanly after the drain: {status}");
    assert!(p.calls_for("/A2").is_empty(), "no new call was started during the drain");

    // Another node (here: the same one restarted) finishes it.
    let dtx = DtxProcess::start(&db, free_port(), &flags, &dir.path().join("dtx2.log")).await;
    dtx.wait_status("drain-1", "succeed").await;
    assert_eq!(p.calls_for("/A2").len(), 1);
    let (code, q) =
        read(http.get(format!("{}/query?gid=drain-late", dtx.base_url())).send().await.expect("query")).await;
    assert!(code == 404 || q["transaction"].is_null(), "the refused submit stored nothing: {q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_result_client_that_disconnects_does_not_cancel_its_round() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A1", [Reply::ok().blocked_by(&gate)]);
    let saga =
        Saga::new("gone-1").step(p.url("/A1"), p.url("/C1"), "{}").step(p.url("/A2"), p.url("/C2"), "{}");
    let impatient =
        reqwest::Client::builder().no_proxy().timeout(Duration::from_millis(300)).build().expect("client");
    let sent =
        impatient.post(format!("{}/submit", s.base_url())).json(&saga.wait_result().json()).send().await;
    assert!(sent.is_err(), "the client gave up before the answer: {sent:?}");
    p.wait_calls("/A1", 1).await;
    gate.release();
    // No scheduler runs in the TestServer: only the original round can finish it.
    s.wait_status("gone-1", "succeed").await;
    assert_eq!(p.calls_for("/A2").len(), 1);
}
