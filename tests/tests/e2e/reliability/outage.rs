//! Participant outage: one participant is down (nothing listens on its port) for a while, then
//! back. Every transaction finishes; the retries keep to the backoff cap (once it is back, all
//! finish within about one capped interval); and a saga for a healthy participant submitted
//! during the outage finishes in under a second.

use std::time::{Duration, Instant};

use dtx_tests::{DtxProcess, Participant, Saga, free_port, server::read};

use super::{size, unfinished};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_outage_delays_only_its_own_transactions() {
    let outage = Duration::from_secs(size(6, 60));
    let cap = Duration::from_secs(3);
    let dir = tempfile::tempdir().expect("temp dir");
    let flags = ["--retry-interval", "1s", "--backoff-cap", "3s", "--poll-interval", "100ms"];
    let dtx = DtxProcess::start(
        &dtx_tests::sqlite_url(dir.path()),
        free_port(),
        &flags,
        &dir.path().join("dtx.log"),
    )
    .await;
    let healthy = Participant::spawn().await;
    let down_port = free_port();
    let down_url = |path: &str| format!("http://127.0.0.1:{down_port}{path}");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");

    let started = Instant::now();
    let mut waiting = Vec::new();
    let mut slowest_healthy = Duration::ZERO;
    let mut n = 0;
    while started.elapsed() < outage {
        n += 1;
        let gid = format!("down-{n}");
        let body = Saga::new(&gid).step(down_url("/A1"), down_url("/C1"), "{}").json();
        let (code, reply) =
            read(http.post(format!("{}/submit", dtx.base_url())).json(&body).send().await.expect("submit"))
                .await;
        assert_eq!(code, 200, "{reply}");
        waiting.push(gid);
        // A healthy participant's saga meanwhile: wait_result, timed.
        let gid = format!("healthy-{n}");
        let body = Saga::new(&gid)
            .step(healthy.url("/A1"), healthy.url("/C1"), "{}")
            .step(healthy.url("/A2"), healthy.url("/C2"), "{}")
            .wait_result()
            .json();
        let t = Instant::now();
        let (code, reply) =
            read(http.post(format!("{}/submit", dtx.base_url())).json(&body).send().await.expect("submit"))
                .await;
        let took = t.elapsed();
        assert_eq!(code, 200, "{gid}: {reply}");
        assert!(took < Duration::from_secs(1), "{gid} took {took:?} during the outage");
        slowest_healthy = slowest_healthy.max(took);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let back = Participant::spawn_on(down_port).await;
    let t = Instant::now();
    let left = unfinished(&dtx.base_url(), &waiting, cap + Duration::from_secs(5)).await;
    let drained = t.elapsed();
    assert!(left.is_empty(), "not finished {drained:?} after the participant came back: {left:?}");
    assert!(!back.calls_for("/A1").is_empty());
    println!(
        "participant outage: {outage:?} down, {} of its sagas all finished {drained:?} after it came back (backoff cap {cap:?}); {n} healthy sagas meanwhile, slowest {slowest_healthy:?}",
        waiting.len()
    );
}
