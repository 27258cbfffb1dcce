//! The saga graph scheduler with pivot ordering.
//!
//! A saga is a list of steps, each an *action* and a *compensation*. Sequential and concurrent
//! sagas are the same graph scheduler with different edges ([`layout`]); [`plan`] is a pure
//! function from the state of every step to what to do next.
//!
//! Pivot ordering: a step whose action is non-empty and whose compensation is empty cannot be
//! rolled back. Every such step implicitly depends on every rollbackable step; the first one to
//! run (the *pivot*) runs alone; once any non-rollbackable action has succeeded the saga is past
//! the point of no return and only goes forward.

pub mod layout;
pub mod plan;

#[cfg(test)]
mod plan_tests;
#[cfg(test)]
mod sim_tests;

pub use layout::{LayoutError, SagaCustomData, SagaLayout, is_rollbackable};
pub use plan::{
    AbortCause, Decision, Phase, StepState, action_phase_after, compensate_phase_after, forward_only, plan,
};
