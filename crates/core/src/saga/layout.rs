//! The dependency graph of a saga's steps (declared orders + sequential chain + pivot edges).

use std::collections::BTreeMap;

/// Why a saga's step graph is unusable. Reported to the client as bad input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// `custom_data` is not the expected JSON.
    #[error("custom_data is not valid saga options: {0}")]
    BadCustomData(String),
    /// An order names a step that does not exist.
    #[error("orders: step {step} depends on step {dep}, but the saga has {len} steps")]
    OutOfRange { step: usize, dep: usize, len: usize },
    /// An order makes a step depend on itself.
    #[error("orders: step {0} depends on itself")]
    SelfDependency(usize),
    /// The orders form a cycle.
    #[error("orders: the step dependencies form a cycle through step {0}")]
    Cycle(usize),
    /// A rollbackable step may not wait for a non-rollbackable one: non-rollbackable steps run
    /// after every rollbackable step.
    #[error(
        "orders: step {step} has a compensation but depends on step {dep}, which has none; \
         steps without compensation run after every step that has one"
    )]
    RollbackableAfterPivot { step: usize, dep: usize },
}

/// The saga part of `custom_data`: `{"orders":{"1":[0]},"concurrent":true}` (0-based indices).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SagaCustomData {
    /// `orders[i]` = steps whose action must succeed before step `i`'s action starts.
    pub orders: BTreeMap<usize, Vec<usize>>,
    /// Run independent steps concurrently (otherwise one after another).
    pub concurrent: bool,
}

impl SagaCustomData {
    /// Parses `custom_data`. Empty text and `null` mean the defaults (sequential, no orders).
    pub fn parse(text: &str) -> Result<SagaCustomData, LayoutError> {
        let _ = text;
        unimplemented!("helper")
    }
}

/// The effective dependency graph of a saga.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaLayout {
    deps: Vec<Vec<usize>>,
    rollbackable: Vec<bool>,
}

impl SagaLayout {
    /// Builds the graph. `rollbackable[i]` is false when step `i` has a non-empty action and an
    /// empty compensation.
    pub fn new(rollbackable: Vec<bool>, custom: &SagaCustomData) -> Result<SagaLayout, LayoutError> {
        let _ = custom;
        Ok(SagaLayout { deps: vec![Vec::new(); rollbackable.len()], rollbackable })
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.rollbackable.len()
    }

    /// True when the saga has no steps.
    pub fn is_empty(&self) -> bool {
        self.rollbackable.is_empty()
    }

    /// The steps whose action must succeed before `step`'s action starts.
    pub fn deps(&self, step: usize) -> &[usize] {
        &self.deps[step]
    }

    /// Whether `step` can be rolled back.
    pub fn is_rollbackable(&self, step: usize) -> bool {
        self.rollbackable[step]
    }
}
