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
    ///
    /// A `prepared` row that was attempted before (error, ongoing, or a crash mid-call) may have
    /// taken effect, so it is [`Phase::Retry`], not [`Phase::NotStarted`].
    pub fn from_stored(status: BranchStatus, attempts: u32) -> Phase {
        match status {
            BranchStatus::Succeed => Phase::Succeeded,
            BranchStatus::Failed => Phase::Failed,
            BranchStatus::Prepared if attempts > 0 => Phase::Retry,
            BranchStatus::Prepared => Phase::NotStarted,
        }
    }

    /// Attempted but without a definite answer yet (in flight now, or earlier).
    fn is_unsettled(self) -> bool {
        matches!(self, Phase::Running | Phase::Waiting | Phase::Retry)
    }

    /// May be (re)started in this round.
    fn is_startable(self) -> bool {
        matches!(self, Phase::NotStarted | Phase::Retry)
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

/// Decides what to do next. `status` is `submitted` or `aborting`; for any other status (nothing
/// to do in a saga round) the answer is [`Decision::Wait`]. `steps` holds one state per step of
/// `layout`; a mismatched length is a caller bug and also yields `Wait`.
///
/// Call it again after applying each decision (marking started calls [`Phase::Running`],
/// recording each result); the round ends on `Wait` with nothing running.
pub fn plan(
    layout: &SagaLayout,
    status: GlobalStatus,
    steps: &[StepState],
    timed_out: bool,
    retry_limit_exceeded: bool,
) -> Decision {
    debug_assert_eq!(steps.len(), layout.len(), "one state per step");
    if steps.len() != layout.len() {
        return Decision::Wait;
    }
    match status {
        GlobalStatus::Submitted => plan_forward(layout, steps, timed_out, retry_limit_exceeded),
        GlobalStatus::Aborting => plan_backward(layout, steps),
        GlobalStatus::Prepared | GlobalStatus::Succeed | GlobalStatus::Failed => Decision::Wait,
    }
}

fn plan_forward(
    layout: &SagaLayout,
    steps: &[StepState],
    timed_out: bool,
    retry_limit_exceeded: bool,
) -> Decision {
    let forward = forward_only(layout, steps);
    if !forward && let Some(failed) = steps.iter().position(|s| s.action == Phase::Failed) {
        return Decision::Abort(AbortCause::ActionFailed(failed));
    }
    if steps.iter().all(|s| s.action == Phase::Succeeded) {
        return Decision::Finish(GlobalStatus::Succeed);
    }
    // An attempted pivot may have taken effect and cannot be undone: rolling back now could
    // leave it applied with everything else compensated, so only a definite answer moves on.
    let pivot_uncertain =
        !forward && (0..layout.len()).any(|i| !layout.is_rollbackable(i) && steps[i].action.is_unsettled());
    if !forward && !pivot_uncertain {
        if timed_out {
            return Decision::Abort(AbortCause::Timeout);
        }
        if retry_limit_exceeded {
            return Decision::Abort(AbortCause::RetryLimit);
        }
    }

    let runnable = |i: usize| {
        steps[i].action.is_startable() && layout.deps(i).iter().all(|&d| steps[d].action == Phase::Succeeded)
    };
    let mut actions: Vec<usize> =
        (0..layout.len()).filter(|&i| runnable(i) && (forward || layout.is_rollbackable(i))).collect();
    if !forward && actions.is_empty() {
        actions.extend(choose_pivot(layout, steps, &runnable));
    }
    if actions.is_empty() { Decision::Wait } else { Decision::Start { actions, compensations: Vec::new() } }
}

/// The one non-rollbackable action that may start before the point of no return, if any.
///
/// It runs alone: nothing else may be unsettled. The exception is an earlier pivot attempt left
/// in [`Phase::Retry`]: it may have taken effect, so it (and no other non-rollbackable step) is
/// the pivot and is retried.
fn choose_pivot(layout: &SagaLayout, steps: &[StepState], runnable: &dyn Fn(usize) -> bool) -> Option<usize> {
    let unsettled: Vec<usize> = (0..layout.len()).filter(|&i| steps[i].action.is_unsettled()).collect();
    let only_retried_pivots =
        unsettled.iter().all(|&i| !layout.is_rollbackable(i) && steps[i].action == Phase::Retry);
    if !only_retried_pivots {
        return None;
    }
    (0..layout.len())
        .filter(|&i| !layout.is_rollbackable(i) && runnable(i))
        .filter(|i| unsettled.is_empty() || unsettled.contains(i))
        .min_by_key(|&i| layout.rank(i))
}

fn plan_backward(layout: &SagaLayout, steps: &[StepState]) -> Decision {
    // A never-started action left nothing to undo.
    let rolled_back =
        |j: usize| steps[j].compensate == Phase::Succeeded || steps[j].action == Phase::NotStarted;
    if (0..layout.len()).all(rolled_back) && steps.iter().all(|s| s.action != Phase::Running) {
        return Decision::Finish(GlobalStatus::Failed);
    }
    // An action with an unknown outcome is assumed to have taken effect (as DTM does), and a
    // failed one is compensated too; one still in flight is waited for first.
    let compensations: Vec<usize> = (0..layout.len())
        .rev()
        .filter(|&i| {
            steps[i].compensate.is_startable()
                && matches!(steps[i].action, Phase::Succeeded | Phase::Failed | Phase::Retry | Phase::Waiting)
                && layout.dependents(i).iter().all(|&j| rolled_back(j))
        })
        .collect();
    if compensations.is_empty() {
        Decision::Wait
    } else {
        Decision::Start { actions: Vec::new(), compensations }
    }
}

/// True once a non-rollbackable action has succeeded: the saga only goes forward.
pub fn forward_only(layout: &SagaLayout, steps: &[StepState]) -> bool {
    (0..layout.len()).any(|i| !layout.is_rollbackable(i) && steps[i].action == Phase::Succeeded)
}

/// The phase of `step`'s action after a call returned `outcome`.
///
/// FAILURE is final ([`Phase::Failed`], the saga rolls back) only before the point of no return;
/// afterwards nothing can be rolled back, so it is retried like an error. `steps` is the state
/// while the call was in flight (`step`'s action [`Phase::Running`]), so a pivot's own FAILURE
/// is final.
pub fn action_phase_after(layout: &SagaLayout, steps: &[StepState], step: usize, outcome: &Outcome) -> Phase {
    debug_assert!(step < layout.len());
    match outcome {
        Outcome::Success => Phase::Succeeded,
        Outcome::Failure(_) if !forward_only(layout, steps) => Phase::Failed,
        Outcome::Failure(_) | Outcome::Ongoing | Outcome::Error(_) => Phase::Waiting,
    }
}

/// The phase of a compensation after a call returned `outcome` (FAILURE is retried, not final).
pub fn compensate_phase_after(outcome: &Outcome) -> Phase {
    match outcome {
        Outcome::Success => Phase::Succeeded,
        Outcome::Failure(_) | Outcome::Ongoing | Outcome::Error(_) => Phase::Waiting,
    }
}
