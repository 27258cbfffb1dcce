//! XA phase two: commit every registered branch, or roll every one back; in registration order,
//! one at a time, each retried until it succeeds (spec 6.5).
//!
//! The shape is TCC's ([`crate::tcc`]: the same [`Row`] and [`Decision`]), with two
//! differences: the ops are `commit` / `rollback`, and rows are walked oldest first.

use crate::model::{BranchStatus, GlobalStatus, Op};
pub use crate::tcc::{Decision, Row, phase_two_status_after};

/// The phase-two op of a status: `submitted` → commit, `aborting` → rollback.
pub fn phase_two_op(status: GlobalStatus) -> Option<Op> {
    match status {
        GlobalStatus::Submitted => Some(Op::Commit),
        GlobalStatus::Aborting => Some(Op::Rollback),
        _ => None,
    }
}

/// Decides the next step, as [`crate::tcc::plan`] does but oldest row first: DTM commits (and
/// rolls back) XA branches in the order they registered. Rows of the phase-two op that have
/// not succeeded are called; none left → the final status.
pub fn plan(status: GlobalStatus, rows: &[Row], timed_out: bool) -> Decision {
    let Some(op) = phase_two_op(status) else {
        return if status == GlobalStatus::Prepared && timed_out {
            Decision::AbortTimedOut
        } else {
            Decision::Wait
        };
    };
    match rows.iter().position(|r| r.op == op && r.status != BranchStatus::Succeed) {
        Some(index) => Decision::Call(index),
        None if op == Op::Commit => Decision::Finish(GlobalStatus::Succeed),
        None => Decision::Finish(GlobalStatus::Failed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Outcome;
    use BranchStatus::{Prepared as BPrepared, Succeed as BSucceed};
    use GlobalStatus::{Aborting, Failed, Prepared, Submitted, Succeed};

    /// Rows as stored for branches in registration order: `rollback`, `commit` per branch.
    fn registered(n: usize) -> Vec<Row> {
        (0..n)
            .flat_map(|_| {
                [Row { op: Op::Rollback, status: BPrepared }, Row { op: Op::Commit, status: BPrepared }]
            })
            .collect()
    }

    #[test]
    fn prepared_waits_until_timed_out() {
        assert_eq!(plan(Prepared, &registered(2), false), Decision::Wait);
        assert_eq!(plan(Prepared, &registered(2), true), Decision::AbortTimedOut);
        assert_eq!(plan(Prepared, &[], true), Decision::AbortTimedOut);
        for s in [Succeed, Failed] {
            assert_eq!(plan(s, &registered(1), true), Decision::Wait, "{s}");
        }
    }

    #[test]
    fn submitted_commits_oldest_first_then_succeeds() {
        let mut rows = registered(3);
        for expected in [1, 3, 5] {
            assert_eq!(plan(Submitted, &rows, true), Decision::Call(expected), "timeout no longer applies");
            rows[expected].status = BSucceed;
        }
        assert_eq!(plan(Submitted, &rows, false), Decision::Finish(Succeed));
        // Rollback rows were never touched.
        assert!(rows.iter().filter(|r| r.op == Op::Rollback).all(|r| r.status == BPrepared));
    }

    #[test]
    fn aborting_rolls_back_oldest_first_then_fails() {
        let mut rows = registered(2);
        assert_eq!(plan(Aborting, &rows, false), Decision::Call(0));
        rows[0].status = BSucceed;
        assert_eq!(plan(Aborting, &rows, false), Decision::Call(2));
        rows[2].status = BSucceed;
        assert_eq!(plan(Aborting, &rows, false), Decision::Finish(Failed));
        assert_eq!(plan(Aborting, &[], false), Decision::Finish(Failed));
        assert_eq!(plan(Submitted, &[], false), Decision::Finish(Succeed));
    }

    #[test]
    fn an_unsuccessful_call_is_called_again() {
        let rows = registered(2);
        for outcome in [Outcome::Failure("no".into()), Outcome::Ongoing, Outcome::Error("boom".into())] {
            assert_eq!(phase_two_status_after(&outcome), None);
            // The row stays as it was, so the next round calls the same one first.
            assert_eq!(plan(Submitted, &rows, false), Decision::Call(1));
        }
        assert_eq!(phase_two_status_after(&Outcome::Success), Some(BSucceed));
    }

    #[test]
    fn phase_two_op_per_status() {
        assert_eq!(phase_two_op(Submitted), Some(Op::Commit));
        assert_eq!(phase_two_op(Aborting), Some(Op::Rollback));
        for s in [Prepared, Succeed, Failed] {
            assert_eq!(phase_two_op(s), None);
        }
    }
}
