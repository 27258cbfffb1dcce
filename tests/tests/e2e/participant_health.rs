//! Participant health (issue 16, ADR 0007): a dead participant host is not hammered by every
//! transaction's own retry timer, and everything waiting for it resumes within seconds when it
//! is back.
//!
//! Time is the manual clock (60 s of outage in a few real seconds); participants are real
//! loopback HTTP servers: "down" is a closed listener (connections refused) or a server
//! answering 500. The two-node test runs on PostgreSQL in real time.

use std::time::{Duration, Instant};

use dtx_core::GlobalStatus;
use dtx_store::ListFilter;
use dtx_store_postgres::testing;
use dtx_tests::{Participant, Reply, Saga, TestServer};

use crate::ops_metrics::{sample, scrape};

/// Calls this node made to `host` (`127.0.0.1:PORT`) that errored, so far.
async fn errored_calls(s: &TestServer, host: &str) -> f64 {
    sample(&scrape(s).await, "dtx_participant_calls_total", &[("host", host), ("outcome", "error")])
}

fn two_steps(p: &Participant, gid: &str) -> Saga {
    Saga::new(gid).step(p.url("/A1"), p.url("/C1"), "{}").step(p.url("/A2"), p.url("/C2"), "{}")
}

async fn succeeded(s: &TestServer, prefix: &str) -> usize {
    let filter = ListFilter {
        limit: 10_000,
        status: Some(GlobalStatus::Succeed),
        gid_prefix: Some(prefix.to_owned()),
        ..Default::default()
    };
    s.engine().list(&filter).await.expect("list").len()
}

/// Moves the manual clock by `by` and runs the scheduler until nothing more is due.
async fn step(s: &TestServer, by: Duration) {
    s.advance(by);
    while s.cron().await > 0 {}
    // The resume task (token bucket) runs on the same clock: let it catch up.
    tokio::task::yield_now().await;
}

/// Submits `n` two-step sagas `prefix-i` to `p` (the first `first` of them one by one, each
/// round over, so the host is seen down before the others arrive).
async fn submit_all(s: &TestServer, p: &Participant, prefix: &str, n: usize) {
    let mut rounds = s.rounds();
    for i in 0..n {
        let gid = format!("{prefix}-{i}");
        let (code, body) = s.submit(&two_steps(p, &gid).json()).await;
        assert_eq!(code, 200, "{body}");
        if i < 8 {
            rounds.ended(&gid).await;
        }
    }
}

/// The scenario. 300 sagas against a host whose listener is closed for 60 s: after the
/// first failures mark it down, at most one call per probe interval goes to it (each probe
/// waits at least the interval minus its jitter), not one per transaction; a saga of a healthy
/// participant submitted meanwhile finishes at once; once the host listens again all 300
/// finish within 10 s (of the coordinator's clock).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_down_for_a_minute_gets_one_call_per_probe_interval_and_300_sagas_resume_within_10s() {
    let s = TestServer::start().await;
    let policy = s.engine().options().health.expect("on by default");
    let down = Participant::spawn_restartable().await;
    let host = format!("127.0.0.1:{}", down.port());
    down.shut_down();
    let healthy = Participant::spawn().await;

    submit_all(&s, &down, "out", 300).await;
    // Let every round of the submits end (held ones release at once).
    step(&s, Duration::ZERO).await;
    let before = errored_calls(&s, &host).await;
    assert!(before >= f64::from(policy.failure_threshold), "{before} failed calls marked it down");
    assert!(before <= 20.0, "{before} calls reached the dead host before it was marked down");
    let q = s.query("out-299").await;
    assert_eq!(q["transaction"]["held_host"], format!("http://{host}"), "query shows the hold: {q}");

    // 60 s of outage in 250 ms steps, noting when each call to the dead host was made.
    let mut attempts = Vec::new();
    let mut last = before;
    let mut healthy_took = None;
    for i in 1..=240u32 {
        step(&s, Duration::from_millis(250)).await;
        let now = errored_calls(&s, &host).await;
        for _ in 0..(now - last) as usize {
            attempts.push(Duration::from_millis(250) * i);
        }
        last = now;
        if i == 120 {
            let started = Instant::now();
            let (code, body) = s.submit(&two_steps(&healthy, "healthy").wait_result().json()).await;
            assert_eq!(code, 200, "{body}");
            assert_eq!(s.status("healthy").await, "succeed");
            healthy_took = Some(started.elapsed());
        }
    }
    let healthy_took = healthy_took.expect("submitted");
    assert!(healthy_took < Duration::from_secs(1), "a healthy participant's saga took {healthy_took:?}");
    let min_gap = policy.probe_interval.mul_f64(1.0 - policy.jitter) - Duration::from_millis(1);
    for pair in attempts.windows(2) {
        assert!(
            pair[1] - pair[0] >= min_gap,
            "two calls to the dead host {:?} apart: {attempts:?}",
            pair[1] - pair[0]
        );
    }
    assert!(
        attempts.len() <= 60_000 / min_gap.as_millis() as usize + 1,
        "{} calls during the outage: {attempts:?}",
        attempts.len()
    );
    assert!(attempts.len() >= 10, "the host was probed all along: {attempts:?}");
    eprintln!(
        "{before} calls before the host was marked down, then {} in 60 s of outage: {attempts:?}",
        attempts.len()
    );
    assert_eq!(succeeded(&s, "out-").await, 0);
    assert_eq!(sample(&scrape(&s).await, "dtx_participant_hosts_down", &[]), 1.0);

    // Back on the same port.
    let back = Participant::spawn_on(down.port()).await;
    let mut waited = Duration::ZERO;
    while succeeded(&s, "out-").await < 300 {
        assert!(
            waited < Duration::from_secs(10),
            "{} of 300 done 10 s after the host came back",
            succeeded(&s, "out-").await
        );
        step(&s, Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }
    eprintln!("all 300 sagas finished {waited:?} (coordinator clock) after the host came back");
    assert!(back.calls_for("/A1").len() >= 300 && back.calls_for("/A2").len() >= 300);
    let text = scrape(&s).await;
    assert_eq!(sample(&text, "dtx_participant_hosts_down", &[]), 0.0);
    assert!(
        sample(&text, "dtx_participant_resumed_transactions_total", &[("host", &host)]) >= 250.0,
        "{text}"
    );
    assert!(sample(&text, "dtx_participant_probes_total", &[("host", &host)]) >= 10.0);
    let q = s.query("out-0").await;
    assert!(q["transaction"].get("held_host").is_none(), "{q}");
}

/// A host answering 500 for a while is treated the same (calls reach it, so they are counted
/// at the participant); a host answering 409 (FAILURE) is alive and never marked down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_answering_500_is_held_and_resumed_and_one_answering_409_never_is() {
    let s = TestServer::start().await;
    let policy = s.engine().options().health.expect("on by default");
    let p = Participant::spawn().await;
    p.set_outage(Some(Reply::error()));
    submit_all(&s, &p, "five", 40).await;
    step(&s, Duration::ZERO).await;
    let before = p.calls().len();
    assert!(before <= 20, "{before} calls before the host was marked down");
    let mut at = Vec::new();
    for i in 1..=80u32 {
        step(&s, Duration::from_millis(250)).await;
        at.extend(std::iter::repeat_n(Duration::from_millis(250) * i, p.calls().len() - before - at.len()));
    }
    let min_gap = policy.probe_interval.mul_f64(1.0 - policy.jitter) - Duration::from_millis(1);
    assert!(at.windows(2).all(|w| w[1] - w[0] >= min_gap), "calls during 20 s of 500s: {at:?}");
    assert!(at.len() <= 20_000 / min_gap.as_millis() as usize + 1, "{at:?}");
    p.set_outage(None);
    let mut waited = Duration::ZERO;
    while succeeded(&s, "five-").await < 40 {
        assert!(waited < Duration::from_secs(10), "not resumed within 10 s");
        step(&s, Duration::from_millis(100)).await;
        waited += Duration::from_millis(100);
    }

    // FAILURE is an answer: 30 sagas roll back at once, every compensation is called.
    let f = Participant::spawn().await;
    f.script("/A1", (0..30).map(|_| Reply::failure("no stock")));
    let mut rounds = s.rounds();
    for i in 0..30 {
        let (code, body) = s.submit(&two_steps(&f, &format!("no-{i}")).json()).await;
        assert_eq!(code, 200, "{body}");
        rounds.ended(&format!("no-{i}")).await;
    }
    step(&s, Duration::from_secs(5)).await;
    assert_eq!(f.calls_for("/A1").len(), 30);
    assert_eq!(f.calls_for("/C1").len(), 30, "FAILURE answers never hold a compensation");
    for i in 0..30 {
        assert_eq!(s.status(&format!("no-{i}")).await, "failed");
    }
    let text = scrape(&s).await;
    assert_eq!(sample(&text, "dtx_participant_hosts_down", &[]), 0.0);
    assert_eq!(
        sample(&text, "dtx_participant_held_calls_total", &[("host", &format!("127.0.0.1:{}", f.port()))]),
        0.0
    );
}

/// Two nodes on PostgreSQL, both seeing the host down. Node B probes rarely (its next probe
/// is a minute away) and its scheduler is stepped by the test; node A probes often and runs its
/// scheduler. The host comes back: A's probe succeeds and releases every held transaction
/// through the store, those B held included; B, still seeing the host down, runs the resumed
/// ones it claims at once (as probes) instead of holding them until its own probe, and so sees
/// the host back without having probed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_postgres_resume_whichever_node_probes_first() {
    let Some(db_url) =
        testing::fresh_database("two_nodes_on_postgres_resume_whichever_node_probes_first").await
    else {
        return;
    };
    let node = |probe: Duration, scheduler: bool| {
        let db_url = db_url.clone();
        move |c: &mut dtx_server::Config| {
            c.database_url = db_url.into();
            c.engine.scheduler_enabled = scheduler;
            c.engine.poll_interval = Duration::from_millis(200);
            c.engine.retry.retry_interval = Duration::from_secs(1);
            let h = c.engine.health.as_mut().expect("on by default");
            h.probe_interval = probe;
            h.probe_cap = probe;
            // Released a few at a time, so both nodes take part in the resume.
            h.resume_burst = 4;
            h.resume_rate = 20.0;
        }
    };
    let a = TestServer::spawn(node(Duration::from_millis(300), true)).await;
    let b = TestServer::spawn(node(Duration::from_secs(60), false)).await;
    // Both engines' timers (scheduler polls, probes, the resume's bucket) run with real time.
    both_while(&a, &b, scenario(&a, &b)).await;
}

async fn scenario(a: &TestServer, b: &TestServer) {
    let p = Participant::spawn().await;
    let host = format!("127.0.0.1:{}", p.port());
    p.set_outage(Some(Reply::error()));
    submit_all(a, &p, "a", 20).await;
    submit_all(b, &p, "b", 20).await;
    for s in [a, b] {
        let text = scrape(s).await;
        assert_eq!(sample(&text, "dtx_participant_hosts_down", &[]), 1.0, "both nodes see the host down");
    }
    let mut held_on_b = 0;
    for i in 8..20 {
        let q = b.query(&format!("b-{i}")).await;
        held_on_b += usize::from(q["transaction"]["held_host"] == format!("http://{host}"));
    }
    assert!(held_on_b >= 10, "{held_on_b} of B's sagas held");
    // A few of A's probes fail.
    tokio::time::sleep(Duration::from_secs(1)).await;
    p.set_outage(None);
    let back = Instant::now();
    while succeeded(a, "").await < 40 {
        assert!(back.elapsed() < Duration::from_secs(10), "{} of 40 done", succeeded(a, "").await);
        b.cron().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("40 sagas on two nodes finished {:?} after the host came back", back.elapsed());
    let (ta, tb) = (scrape(a).await, scrape(b).await);
    let resumed_by_a = sample(&ta, "dtx_participant_resumed_transactions_total", &[("host", &host)]);
    assert!(resumed_by_a >= held_on_b as f64, "A released B's held sagas too ({resumed_by_a})");
    assert_eq!(sample(&ta, "dtx_participant_hosts_down", &[]), 0.0);
    assert_eq!(sample(&tb, "dtx_participant_probes_total", &[("host", &host)]), 0.0, "B never probed");
    assert_eq!(
        sample(&tb, "dtx_participant_hosts_down", &[]),
        0.0,
        "B saw the host back through a resumed saga"
    );
}

/// Runs `fut` while both nodes' clocks follow real time.
async fn both_while<T>(a: &TestServer, b: &TestServer, fut: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(fut);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            out = &mut fut => return out,
            () = tokio::time::sleep(Duration::from_millis(10)) => {
                let now = Instant::now();
                a.advance(now - last);
                b.advance(now - last);
                last = now;
            }
        }
    }
}
