//! Overload: many more concurrent submits than the node may run, against participants that take
//! 3 s. The round cap holds (the participant never sees more concurrent calls than it), the
//! excess is refused quickly with 503 + Retry-After, memory stays bounded, and every
//! acknowledged saga finishes.

use std::time::{Duration, Instant};

use dtx_tests::{DtxProcess, Participant, Reply, Saga, free_port, server::read};
use futures::StreamExt;

use super::{rss_kib, size, unfinished};

/// A submit's gid, its answer (status, whether `Retry-After` came) or the client's error, and
/// how long it took.
type Outcome = (String, Result<(u16, bool), String>, Duration);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_quickly_within_the_caps_and_loses_nothing_acknowledged() {
    let submits: usize = size(300, 20_000);
    let cap: usize = size(16, 256);
    let shed_after = Duration::from_millis(500);
    let ramp = Duration::from_millis(size(0, 2_000));
    let dir = tempfile::tempdir().expect("temp dir");
    let p = Participant::spawn().await;
    p.script("/A1", (0..submits).map(|_| Reply::ok().after(Duration::from_secs(3))));
    let cap_text = cap.to_string();
    let flags = [
        "--max-concurrent-rounds",
        cap_text.as_str(),
        "--shed-after",
        "500ms",
        "--request-timeout",
        "10s",
        "--poll-interval",
        "100ms",
    ];
    let dtx = DtxProcess::start(
        &dtx_tests::sqlite_url(dir.path()),
        free_port(),
        &flags,
        &dir.path().join("dtx.log"),
    )
    .await;
    let pid = dtx.pid().expect("pid");
    let rss_before = rss_kib(pid);
    let http = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(0).build().expect("client");
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        for _ in 0..600 {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak
    });
    let started = Instant::now();
    let results: Vec<Outcome> = futures::stream::iter(0..submits)
        .map(|i| {
            let gid = format!("ovl-{i}");
            let body = Saga::new(&gid).step(p.url("/A1"), p.url("/C1"), "{}").json();
            let req = http.post(format!("{}/submit", dtx.base_url())).json(&body);
            // The long form's 20,000 connects are spread over `ramp`: all at the same instant
            // they overflow the kernel's accept queue (net.core.somaxconn, 4096 here) and the
            // clients' SYN retries (1 s, 3 s, 7 s) would be measured instead of dtx.
            let start_after = ramp.mul_f64(i as f64 / submits as f64);
            async move {
                tokio::time::sleep(start_after).await;
                let t = Instant::now();
                let r = match req.send().await {
                    Ok(resp) => {
                        let retry_after = resp.headers().contains_key("retry-after");
                        Ok((read(resp).await.0, retry_after))
                    }
                    Err(e) => {
                        // The innermost cause says what happened (refused, reset, no file).
                        let mut cause: &dyn std::error::Error = &e;
                        while let Some(next) = cause.source() {
                            cause = next;
                        }
                        Err(cause.to_string())
                    }
                };
                (gid, r, t.elapsed())
            }
        })
        .buffer_unordered(submits)
        .collect()
        .await;
    let burst = started.elapsed();
    let mut acknowledged = Vec::new();
    let (mut shed, mut shed_times, mut client_errors) = (0, Vec::new(), 0);
    let mut error_kinds = std::collections::BTreeMap::<String, usize>::new();
    for (gid, r, took) in results {
        match r {
            Ok((200, _)) => acknowledged.push(gid),
            Ok((503, retry_after)) => {
                assert!(retry_after, "{gid}: a 503 carries Retry-After");
                shed += 1;
                shed_times.push(took);
            }
            Ok((code, _)) => panic!("{gid}: unexpected {code}"),
            // The client's own limits (sockets) under the long form: not an answer of dtx.
            Err(e) => {
                client_errors += 1;
                *error_kinds.entry(e).or_default() += 1;
            }
        }
    }
    assert!(shed > 0, "the excess was refused");
    assert!(!acknowledged.is_empty(), "some work was accepted");
    let left = unfinished(
        &dtx.base_url(),
        &acknowledged,
        Duration::from_secs(30 + 3 * (acknowledged.len() / cap) as u64),
    )
    .await;
    assert!(left.is_empty(), "acknowledged sagas not finished: {left:?}");
    // The cap held: never more concurrent participant calls than rounds allowed.
    let calls = p.calls_for("/A1");
    let mut edges: Vec<(Instant, i32)> = calls.iter().flat_map(|c| [(c.start, 1), (c.ended(), -1)]).collect();
    edges.sort();
    let (mut now, mut peak_calls) = (0, 0);
    for (_, d) in edges {
        now += d;
        peak_calls = peak_calls.max(now);
    }
    sampler.abort();
    // Latencies as the clients saw them (connection set-up of the whole burst included).
    shed_times.sort();
    let pct = |q: f64| shed_times[((shed_times.len() - 1) as f64 * q) as usize];
    let (p50, p90, slowest_shed) = (pct(0.5), pct(0.9), pct(1.0));
    let rss_after = rss_kib(pid);
    println!(
        "overload: {submits} concurrent submits in {burst:?}: {} accepted, {shed} shed (503 after p50 {p50:?}, p90 {p90:?}, max {slowest_shed:?}), {client_errors} client-side errors; peak concurrent participant calls {peak_calls} (cap {cap}); RSS {} MiB before, {} MiB after",
        acknowledged.len(),
        rss_before / 1024,
        rss_after / 1024
    );
    for (e, n) in error_kinds.iter().take(5) {
        println!("overload: client-side error x{n}: {e}");
    }
    assert!(peak_calls as usize <= cap, "{peak_calls} concurrent calls above the cap {cap}");
    assert!(p90 < shed_after + Duration::from_secs(2), "503s come quickly: p90 {p90:?}");
    assert!(slowest_shed < Duration::from_secs(10), "no request hangs: slowest 503 after {slowest_shed:?}");
    assert!(rss_after < 1024 * 1024, "memory stays bounded: {rss_after} KiB");
}
