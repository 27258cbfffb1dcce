//! What to do next in a saga, as a pure function of its state.

use crate::model::{BranchStatus, GlobalStatus};
use crate::outcome::Outcome;
use crate::saga::layout::SagaLayout;

/// Where one operation (an action or a compensation) of a step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Never attempted. A never-started action is not compensated.
    NotStarted,
    /// Attempted in an earlier round, outcome unknown (error / ongoing / crash): may run now.
    Retry,
    /// A call is in flight in this round.
    Running,
    /// Attempted in this round without a definite answer: not run again in this round.
    Waiting,
    /// Done.
    Succeeded,
    /// Definitely failed (only an action can be in this phase).
    Failed,
}

impl Phase {
    /// The phase of a stored branch row at the start of a round.
    pub fn from_stored(status: BranchStatus, attempts: u32) -> Phase {
        let _ = (status, attempts);
        unimplemented!("helper")
    }
}

/// The state of one saga step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StepState {
    /// The action.
    pub action: Phase,
    /// The compensation.
    pub compensate: Phase,
}

/// Why a saga turns to `aborting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbortCause {
    /// This step's action answered FAILURE.
    ActionFailed(usize),
    /// `timeout_to_fail` passed.
    Timeout,
    /// `retry_limit` was exhausted.
    RetryLimit,
}

/// The next thing to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Start these calls now (step indices). Never empty in both lists.
    Start {
        /// Actions to start.
        actions: Vec<usize>,
        /// Compensations to start.
        compensations: Vec<usize>,
    },
    /// Turn `submitted` into `aborting`.
    Abort(AbortCause),
    /// Reach a final status (`succeed` or `failed`).
    Finish(GlobalStatus),
    /// Nothing to start: wait for running calls, or end the round when none is running.
    Wait,
}

/// Decides what to do next. `status` is `submitted` or `aborting`.
pub fn plan(
    layout: &SagaLayout,
    status: GlobalStatus,
    steps: &[StepState],
    timed_out: bool,
    retry_limit_exceeded: bool,
) -> Decision {
    let _ = (layout, status, steps, timed_out, retry_limit_exceeded);
    unimplemented!("helper")
}

/// True once a non-rollbackable action has succeeded: the saga only goes forward.
pub fn forward_only(layout: &SagaLayout, steps: &[StepState]) -> bool {
    (0..layout.len()).any(|i| !layout.is_rollbackable(i) && steps[i].action == Phase::Succeeded)
}

/// The phase of `step`'s action after a call returned `outcome`.
pub fn action_phase_after(layout: &SagaLayout, steps: &[StepState], step: usize, outcome: &Outcome) -> Phase {
    let _ = (layout, steps, step, outcome);
    unimplemented!("helper")
}

/// The phase of a compensation after a call returned `outcome` (FAILURE is retried, not final).
pub fn compensate_phase_after(outcome: &Outcome) -> Phase {
    match outcome {
        Outcome::Success => Phase::Succeeded,
        Outcome::Failure(_) | Outcome::Ongoing | Outcome::Error(_) => Phase::Waiting,
    }
}
