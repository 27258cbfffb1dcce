//! Leases: a round that outlives its lease loses the transaction to another claimer, which
//! carries on from the stored state; the stale round is fenced off.

use std::time::Duration;

use dtx_engine::RoundEnd;
use dtx_tests::{Gate, Participant, Reply, Saga, TestServer, branch_statuses};

use crate::ops_metrics::{sample, scrape};

/// The `mode` of every `round` span opened in this process, in order (nextest runs each test
/// in a process of its own, so a global subscriber sees this test's rounds only).
fn capture_round_modes() -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use tracing_subscriber::layer::SubscriberExt;
    struct Modes(std::sync::Arc<std::sync::Mutex<Vec<String>>>);
    struct Mode(Option<String>);
    impl tracing::field::Visit for Mode {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            if field.name() == "mode" {
                self.0 = Some(value.to_owned());
            }
        }
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "mode" {
                self.0 = Some(format!("{value:?}"));
            }
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Modes {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            _: &tracing::span::Id,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if attrs.metadata().name() == "round" {
                let mut mode = Mode(None);
                attrs.record(&mut mode);
                self.0.lock().expect("modes").push(mode.0.unwrap_or_default());
            }
        }
    }
    let modes = std::sync::Arc::default();
    let subscriber = tracing_subscriber::registry().with(Modes(std::sync::Arc::clone(&modes)));
    tracing::subscriber::set_global_default(subscriber).expect("the only subscriber of this test process");
    modes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_and_the_stale_round_is_fenced() {
    let modes = capture_round_modes();
    let s = TestServer::spawn(|c| {
        c.engine.lease = Duration::from_secs(1);
    })
    .await;
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A2", [Reply::ok().blocked_by(&gate)]);
    let saga = Saga::new("lease-takeover")
        .step(p.url("/A1"), p.url("/C1"), "{}")
        .step(p.url("/A2"), p.url("/C2"), "{}")
        .step(p.url("/A3"), p.url("/C3"), "{}");
    s.submit(&saga.json()).await;
    p.wait_calls("/A2", 1).await;

    // The first round is stuck in /A2 and its node stalls: the lease runs out before any
    // renewal fires.
    let before = scrape(&s).await;
    assert!(before.contains("dtx_lease_takeovers_total"), "{before}");
    assert_eq!(sample(&before, "dtx_lease_takeovers_total", &[]), 0.0);
    s.stall(Duration::from_secs(2));
    assert_eq!(s.cron().await, 1, "the expired lease is claimable");
    let after = scrape(&s).await;
    assert_eq!(sample(&after, "dtx_lease_takeovers_total", &[]), 1.0, "the claim was a takeover");
    // The round spans say why each round ran.
    assert_eq!(*modes.lock().unwrap(), ["submit", "takeover"]);
    assert_eq!(sample(&after, "dtx_claimed_total", &[]), 1.0);
    let q = s.wait_status("lease-takeover", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed", "prepared", "succeed"]);
    assert_eq!(p.calls_for("/A2").len(), 2);

    // The stale round gets its answer now; its write is fenced and changes nothing.
    let mut rounds = s.rounds();
    gate.release();
    assert_eq!(rounds.ended("lease-takeover").await, RoundEnd::Abandoned, "the stale round was fenced");
    let q2 = s.query("lease-takeover").await;
    assert_eq!(q2, q, "the stale round wrote nothing");
    assert_eq!(p.calls_for("/A3").len(), 1, "the stale round called nobody else");
    let end = scrape(&s).await;
    assert_eq!(sample(&end, "dtx_fenced_writes_total", &[]), 1.0, "the stale round's write");
    assert_eq!(sample(&end, "dtx_lease_takeovers_total", &[]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_loop_takes_over_an_expired_lease_by_itself() {
    // Lease renewals (every second) and polls (every 50 ms) run on the test's clock.
    let s = TestServer::spawn(|c| {
        c.engine.lease = Duration::from_secs(3);
        c.engine.scheduler_enabled = true;
        c.engine.poll_interval = Duration::from_millis(50);
    })
    .await;
    let mut rounds = s.rounds();
    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A2", [Reply::ok().blocked_by(&gate)]);
    let saga = Saga::new("lease-sched")
        .step(p.url("/A1"), p.url("/C1"), "{}")
        .step(p.url("/A2"), p.url("/C2"), "{}")
        .step(p.url("/A3"), p.url("/C3"), "{}");
    s.submit(&saga.json()).await;
    p.wait_calls("/A2", 1).await;
    // While the lease is valid, the scheduler polls and leaves the saga to its round...
    for _ in 0..3 {
        assert_eq!(rounds.next_poll(&s).await, 0, "a valid lease is never taken over");
    }
    assert_eq!(p.calls_for("/A2").len(), 1);
    // ...and once it expires (the node stalled: no renewal), the running scheduler claims the
    // saga at its next poll and finishes it.
    s.stall(Duration::from_secs(4));
    assert_eq!(rounds.next_poll(&s).await, 1, "the expired lease is claimed");
    let q = s.wait_status("lease-sched", "succeed").await;
    assert_eq!(branch_statuses(&q), ["prepared", "succeed", "prepared", "succeed", "prepared", "succeed"]);
    assert_eq!(p.calls_for("/A2").len(), 2);
    assert_eq!(p.calls_for("/A3").len(), 1);
    gate.release();
}
