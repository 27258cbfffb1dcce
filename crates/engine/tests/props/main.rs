//! The real engine (`Engine`: submit, abort, register, `run_once`) under property tests, over
//! the in-memory store with injected faults (lost lease, store errors, crashes between any two
//! effects, slow writes), scripted participants answering anything, and time jumps. Every
//! generated history is checked, at every call and at the end, for what the engine promises:
//!
//! - no call without a persisted attempt for it, and none without a valid lease (so none after
//!   a fenced write of that round);
//! - no compensation of a never-attempted action;
//! - the pivot runs alone; nothing is rolled back after a non-rollbackable success;
//! - a TCC (an XA) is never both confirmed and cancelled (committed and rolled back);
//! - a msg never runs its actions unless the check-back committed (never after FAILURE/error);
//! - every transaction terminates once participants answer SUCCESS.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod world;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use dtx_core::{GlobalStatus, Op, TransOptions, TransType};
use dtx_engine::{Clock, Engine, RegisterBranch, Step, TransRequest};
use proptest::prelude::*;
use world::{Answer, GID, Injected, LEASE, World};

/// How a TCC's client ends it.
#[derive(Debug, Clone, Copy)]
enum TccEnd {
    Submit,
    Abort,
    /// Never: it times out.
    Nothing,
}

#[derive(Debug, Clone)]
enum Mode {
    Saga {
        rollbackable: Vec<bool>,
        concurrent: bool,
        retry_limit: u64,
        timeout_s: u64,
    },
    /// TCC, or XA (`xa`: the same client flow, phase two commit / rollback).
    Tcc {
        branches: usize,
        end: TccEnd,
        xa: bool,
    },
    Msg {
        steps: usize,
        submit: bool,
        concurrent: bool,
    },
}

#[derive(Debug, Clone)]
struct Case {
    mode: Mode,
    answers: Vec<(Answer, u64)>,
    faults: BTreeMap<usize, Injected>,
    jumps: Vec<u64>,
}

fn req(trans_type: TransType, steps: Vec<Step>, custom_data: String, options: TransOptions) -> TransRequest {
    let payloads = vec![b"{}".to_vec(); steps.len()];
    TransRequest {
        gid: GID.into(),
        trans_type,
        protocol: String::new(),
        steps,
        payloads,
        custom_data,
        query_prepared: if trans_type == TransType::Msg { "http://p/check".into() } else { String::new() },
        options,
        rollback_reason: String::new(),
        req_extra: BTreeMap::new(),
    }
}

fn url(what: &str, i: usize) -> String {
    format!("http://p/{what}{i}")
}

/// Runs one history; returns what went wrong (empty = every property held).
async fn run(case: Case) -> Vec<String> {
    let (trans_type, rollbackable) = match &case.mode {
        Mode::Saga { rollbackable, .. } => (TransType::Saga, rollbackable.clone()),
        Mode::Tcc { xa: false, .. } => (TransType::Tcc, Vec::new()),
        Mode::Tcc { xa: true, .. } => (TransType::Xa, Vec::new()),
        Mode::Msg { .. } => (TransType::Msg, Vec::new()),
    };
    let w =
        World::new(trans_type, rollbackable, case.answers.clone(), case.faults.clone(), case.jumps.clone());
    let mut engine = w.engine();
    let wait = TransOptions { wait_result: true, ..TransOptions::default() };

    // The client's part. A crash drops the engine; a fresh one carries on.
    let crashed = match &case.mode {
        Mode::Saga { rollbackable, concurrent, retry_limit, timeout_s } => {
            let steps = rollbackable
                .iter()
                .enumerate()
                .map(|(i, &r)| Step {
                    action: url("a", i),
                    compensate: if r { url("c", i) } else { String::new() },
                })
                .collect();
            let custom = if *concurrent { r#"{"concurrent": true}"#.to_owned() } else { String::new() };
            let options =
                TransOptions { retry_limit: *retry_limit, timeout_to_fail: *timeout_s, ..wait.clone() };
            w.drive(engine.submit(req(TransType::Saga, steps, custom, options))).await.is_none()
        }
        Mode::Tcc { branches, end, xa } => {
            let mut crashed = w
                .drive(engine.prepare(req(trans_type, Vec::new(), String::new(), wait.clone())))
                .await
                .is_none();
            for i in 0..*branches {
                if crashed {
                    break;
                }
                let reg = if *xa {
                    RegisterBranch {
                        gid: GID.into(),
                        trans_type: "xa".into(),
                        branch_id: format!("{:02}", i + 1),
                        url: url("xa", i),
                        ..RegisterBranch::default()
                    }
                } else {
                    RegisterBranch {
                        gid: GID.into(),
                        trans_type: "tcc".into(),
                        branch_id: format!("{:02}", i + 1),
                        data: b"{}".to_vec(),
                        confirm: url("confirm", i),
                        cancel: url("cancel", i),
                        ..RegisterBranch::default()
                    }
                };
                crashed = w.drive(engine.register_branch(reg)).await.is_none();
            }
            if !crashed {
                crashed = match end {
                    TccEnd::Submit => w
                        .drive(engine.submit(req(trans_type, Vec::new(), String::new(), wait.clone())))
                        .await
                        .is_none(),
                    TccEnd::Abort => w.drive(engine.abort(GID, "")).await.is_none(),
                    TccEnd::Nothing => false,
                };
            }
            crashed
        }
        Mode::Msg { steps, submit, concurrent } => {
            let steps: Vec<Step> =
                (0..*steps).map(|i| Step { action: url("m", i), compensate: String::new() }).collect();
            let options = TransOptions { concurrent: *concurrent, ..wait.clone() };
            let mut crashed = w
                .drive(engine.prepare(req(TransType::Msg, steps.clone(), String::new(), options.clone())))
                .await
                .is_none();
            if !crashed && *submit {
                // From here the client committed: actions need no check-back.
                w.client_submitted.store(true, Ordering::SeqCst);
                crashed = w
                    .drive(engine.submit(req(TransType::Msg, steps, String::new(), options)))
                    .await
                    .is_none();
            }
            crashed
        }
    };
    if crashed {
        engine = w.engine();
    }

    // The scheduler's part: step time to the next due moment, run, repeat. Faults stop after a
    // while; from then on, the transaction must finish.
    let mut finished = false;
    for round in 0..40 {
        if round == 8 {
            w.calm();
        }
        let Some(t) = w.store.snapshot(GID) else {
            // Never stored (the store was down at creation): nothing happened, nothing to check.
            finished = true;
            break;
        };
        if t.global.status.is_final() {
            finished = true;
            break;
        }
        let now = w.clock.now();
        let due = t
            .global
            .next_cron_time
            .max(t.global.lease_until.map_or(now, |u| u.add(Duration::from_millis(1))));
        w.clock.advance(Duration::from_millis(u64::try_from(due.0 - now.0).unwrap_or(0) + 1));
        if w.drive(engine.run_once()).await.is_none() {
            engine = w.engine();
        }
    }

    let (mut violations, calls) = w.violations();
    if !finished {
        let t = w.store.snapshot(GID).map(|t| t.global);
        violations.push(format!("did not terminate once participants answered SUCCESS: {t:?}"));
    }
    if let Some(t) = w.store.snapshot(GID)
        && trans_type == TransType::Saga
        && w.pivot_succeeded()
        && t.global.status == GlobalStatus::Failed
    {
        violations.push("a saga past its pivot ended failed".into());
    }
    let (confirms, cancels) = w.confirms_and_cancels();
    if confirms > 0 && cancels > 0 {
        violations.push(format!("tcc confirmed {confirms} and cancelled {cancels} times"));
    }
    if !violations.is_empty() {
        violations.push(format!("calls: {calls:?}"));
        violations.push(format!(
            "writes: {:#?}",
            w.store.writes().iter().map(|r| (&r.write, r.fault, &r.error)).collect::<Vec<_>>()
        ));
    }
    drop(engine);
    violations
}

fn check(case: Case) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let violations = rt.block_on(run(case));
    prop_assert!(violations.is_empty(), "{}", violations.join("\n"));
    Ok(())
}

fn answer() -> impl Strategy<Value = (Answer, u64)> {
    (
        prop_oneof![
            4 => Just(Answer::Success),
            2 => Just(Answer::Failure),
            1 => Just(Answer::Ongoing),
            2 => Just(Answer::Error),
            1 => Just(Answer::Timeout),
        ],
        prop_oneof![3 => Just(0u64), 1 => 1u64..2_000],
    )
}

fn injected() -> impl Strategy<Value = Injected> {
    prop_oneof![
        Just(Injected::LoseLease),
        Just(Injected::Unavailable),
        Just(Injected::Crash),
        (1u64..30_000).prop_map(Injected::Slow),
    ]
}

fn faults() -> impl Strategy<Value = BTreeMap<usize, Injected>> {
    proptest::collection::btree_map(0usize..40, injected(), 0..4)
}

fn jumps() -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(
        prop_oneof![Just(10u64), Just(100), Just(400), Just(1_500), Just(5_000), Just(15_000)],
        1..4,
    )
}

fn saga() -> impl Strategy<Value = Mode> {
    (
        proptest::collection::vec(prop_oneof![4 => Just(true), 1 => Just(false)], 1..5),
        any::<bool>(),
        prop_oneof![2 => Just(0u64), 1 => 1u64..3],
        prop_oneof![1 => Just(0u64), 1 => 1u64..4],
    )
        .prop_map(|(rollbackable, concurrent, retry_limit, timeout_s)| Mode::Saga {
            rollbackable,
            concurrent,
            retry_limit,
            timeout_s,
        })
}

fn tcc() -> impl Strategy<Value = Mode> {
    (1usize..4, prop_oneof![Just(TccEnd::Submit), Just(TccEnd::Abort), Just(TccEnd::Nothing)])
        .prop_map(|(branches, end)| Mode::Tcc { branches, end, xa: false })
}

fn xa() -> impl Strategy<Value = Mode> {
    (1usize..4, prop_oneof![Just(TccEnd::Submit), Just(TccEnd::Abort), Just(TccEnd::Nothing)])
        .prop_map(|(branches, end)| Mode::Tcc { branches, end, xa: true })
}

fn msg() -> impl Strategy<Value = Mode> {
    (1usize..4, any::<bool>(), any::<bool>()).prop_map(|(steps, submit, concurrent)| Mode::Msg {
        steps,
        submit,
        concurrent,
    })
}

fn case(mode: impl Strategy<Value = Mode>) -> impl Strategy<Value = Case> {
    (mode, proptest::collection::vec(answer(), 0..12), faults(), jumps())
        .prop_map(|(mode, answers, faults, jumps)| Case { mode, answers, faults, jumps })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, ..ProptestConfig::default() })]

    #[test]
    fn sagas_keep_their_promises(c in case(saga())) {
        check(c)?;
    }

    #[test]
    fn tccs_keep_their_promises(c in case(tcc())) {
        check(c)?;
    }

    #[test]
    fn xas_keep_their_promises(c in case(xa())) {
        check(c)?;
    }

    #[test]
    fn msgs_keep_their_promises(c in case(msg())) {
        check(c)?;
    }
}

// The defects of issue 8, as fixed histories (each failed on the engine before the fix).

/// Defect 1: with retry_limit, each immediate retry is a new attempt written (fenced) before
/// its call, after a pause; a round whose lease is lost at that write calls nobody.
#[test]
fn immediate_retries_are_recorded_before_each_call() {
    let case = Case {
        mode: Mode::Saga { rollbackable: vec![true], concurrent: false, retry_limit: 2, timeout_s: 0 },
        answers: vec![(Answer::Error, 0), (Answer::Error, 0)],
        faults: BTreeMap::new(),
        jumps: vec![100],
    };
    assert_eq!(block_on(run(case)), Vec::<String>::new());
}

/// Defect 1, the fence: the lease is lost at the write of the first immediate retry.
#[test]
fn an_immediate_retry_is_fenced_like_any_call() {
    // Effects: 0 create, 1 call a0 (error), 2 the retry's write -> lease lost.
    let case = Case {
        mode: Mode::Saga { rollbackable: vec![true], concurrent: false, retry_limit: 3, timeout_s: 0 },
        answers: vec![(Answer::Error, 0)],
        faults: BTreeMap::from([(2, Injected::LoseLease)]),
        jumps: vec![100],
    };
    assert_eq!(block_on(run(case)), Vec::<String>::new());
}

/// Defect 2: a new saga whose first decision is a timeout rollback (its insert was slow)
/// writes `aborting` and the compensations' attempts before calling them; a crash right after
/// does not make the next round run the actions forward.
#[test]
fn compensations_after_an_early_timeout_are_recorded_first() {
    // Effects: 0 create (takes 2 s, past timeout_to_fail = 1 s), 1 the first compensation call.
    let case = Case {
        mode: Mode::Saga { rollbackable: vec![true, true], concurrent: false, retry_limit: 0, timeout_s: 1 },
        answers: Vec::new(),
        faults: BTreeMap::from([(0, Injected::Slow(2_000)), (2, Injected::Crash)]),
        jumps: vec![100],
    };
    assert_eq!(block_on(run(case)), Vec::<String>::new());
}

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().build().expect("runtime").block_on(f)
}

/// Defect 3: submitting a prepared TCC writes `submitted` and "due now" in one fenced save (no
/// unfenced schedule write after it), so a crash right after that save leaves it due at once:
/// the next node takes it over when the lease expires, not at the old timeout.
#[test]
fn a_submitted_prepared_tcc_is_due_at_once_in_the_same_fenced_write() {
    block_on(async {
        // Effects: 0 prepare, 1 register, 2 the submit's claim, 3 its save to submitted (with
        // the first confirm's attempt) -> crash.
        let w = World::new(
            TransType::Tcc,
            Vec::new(),
            Vec::new(),
            BTreeMap::from([(3, Injected::Crash)]),
            vec![10],
        );
        let engine = w.engine();
        let opts = TransOptions { timeout_to_fail: 3_600, ..TransOptions::default() };
        let prepare = req(TransType::Tcc, Vec::new(), String::new(), opts.clone());
        w.drive(engine.prepare(prepare.clone())).await.expect("prepare").expect("prepared");
        let reg = RegisterBranch {
            gid: GID.into(),
            trans_type: "tcc".into(),
            branch_id: "01".into(),
            data: Vec::new(),
            confirm: url("confirm", 0),
            cancel: url("cancel", 0),
            ..RegisterBranch::default()
        };
        w.drive(engine.register_branch(reg)).await.expect("register").expect("registered");
        assert!(w.drive(engine.submit(prepare)).await.is_none(), "crashed at the status write");
        let writes = w.store.writes();
        assert!(
            !writes.iter().any(|r| matches!(r.write, dtx_store::memory::Write::ResetNextCronTime { .. })),
            "no unfenced schedule write: {writes:#?}"
        );
        let t = w.store.snapshot(GID).expect("stored").global;
        assert_eq!(t.status, GlobalStatus::Submitted, "{writes:#?}");
        assert!(t.next_cron_time <= w.clock.now(), "due at once, not at the old timeout: {t:?}");

        w.calm();
        let engine: Engine = w.engine();
        w.clock.advance(LEASE + Duration::from_secs(1));
        assert_eq!(w.drive(engine.run_once()).await.expect("no crash").expect("run_once"), 1);
        assert_eq!(w.store.snapshot(GID).expect("stored").global.status, GlobalStatus::Succeed);
        assert_eq!(w.confirms_and_cancels(), (1, 0));
        let _ = Arc::clone(&w);
    });
}

/// ADR 21: the insert records the later actions' first attempts too, but a round that rolls
/// back before reaching them calls neither them nor their compensations, and its first write
/// takes those attempts back.
#[test]
fn a_rollback_leaves_the_actions_recorded_ahead_alone() {
    block_on(async {
        let w = World::new(
            TransType::Saga,
            vec![true, true, true],
            vec![(Answer::Failure, 0)],
            BTreeMap::new(),
            vec![10],
        );
        let engine = w.engine();
        let steps = (0..3).map(|i| Step { action: url("a", i), compensate: url("c", i) }).collect();
        let wait = TransOptions { wait_result: true, ..TransOptions::default() };
        let reply = w.drive(engine.submit(req(TransType::Saga, steps, String::new(), wait))).await;
        assert!(matches!(reply, Some(Ok(dtx_engine::SubmitReply::Finished { .. }))), "{reply:?}");
        let (violations, calls) = w.violations();
        assert_eq!(violations, Vec::<String>::new());
        let first = &calls[0].0;
        assert!(calls.iter().all(|(id, _, _)| id == first), "only the first step was called: {calls:?}");
        let t = w.store.snapshot(GID).expect("stored");
        assert_eq!(t.global.status, GlobalStatus::Failed);
        // Recorded by the insert, taken back by the write that began the rollback.
        let later = t.branches.iter().filter(|b| b.branch_id != *first && b.op == Op::Action);
        assert!(later.clone().count() == 2 && later.clone().all(|b| b.attempts == 0), "taken back: {t:?}");
    });
}

/// The hot path keeps its cost: a new sequential two-step saga whose participants succeed is
/// two writes on a store one node uses: the insert, which also records the first attempt of
/// both actions (ADR 21), and the final status with both results. On a store shared by nodes
/// (PostgreSQL, MySQL) another node's operator stop must fence the round, so the second call
/// keeps its own write (three).
#[test]
fn a_two_step_saga_costs_two_writes_or_three_on_a_shared_store() {
    let writes = |shared: bool| {
        block_on(async {
            let w = World::new(TransType::Saga, vec![true, true], Vec::new(), BTreeMap::new(), vec![10]);
            w.store.set_shared(shared);
            w.calm();
            let engine = w.engine();
            let steps = (0..2).map(|i| Step { action: url("a", i), compensate: url("c", i) }).collect();
            let wait = TransOptions { wait_result: true, ..TransOptions::default() };
            let reply = w.drive(engine.submit(req(TransType::Saga, steps, String::new(), wait))).await;
            assert!(matches!(reply, Some(Ok(dtx_engine::SubmitReply::Finished { .. }))), "{reply:?}");
            assert_eq!(w.violations().0, Vec::<String>::new());
            w.store.writes().len()
        })
    };
    assert_eq!((writes(false), writes(true)), (2, 3));
}

#[test]
fn the_entry_points_return_small_futures() {
    // A future is moved whole at every hand-over (axum's boxing of a handler, tokio's task
    // cell, the join handle's output slot): a saga's submit once was ~10 KB, copied five times
    // per request. The entry points box their bodies, so what moves is a pointer and the
    // arguments.
    let w = World::new(TransType::Saga, vec![true, true], Vec::new(), BTreeMap::new(), vec![10]);
    let engine = w.engine();
    let steps: Vec<Step> = (0..2).map(|i| Step { action: url("a", i), compensate: url("c", i) }).collect();
    let submit = engine.submit(req(TransType::Saga, steps.clone(), String::new(), TransOptions::default()));
    let prepare = engine.prepare(req(TransType::Tcc, Vec::new(), String::new(), TransOptions::default()));
    let abort = engine.abort(GID, "stop");
    let register = engine.register_branch(RegisterBranch {
        gid: GID.into(),
        trans_type: "tcc".into(),
        branch_id: "01".into(),
        ..RegisterBranch::default()
    });
    for (name, size) in [
        ("submit", std::mem::size_of_val(&submit)),
        ("prepare", std::mem::size_of_val(&prepare)),
        ("abort", std::mem::size_of_val(&abort)),
        ("register_branch", std::mem::size_of_val(&register)),
    ] {
        // Today: submit 288, abort 56, prepare 1,160, register_branch 896 bytes.
        assert!(size <= 1536, "{name}'s future is {size} bytes: box its body");
    }
}
