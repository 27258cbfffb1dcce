use proptest::prelude::*;

use super::*;

fn policy() -> HealthPolicy {
    HealthPolicy {
        failure_threshold: 3,
        probe_interval: Duration::from_secs(2),
        probe_cap: Duration::from_secs(30),
        jitter: 0.0,
        resume_burst: 10,
        resume_rate: 5.0,
    }
}

fn at(secs: i64) -> Timestamp {
    Timestamp(secs * 1000)
}

fn fail(text: &str) -> Outcome {
    Outcome::Error(text.to_owned())
}

#[test]
fn answers_read_as_signals() {
    assert_eq!(signal_of(&Outcome::Success), Signal::Up);
    assert_eq!(signal_of(&Outcome::Ongoing), Signal::Up);
    assert_eq!(signal_of(&Outcome::Failure("status 409: FAILURE".into())), Signal::Up);
    assert_eq!(signal_of(&Outcome::from_http(500, "boom")), Signal::Failure);
    assert_eq!(signal_of(&Outcome::from_http(503, "")), Signal::Failure);
    assert_eq!(signal_of(&Outcome::from_http(404, "nope")), Signal::Up);
    assert_eq!(signal_of(&Outcome::from_http(400, "bad")), Signal::Up);
    assert_eq!(signal_of(&fail("connection failed: refused")), Signal::Failure);
    assert_eq!(signal_of(&fail("timed out: deadline")), Signal::Failure);
    assert_eq!(signal_of(&fail("error sending request")), Signal::Failure);
    for code in ["Unavailable", "DeadlineExceeded", "Internal", "Unknown"] {
        assert_eq!(signal_of(&fail(&format!("grpc {code}: x"))), Signal::Failure, "{code}");
    }
    assert_eq!(signal_of(&fail("grpc target 127.0.0.1:1 not ready: refused")), Signal::Failure);
    assert_eq!(signal_of(&fail("grpc InvalidArgument: x")), Signal::Up);
    assert_eq!(signal_of(&fail("grpc NotFound: x")), Signal::Up);
    assert_eq!(signal_of(&fail("bad participant url x: empty host")), Signal::Neutral);
    assert_eq!(signal_of(&fail("bad grpc method x")), Signal::Neutral);
}

#[test]
fn hosts_of_urls() {
    assert_eq!(host_of("http://a.b:8080/api/x?y=1"), Some("http://a.b:8080"));
    assert_eq!(host_of("https://a.b/x"), Some("https://a.b"));
    assert_eq!(host_of("http://a.b:1?q"), Some("http://a.b:1"));
    assert_eq!(host_of("http://a.b:1"), Some("http://a.b:1"));
    assert_eq!(host_of("localhost:58081/busi.Busi/TransIn"), Some("localhost:58081"));
    assert_eq!(host_of(""), None);
    assert_eq!(host_of("http:///x"), None);
    // Two paths of one service are one host; two ports are two.
    assert_eq!(host_of("http://h:1/a"), host_of("http://h:1/b"));
    assert_ne!(host_of("http://h:1/a"), host_of("http://h:2/a"));
}

#[test]
fn threshold_consecutive_failures_mark_down_and_a_success_resets_the_count() {
    let p = policy();
    let mut h = HostState::default();
    assert_eq!(h.observe(&p, Signal::Failure, false, at(0), 0.5), Change::None);
    assert_eq!(h.observe(&p, Signal::Failure, false, at(0), 0.5), Change::None);
    assert_eq!(h.observe(&p, Signal::Up, false, at(0), 0.5), Change::None);
    assert!(h.is_clean());
    assert_eq!(h.observe(&p, Signal::Failure, false, at(1), 0.5), Change::None);
    assert_eq!(h.observe(&p, Signal::Neutral, false, at(1), 0.5), Change::None);
    assert_eq!(h.observe(&p, Signal::Failure, false, at(1), 0.5), Change::None);
    assert_eq!(h.observe(&p, Signal::Failure, false, at(1), 0.5), Change::WentDown);
    assert_eq!(h, HostState::Down { since: at(1), probes_failed: 0, next_probe: at(3) });
    // Further failures while down (calls started earlier) change nothing.
    assert_eq!(h.observe(&p, Signal::Failure, false, at(2), 0.5), Change::None);
    assert_eq!(h, HostState::Down { since: at(1), probes_failed: 0, next_probe: at(3) });
}

#[test]
fn a_down_host_holds_calls_until_its_probe_and_probes_back_off_to_the_cap() {
    let p = policy();
    let mut h = HostState::Down { since: at(0), probes_failed: 0, next_probe: at(2) };
    assert_eq!(h.admit(&p, at(1), 0.5), Admission::Hold { until: at(2) });
    assert_eq!(h.admit(&p, at(2), 0.5), Admission::Probe);
    // The probe slot is taken at once: the next call waits for the next slot.
    assert_eq!(h.admit(&p, at(2), 0.5), Admission::Hold { until: at(4) });
    let mut waits = Vec::new();
    let mut now = at(2);
    for _ in 0..6 {
        assert_eq!(h.observe(&p, Signal::Failure, true, now, 0.5), Change::None);
        let HostState::Down { next_probe, .. } = h else { panic!("still down") };
        waits.push((next_probe.0 - now.0) / 1000);
        now = next_probe;
        assert_eq!(h.admit(&p, now, 0.5), Admission::Probe);
    }
    assert_eq!(waits, [4, 8, 16, 30, 30, 30]);
    assert_eq!(
        h.observe(&p, Signal::Up, true, at(200), 0.5),
        Change::WentUp { down_for: Duration::from_secs(200) }
    );
    assert_eq!(h.admit(&p, at(200), 0.5), Admission::Call);
    assert!(h.is_clean());
}

#[test]
fn failure_and_ongoing_answers_mean_up() {
    let p = policy();
    let mut h = HostState::Down { since: at(0), probes_failed: 2, next_probe: at(9) };
    assert!(matches!(
        h.observe(&p, signal_of(&Outcome::Failure("no".into())), true, at(9), 0.1),
        Change::WentUp { .. }
    ));
    let mut h = HostState::Down { since: at(0), probes_failed: 2, next_probe: at(9) };
    assert!(matches!(h.observe(&p, signal_of(&Outcome::Ongoing), false, at(9), 0.1), Change::WentUp { .. }));
    // A host answering FAILURE forever is never marked down.
    let mut h = HostState::default();
    for i in 0..100 {
        assert_eq!(
            h.observe(&p, signal_of(&Outcome::from_http(409, "FAILURE")), false, at(i), 0.3),
            Change::None
        );
    }
    assert!(!h.is_down());
}

#[test]
fn token_bucket_bursts_then_refills_at_the_rate() {
    let p = policy();
    let mut b = TokenBucket::full(&p, at(0));
    assert_eq!(b.take(&p, at(0), 100), 10);
    assert_eq!(b.take(&p, at(0), 100), 0);
    assert_eq!(b.wait_for_one(&p), Duration::from_millis(200));
    assert_eq!(b.take(&p, at(1), 100), 5);
    b.give_back(&p, 3);
    assert_eq!(b.take(&p, at(1), 2), 2);
    assert_eq!(b.take(&p, at(1), 2), 1);
    // Never above the burst after a long idle time.
    assert_eq!(b.take(&p, at(1000), 100), 10);
}

#[test]
fn degenerate_settings_stay_sane() {
    let p = HealthPolicy {
        failure_threshold: 0,
        probe_interval: Duration::from_secs(10),
        probe_cap: Duration::from_secs(1),
        jitter: f64::NAN,
        resume_burst: 0,
        resume_rate: 0.0,
    };
    let mut h = HostState::default();
    assert_eq!(h.observe(&p, Signal::Failure, false, at(0), 0.5), Change::WentDown);
    assert_eq!(p.probe_wait(0, 0.5), Duration::from_secs(10));
    assert_eq!(p.probe_wait(u32::MAX, f64::NAN), Duration::from_secs(10));
    let mut b = TokenBucket::full(&p, at(0));
    assert_eq!(b.take(&p, at(0), 5), 1);
    assert!(b.wait_for_one(&p) > Duration::ZERO);
}

fn arb_policy() -> impl Strategy<Value = HealthPolicy> {
    (1u32..10, 1u64..10_000, 0u64..100_000, 0.0f64..0.5, 1u32..200, 0.1f64..500.0).prop_map(
        |(threshold, interval, cap, jitter, burst, rate)| HealthPolicy {
            failure_threshold: threshold,
            probe_interval: Duration::from_millis(interval),
            probe_cap: Duration::from_millis(cap),
            jitter,
            resume_burst: burst,
            resume_rate: rate,
        },
    )
}

#[derive(Debug, Clone)]
enum Event {
    /// A call is attempted after this many ms.
    Call(u32, f64),
    /// An answer after this many ms: signal, and whether it came from a probe.
    Answer(u32, u8, f64),
}

fn arb_events() -> impl Strategy<Value = Vec<Event>> {
    prop::collection::vec(
        prop_oneof![
            (0u32..5_000, 0.0f64..1.0).prop_map(|(d, s)| Event::Call(d, s)),
            (0u32..5_000, 0u8..3, 0.0f64..1.0).prop_map(|(d, k, s)| Event::Answer(d, k, s)),
        ],
        1..200,
    )
}

proptest! {
    /// The host goes down exactly at the threshold-th consecutive failure; any answer that
    /// shows it alive brings it back; FAILURE / ONGOING never take it down.
    #[test]
    fn down_exactly_at_the_threshold(p in arb_policy(), signals in prop::collection::vec(0u8..3, 0..100)) {
        let mut h = HostState::default();
        let mut run = 0u32;
        for (i, k) in signals.iter().enumerate() {
            let signal = [Signal::Up, Signal::Failure, Signal::Neutral][usize::from(*k)];
            let was_down = h.is_down();
            let change = h.observe(&p, signal, false, Timestamp(i as i64), 0.5);
            match signal {
                Signal::Failure if !was_down => {
                    run += 1;
                    prop_assert_eq!(change == Change::WentDown, run == p.failure_threshold);
                    prop_assert_eq!(h.is_down(), run >= p.failure_threshold);
                }
                Signal::Up => {
                    run = 0;
                    prop_assert_eq!(matches!(change, Change::WentUp { .. }), was_down);
                    prop_assert!(!h.is_down());
                }
                _ => prop_assert_eq!(change, Change::None),
            }
            if !h.is_down() && signal == Signal::Up { run = 0; }
            if !was_down && h.is_down() { run = 0; }
        }
    }

    /// While down, at most one probe is admitted per probe wait, and every probe wait lies
    /// within [interval × (1 − jitter), cap]; a held call is told the next probe time, which
    /// is in the future and no later than now + cap.
    #[test]
    fn probes_are_spaced_and_capped(p in arb_policy(), events in arb_events()) {
        let cap = p.probe_cap.max(p.probe_interval);
        let min_wait = p.probe_interval.mul_f64(1.0 - p.jitter).saturating_sub(Duration::from_millis(1));
        let mut h = HostState::Down { since: Timestamp(0), probes_failed: 0, next_probe: Timestamp(0) };
        let mut now = Timestamp(0);
        let mut last_probe: Option<Timestamp> = None;
        for e in events {
            match e {
                Event::Call(d, s) => {
                    now = now.add(Duration::from_millis(u64::from(d)));
                    match h.admit(&p, now, s) {
                        Admission::Probe => {
                            if let Some(last) = last_probe {
                                prop_assert!(now.since(last) >= min_wait, "probes {:?} apart", now.since(last));
                            }
                            last_probe = Some(now);
                        }
                        Admission::Hold { until } => {
                            prop_assert!(until > now);
                            prop_assert!(until <= now.add(cap));
                        }
                        Admission::Call => prop_assert!(!h.is_down()),
                    }
                }
                Event::Answer(d, k, s) => {
                    now = now.add(Duration::from_millis(u64::from(d)));
                    // Only failures here: the host stays down for this property.
                    let _ = k;
                    h.observe(&p, Signal::Failure, true, now, s);
                    prop_assert!(h.is_down());
                }
            }
        }
    }

    /// The probe wait never exceeds the cap, nor falls below the jittered interval.
    #[test]
    fn probe_wait_bounds(p in arb_policy(), failed in 0u32..100, s in 0.0f64..1.0) {
        let cap = p.probe_cap.max(p.probe_interval);
        let w = p.probe_wait(failed, s);
        prop_assert!(w <= cap);
        let floor = p.probe_interval.min(cap).mul_f64(1.0 - p.jitter).saturating_sub(Duration::from_millis(1));
        prop_assert!(w >= floor, "{:?} < {:?}", w, floor);
    }

    /// Over any run, the bucket grants at most burst + rate × elapsed transactions.
    #[test]
    fn resume_rate_is_bounded(p in arb_policy(), steps in prop::collection::vec((0u32..2_000, 0u32..300), 1..100)) {
        let start = Timestamp(0);
        let mut b = TokenBucket::full(&p, start);
        let mut now = start;
        let mut granted = 0u64;
        for (d, want) in steps {
            now = now.add(Duration::from_millis(u64::from(d)));
            let got = b.take(&p, now, want);
            prop_assert!(got <= want);
            granted += u64::from(got);
            let elapsed = now.since(start).as_secs_f64();
            let bound = f64::from(p.resume_burst) + p.resume_rate * elapsed + 1e-6;
            prop_assert!(granted as f64 <= bound, "{} > {}", granted, bound);
        }
    }

    /// A waiting resume always makes progress: after wait_for_one, a token is there.
    #[test]
    fn resume_always_progresses(p in arb_policy(), drain in 0u32..500) {
        let mut b = TokenBucket::full(&p, Timestamp(0));
        b.take(&p, Timestamp(0), drain);
        let w = b.wait_for_one(&p);
        let later = Timestamp(0).add(w + Duration::from_millis(1));
        prop_assert!(b.take(&p, later, 1) == 1);
    }
}
