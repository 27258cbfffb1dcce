//! 2-phase messages: rule-by-rule tests, and random messages driven through rounds by a small
//! simulator of the engine with random check-back and action answers.

use proptest::prelude::*;

use super::*;
use crate::lifecycle::{self, OnAbort, OnSubmit};
use crate::model::{BranchStatus, TransType};
use GlobalStatus::{Aborting, Failed, Prepared, Submitted, Succeed};
use Phase::{NotStarted, Retry, Running, Succeeded, Waiting};

fn sequential(actions: &[Phase]) -> Decision {
    plan(Submitted, actions, false, false)
}

fn concurrent(actions: &[Phase]) -> Decision {
    plan(Submitted, actions, true, false)
}

#[test]
fn prepared_checks_back_only_once_timed_out() {
    for concurrent in [false, true] {
        for actions in [&[][..], &[NotStarted, NotStarted][..]] {
            assert_eq!(plan(Prepared, actions, concurrent, false), Decision::Wait);
            assert_eq!(plan(Prepared, actions, concurrent, true), Decision::CheckBack);
        }
    }
}

#[test]
fn sequential_runs_one_action_at_a_time_in_row_order() {
    assert_eq!(sequential(&[NotStarted, NotStarted, NotStarted]), Decision::Start(vec![0]));
    assert_eq!(sequential(&[Succeeded, NotStarted, NotStarted]), Decision::Start(vec![1]));
    assert_eq!(sequential(&[Succeeded, Retry, NotStarted]), Decision::Start(vec![1]));
    assert_eq!(sequential(&[Succeeded, Succeeded, Retry]), Decision::Start(vec![2]));
    // Rows left behind by an earlier round go first.
    assert_eq!(sequential(&[NotStarted, Succeeded]), Decision::Start(vec![0]));
}

#[test]
fn sequential_waits_for_the_call_in_flight() {
    assert_eq!(sequential(&[Succeeded, Running, NotStarted]), Decision::Wait);
    assert_eq!(sequential(&[NotStarted, Running]), Decision::Wait);
}

#[test]
fn sequential_round_stops_at_the_first_non_success() {
    assert_eq!(sequential(&[Succeeded, Waiting, NotStarted]), Decision::Wait);
    assert_eq!(sequential(&[Retry, Waiting]), Decision::Wait);
}

#[test]
fn concurrent_starts_everything_not_done() {
    assert_eq!(concurrent(&[NotStarted, NotStarted, NotStarted]), Decision::Start(vec![0, 1, 2]));
    assert_eq!(concurrent(&[NotStarted, Succeeded, Retry, Running, Waiting]), Decision::Start(vec![0, 2]));
    assert_eq!(concurrent(&[Running, Waiting, Succeeded]), Decision::Wait);
}

#[test]
fn all_succeeded_finishes() {
    for mode in [sequential, concurrent] {
        assert_eq!(mode(&[Succeeded, Succeeded]), Decision::Finish);
        assert_eq!(mode(&[]), Decision::Finish);
    }
}

#[test]
fn a_failed_action_is_never_restarted() {
    for mode in [sequential, concurrent] {
        assert_eq!(mode(&[Succeeded, Phase::Failed]), Decision::Wait);
    }
}

#[test]
fn the_timeout_no_longer_applies_once_submitted() {
    assert_eq!(plan(Submitted, &[NotStarted], false, true), Decision::Start(vec![0]));
    assert_eq!(plan(Submitted, &[Succeeded], true, true), Decision::Finish);
}

#[test]
fn aborting_and_final_statuses_wait() {
    for status in [Aborting, Succeed, Failed] {
        for concurrent in [false, true] {
            for timed_out in [false, true] {
                assert_eq!(plan(status, &[NotStarted, Retry], concurrent, timed_out), Decision::Wait);
            }
        }
    }
}

#[test]
fn check_back_fails_closed() {
    assert_eq!(check_back(&Outcome::Success), CheckBack::Commit);
    assert_eq!(check_back(&Outcome::Failure(String::from("no"))), CheckBack::Fail);
    assert_eq!(check_back(&Outcome::Ongoing), CheckBack::AskAgain(RetryKind::Ongoing));
    assert_eq!(check_back(&Outcome::Error(String::from("boom"))), CheckBack::AskAgain(RetryKind::Error));
}

#[test]
fn check_back_reads_http_answers() {
    let table = [
        (200, "", CheckBack::Commit),
        (200, r#"{"dtm_result":"SUCCESS"}"#, CheckBack::Commit),
        (409, "", CheckBack::Fail),
        (200, r#"{"dtm_result":"FAILURE"}"#, CheckBack::Fail),
        (425, "", CheckBack::AskAgain(RetryKind::Ongoing)),
        (200, r#"{"dtm_result":"ONGOING"}"#, CheckBack::AskAgain(RetryKind::Ongoing)),
        (500, "", CheckBack::AskAgain(RetryKind::Error)),
        (204, "", CheckBack::AskAgain(RetryKind::Error)),
    ];
    for (status, body, expected) in table {
        assert_eq!(check_back(&Outcome::from_http(status, body)), expected, "{status} {body}");
    }
}

#[test]
fn action_failure_is_retried() {
    assert_eq!(action_phase_after(&Outcome::Success), Succeeded);
    assert_eq!(action_phase_after(&Outcome::Failure(String::from("no"))), Waiting);
    assert_eq!(action_phase_after(&Outcome::Ongoing), Waiting);
    assert_eq!(action_phase_after(&Outcome::Error(String::from("boom"))), Waiting);
}

#[derive(Debug, Clone)]
struct Scenario {
    status: GlobalStatus,
    /// Action phases at the start (all `NotStarted` for a prepared msg).
    actions: Vec<Phase>,
    concurrent: bool,
    /// Check-back answers, one per check-back; afterwards it answers SUCCESS.
    check_backs: Vec<u8>,
    /// Action answers, one per call; afterwards every call succeeds.
    outcomes: Vec<u8>,
    /// Drives the simulator's own choices (client requests, time, which call returns), cycled.
    noise: Vec<u8>,
}

fn stored_phase() -> impl Strategy<Value = Phase> {
    prop_oneof![
        3 => Just(Phase::from_stored(BranchStatus::Prepared, 0)),
        1 => Just(Phase::from_stored(BranchStatus::Prepared, 2)),
        1 => Just(Phase::from_stored(BranchStatus::Succeed, 1)),
    ]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop_oneof![Just(Prepared), Just(Submitted)],
        prop::collection::vec(stored_phase(), 0..=5),
        any::<bool>(),
        prop::collection::vec(0u8..4, 0..8),
        prop::collection::vec(0u8..4, 0..20),
        prop::collection::vec(any::<u8>(), 1..32),
    )
        .prop_map(|(status, mut actions, concurrent, check_backs, outcomes, noise)| {
            if status == Prepared {
                actions.fill(NotStarted);
            }
            Scenario { status, actions, concurrent, check_backs, outcomes, noise }
        })
}

fn outcome_of(code: u8) -> Outcome {
    match code {
        0 => Outcome::Success,
        1 => Outcome::Failure(String::from("no")),
        2 => Outcome::Ongoing,
        _ => Outcome::Error(String::from("boom")),
    }
}

struct Sim {
    status: GlobalStatus,
    actions: Vec<Phase>,
    concurrent: bool,
    timed_out: bool,
    check_backs: Vec<u8>,
    next_check_back: usize,
    outcomes: Vec<u8>,
    next_outcome: usize,
    noise: Vec<u8>,
    next_noise: usize,
    in_flight: Vec<usize>,
    /// Action calls made.
    calls: usize,
}

/// Rounds in which a prepared msg may idle before the simulated clock passes its timeout.
const IDLE_ROUNDS: usize = 3;

impl Sim {
    fn new(s: &Scenario) -> Sim {
        Sim {
            status: s.status,
            actions: s.actions.clone(),
            concurrent: s.concurrent,
            timed_out: false,
            check_backs: s.check_backs.clone(),
            next_check_back: 0,
            outcomes: s.outcomes.clone(),
            next_outcome: 0,
            noise: s.noise.clone(),
            next_noise: 0,
            in_flight: Vec::new(),
            calls: 0,
        }
    }

    fn noise(&mut self) -> u8 {
        let value = self.noise[self.next_noise % self.noise.len()];
        self.next_noise += 1;
        value
    }

    fn check_back_answer(&mut self) -> Outcome {
        let code = self.check_backs.get(self.next_check_back).copied().unwrap_or(0);
        self.next_check_back += 1;
        outcome_of(code)
    }

    fn action_answer(&mut self) -> Outcome {
        let code = self.outcomes.get(self.next_outcome).copied().unwrap_or(0);
        self.next_outcome += 1;
        outcome_of(code)
    }

    /// Runs rounds until a final status; returns it.
    fn run(&mut self, max_rounds: usize) -> Result<GlobalStatus, TestCaseError> {
        for round in 1..=max_rounds {
            prop_assert!(self.in_flight.is_empty(), "a round ended with a call in flight");
            for phase in &mut self.actions {
                prop_assert_ne!(*phase, Running);
                if *phase == Waiting {
                    *phase = Retry;
                }
            }
            if self.status == Prepared
                && let Some(status) = self.client_or_clock(round)?
            {
                return Ok(status);
            }
            let all_success_from_now = self.next_outcome >= self.outcomes.len()
                && (self.status == Submitted
                    || (self.timed_out && self.next_check_back >= self.check_backs.len()));
            let done = self.round()?;
            if all_success_from_now {
                prop_assert_eq!(done, Some(Succeed), "every answer succeeded, yet no success");
            }
            if let Some(status) = done {
                return Ok(status);
            }
        }
        Err(TestCaseError::fail(format!("no final status after {max_rounds} rounds")))
    }

    /// Between rounds of a prepared msg: the client submits or aborts, or time passes.
    fn client_or_clock(&mut self, round: usize) -> Result<Option<GlobalStatus>, TestCaseError> {
        let choice = if round > IDLE_ROUNDS { 2 } else { self.noise() % 5 };
        match choice {
            0 => {
                prop_assert_eq!(lifecycle::on_submit(Some(Prepared)), OnSubmit::FromPrepared);
                self.status = Submitted;
            }
            1 => {
                prop_assert_eq!(lifecycle::on_abort(TransType::Msg, Prepared), OnAbort::FailNow);
                prop_assert_eq!(self.calls, 0);
                self.status = Failed;
                return Ok(Some(Failed));
            }
            2 => self.timed_out = true,
            _ => {}
        }
        Ok(None)
    }

    /// One round; `Some(final status)` when the msg finished.
    fn round(&mut self) -> Result<Option<GlobalStatus>, TestCaseError> {
        let mut started = false;
        // Each decision starts or settles a call, or is the one check-back.
        for _ in 0..3 * self.actions.len() + 3 {
            match plan(self.status, &self.actions, self.concurrent, self.timed_out) {
                Decision::CheckBack => {
                    prop_assert_eq!(self.status, Prepared);
                    prop_assert!(self.timed_out);
                    prop_assert_eq!(self.calls, 0, "an action ran before the check-back");
                    let answer = self.check_back_answer();
                    match check_back(&answer) {
                        CheckBack::Commit => {
                            prop_assert_eq!(answer, Outcome::Success, "committed on a non-success");
                            self.status = Submitted;
                        }
                        CheckBack::Fail => {
                            prop_assert!(matches!(answer, Outcome::Failure(_)));
                            self.status = Failed;
                            return Ok(Some(Failed));
                        }
                        CheckBack::AskAgain(kind) => {
                            let expected = match answer {
                                Outcome::Ongoing => RetryKind::Ongoing,
                                Outcome::Error(_) => RetryKind::Error,
                                other => {
                                    return Err(TestCaseError::fail(format!("asked again on {other:?}")));
                                }
                            };
                            prop_assert_eq!(kind, expected);
                            return Ok(None);
                        }
                    }
                }
                Decision::Start(list) => {
                    self.check_start(&list, started)?;
                    started = true;
                    for &i in &list {
                        self.actions[i] = Running;
                    }
                    self.in_flight.extend(&list);
                    self.calls += list.len();
                    if !self.concurrent {
                        prop_assert!(self.in_flight.len() <= 1, "two sequential actions in flight");
                    }
                }
                Decision::Finish => {
                    prop_assert_eq!(self.status, Submitted);
                    prop_assert!(self.in_flight.is_empty(), "finished with calls in flight");
                    prop_assert!(self.actions.iter().all(|&p| p == Succeeded));
                    self.status = Succeed;
                    return Ok(Some(Succeed));
                }
                Decision::Wait => {
                    prop_assert!(self.status != Prepared || !self.timed_out, "no check-back when due");
                    if self.in_flight.is_empty() {
                        if self.status == Submitted && !self.concurrent {
                            prop_assert!(self.actions.contains(&Waiting), "a sequential round idled");
                        }
                        return Ok(None);
                    }
                    self.resolve_one()?;
                }
            }
        }
        Err(TestCaseError::fail("a round never settled"))
    }

    fn check_start(&self, list: &[usize], started: bool) -> Result<(), TestCaseError> {
        prop_assert_eq!(self.status, Submitted, "an action before the commit");
        prop_assert!(!list.is_empty(), "empty Start");
        if self.concurrent {
            prop_assert!(!started, "a second Start in a concurrent round");
            let not_done: Vec<usize> =
                (0..self.actions.len()).filter(|&i| self.actions[i] != Succeeded).collect();
            prop_assert_eq!(list, &not_done[..], "not everything started at once");
        } else {
            prop_assert!(self.in_flight.is_empty());
            prop_assert!(!self.actions.contains(&Waiting), "the round went on after a non-success");
            let first = self.actions.iter().position(|&p| p != Succeeded);
            prop_assert_eq!(list, first.as_slice(), "not the first action left");
        }
        for &i in list {
            prop_assert!(matches!(self.actions[i], NotStarted | Retry), "started {:?}", self.actions[i]);
        }
        Ok(())
    }

    /// One in-flight call (picked at random) returns.
    fn resolve_one(&mut self) -> Result<(), TestCaseError> {
        let pick = usize::from(self.noise()) % self.in_flight.len();
        let i = self.in_flight.swap_remove(pick);
        prop_assert_eq!(self.actions[i], Running);
        let answer = self.action_answer();
        self.actions[i] = action_phase_after(&answer);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_msgs_keep_the_invariants_and_terminate(s in scenario()) {
        let mut sim = Sim::new(&s);
        // An unfinished round consumes a check-back answer or at least one action answer from
        // the random prefixes; a prepared msg idles for at most `IDLE_ROUNDS` + 1 rounds.
        let max_rounds = s.check_backs.len() + s.outcomes.len() + IDLE_ROUNDS + 2;
        let status = sim.run(max_rounds)?;
        match status {
            Succeed => {
                prop_assert!(sim.actions.iter().all(|&p| p == Succeeded));
                let pending = s.actions.iter().filter(|&&p| p != Succeeded).count();
                prop_assert!(sim.calls <= pending + s.outcomes.len());
            }
            Failed => {
                prop_assert_eq!(s.status, Prepared, "a submitted msg failed");
                prop_assert_eq!(sim.calls, 0, "a failed msg ran actions");
            }
            other => prop_assert!(false, "finished as {}", other),
        }
    }

    #[test]
    fn a_prepared_msg_within_its_time_calls_nothing(
        actions in prop::collection::vec(stored_phase(), 0..=6),
        concurrent in any::<bool>(),
    ) {
        prop_assert_eq!(plan(Prepared, &actions, concurrent, false), Decision::Wait);
        prop_assert_eq!(plan(Prepared, &actions, concurrent, true), Decision::CheckBack);
    }
}

#[test]
fn delay_is_parsed_once_here() {
    use std::time::Duration;
    assert_eq!(delay(""), Ok(None));
    assert_eq!(delay(" null "), Ok(None));
    assert_eq!(delay("{}"), Ok(None));
    assert_eq!(delay(r#"{"delay":0}"#), Ok(None));
    assert_eq!(delay(r#"{"delay":5}"#), Ok(Some(Duration::from_secs(5))));
    assert!(delay(r#"{"delay":"soon"}"#).is_err());
    assert!(delay(r#"{"delay":-1}"#).is_err());
    assert!(delay("not json").is_err());
    let t = crate::Timestamp(1_000);
    assert_eq!(delayed_until(t, r#"{"delay":2}"#), Some(crate::Timestamp(3_000)));
    assert_eq!(delayed_until(t, ""), None);
    assert_eq!(delayed_until(t, "garbage"), None);
}
