//! Table-driven tests of the saga planner, rule by rule.

use super::*;
use crate::model::{BranchStatus, GlobalStatus};
use crate::outcome::Outcome;
use Phase::{Failed, NotStarted, Retry, Running, Succeeded, Waiting};

const SUBMITTED: GlobalStatus = GlobalStatus::Submitted;
const ABORTING: GlobalStatus = GlobalStatus::Aborting;

fn sequential(rollbackable: &[bool]) -> SagaLayout {
    SagaLayout::new(rollbackable.to_vec(), &SagaCustomData::default()).unwrap()
}

fn concurrent(rollbackable: &[bool], orders: &[(usize, &[usize])]) -> SagaLayout {
    let custom =
        SagaCustomData { orders: orders.iter().map(|(k, v)| (*k, v.to_vec())).collect(), concurrent: true };
    SagaLayout::new(rollbackable.to_vec(), &custom).unwrap()
}

/// Steps whose compensation was never attempted.
fn actions(phases: &[Phase]) -> Vec<StepState> {
    phases.iter().map(|&action| StepState { action, compensate: NotStarted }).collect()
}

fn steps(pairs: &[(Phase, Phase)]) -> Vec<StepState> {
    pairs.iter().map(|&(action, compensate)| StepState { action, compensate }).collect()
}

fn start_actions(list: &[usize]) -> Decision {
    Decision::Start { actions: list.to_vec(), compensations: Vec::new() }
}

fn start_compensations(list: &[usize]) -> Decision {
    Decision::Start { actions: Vec::new(), compensations: list.to_vec() }
}

fn forward(layout: &SagaLayout, phases: &[Phase]) -> Decision {
    plan(layout, SUBMITTED, &actions(phases), false, false)
}

fn backward(layout: &SagaLayout, pairs: &[(Phase, Phase)]) -> Decision {
    plan(layout, ABORTING, &steps(pairs), false, false)
}

const R3: [bool; 3] = [true; 3];

#[test]
fn rollbackable_rule() {
    assert!(super::is_rollbackable("http://a", "http://c"));
    assert!(super::is_rollbackable("", ""), "nothing to call: nothing to undo");
    assert!(super::is_rollbackable("", "http://c"));
    assert!(!super::is_rollbackable("http://a", ""), "an action without compensation is a pivot candidate");
}

#[test]
fn phase_from_stored_rows() {
    let cases = [
        (BranchStatus::Succeed, 0, Succeeded),
        (BranchStatus::Succeed, 3, Succeeded),
        (BranchStatus::Failed, 1, Failed),
        (BranchStatus::Prepared, 0, NotStarted),
        (BranchStatus::Prepared, 1, Retry),
        (BranchStatus::Prepared, 9, Retry),
    ];
    for (status, attempts, expected) in cases {
        assert_eq!(Phase::from_stored(status, attempts), expected, "{status} {attempts}");
    }
}

#[test]
fn other_statuses_wait() {
    let layout = sequential(&R3);
    for status in [GlobalStatus::Prepared, GlobalStatus::Succeed, GlobalStatus::Failed] {
        let state = actions(&[NotStarted; 3]);
        assert_eq!(plan(&layout, status, &state, true, true), Decision::Wait, "{status}");
    }
}

#[test]
fn empty_saga_finishes_at_once() {
    let layout = sequential(&[]);
    assert_eq!(forward(&layout, &[]), Decision::Finish(GlobalStatus::Succeed));
    assert_eq!(backward(&layout, &[]), Decision::Finish(GlobalStatus::Failed));
}

#[test]
fn sequential_success_path() {
    let layout = sequential(&R3);
    let cases: [(&[Phase], Decision); 7] = [
        (&[NotStarted, NotStarted, NotStarted], start_actions(&[0])),
        (&[Running, NotStarted, NotStarted], Decision::Wait),
        (&[Succeeded, NotStarted, NotStarted], start_actions(&[1])),
        (&[Succeeded, Waiting, NotStarted], Decision::Wait),
        (&[Succeeded, Retry, NotStarted], start_actions(&[1])),
        (&[Succeeded, Succeeded, NotStarted], start_actions(&[2])),
        (&[Succeeded, Succeeded, Succeeded], Decision::Finish(GlobalStatus::Succeed)),
    ];
    for (phases, expected) in cases {
        assert_eq!(forward(&layout, phases), expected, "{phases:?}");
    }
}

#[test]
fn failure_at_step_2_aborts_and_compensates_in_reverse() {
    let layout = sequential(&[true; 4]);
    assert_eq!(
        forward(&layout, &[Succeeded, Succeeded, Failed, NotStarted]),
        Decision::Abort(AbortCause::ActionFailed(2))
    );
    let c = |p2: Phase, p1: Phase, p0: Phase| {
        [(Succeeded, p0), (Succeeded, p1), (Failed, p2), (NotStarted, NotStarted)]
    };
    let cases = [
        (c(NotStarted, NotStarted, NotStarted), start_compensations(&[2])),
        (c(Running, NotStarted, NotStarted), Decision::Wait),
        (c(Waiting, NotStarted, NotStarted), Decision::Wait),
        (c(Retry, NotStarted, NotStarted), start_compensations(&[2])),
        (c(Succeeded, NotStarted, NotStarted), start_compensations(&[1])),
        (c(Succeeded, Succeeded, NotStarted), start_compensations(&[0])),
        (c(Succeeded, Succeeded, Succeeded), Decision::Finish(GlobalStatus::Failed)),
    ];
    for (pairs, expected) in cases {
        assert_eq!(backward(&layout, &pairs), expected, "{pairs:?}");
    }
}

#[test]
fn lowest_failed_step_is_reported_and_beats_timeout() {
    let layout = concurrent(&R3, &[]);
    let state = actions(&[Succeeded, Failed, Failed]);
    assert_eq!(plan(&layout, SUBMITTED, &state, true, true), Decision::Abort(AbortCause::ActionFailed(1)));
}

#[test]
fn concurrent_with_orders() {
    // 2 waits for 0 and 1; 3 waits for 2.
    let layout = concurrent(&[true; 4], &[(2, &[0, 1]), (3, &[2])]);
    let cases: [(&[Phase], Decision); 6] = [
        (&[NotStarted; 4], start_actions(&[0, 1])),
        (&[Running, Running, NotStarted, NotStarted], Decision::Wait),
        (&[Succeeded, Running, NotStarted, NotStarted], Decision::Wait),
        (&[Succeeded, Succeeded, NotStarted, NotStarted], start_actions(&[2])),
        (&[Succeeded, Succeeded, Succeeded, Retry], start_actions(&[3])),
        (&[Succeeded; 4], Decision::Finish(GlobalStatus::Succeed)),
    ];
    for (phases, expected) in cases {
        assert_eq!(forward(&layout, phases), expected, "{phases:?}");
    }
    // Rollback walks the orders backwards: 3 before 2 before 0 and 1 (newest first).
    let all = |p: [Phase; 4]| -> Vec<(Phase, Phase)> { p.iter().map(|&c| (Succeeded, c)).collect() };
    assert_eq!(backward(&layout, &all([NotStarted; 4])), start_compensations(&[3]));
    let done3 = all([NotStarted, NotStarted, NotStarted, Succeeded]);
    assert_eq!(backward(&layout, &done3), start_compensations(&[2]));
    let done23 = all([NotStarted, NotStarted, Succeeded, Succeeded]);
    assert_eq!(backward(&layout, &done23), start_compensations(&[1, 0]));
}

#[test]
fn independent_compensations_start_newest_first() {
    let layout = concurrent(&R3, &[]);
    let pairs = [(Succeeded, NotStarted), (Retry, NotStarted), (Waiting, Retry)];
    assert_eq!(backward(&layout, &pairs), start_compensations(&[2, 1, 0]));
}

#[test]
fn never_started_is_not_compensated_but_failed_is() {
    // Like DTM's TestSagaConRollbackOrder: [succeed, failed, prepared, prepared].
    let layout = concurrent(&[true; 4], &[(2, &[1]), (3, &[2])]);
    let pairs =
        [(Succeeded, NotStarted), (Failed, NotStarted), (NotStarted, NotStarted), (NotStarted, NotStarted)];
    assert_eq!(backward(&layout, &pairs), start_compensations(&[1, 0]));
    let pairs =
        [(Succeeded, Succeeded), (Failed, Succeeded), (NotStarted, NotStarted), (NotStarted, NotStarted)];
    assert_eq!(backward(&layout, &pairs), Decision::Finish(GlobalStatus::Failed));
}

#[test]
fn in_flight_action_is_compensated_only_after_it_returns() {
    let layout = concurrent(&R3, &[]);
    let pairs = [(Failed, NotStarted), (Running, NotStarted), (NotStarted, NotStarted)];
    assert_eq!(backward(&layout, &pairs), start_compensations(&[0]));
    let pairs = [(Failed, Succeeded), (Running, NotStarted), (NotStarted, NotStarted)];
    assert_eq!(backward(&layout, &pairs), Decision::Wait);
    // Returned without a definite answer: assumed to have taken effect.
    let pairs = [(Failed, Succeeded), (Waiting, NotStarted), (NotStarted, NotStarted)];
    assert_eq!(backward(&layout, &pairs), start_compensations(&[1]));
    // Returned with SUCCESS.
    let pairs = [(Failed, Succeeded), (Succeeded, NotStarted), (NotStarted, NotStarted)];
    assert_eq!(backward(&layout, &pairs), start_compensations(&[1]));
}

#[test]
fn running_action_blocks_finish() {
    let layout = concurrent(&[true, true], &[]);
    let pairs = [(Failed, Succeeded), (Running, NotStarted)];
    assert_eq!(backward(&layout, &pairs), Decision::Wait);
}

#[test]
fn sequential_rollback_waits_for_later_steps() {
    let layout = sequential(&R3);
    // The later step is still running: nothing may be compensated before it returns.
    let pairs = [(Succeeded, NotStarted), (Succeeded, NotStarted), (Running, NotStarted)];
    assert_eq!(backward(&layout, &pairs), Decision::Wait);
    let pairs = [(Succeeded, NotStarted), (Succeeded, NotStarted), (Waiting, NotStarted)];
    assert_eq!(backward(&layout, &pairs), start_compensations(&[2]));
}

#[test]
fn pivot_runs_alone() {
    // Steps 2 and 3 have no compensation: they wait for 0 and 1; only one runs first.
    let layout = concurrent(&[true, true, false, false], &[]);
    let cases: [(&[Phase], Decision); 7] = [
        (&[NotStarted; 4], start_actions(&[0, 1])),
        (&[Succeeded, Running, NotStarted, NotStarted], Decision::Wait),
        (&[Succeeded, Succeeded, NotStarted, NotStarted], start_actions(&[2])),
        (&[Succeeded, Succeeded, Running, NotStarted], Decision::Wait),
        (&[Succeeded, Succeeded, Waiting, NotStarted], Decision::Wait),
        (&[Succeeded, Succeeded, Retry, NotStarted], start_actions(&[2])),
        (&[Succeeded, Succeeded, Succeeded, NotStarted], start_actions(&[3])),
    ];
    for (phases, expected) in cases {
        assert_eq!(forward(&layout, phases), expected, "{phases:?}");
    }
}

#[test]
fn pivot_is_chosen_by_rank_then_retried_alone() {
    // 1 ranks before 3 (index order among ready steps); 2 waits for 3.
    let layout = concurrent(&[true, false, false, false], &[(2, &[3])]);
    assert_eq!(forward(&layout, &[Succeeded, NotStarted, NotStarted, NotStarted]), start_actions(&[1]));
    // 2 must run before 1, so 2 is the pivot.
    let layout = concurrent(&[true, false, false], &[(1, &[2])]);
    assert_eq!(forward(&layout, &[Succeeded, NotStarted, NotStarted]), start_actions(&[2]));
    // An earlier, unanswered attempt at 1 is the pivot even though 2 ranks lower now.
    let layout = concurrent(&[true, false, false], &[]);
    assert_eq!(forward(&layout, &[Succeeded, NotStarted, Retry]), start_actions(&[2]));
    assert_eq!(forward(&layout, &[Succeeded, Retry, NotStarted]), start_actions(&[1]));
}

#[test]
fn after_the_pivot_the_rest_run_concurrently() {
    let layout = concurrent(&[true, false, false, false], &[]);
    let phases = [Succeeded, Succeeded, NotStarted, Retry];
    assert_eq!(forward(&layout, &phases), start_actions(&[2, 3]));
    // Sequential mode still chains them.
    let layout = sequential(&[false, true, false]);
    assert_eq!(forward(&layout, &[NotStarted; 3]), start_actions(&[1]));
    assert_eq!(forward(&layout, &[NotStarted, Succeeded, NotStarted]), start_actions(&[0]));
    assert_eq!(forward(&layout, &[Succeeded, Succeeded, NotStarted]), start_actions(&[2]));
}

#[test]
fn pivot_failure_rolls_back_everything() {
    let layout = concurrent(&[true, true, false, false], &[]);
    let running = actions(&[Succeeded, Succeeded, Running, NotStarted]);
    let failure = Outcome::Failure(String::from("no"));
    assert_eq!(action_phase_after(&layout, &running, 2, &failure), Failed);
    assert_eq!(
        forward(&layout, &[Succeeded, Succeeded, Failed, NotStarted]),
        Decision::Abort(AbortCause::ActionFailed(2))
    );
    let c = |p0: Phase, p1: Phase, p2: Phase| {
        [(Succeeded, p0), (Succeeded, p1), (Failed, p2), (NotStarted, NotStarted)]
    };
    // The pivot's (empty) compensation first: it depends on every rollbackable step.
    assert_eq!(backward(&layout, &c(NotStarted, NotStarted, NotStarted)), start_compensations(&[2]));
    assert_eq!(backward(&layout, &c(NotStarted, NotStarted, Succeeded)), start_compensations(&[1, 0]));
    assert_eq!(
        backward(&layout, &c(Succeeded, Succeeded, Succeeded)),
        Decision::Finish(GlobalStatus::Failed)
    );
}

#[test]
fn past_the_pivot_failure_is_retried_and_nothing_aborts() {
    let layout = concurrent(&[true, false, false], &[]);
    let state = actions(&[Succeeded, Succeeded, Running]);
    let failure = Outcome::Failure(String::from("no"));
    assert_eq!(action_phase_after(&layout, &state, 2, &failure), Waiting);
    for (timed_out, limit) in [(true, false), (false, true), (true, true)] {
        let waiting = actions(&[Succeeded, Succeeded, Waiting]);
        assert_eq!(plan(&layout, SUBMITTED, &waiting, timed_out, limit), Decision::Wait);
        let retry = actions(&[Succeeded, Succeeded, Retry]);
        assert_eq!(plan(&layout, SUBMITTED, &retry, timed_out, limit), start_actions(&[2]));
    }
}

#[test]
fn timeout_and_retry_limit_abort() {
    let layout = concurrent(&R3, &[]);
    let state = actions(&[Succeeded, Retry, Running]);
    let cases = [
        (false, false, start_actions(&[1])),
        (true, false, Decision::Abort(AbortCause::Timeout)),
        (false, true, Decision::Abort(AbortCause::RetryLimit)),
        (true, true, Decision::Abort(AbortCause::Timeout)),
    ];
    for (timed_out, limit, expected) in cases {
        assert_eq!(plan(&layout, SUBMITTED, &state, timed_out, limit), expected);
    }
    // A saga that already succeeded is not aborted.
    let done = actions(&[Succeeded; 3]);
    assert_eq!(plan(&layout, SUBMITTED, &done, true, true), Decision::Finish(GlobalStatus::Succeed));
}

#[test]
fn uncertain_pivot_blocks_timeout_abort() {
    let layout = sequential(&[true, false, false]);
    let cases: [(&[Phase], Decision); 4] = [
        (&[Succeeded, Running, NotStarted], Decision::Wait),
        (&[Succeeded, Waiting, NotStarted], Decision::Wait),
        (&[Succeeded, Retry, NotStarted], start_actions(&[1])),
        (&[Succeeded, NotStarted, NotStarted], Decision::Abort(AbortCause::Timeout)),
    ];
    for (phases, expected) in cases {
        assert_eq!(plan(&layout, SUBMITTED, &actions(phases), true, true), expected, "{phases:?}");
    }
}

#[test]
fn action_results_map_to_phases() {
    let layout = concurrent(&[true, false], &[]);
    let before = actions(&[Running, NotStarted]);
    let failure = Outcome::Failure(String::from("x"));
    let cases = [
        (Outcome::Success, Succeeded),
        (failure.clone(), Failed),
        (Outcome::Ongoing, Waiting),
        (Outcome::Error(String::from("x")), Waiting),
    ];
    for (outcome, expected) in cases {
        assert_eq!(action_phase_after(&layout, &before, 0, &outcome), expected, "{outcome:?}");
    }
    let after_pivot = actions(&[Succeeded, Succeeded]);
    assert_eq!(action_phase_after(&layout, &after_pivot, 1, &failure), Waiting);
    assert_eq!(action_phase_after(&layout, &after_pivot, 1, &Outcome::Success), Succeeded);
}

#[test]
fn compensation_results_map_to_phases() {
    assert_eq!(compensate_phase_after(&Outcome::Success), Succeeded);
    for outcome in [Outcome::Failure(String::from("x")), Outcome::Ongoing, Outcome::Error(String::from("x"))]
    {
        assert_eq!(compensate_phase_after(&outcome), Waiting, "{outcome:?}");
    }
}
