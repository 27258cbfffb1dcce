//! PostgreSQL stops for ten seconds under a running `dtx` node: submits meanwhile answer 503
//! with a clear message and store nothing; sagas in flight stop at their next write; once the
//! database is back the same process (never restarted) finishes every saga it acknowledged,
//! and accepts new ones.
//!
//! The test stops a throwaway cluster of its own (never the shared one). Skipped, with a notice,
//! unless `DTX_TEST_POSTGRES_URL` is set (`bash .ci/run` sets it).

use std::time::{Duration, Instant};

use dtx_store_postgres::testing::Cluster;
use dtx_tests::{DtxProcess, Participant, Reply, Saga, free_port, server::read};
use futures::StreamExt;
use serde_json::Value;

const FLAGS: &[&str] = &["--lease", "2s", "--poll-interval", "100ms", "--retry-interval", "1s"];
const OUTAGE: Duration = Duration::from_secs(10);

fn body(p: &Participant, gid: &str) -> Value {
    Saga::new(gid)
        .step(p.url("/A1"), p.url("/C1"), r#"{"step":1}"#)
        .step(p.url("/A2"), p.url("/C2"), r#"{"step":2}"#)
        .json()
}

/// Submits each gid once (`concurrency` at a time); returns `(gid, status, body)` per submit.
async fn submit_all(
    http: &reqwest::Client,
    dtx: &DtxProcess,
    p: &Participant,
    gids: Vec<String>,
    concurrency: usize,
) -> Vec<(String, u16, Value)> {
    futures::stream::iter(gids)
        .map(|gid| {
            let req = http.post(format!("{}/submit", dtx.base_url())).json(&body(p, &gid));
            async move {
                let resp = req.send().await.expect("the node answers");
                let (code, reply) = read(resp).await;
                (gid, code, reply)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await
}

async fn status(http: &reqwest::Client, dtx: &DtxProcess, gid: &str) -> String {
    let resp = http.get(format!("{}/query?gid={gid}", dtx.base_url())).send().await.expect("query");
    let (_, q) = read(resp).await;
    q["transaction"]["status"].as_str().unwrap_or_default().to_owned()
}

/// A database server a test may stop and start again.
pub(crate) trait Outage {
    /// Its URL.
    fn url(&self) -> String;
    /// Stops it.
    async fn stop(&mut self);
    /// Starts it again.
    async fn start(&mut self);
}

impl Outage for Cluster {
    fn url(&self) -> String {
        Cluster::url(self)
    }
    async fn stop(&mut self) {
        Cluster::stop(self).await.expect("stop postgres");
    }
    async fn start(&mut self) {
        self.start_again().await.expect("start postgres again");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_second_database_outage_loses_nothing_acknowledged() {
    let Some(mut cluster) = Cluster::start("a_ten_second_database_outage_loses_nothing_acknowledged").await
    else {
        return;
    };
    outage_loses_nothing_acknowledged(&mut cluster, "PostgreSQL").await;
}

/// The scenario of this file on `server`, whose 503s must name `database` (also run on MySQL /
/// MariaDB: `mysql.rs`).
pub(crate) async fn outage_loses_nothing_acknowledged(server: &mut impl Outage, database: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let p = Participant::spawn().await;
    // Slow participants: rounds are still calling when the database goes away.
    p.script("/A1", (0..60).map(|_| Reply::ok().after(Duration::from_millis(200))));
    p.script("/A2", (0..60).map(|_| Reply::ok().after(Duration::from_millis(300))));
    let mut dtx = DtxProcess::start(&server.url(), free_port(), FLAGS, &dir.path().join("dtx.log")).await;

    let before: Vec<String> = (0..60).map(|i| format!("before-{i:02}")).collect();
    let results = submit_all(&http, &dtx, &p, before, 20).await;
    let mut acknowledged = Vec::new();
    for (gid, code, reply) in results {
        assert_eq!(code, 200, "{gid} before the outage: {reply}");
        acknowledged.push(gid);
    }
    p.wait_calls("/A1", 1).await;
    assert!(p.calls_for("/A2").len() < 60, "sagas are in flight when the database stops");

    server.stop().await;
    let outage_started = Instant::now();
    let mut refused = 0;
    let mut round = 0;
    while outage_started.elapsed() < OUTAGE - Duration::from_secs(2) {
        let gids = (0..4).map(|i| format!("during-{round}-{i}")).collect();
        for (gid, code, reply) in submit_all(&http, &dtx, &p, gids, 4).await {
            assert_eq!(code, 503, "{gid} during the outage: {reply}");
            let message = reply["message"].as_str().unwrap_or_default();
            assert!(message.contains(database), "the 503 says what is wrong: {reply}");
            refused += 1;
        }
        round += 1;
    }
    assert!(refused >= 4, "submits were tried during the outage");
    let left = OUTAGE.saturating_sub(outage_started.elapsed());
    tokio::time::sleep(left).await;
    server.start().await;
    let outage = outage_started.elapsed();

    // The same process carries on: new submits are accepted...
    let after: Vec<String> = (0..20).map(|i| format!("after-{i:02}")).collect();
    for (gid, code, reply) in submit_all(&http, &dtx, &p, after, 10).await {
        assert_eq!(code, 200, "{gid} after the outage: {reply}");
        acknowledged.push(gid);
    }
    // ...and every acknowledged saga finishes.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut pending = acknowledged.clone();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for gid in pending {
            if status(&http, &dtx, &gid).await != "succeed" {
                still.push(gid);
            }
        }
        pending = still;
        assert!(
            Instant::now() < deadline || pending.is_empty(),
            "not finished 30 s after the outage: {pending:?}\nlog:\n{}",
            dtx.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = outage_started.elapsed() - outage;

    // Nothing of a refused submit was stored.
    for r in 0..round {
        for i in 0..4 {
            assert_eq!(
                status(&http, &dtx, &format!("during-{r}-{i}")).await,
                "",
                "a refused submit was stored"
            );
        }
    }
    // Every action ran, after its predecessor, and nothing was compensated.
    for gid in &acknowledged {
        let calls: Vec<_> = p.calls().into_iter().filter(|c| c.param("gid") == gid).collect();
        assert!(calls.iter().all(|c| c.param("op") == "action"), "{gid} compensated: {calls:?}");
        let a1_ok = calls.iter().find(|c| c.path == "/A1" && c.end.is_some() && c.status == 200);
        let a2: Vec<_> = calls.iter().filter(|c| c.path == "/A2").collect();
        let a1_ok = a1_ok.unwrap_or_else(|| panic!("{gid}: A1 never answered"));
        assert!(!a2.is_empty() && a2[0].start >= a1_ok.ended(), "{gid}: step 2 before step 1: {calls:?}");
    }
    assert!(dtx.is_running(), "the node never restarted");
    let log = dtx.log();
    assert_eq!(log.matches("claiming due transactions failed").count(), 1, "one log line per outage:\n{log}");
    assert_eq!(log.matches("scheduling resumed").count(), 1, "{log}");
    eprintln!(
        "outage of {outage:?}: {refused} submits refused with 503; {} acknowledged sagas all \
         finished {recovered:?} after the database came back",
        acknowledged.len()
    );
}
