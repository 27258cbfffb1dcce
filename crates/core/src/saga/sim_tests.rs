//! Property tests: random sagas driven through rounds by a small simulator of the engine, with
//! random participant answers, checking the scheduling invariants at every decision.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;
use crate::model::GlobalStatus;
use crate::outcome::Outcome;

#[derive(Debug, Clone)]
struct Scenario {
    rollbackable: Vec<bool>,
    concurrent: bool,
    orders: BTreeMap<usize, Vec<usize>>,
    /// Participant answers, consumed one per call; afterwards every call succeeds.
    outcomes: Vec<u8>,
    /// Drives the simulator's own choices (which call returns first, timeouts...), cycled.
    noise: Vec<u8>,
}

/// Orders that keep the graph valid: among steps of the same class only from a lower to a
/// higher index (acyclic, and consistent with the sequential chain); and any non-rollbackable
/// step may wait for any rollbackable one (never the reverse).
fn allowed_order(rollbackable: &[bool], step: usize, dep: usize) -> bool {
    let same_class = rollbackable[step] == rollbackable[dep];
    (same_class && dep < step) || (!rollbackable[step] && rollbackable[dep])
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..=6)
        .prop_flat_map(|n| {
            (
                prop::collection::vec(any::<bool>(), n),
                any::<bool>(),
                prop::collection::vec(prop::bool::weighted(0.3), n * n),
                prop::collection::vec(0u8..4, 0..30),
                prop::collection::vec(any::<u8>(), 1..48),
            )
        })
        .prop_map(|(rollbackable, concurrent, edges, outcomes, noise)| {
            let n = rollbackable.len();
            let mut orders: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for step in 0..n {
                for dep in 0..n {
                    if edges[step * n + dep] && allowed_order(&rollbackable, step, dep) {
                        orders.entry(step).or_default().push(dep);
                    }
                }
            }
            Scenario { rollbackable, concurrent, orders, outcomes, noise }
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Action(usize),
    Compensate(usize),
}

struct Sim {
    layout: SagaLayout,
    steps: Vec<StepState>,
    status: GlobalStatus,
    outcomes: Vec<u8>,
    next_outcome: usize,
    noise: Vec<u8>,
    next_noise: usize,
    in_flight: Vec<Call>,
    timed_out: bool,
    retry_limit_exceeded: bool,
    seen_forward_only: bool,
    calls: usize,
}

/// A round cannot take more decisions than this: each step starts at most two calls per round.
const MAX_DECISIONS_PER_ROUND: usize = 200;

impl Sim {
    fn new(s: &Scenario) -> Sim {
        let custom = SagaCustomData { orders: s.orders.clone(), concurrent: s.concurrent };
        let layout = SagaLayout::new(s.rollbackable.clone(), &custom).unwrap();
        let len = layout.len();
        Sim {
            layout,
            steps: vec![StepState { action: Phase::NotStarted, compensate: Phase::NotStarted }; len],
            status: GlobalStatus::Submitted,
            outcomes: s.outcomes.clone(),
            next_outcome: 0,
            noise: s.noise.clone(),
            next_noise: 0,
            in_flight: Vec::new(),
            timed_out: false,
            retry_limit_exceeded: false,
            seen_forward_only: false,
            calls: 0,
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

    fn rolled_back(&self, j: usize) -> bool {
        self.steps[j].compensate == Phase::Succeeded || self.steps[j].action == Phase::NotStarted
    }

    fn unsettled(phase: Phase) -> bool {
        matches!(phase, Phase::Running | Phase::Waiting | Phase::Retry)
    }

    /// Runs rounds until a final status; returns it and the number of rounds.
    fn run(&mut self, max_rounds: usize) -> Result<(GlobalStatus, usize), TestCaseError> {
        for round in 1..=max_rounds {
            for s in &mut self.steps {
                for phase in [&mut s.action, &mut s.compensate] {
                    prop_assert_ne!(*phase, Phase::Running, "a round ended with a call in flight");
                    if *phase == Phase::Waiting {
                        *phase = Phase::Retry;
                    }
                }
            }
            // Time only moves forward; the retry counter is per round (as in DTM).
            self.timed_out |= self.noise().is_multiple_of(6);
            self.retry_limit_exceeded = self.noise().is_multiple_of(7);
            if let Some(done) = self.round()? {
                return Ok((done, round));
            }
        }
        Err(TestCaseError::fail(format!("no final status after {max_rounds} rounds")))
    }

    /// One round; `Some(final status)` when the saga finished.
    fn round(&mut self) -> Result<Option<GlobalStatus>, TestCaseError> {
        for _ in 0..MAX_DECISIONS_PER_ROUND {
            let decision =
                plan(&self.layout, self.status, &self.steps, self.timed_out, self.retry_limit_exceeded);
            match decision {
                Decision::Start { actions, compensations } => {
                    prop_assert!(!actions.is_empty() || !compensations.is_empty(), "empty Start");
                    self.check_start(&actions, &compensations)?;
                    for &i in &actions {
                        self.steps[i].action = Phase::Running;
                        self.in_flight.push(Call::Action(i));
                    }
                    for &i in &compensations {
                        self.steps[i].compensate = Phase::Running;
                        self.in_flight.push(Call::Compensate(i));
                    }
                    self.check_state()?;
                    if self.noise().is_multiple_of(2) {
                        self.resolve_one()?;
                    }
                }
                Decision::Abort(cause) => {
                    prop_assert_eq!(self.status, GlobalStatus::Submitted);
                    prop_assert!(!forward_only(&self.layout, &self.steps), "abort past the pivot");
                    match cause {
                        AbortCause::ActionFailed(i) => {
                            prop_assert_eq!(self.steps[i].action, Phase::Failed)
                        }
                        AbortCause::Timeout => prop_assert!(self.timed_out),
                        AbortCause::RetryLimit => prop_assert!(self.retry_limit_exceeded),
                    }
                    if !matches!(cause, AbortCause::ActionFailed(_)) {
                        // The pivot may have taken effect: only a definite answer may abort.
                        for i in (0..self.steps.len()).filter(|&i| !self.layout.is_rollbackable(i)) {
                            prop_assert!(
                                !Self::unsettled(self.steps[i].action),
                                "{:?} while pivot {} is {:?}",
                                cause,
                                i,
                                self.steps[i].action
                            );
                        }
                    }
                    self.status = GlobalStatus::Aborting;
                    self.check_state()?;
                }
                Decision::Finish(status) => {
                    prop_assert!(self.in_flight.is_empty(), "finished with calls in flight");
                    self.check_final(status)?;
                    self.status = status;
                    return Ok(Some(status));
                }
                Decision::Wait => {
                    if self.in_flight.is_empty() {
                        return Ok(None);
                    }
                    self.resolve_one()?;
                }
            }
        }
        Err(TestCaseError::fail("a round never settled"))
    }

    /// One in-flight call (picked at random) returns.
    fn resolve_one(&mut self) -> Result<(), TestCaseError> {
        let pick = usize::from(self.noise()) % self.in_flight.len();
        let call = self.in_flight.swap_remove(pick);
        let outcome = self.outcome();
        self.calls += 1;
        // The deadline can also pass in the middle of a round.
        self.timed_out |= self.noise().is_multiple_of(11);
        match call {
            Call::Action(i) => {
                prop_assert_eq!(self.steps[i].action, Phase::Running);
                self.steps[i].action = action_phase_after(&self.layout, &self.steps, i, &outcome);
            }
            Call::Compensate(i) => {
                prop_assert_eq!(self.steps[i].compensate, Phase::Running);
                self.steps[i].compensate = compensate_phase_after(&outcome);
            }
        }
        self.check_state()
    }

    fn check_start(&self, actions: &[usize], compensations: &[usize]) -> Result<(), TestCaseError> {
        let forward = forward_only(&self.layout, &self.steps);
        for &i in actions {
            prop_assert_eq!(self.status, GlobalStatus::Submitted, "action started while aborting");
            prop_assert!(matches!(self.steps[i].action, Phase::NotStarted | Phase::Retry));
            for &d in self.layout.deps(i) {
                prop_assert_eq!(self.steps[d].action, Phase::Succeeded, "step {} before its dep {}", i, d);
            }
            if !forward && !self.layout.is_rollbackable(i) {
                prop_assert_eq!(actions, &[i][..], "the pivot {} starts alone", i);
                for j in (0..self.steps.len()).filter(|&j| j != i) {
                    prop_assert!(
                        !Self::unsettled(self.steps[j].action),
                        "pivot {} started while {} is {:?}",
                        i,
                        j,
                        self.steps[j].action
                    );
                }
            }
        }
        for &i in compensations {
            prop_assert_eq!(self.status, GlobalStatus::Aborting, "compensation while submitted");
            prop_assert!(!self.seen_forward_only, "compensation past the pivot");
            prop_assert!(matches!(self.steps[i].compensate, Phase::NotStarted | Phase::Retry));
            prop_assert_ne!(self.steps[i].action, Phase::NotStarted, "compensating a never-started step");
            prop_assert_ne!(self.steps[i].action, Phase::Running, "compensating a running action");
            for &j in self.layout.dependents(i) {
                prop_assert!(self.rolled_back(j), "compensation {} before dependent {}", i, j);
            }
        }
        Ok(())
    }

    /// Invariants that hold after every change.
    fn check_state(&mut self) -> Result<(), TestCaseError> {
        self.seen_forward_only |= forward_only(&self.layout, &self.steps);
        if self.seen_forward_only {
            prop_assert_eq!(self.status, GlobalStatus::Submitted, "aborting past the pivot");
        } else {
            let pivots = (0..self.steps.len())
                .filter(|&i| !self.layout.is_rollbackable(i) && Self::unsettled(self.steps[i].action))
                .count();
            prop_assert!(pivots <= 1, "{} pivots unsettled at once", pivots);
        }
        Ok(())
    }

    fn check_final(&self, status: GlobalStatus) -> Result<(), TestCaseError> {
        match status {
            GlobalStatus::Succeed => {
                prop_assert_eq!(self.status, GlobalStatus::Submitted);
                prop_assert!(self.steps.iter().all(|s| s.action == Phase::Succeeded));
            }
            GlobalStatus::Failed => {
                prop_assert_eq!(self.status, GlobalStatus::Aborting);
                prop_assert!(!self.seen_forward_only);
                for j in 0..self.steps.len() {
                    prop_assert!(self.rolled_back(j), "step {} left applied: {:?}", j, self.steps[j]);
                }
            }
            other => prop_assert!(false, "finished as {}", other),
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn random_sagas_keep_the_invariants_and_terminate(s in scenario()) {
        let mut sim = Sim::new(&s);
        // Every round makes at least one call, and only answers from the random prefix can
        // leave the saga unfinished; the abort (timeout) costs at most one more round.
        let max_rounds = s.outcomes.len() + 3;
        let (status, _rounds) = sim.run(max_rounds)?;
        if sim.seen_forward_only {
            prop_assert_eq!(status, GlobalStatus::Succeed);
        }
        prop_assert!(sim.calls <= 2 * s.rollbackable.len() + s.outcomes.len());
    }

    #[test]
    fn all_success_finishes_in_one_round(
        rollbackable in prop::collection::vec(any::<bool>(), 0..=6),
        concurrent in any::<bool>(),
    ) {
        let s = Scenario {
            rollbackable,
            concurrent,
            orders: BTreeMap::new(),
            outcomes: Vec::new(),
            noise: vec![1],
        };
        let mut sim = Sim::new(&s);
        prop_assert_eq!(sim.run(1)?, (GlobalStatus::Succeed, 1));
        prop_assert_eq!(sim.calls, s.rollbackable.len());
    }
}
