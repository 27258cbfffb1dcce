//! kill -9 loop: the real binary killed at random moments under mixed saga / TCC / msg load,
//! restarted each time on the same database. Afterwards every acknowledged transaction
//! finished, no saga step was skipped, and no compensation ran (every participant answers
//! SUCCESS, so an action whose outcome a kill made unknown is retried, never rolled back; and a
//! compensation may never come before its action was attempted).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dtx_tests::client::tcc_register_body;
use dtx_tests::{Client, DtxProcess, Msg, Participant, Saga, free_port};
use serde_json::json;

use super::{Rng, size, unfinished};

const FLAGS: &[&str] =
    &["--lease", "1s", "--poll-interval", "50ms", "--retry-interval", "1s", "--backoff-cap", "2s"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_nothing_acknowledged_and_skips_no_step() {
    let kills = size(3, 20);
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dtx_tests::sqlite_url(dir.path());
    let port = free_port();
    let p = Arc::new(Participant::spawn().await);
    let mut dtx = DtxProcess::start(&db, port, FLAGS, &dir.path().join("dtx-0.log")).await;
    let base = dtx.base_url();
    let acked: Arc<Mutex<Vec<(String, &'static str)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for worker in 0..4 {
        let (p, acked, stop, base) = (p.clone(), acked.clone(), stop.clone(), base.clone());
        load.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("client");
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let gid = format!("k{worker}-{n}");
                let kind = ["saga", "tcc", "msg"][n % 3];
                let post = |op: &str, body: serde_json::Value| {
                    let req = http.post(format!("{base}/{op}")).json(&body);
                    async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
                };
                let ok = match kind {
                    "saga" => {
                        let body = Saga::new(&gid)
                            .step(p.url("/A1"), p.url("/C1"), "{}")
                            .step(p.url("/A2"), p.url("/C2"), "{}")
                            .json();
                        post("submit", body).await == 200
                    }
                    "tcc" => {
                        let global = json!({"gid": gid, "trans_type": "tcc"});
                        post("prepare", global.clone()).await == 200
                            && post(
                                "registerBranch",
                                tcc_register_body(&gid, "01", "{}", &p.url("/confirm"), &p.url("/cancel")),
                            )
                            .await
                                == 200
                            && http
                                .post(format!("{}?gid={gid}&branch_id=01&op=try", p.url("/try")))
                                .body("{}")
                                .send()
                                .await
                                .is_ok_and(|r| r.status() == 200)
                            && post("submit", global).await == 200
                    }
                    _ => {
                        let m =
                            Msg::new(&gid, p.url("/qp")).step(p.url("/M1"), "{}").step(p.url("/M2"), "{}");
                        post("prepare", m.json()).await == 200 && post("submit", m.json()).await == 200
                    }
                };
                if ok {
                    acked.lock().expect("lock").push((gid, kind));
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }
    let mut rng = Rng::seeded("kill -9 loop");
    for k in 0..kills {
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1300) as u64)).await;
        dtx.kill();
        dtx = DtxProcess::start(&db, port, FLAGS, &dir.path().join(format!("dtx-{}.log", k + 1))).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.await.expect("load worker");
    }
    let acked = acked.lock().expect("lock").clone();
    let gids: Vec<String> = acked.iter().map(|(g, _)| g.clone()).collect();
    let left = unfinished(&dtx.base_url(), &gids, Duration::from_secs(60)).await;
    assert!(left.is_empty(), "acknowledged transactions not finished: {left:?}");

    // Per gid: every call, in arrival order.
    let mut calls: HashMap<String, Vec<(String, std::time::Instant)>> = HashMap::new();
    for c in p.calls() {
        calls.entry(c.param("gid").to_owned()).or_default().push((c.path.clone(), c.start));
    }
    let mut failed = Vec::new();
    for (gid, kind) in &acked {
        let q = Client::new(dtx.base_url()).query(gid).await;
        if q["transaction"]["status"] != "succeed" {
            failed.push(format!("{gid}: {}", q["transaction"]["status"]));
        }
        let seen: HashSet<&str> =
            calls.get(gid).map(|v| v.iter().map(|(p, _)| p.as_str()).collect()).unwrap_or_default();
        let needed: &[&str] = match *kind {
            "saga" => &["/A1", "/A2"],
            "tcc" => &["/try", "/confirm"],
            _ => &["/M1", "/M2"],
        };
        for path in needed {
            assert!(seen.contains(path), "{gid} ({kind}): {path} was skipped; calls {:?}", calls.get(gid));
        }
        for (path, at) in calls.get(gid).into_iter().flatten() {
            let action = match path.as_str() {
                "/C1" => "/A1",
                "/C2" => "/A2",
                "/cancel" => "/try",
                _ => continue,
            };
            let attempted = calls[gid].iter().any(|(p, t)| p == action && t <= at);
            assert!(attempted, "{gid}: {path} before {action} was attempted");
        }
    }
    assert!(failed.is_empty(), "every participant answered SUCCESS, yet: {failed:?}");
    let acked_gids: HashSet<&str> = acked.iter().map(|(g, _)| g.as_str()).collect();
    let compensations = p
        .calls()
        .iter()
        .filter(|c| {
            acked_gids.contains(c.param("gid")) && matches!(c.path.as_str(), "/C1" | "/C2" | "/cancel")
        })
        .count();
    assert_eq!(compensations, 0, "no compensation: nothing failed");
    println!(
        "kill -9 loop: {kills} kills, {} transactions acknowledged ({} sagas, {} tcc, {} msg), all finished, 0 skipped steps, 0 compensations",
        acked.len(),
        acked.iter().filter(|a| a.1 == "saga").count(),
        acked.iter().filter(|a| a.1 == "tcc").count(),
        acked.iter().filter(|a| a.1 == "msg").count()
    );
}
