//! TCC phase two: rule-by-rule tests, and random transactions driven through rounds by a small
//! simulator of the engine (one call at a time, the round ends at the first non-success).

use proptest::prelude::*;

use super::*;
use crate::lifecycle::{self, OnAbort, OnSubmit};
use crate::model::TransType;
use crate::outcome::Outcome;
use BranchStatus::{Failed as BFailed, Prepared as BPrepared, Succeed as BSucceed};
use GlobalStatus::{Aborting, Failed, Prepared, Submitted, Succeed};

fn row(op: Op, status: BranchStatus) -> Row {
    Row { op, status }
}

/// Rows as stored for branches in registration order: `cancel`, `confirm` per branch.
fn registered(pairs: &[(BranchStatus, BranchStatus)]) -> Vec<Row> {
    pairs.iter().flat_map(|&(cancel, confirm)| [row(Op::Cancel, cancel), row(Op::Confirm, confirm)]).collect()
}

#[test]
fn phase_two_rows_succeed_only_on_success() {
    assert_eq!(phase_two_status_after(&Outcome::Success), Some(BSucceed));
    assert_eq!(phase_two_status_after(&Outcome::Failure("no".into())), None);
    assert_eq!(phase_two_status_after(&Outcome::Ongoing), None);
    assert_eq!(phase_two_status_after(&Outcome::Error("boom".into())), None);
}

#[test]
fn phase_two_op_per_status() {
    assert_eq!(phase_two_op(Submitted), Some(Op::Confirm));
    assert_eq!(phase_two_op(Aborting), Some(Op::Cancel));
    for status in [Prepared, Succeed, Failed] {
        assert_eq!(phase_two_op(status), None, "{status}");
    }
}

#[test]
fn prepared_waits_until_timed_out() {
    let rows = registered(&[(BPrepared, BPrepared), (BPrepared, BPrepared)]);
    assert_eq!(plan(Prepared, &rows, false), Decision::Wait);
    assert_eq!(plan(Prepared, &rows, true), Decision::AbortTimedOut);
    assert_eq!(plan(Prepared, &[], false), Decision::Wait);
    assert_eq!(plan(Prepared, &[], true), Decision::AbortTimedOut);
}

#[test]
fn submitted_confirms_newest_first() {
    let mut rows = registered(&[(BPrepared, BPrepared), (BPrepared, BPrepared), (BPrepared, BPrepared)]);
    assert_eq!(plan(Submitted, &rows, false), Decision::Call(5));
    rows[5].status = BSucceed;
    assert_eq!(plan(Submitted, &rows, false), Decision::Call(3));
    rows[3].status = BSucceed;
    assert_eq!(plan(Submitted, &rows, false), Decision::Call(1));
    rows[1].status = BSucceed;
    assert_eq!(plan(Submitted, &rows, false), Decision::Finish(Succeed));
}

#[test]
fn aborting_cancels_newest_first() {
    let mut rows = registered(&[(BPrepared, BPrepared), (BPrepared, BPrepared)]);
    assert_eq!(plan(Aborting, &rows, false), Decision::Call(2));
    rows[2].status = BSucceed;
    assert_eq!(plan(Aborting, &rows, false), Decision::Call(0));
    rows[0].status = BSucceed;
    assert_eq!(plan(Aborting, &rows, false), Decision::Finish(Failed));
}

#[test]
fn done_rows_are_skipped() {
    let rows = registered(&[(BPrepared, BPrepared), (BPrepared, BSucceed), (BPrepared, BSucceed)]);
    assert_eq!(plan(Submitted, &rows, false), Decision::Call(1));
    let rows = registered(&[(BSucceed, BPrepared), (BPrepared, BPrepared), (BSucceed, BPrepared)]);
    assert_eq!(plan(Aborting, &rows, false), Decision::Call(2));
}

#[test]
fn rows_of_the_other_op_are_never_called() {
    let rows = registered(&[(BPrepared, BSucceed), (BPrepared, BSucceed)]);
    assert_eq!(plan(Submitted, &rows, false), Decision::Finish(Succeed));
    let rows = registered(&[(BSucceed, BPrepared), (BSucceed, BPrepared)]);
    assert_eq!(plan(Aborting, &rows, false), Decision::Finish(Failed));
}

#[test]
fn only_prepared_rows_are_called() {
    // TCC rows never fail, but a row that somehow did is not called again.
    let rows = vec![row(Op::Confirm, BPrepared), row(Op::Confirm, BFailed)];
    assert_eq!(plan(Submitted, &rows, false), Decision::Call(0));
}

#[test]
fn no_branches_finish_at_once() {
    assert_eq!(plan(Submitted, &[], false), Decision::Finish(Succeed));
    assert_eq!(plan(Aborting, &[], false), Decision::Finish(Failed));
}

#[test]
fn the_timeout_no_longer_applies_once_decided() {
    let rows = registered(&[(BPrepared, BPrepared)]);
    assert_eq!(plan(Submitted, &rows, true), Decision::Call(1));
    assert_eq!(plan(Aborting, &rows, true), Decision::Call(0));
}

#[test]
fn final_statuses_wait() {
    let rows = registered(&[(BPrepared, BPrepared)]);
    for status in [Succeed, Failed] {
        for timed_out in [false, true] {
            assert_eq!(plan(status, &rows, timed_out), Decision::Wait, "{status} {timed_out}");
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    status: GlobalStatus,
    rows: Vec<Row>,
    /// Participant answers, consumed one per call; afterwards every call succeeds.
    outcomes: Vec<u8>,
    /// Drives the simulator's own choices (client requests, time passing), cycled.
    noise: Vec<u8>,
}

fn branch_status() -> impl Strategy<Value = BranchStatus> {
    prop_oneof![3 => Just(BPrepared), 1 => Just(BSucceed)]
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop_oneof![Just(Prepared), Just(Submitted), Just(Aborting)],
        prop::collection::vec((branch_status(), branch_status()), 0..=5),
        prop::collection::vec(0u8..4, 0..20),
        prop::collection::vec(any::<u8>(), 1..32),
    )
        .prop_map(|(status, pairs, outcomes, noise)| Scenario {
            status,
            rows: registered(&pairs),
            outcomes,
            noise,
        })
}

struct Sim {
    status: GlobalStatus,
    rows: Vec<Row>,
    timed_out: bool,
    outcomes: Vec<u8>,
    next_outcome: usize,
    noise: Vec<u8>,
    next_noise: usize,
    /// Every row called, in order.
    calls: Vec<usize>,
}

/// Rounds in which a prepared TCC may idle before the simulated clock passes its timeout.
const IDLE_ROUNDS: usize = 3;

impl Sim {
    fn new(s: &Scenario) -> Sim {
        Sim {
            status: s.status,
            rows: s.rows.clone(),
            timed_out: false,
            outcomes: s.outcomes.clone(),
            next_outcome: 0,
            noise: s.noise.clone(),
            next_noise: 0,
            calls: Vec::new(),
        }
    }

    fn noise(&mut self) -> u8 {
        let value = self.noise[self.next_noise % self.noise.len()];
        self.next_noise += 1;
        value
    }

    fn outcome(&mut self) -> Outcome {
        let code = self.outcomes.get(self.next_outcome).copied().unwrap_or(0);
        self.next_outcome += 1;
        match code {
            0 => Outcome::Success,
            1 => Outcome::Failure(String::from("no")),
            2 => Outcome::Ongoing,
            _ => Outcome::Error(String::from("boom")),
        }
    }

    fn pending(&self, op: Op) -> impl Iterator<Item = usize> + '_ {
        (0..self.rows.len()).filter(move |&i| self.rows[i].op == op && self.rows[i].status == BPrepared)
    }

    /// Runs rounds until a final status; returns it.
    fn run(&mut self, max_rounds: usize) -> Result<GlobalStatus, TestCaseError> {
        for round in 1..=max_rounds {
            if self.status == Prepared {
                self.client_or_clock(round)?;
            } else {
                // The clock keeps running; it must not matter any more.
                self.timed_out |= self.noise().is_multiple_of(3);
            }
            let decided = phase_two_op(self.status).is_some();
            let all_success_from_now = self.next_outcome >= self.outcomes.len();
            let done = self.round()?;
            if decided && all_success_from_now {
                prop_assert!(done.is_some(), "all calls succeeded, yet the round did not finish");
            }
            if let Some(status) = done {
                return Ok(status);
            }
        }
        Err(TestCaseError::fail(format!("no final status after {max_rounds} rounds")))
    }

    /// Between rounds of a prepared TCC: the client submits or aborts, or time passes.
    fn client_or_clock(&mut self, round: usize) -> Result<(), TestCaseError> {
        let choice = if round > IDLE_ROUNDS { 2 } else { self.noise() % 4 };
        match choice {
            0 => {
                prop_assert_eq!(lifecycle::on_submit(Some(Prepared)), OnSubmit::FromPrepared);
                self.status = Submitted;
            }
            1 => {
                prop_assert_eq!(lifecycle::on_abort(TransType::Tcc, Prepared), OnAbort::Abort);
                self.status = Aborting;
            }
            2 => self.timed_out = true,
            _ => {}
        }
        Ok(())
    }

    /// One round; `Some(final status)` when the TCC finished.
    fn round(&mut self) -> Result<Option<GlobalStatus>, TestCaseError> {
        // Each decision either ends the round or settles a row, plus one timeout abort.
        for _ in 0..self.rows.len() + 3 {
            match plan(self.status, &self.rows, self.timed_out) {
                Decision::AbortTimedOut => {
                    prop_assert_eq!(self.status, Prepared);
                    prop_assert!(self.timed_out);
                    prop_assert!(self.calls.is_empty(), "a call before the decision");
                    self.status = Aborting;
                }
                Decision::Call(i) => {
                    self.check_call(i)?;
                    self.calls.push(i);
                    let Some(done) = phase_two_status_after(&self.outcome()) else {
                        return Ok(None);
                    };
                    self.rows[i].status = done;
                }
                Decision::Finish(status) => {
                    let expected = match self.status {
                        Submitted => Succeed,
                        Aborting => Failed,
                        other => return Err(TestCaseError::fail(format!("finished while {other}"))),
                    };
                    prop_assert_eq!(status, expected);
                    if let Some(op) = phase_two_op(self.status) {
                        prop_assert_eq!(self.pending(op).count(), 0, "finished with {:?} rows left", op);
                    }
                    self.status = status;
                    return Ok(Some(status));
                }
                Decision::Wait => {
                    prop_assert_eq!(self.status, Prepared, "waited while decided");
                    prop_assert!(!self.timed_out, "a timed-out prepared TCC waited");
                    return Ok(None);
                }
            }
        }
        Err(TestCaseError::fail("a round never settled"))
    }

    fn check_call(&self, i: usize) -> Result<(), TestCaseError> {
        let Some(op) = phase_two_op(self.status) else {
            return Err(TestCaseError::fail(format!("called row {i} while {}", self.status)));
        };
        prop_assert_eq!(self.rows[i], row(op, BPrepared), "called row {}", i);
        prop_assert_eq!(self.pending(op).max(), Some(i), "not the newest pending row");
        if let Some(&last) = self.calls.last() {
            prop_assert!(i <= last, "row {} called after row {}", i, last);
            prop_assert_eq!(self.rows[last].op, op, "confirm and cancel both called");
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    #[test]
    fn random_tccs_keep_the_invariants_and_terminate(s in scenario()) {
        let mut sim = Sim::new(&s);
        // A decided TCC makes at least one call per unfinished round, and only answers from the
        // random prefix fail; a prepared one idles for at most `IDLE_ROUNDS` + 1 rounds.
        let status = sim.run(s.outcomes.len() + IDLE_ROUNDS + 2)?;
        let op = if status == Succeed { Op::Confirm } else { Op::Cancel };
        let initially_pending = s.rows.iter().filter(|r| r.op == op && r.status == BPrepared).count();
        prop_assert!(sim.calls.len() <= initially_pending + s.outcomes.len());
        for &i in &sim.calls {
            prop_assert_eq!(sim.rows[i].op, op);
        }
        if s.status != Prepared {
            prop_assert_eq!(status, if s.status == Submitted { Succeed } else { Failed });
        }
    }

    #[test]
    fn a_prepared_tcc_within_its_time_calls_nothing(
        pairs in prop::collection::vec((branch_status(), branch_status()), 0..=6),
    ) {
        let rows = registered(&pairs);
        prop_assert_eq!(plan(Prepared, &rows, false), Decision::Wait);
        prop_assert_eq!(plan(Prepared, &rows, true), Decision::AbortTimedOut);
    }
}
