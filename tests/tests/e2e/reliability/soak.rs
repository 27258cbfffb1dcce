//! Soak: first the node's maximum throughput is measured (concurrent submits of a one-step saga
//! for a few seconds), then it runs at half of it for the soak's duration; memory (RSS) is
//! sampled throughout and must stay flat, and no request may fail. Bounded: seconds; long
//! (`DTX_RELIABILITY=long`): 30 minutes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dtx_tests::{DtxProcess, Participant, Saga, free_port};
use futures::StreamExt;

use super::{rss_kib, size, unfinished};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soak_at_half_the_maximum_throughput_keeps_memory_flat_without_errors() {
    let measure = Duration::from_secs(size(3, 30));
    let soak = Duration::from_secs(size(12, 30 * 60));
    let sample_every = Duration::from_secs(size(1, 30));
    let dir = tempfile::tempdir().expect("temp dir");
    let p = Participant::spawn().await;
    let dtx = DtxProcess::start(
        &dtx_tests::sqlite_url(dir.path()),
        free_port(),
        &["--retention", "1m"],
        &dir.path().join("dtx.log"),
    )
    .await;
    let pid = dtx.pid().expect("pid");
    let http = reqwest::Client::builder().no_proxy().build().expect("client");
    let base = dtx.base_url();
    let submit = {
        let (http, base, p) = (http.clone(), base.clone(), Arc::new(p));
        move |gid: String| {
            let body = Saga::new(&gid).step(p.url("/A1"), p.url("/C1"), "{}").json();
            let req = http.post(format!("{base}/submit")).json(&body);
            async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
        }
    };

    // The maximum: as many as 64 clients can get through.
    let started = Instant::now();
    let done = AtomicU64::new(0);
    futures::stream::iter(0..)
        .take_while(|_| std::future::ready(started.elapsed() < measure))
        .map(|i| submit(format!("max-{i}")))
        .buffer_unordered(64)
        .for_each(|code| {
            assert_eq!(code, 200, "a submit failed while measuring");
            done.fetch_add(1, Ordering::Relaxed);
            std::future::ready(())
        })
        .await;
    let max_rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let rate = (max_rate / 2.0).max(1.0);
    let interval = Duration::from_secs_f64(1.0 / rate);

    // The soak: one submit every `interval`, each in its own task.
    let errors = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let mut samples = vec![(Duration::ZERO, rss_kib(pid))];
    let soak_started = Instant::now();
    let mut next_sample = sample_every;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut last_gids = Vec::new();
    let mut i = 0u64;
    while soak_started.elapsed() < soak {
        ticker.tick().await;
        i += 1;
        let gid = format!("soak-{i}");
        if soak.saturating_sub(soak_started.elapsed()) < Duration::from_secs(2) {
            last_gids.push(gid.clone());
        }
        let (errors, sent, fut) = (errors.clone(), sent.clone(), submit(gid));
        tokio::spawn(async move {
            if fut.await != 200 {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            sent.fetch_add(1, Ordering::Relaxed);
        });
        if soak_started.elapsed() >= next_sample {
            samples.push((soak_started.elapsed(), rss_kib(pid)));
            next_sample += sample_every;
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let left = unfinished(&base, &last_gids, Duration::from_secs(20)).await;
    let rss: Vec<String> =
        samples.iter().map(|(t, kib)| format!("{}s:{}MiB", t.as_secs(), kib / 1024)).collect();
    println!(
        "soak: maximum {max_rate:.0} submits/s; {:?} at {rate:.0}/s: {} submits, {} errors; RSS {}",
        soak,
        sent.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
        rss.join(" ")
    );
    assert_eq!(errors.load(Ordering::Relaxed), 0, "no request failed");
    assert!(left.is_empty(), "the last sagas finished: {left:?}");
    // Flat: the second half never grows past the first half's peak by more than a margin.
    let half = samples.len() / 2;
    let first_peak = samples[..half.max(1)].iter().map(|s| s.1).max().unwrap_or(0);
    let second_peak = samples[half..].iter().map(|s| s.1).max().unwrap_or(0);
    assert!(second_peak <= first_peak + first_peak / 2 + 32 * 1024, "memory grows: {rss:?}");
}
