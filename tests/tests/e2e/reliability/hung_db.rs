//! A hung database: every process of a PostgreSQL cluster stopped with SIGSTOP (sockets stay
//! open, nothing answers), under a running node. Submits meanwhile answer 503 within 6 s and
//! store nothing; after SIGCONT the same process (never restarted) finishes every saga it
//! acknowledged and accepts new ones. The test stops a throwaway cluster of its own.

use std::time::{Duration, Instant};

use dtx_store_postgres::testing::Cluster;
use dtx_tests::{DtxProcess, Participant, Reply, Saga, free_port, server::read};

use super::{size, unfinished};

fn signal(pids: &[u32], sig: &str) {
    for pid in pids {
        let _ = std::process::Command::new("kill").args([sig, &pid.to_string()]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_gets_503s_within_seconds_and_loses_nothing_acknowledged() {
    let test = "a_stopped_database_gets_503s_within_seconds_and_loses_nothing_acknowledged";
    let Some(cluster) = Cluster::start(test).await else { return };
    let hang = Duration::from_secs(size(8, 20));
    let dir = tempfile::tempdir().expect("temp dir");
    let p = Participant::spawn().await;
    p.script("/A1", (0..40).map(|_| Reply::ok().after(Duration::from_millis(300))));
    let flags = [
        "--store-timeout",
        "3s",
        "--shed-after",
        "1s",
        "--lease",
        "2s",
        "--poll-interval",
        "100ms",
        "--retry-interval",
        "1s",
    ];
    let dtx = DtxProcess::start(&cluster.url(), free_port(), &flags, &dir.path().join("dtx.log")).await;
    let http =
        reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(20)).build().expect("client");
    let submit = |gid: String| {
        let body = Saga::new(&gid)
            .step(p.url("/A1"), p.url("/C1"), "{}")
            .step(p.url("/A2"), p.url("/C2"), "{}")
            .json();
        let req = http.post(format!("{}/submit", dtx.base_url())).json(&body);
        async move {
            let t = Instant::now();
            let (code, reply) = read(req.send().await.expect("the node answers")).await;
            (gid, code, reply, t.elapsed())
        }
    };
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let (gid, code, reply, _) = submit(format!("hung-before-{i}")).await;
        assert_eq!(code, 200, "{reply}");
        acknowledged.push(gid);
    }
    p.wait_calls("/A1", 1).await;

    let pids = cluster.pids();
    assert!(pids.len() > 1, "the cluster's processes are found: {pids:?}");
    signal(&pids, "-STOP");
    let stopped = Instant::now();
    let (mut refused, mut slowest) = (0, Duration::ZERO);
    let mut i = 0;
    while stopped.elapsed() + Duration::from_secs(6) < hang {
        // A few at once, as clients would.
        let batch: Vec<_> = (0..4).map(|k| submit(format!("hung-during-{i}-{k}"))).collect();
        for (gid, code, reply, took) in futures::future::join_all(batch).await {
            assert_eq!(code, 503, "{gid} while the database hangs: {reply}");
            slowest = slowest.max(took);
            refused += 1;
        }
        i += 1;
    }
    tokio::time::sleep(hang.saturating_sub(stopped.elapsed())).await;
    signal(&pids, "-CONT");
    println!(
        "hung database: {refused} submits answered 503 during a {hang:?} SIGSTOP, slowest after {slowest:?}"
    );
    assert!(refused >= 4, "submits were tried while the database hung");
    assert!(slowest < Duration::from_secs(6), "503 within 6 s: slowest {slowest:?}");

    // The same process carries on.
    for j in 0..10 {
        let (gid, code, reply, _) = submit(format!("hung-after-{j}")).await;
        if code == 200 {
            acknowledged.push(gid);
        } else {
            assert_eq!(code, 503, "{reply}");
        }
    }
    let left = unfinished(&dtx.base_url(), &acknowledged, Duration::from_secs(60)).await;
    assert!(left.is_empty(), "acknowledged sagas not finished after SIGCONT: {left:?}\nlog:\n{}", dtx.log());
    for k in 0..i {
        for j in 0..4 {
            let gid = format!("hung-during-{k}-{j}");
            let (code, q) =
                read(http.get(format!("{}/query?gid={gid}", dtx.base_url())).send().await.expect("query"))
                    .await;
            assert!(code == 404 || q["transaction"].is_null(), "a refused submit was stored: {gid} {q}");
        }
    }
    println!(
        "hung database: all {} acknowledged sagas finished after SIGCONT, no restart",
        acknowledged.len()
    );
}
