//! A measurement, not a check (ignored; run it with
//! `cargo test -p dtx-tests --test e2e -- --ignored retention_load --nocapture`; nextest would
//! time it out): saga throughput and
//! submit latency of a `dtx` node with a retention pass deleting a large backlog of old
//! finished transactions, against the same node and database without retention.

use std::path::Path;
use std::time::{Duration, Instant};

use dtx_tests::{DtxProcess, Participant, Saga, free_port};
use futures::StreamExt;

const SEED: usize = 15_000;
const WINDOW: Duration = Duration::from_secs(6);
const CONCURRENCY: usize = 32;

fn body(p: &Participant, gid: &str) -> serde_json::Value {
    Saga::new(gid).step(p.url("/A"), p.url("/C"), "{}").json()
}

/// Submits sagas for `WINDOW`; returns (acknowledged, p50, p99).
async fn load(http: &reqwest::Client, base: &str, p: &Participant, tag: &str) -> (usize, Duration, Duration) {
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..)
        .take_while(|_| std::future::ready(started.elapsed() < WINDOW))
        .map(|i| {
            let req = http.post(format!("{base}/submit")).json(&body(p, &format!("{tag}-{i}")));
            async move {
                let t = Instant::now();
                let resp = req.send().await.expect("submit");
                assert_eq!(resp.status(), 200);
                t.elapsed()
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    latencies.sort();
    let q = |f: f64| latencies[((latencies.len() as f64 * f) as usize).min(latencies.len() - 1)];
    (latencies.len(), q(0.5), q(0.99))
}

fn copy_db(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("dir");
    for f in ["dtx.db", "dtx.db-wal", "dtx.db-shm"] {
        if from.join(f).is_file() {
            std::fs::copy(from.join(f), to.join(f)).expect("copy");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement (minutes); run explicitly"]
async fn retention_load() {
    let dir = tempfile::tempdir().expect("temp dir");
    let seed_dir = dir.path().join("seed");
    std::fs::create_dir_all(&seed_dir).expect("dir");
    let p = Participant::spawn().await;
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(64).build().expect("client");
    let url = |d: &Path| format!("sqlite://{}", d.join("dtx.db").display());
    let flags = ["--retention", "0", "--sqlite-synchronous", "normal"];
    let mut seeder =
        DtxProcess::start(&url(&seed_dir), free_port(), &flags, &dir.path().join("seed.log")).await;
    let base = seeder.base_url();
    let seeding = Instant::now();
    futures::stream::iter(0..SEED)
        .map(|i| http.post(format!("{base}/submit")).json(&body(&p, &format!("old-{i}"))).send())
        .buffer_unordered(64)
        .for_each(|r| async move { assert_eq!(r.expect("seed").status(), 200) })
        .await;
    let _ = seeder.wait_status(&format!("old-{}", SEED - 1), "succeed").await;
    eprintln!("seeded {SEED} finished sagas in {:?}", seeding.elapsed());
    tokio::time::sleep(Duration::from_secs(2)).await;
    seeder.terminate(Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    for (name, retention) in [("without retention", "0"), ("with a retention pass", "1s")] {
        let run = dir.path().join(name.replace(' ', "-"));
        copy_db(&seed_dir, &run);
        let flags = ["--retention", retention, "--sqlite-synchronous", "normal"];
        let mut dtx = DtxProcess::start(&url(&run), free_port(), &flags, &run.join("dtx.log")).await;
        let base = dtx.base_url();
        let (n, p50, p99) = load(&http, &base, &p, "new").await;
        let metrics = http
            .get(base.replace("/api/dtmsvr", "/api/metrics"))
            .send()
            .await
            .expect("m")
            .text()
            .await
            .expect("t");
        let purged =
            metrics.lines().find(|l| l.starts_with("dtx_transactions_purged_total")).unwrap_or("").to_owned();
        eprintln!(
            "{name}: {n} sagas in {WINDOW:?} = {:.0}/s, submit p50 {p50:?} p99 {p99:?}; {purged}",
            n as f64 / WINDOW.as_secs_f64()
        );
        dtx.terminate(Duration::from_secs(10)).await;
    }
}
