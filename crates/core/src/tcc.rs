//! TCC phase two: confirm every registered branch, or cancel every one; newest first, one at a
//! time, each retried until it succeeds.

use crate::model::{BranchStatus, GlobalStatus, Op};
use crate::outcome::Outcome;

/// One stored branch row of a TCC (in row order: `cancel`, `confirm` per registered branch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    /// `confirm` or `cancel`.
    pub op: Op,
    /// Its status.
    pub status: BranchStatus,
}

/// What to do next in a TCC round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// A prepared TCC past its timeout: turn it `aborting` (then cancel).
    AbortTimedOut,
    /// Call this row (index into the rows) now; wait for its answer before anything else.
    Call(usize),
    /// Every row of the phase-two op succeeded: reach this final status.
    Finish(GlobalStatus),
    /// Nothing to do now (a prepared TCC within its time).
    Wait,
}

/// The phase-two op of a status: `submitted` → confirm, `aborting` → cancel.
pub fn phase_two_op(status: GlobalStatus) -> Option<Op> {
    match status {
        GlobalStatus::Submitted => Some(Op::Confirm),
        GlobalStatus::Aborting => Some(Op::Cancel),
        _ => None,
    }
}

/// The status a confirm / cancel row reaches after a call: `succeed` on success, otherwise it
/// stays `prepared` (phase two is retried until it succeeds: FAILURE counts as an error, since
/// the decision to confirm or cancel is already taken).
pub fn phase_two_status_after(outcome: &Outcome) -> Option<BranchStatus> {
    matches!(outcome, Outcome::Success).then_some(BranchStatus::Succeed)
}

/// Decides the next step. The engine ends the round at the first call without success, so a
/// row is never called twice in one round.
///
/// `prepared`: [`Decision::AbortTimedOut`] once `timed_out`, else [`Decision::Wait`] (the client
/// still decides). `submitted` / `aborting`: call the newest `prepared` row of the phase-two op,
/// or finish when none is left; the timeout no longer applies, the decision is taken. Final
/// statuses: [`Decision::Wait`].
pub fn plan(status: GlobalStatus, rows: &[Row], timed_out: bool) -> Decision {
    let Some(op) = phase_two_op(status) else {
        return if status == GlobalStatus::Prepared && timed_out {
            Decision::AbortTimedOut
        } else {
            Decision::Wait
        };
    };
    // Newest first, as DTM does: phase two unwinds in the reverse order of the tries.
    match rows.iter().rposition(|r| r.op == op && r.status == BranchStatus::Prepared) {
        Some(index) => Decision::Call(index),
        None if op == Op::Confirm => Decision::Finish(GlobalStatus::Succeed),
        None => Decision::Finish(GlobalStatus::Failed),
    }
}

#[cfg(test)]
#[path = "tcc_tests.rs"]
mod tests;
