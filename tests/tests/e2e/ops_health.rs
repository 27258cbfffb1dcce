//! Readiness follows the store: `/api/ready` and gRPC health flip to 503 / NOT_SERVING while
//! PostgreSQL is down and back once it returns; `/api/ping` (liveness) answers throughout.
//! Retention end to end: the `dtx purge` subcommand and the background task.

use std::time::Duration;

use dtx_store_postgres::testing::Cluster;
use dtx_tests::{DtxProcess, Participant, Reply, Saga, TestServer, eventually, free_port, sqlite_url};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

async fn get_code(s: &TestServer, path: &str) -> u16 {
    match s.http().get(format!("{}{path}", s.root_url())).send().await {
        Ok(r) => r.status().as_u16(),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

async fn grpc_health(s: &TestServer, service: &str) -> ServingStatus {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", s.grpc_addr()))
        .expect("uri")
        .connect()
        .await
        .expect("connect gRPC");
    let r = HealthClient::new(channel)
        .check(HealthCheckRequest { service: service.into() })
        .await
        .expect("Health/Check");
    r.into_inner().status()
}

async fn wait_ready(s: &TestServer, code: u16, grpc: ServingStatus) {
    eventually(Duration::from_secs(15), &format!("/api/ready {code}, gRPC {grpc:?}"), || async {
        let ready = get_code(s, "/api/ready").await;
        let both = [grpc_health(s, "").await, grpc_health(s, "dtmgimp.Dtm").await];
        (ready == code && both == [grpc, grpc]).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_flips_during_a_postgres_outage() {
    let Some(cluster) = Cluster::start("readiness_flips_during_a_postgres_outage").await else {
        return;
    };
    let url = cluster.url();
    let s = TestServer::spawn(move |c| c.database_url = url.into()).await;
    assert_eq!(get_code(&s, "/api/ready").await, 200);
    wait_ready(&s, 200, ServingStatus::Serving).await;

    cluster.stop().await.expect("stop postgres");
    wait_ready(&s, 503, ServingStatus::NotServing).await;
    assert_eq!(get_code(&s, "/api/ping").await, 200, "liveness does not depend on the store");

    cluster.start_again().await.expect("start postgres again");
    wait_ready(&s, 200, ServingStatus::Serving).await;
}

fn saga(p: &Participant, gid: &str) -> Saga {
    let action = if gid == "active" { "/Slow" } else { "/A" };
    Saga::new(gid).step(p.url(action), p.url("/C"), "{}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dtx_purge_deletes_old_finished_transactions_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = sqlite_url(dir.path());
    let p = Participant::spawn().await;
    p.script("/Slow", [Reply::ongoing()]);
    let mut dtx =
        DtxProcess::start(&db, free_port(), &["--retention", "0"], &dir.path().join("dtx.log")).await;
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    for gid in ["done-1", "done-2", "active"] {
        let resp = http.post(format!("{}/submit", dtx.base_url())).json(&saga(&p, gid).json()).send().await;
        assert_eq!(resp.expect("submit").status(), 200);
    }
    // "active" got the ONGOING answer and stays submitted; the others succeed.
    let _ = dtx.wait_status("done-1", "succeed").await;
    let _ = dtx.wait_status("done-2", "succeed").await;
    dtx.terminate(Duration::from_secs(10)).await;

    let purge = |older_than: &'static str| {
        let db = db.clone();
        async move {
            let out = tokio::process::Command::new(dtx_tests::dtx_binary())
                .args(["purge", "--older-than", older_than, "--database-url", &db])
                .output()
                .await
                .expect("run dtx purge");
            assert!(out.status.success(), "dtx purge: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let out = purge("1h").await;
    assert!(out.contains("deleted 0 "), "nothing is an hour old yet: {out}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let out = purge("1s").await;
    assert!(out.contains("deleted 2 "), "{out}");

    let bad = tokio::process::Command::new(dtx_tests::dtx_binary())
        .args(["purge", "--older-than", "0", "--database-url", &db])
        .output()
        .await
        .expect("run dtx purge");
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--older-than"));

    let dtx = DtxProcess::start(&db, free_port(), &["--retention", "0"], &dir.path().join("dtx2.log")).await;
    let status = |gid: &'static str| {
        let http = http.clone();
        let url = format!("{}/query?gid={gid}", dtx.base_url());
        async move {
            let q: serde_json::Value = http.get(url).send().await.expect("query").json().await.expect("json");
            q["transaction"]["status"].as_str().unwrap_or_default().to_owned()
        }
    };
    assert_eq!(status("done-1").await, "");
    assert_eq!(status("done-2").await, "");
    assert_eq!(status("active").await, "submitted", "an unfinished transaction is never purged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retention_task_deletes_finished_transactions_past_the_retention() {
    let dir = tempfile::tempdir().expect("temp dir");
    let p = Participant::spawn().await;
    let dtx = DtxProcess::start(
        &sqlite_url(dir.path()),
        free_port(),
        &["--retention", "1s"],
        &dir.path().join("dtx.log"),
    )
    .await;
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let resp =
        http.post(format!("{}/submit", dtx.base_url())).json(&saga(&p, "short-lived").json()).send().await;
    assert_eq!(resp.expect("submit").status(), 200);
    let _ = dtx.wait_status("short-lived", "succeed").await;
    let metrics_url = dtx.base_url().replace("/api/dtmsvr", "/api/metrics");
    // With a 1 s retention a pass runs every second: wait for the purge counter.
    eventually(Duration::from_secs(15), "the retention pass", || async {
        let m = http.get(&metrics_url).send().await.ok()?.text().await.ok()?;
        m.lines().any(|l| l.starts_with("dtx_transactions_purged_total 1")).then_some(())
    })
    .await;
    let q: serde_json::Value = http
        .get(format!("{}/query?gid=short-lived", dtx.base_url()))
        .send()
        .await
        .expect("query")
        .json()
        .await
        .expect("json");
    assert!(q["transaction"].is_null(), "{q}");
}
