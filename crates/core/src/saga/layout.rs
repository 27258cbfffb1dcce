//! The dependency graph of a saga's steps (declared orders + sequential chain + pivot edges).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use serde_json::{Map, Value};

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
    ///
    /// Unknown keys are ignored (`custom_data` is shared with other modes); `orders: null`,
    /// `concurrent: null` and a `null` prerequisite list mean the defaults, as in DTM's Go decoder.
    pub fn parse(text: &str) -> Result<SagaCustomData, LayoutError> {
        if text.trim().is_empty() {
            return Ok(SagaCustomData::default());
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid json: {e}").to_lowercase()))?;
        let object = match value {
            Value::Null => return Ok(SagaCustomData::default()),
            Value::Object(object) => object,
            _ => return Err(bad("expected a json object".to_owned())),
        };
        let concurrent = match object.get("concurrent") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(bad(format!("concurrent must be true or false, not {other}")));
            }
        };
        let orders = match object.get("orders") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(orders)) => parse_orders(orders)?,
            Some(other) => {
                return Err(bad(format!(
                    "orders must be an object mapping step indices to arrays of step indices, not {other}"
                )));
            }
        };
        Ok(SagaCustomData { orders, concurrent })
    }
}

fn bad(message: String) -> LayoutError {
    LayoutError::BadCustomData(message)
}

fn parse_orders(orders: &Map<String, Value>) -> Result<BTreeMap<usize, Vec<usize>>, LayoutError> {
    let mut parsed: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (key, value) in orders {
        let step = parse_key(key).ok_or_else(|| bad(format!("orders key {key:?} is not a step index")))?;
        let deps = match value {
            Value::Null => Vec::new(),
            Value::Array(items) => items
                .iter()
                .map(|item| {
                    item.as_u64()
                        .and_then(|n| usize::try_from(n).ok())
                        .ok_or_else(|| bad(format!("orders[{key:?}]: {item} is not a step index")))
                })
                .collect::<Result<Vec<usize>, LayoutError>>()?,
            other => {
                return Err(bad(format!("orders[{key:?}] must be an array of step indices, not {other}")));
            }
        };
        // "1" and "01" name the same step: merge rather than let one silently win.
        parsed.entry(step).or_default().extend(deps);
    }
    Ok(parsed)
}

/// Only plain decimal digits: `usize::from_str` would also accept a leading `+`.
fn parse_key(key: &str) -> Option<usize> {
    if key.is_empty() || !key.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    key.parse().ok()
}

/// Whether a step can be rolled back: an empty compensation means "cannot", unless the action
/// is empty too (nothing happened, nothing to undo). The one place this rule lives: the
/// request validation and the round both ask here.
pub fn is_rollbackable(action: &str, compensate: &str) -> bool {
    action.is_empty() || !compensate.is_empty()
}

/// The effective dependency graph of a saga.
#[derive(Debug, Clone)]
pub struct SagaLayout {
    edges: Edges,
    rollbackable: Vec<bool>,
    /// Position of each step in the preferred topological order.
    rank: Vec<usize>,
    concurrent: bool,
}

/// The graph's edges. Most sagas are sequential without declared orders: each step then waits
/// on the one before it in the chain, and both its lists are a slice of the chain, so the
/// layout costs two vectors instead of two per step (it is built on every submit and round).
#[derive(Debug, Clone)]
enum Edges {
    /// Step `order[k]` depends on `order[k - 1]`; `rank` is the inverse of `order`.
    Chain { order: Vec<usize> },
    /// Any graph: `deps[i]` sorted and unique; `dependents[i]` = steps that list `i` in their
    /// deps (the backward phase walks these).
    Graph { deps: Vec<Vec<usize>>, dependents: Vec<Vec<usize>> },
}

/// Two layouts are equal when they describe the same graph, however it is stored.
impl PartialEq for SagaLayout {
    fn eq(&self, other: &SagaLayout) -> bool {
        self.rollbackable == other.rollbackable
            && self.rank == other.rank
            && self.concurrent == other.concurrent
            && (0..self.len())
                .all(|i| self.deps(i) == other.deps(i) && self.dependents(i) == other.dependents(i))
    }
}

impl Eq for SagaLayout {}

impl SagaLayout {
    /// Builds the graph. `rollbackable[i]` is false when step `i` has a non-empty action and an
    /// empty compensation.
    ///
    /// Sequential mode chains every rollbackable step in index order, then every
    /// non-rollbackable one; concurrent mode makes every non-rollbackable step depend on every
    /// rollbackable one. Declared orders are added in both modes (as DTM does).
    pub fn new(rollbackable: Vec<bool>, custom: &SagaCustomData) -> Result<SagaLayout, LayoutError> {
        if !custom.concurrent && custom.orders.is_empty() {
            return Ok(SagaLayout::chain(rollbackable));
        }
        SagaLayout::graph(rollbackable, custom)
    }

    /// A sequential saga without declared orders: the chain alone (it cannot have a cycle).
    fn chain(rollbackable: Vec<bool>) -> SagaLayout {
        let order: Vec<usize> = preferred_order(&rollbackable).collect();
        let mut rank = vec![0; order.len()];
        for (k, &step) in order.iter().enumerate() {
            rank[step] = k;
        }
        SagaLayout { edges: Edges::Chain { order }, rollbackable, rank, concurrent: false }
    }

    /// Any saga: declared orders, the chain or the pivot edges, checked for cycles.
    fn graph(rollbackable: Vec<bool>, custom: &SagaCustomData) -> Result<SagaLayout, LayoutError> {
        let len = rollbackable.len();
        let mut deps: Vec<Vec<usize>> = vec![Vec::new(); len];
        for (&step, declared) in &custom.orders {
            if step >= len {
                // An empty list has no dep to name: report the step itself.
                let dep = declared.first().copied().unwrap_or(step);
                return Err(LayoutError::OutOfRange { step, dep, len });
            }
            for &dep in declared {
                if dep >= len {
                    return Err(LayoutError::OutOfRange { step, dep, len });
                }
                if dep == step {
                    return Err(LayoutError::SelfDependency(step));
                }
                if rollbackable[step] && !rollbackable[dep] {
                    return Err(LayoutError::RollbackableAfterPivot { step, dep });
                }
                deps[step].push(dep);
            }
        }

        if custom.concurrent {
            let compensatable: Vec<usize> = (0..len).filter(|&i| rollbackable[i]).collect();
            for (i, d) in deps.iter_mut().enumerate() {
                if !rollbackable[i] {
                    d.extend_from_slice(&compensatable);
                }
            }
        } else {
            let chain: Vec<usize> = preferred_order(&rollbackable).collect();
            for pair in chain.windows(2) {
                if let [prev, next] = *pair {
                    deps[next].push(prev);
                }
            }
        }
        for d in &mut deps {
            d.sort_unstable();
            d.dedup();
        }

        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); len];
        for (i, d) in deps.iter().enumerate() {
            for &dep in d {
                dependents[dep].push(i);
            }
        }
        let rank = topological_rank(&rollbackable, &deps, &dependents)?;
        Ok(SagaLayout {
            edges: Edges::Graph { deps, dependents },
            rollbackable,
            rank,
            concurrent: custom.concurrent,
        })
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
        match &self.edges {
            Edges::Chain { order } => {
                let k = self.rank[step];
                &order[k.saturating_sub(1)..k]
            }
            Edges::Graph { deps, .. } => &deps[step],
        }
    }

    /// Whether `step` can be rolled back.
    pub fn is_rollbackable(&self, step: usize) -> bool {
        self.rollbackable[step]
    }

    /// The steps that list `step` among their deps (sorted): they are rolled back before it.
    pub fn dependents(&self, step: usize) -> &[usize] {
        match &self.edges {
            Edges::Chain { order } => {
                let k = self.rank[step] + 1;
                &order[k.min(order.len())..(k + 1).min(order.len())]
            }
            Edges::Graph { dependents, .. } => &dependents[step],
        }
    }

    /// The position of `step` in a topological order that prefers rollbackable steps first,
    /// then index order (in sequential mode: the chain order). Unique per step.
    pub fn rank(&self, step: usize) -> usize {
        self.rank[step]
    }

    /// Whether the saga was declared concurrent.
    pub fn is_concurrent(&self) -> bool {
        self.concurrent
    }
}

/// Rollbackable steps in index order, then non-rollbackable ones in index order.
fn preferred_order(rollbackable: &[bool]) -> impl Iterator<Item = usize> + '_ {
    let first = (0..rollbackable.len()).filter(|&i| rollbackable[i]);
    let then = (0..rollbackable.len()).filter(|&i| !rollbackable[i]);
    first.chain(then)
}

/// Kahn's algorithm, always taking the ready step that comes first in [`preferred_order`].
fn topological_rank(
    rollbackable: &[bool],
    deps: &[Vec<usize>],
    dependents: &[Vec<usize>],
) -> Result<Vec<usize>, LayoutError> {
    let len = rollbackable.len();
    let mut waiting_on: Vec<usize> = deps.iter().map(Vec::len).collect();
    // Key (non-rollbackable?, index): false sorts first.
    let mut ready: BinaryHeap<Reverse<(bool, usize)>> =
        (0..len).filter(|&i| waiting_on[i] == 0).map(|i| Reverse((!rollbackable[i], i))).collect();
    let mut rank = vec![usize::MAX; len];
    let mut next_rank = 0;
    while let Some(Reverse((_, step))) = ready.pop() {
        rank[step] = next_rank;
        next_rank += 1;
        for &j in &dependents[step] {
            waiting_on[j] -= 1;
            if waiting_on[j] == 0 {
                ready.push(Reverse((!rollbackable[j], j)));
            }
        }
    }
    if next_rank == len {
        return Ok(rank);
    }
    Err(LayoutError::Cycle(cycle_member(deps, &waiting_on)))
}

/// A step on a cycle, given the steps Kahn's algorithm could not order (`waiting_on > 0`).
///
/// Every such step still waits on another such step, so walking "some unordered dep" from any
/// of them must revisit a step; the revisited loop is a cycle. Reports its lowest index so the
/// error is deterministic.
fn cycle_member(deps: &[Vec<usize>], waiting_on: &[usize]) -> usize {
    let stuck = |i: usize| waiting_on[i] > 0;
    let Some(start) = (0..deps.len()).find(|&i| stuck(i)) else {
        return 0;
    };
    let mut position = vec![usize::MAX; deps.len()];
    let mut path = Vec::new();
    let mut current = start;
    while position[current] == usize::MAX {
        position[current] = path.len();
        path.push(current);
        match deps[current].iter().copied().find(|&d| stuck(d)) {
            Some(next) => current = next,
            None => return current,
        }
    }
    path[position[current]..].iter().copied().min().unwrap_or(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn custom(concurrent: bool, orders: &[(usize, &[usize])]) -> SagaCustomData {
        SagaCustomData { orders: orders.iter().map(|(k, v)| (*k, v.to_vec())).collect(), concurrent }
    }

    fn all_deps(layout: &SagaLayout) -> Vec<Vec<usize>> {
        (0..layout.len()).map(|i| layout.deps(i).to_vec()).collect()
    }

    fn ranks(layout: &SagaLayout) -> Vec<usize> {
        (0..layout.len()).map(|i| layout.rank(i)).collect()
    }

    #[test]
    fn parse_defaults() {
        for text in ["", "   \n", "null", "{}", r#"{"orders":null,"concurrent":null}"#] {
            assert_eq!(SagaCustomData::parse(text), Ok(SagaCustomData::default()), "{text:?}");
        }
    }

    #[test]
    fn parse_orders_and_concurrent() {
        let parsed =
            SagaCustomData::parse(r#"{"orders":{"1":[0],"3":[0,2],"2":null},"concurrent":true,"x":5}"#)
                .unwrap();
        assert_eq!(parsed, custom(true, &[(1, &[0]), (2, &[]), (3, &[0, 2])]));
        let parsed = SagaCustomData::parse(r#"{"concurrent":false}"#).unwrap();
        assert_eq!(parsed, SagaCustomData::default());
    }

    #[test]
    fn parse_rejects_bad_input() {
        let cases = [
            ("{", "invalid json"),
            ("[1]", "expected a json object"),
            (r#"{"concurrent":"yes"}"#, "concurrent must be true or false"),
            (r#"{"orders":[1]}"#, "orders must be an object"),
            (r#"{"orders":{"a":[0]}}"#, r#"orders key "a" is not a step index"#),
            (r#"{"orders":{"-1":[0]}}"#, r#"orders key "-1" is not a step index"#),
            (r#"{"orders":{"+1":[0]}}"#, r#"orders key "+1" is not a step index"#),
            (r#"{"orders":{"":[0]}}"#, r#"orders key "" is not a step index"#),
            (r#"{"orders":{"1":[-1]}}"#, r#"orders["1"]: -1 is not a step index"#),
            (r#"{"orders":{"1":[0.5]}}"#, r#"orders["1"]: 0.5 is not a step index"#),
            (r#"{"orders":{"1":["0"]}}"#, r#"orders["1"]: "0" is not a step index"#),
            (r#"{"orders":{"1":0}}"#, r#"orders["1"] must be an array"#),
        ];
        for (text, expected) in cases {
            match SagaCustomData::parse(text) {
                Err(LayoutError::BadCustomData(message)) => {
                    assert!(message.contains(expected), "{text}: {message}");
                    assert_eq!(message, message.to_lowercase(), "{text}: {message}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn sequential_chain_moves_non_rollbackable_steps_last() {
        // Steps 1 and 3 have no compensation: chain is 0, 2, 4, 1, 3.
        let layout =
            SagaLayout::new(vec![true, false, true, false, true], &SagaCustomData::default()).unwrap();
        assert_eq!(all_deps(&layout), vec![vec![], vec![4], vec![0], vec![1], vec![2]]);
        assert_eq!(ranks(&layout), vec![0, 3, 1, 4, 2]);
        assert_eq!(layout.dependents(4), &[1]);
        assert_eq!(layout.dependents(3), &[] as &[usize]);
        assert!(!layout.is_concurrent());
    }

    #[test]
    fn the_chain_equals_the_general_graph_for_every_sequential_saga() {
        // Every pattern of rollbackable steps up to 8 steps: the compact chain must describe
        // the same deps, dependents and ranks as the general build of the same saga.
        for len in 0..=8usize {
            for bits in 0..(1u32 << len) {
                let rollbackable: Vec<bool> = (0..len).map(|i| bits & (1 << i) != 0).collect();
                let chain = SagaLayout::new(rollbackable.clone(), &SagaCustomData::default()).unwrap();
                assert!(matches!(chain.edges, Edges::Chain { .. }));
                let graph = SagaLayout::graph(rollbackable.clone(), &SagaCustomData::default()).unwrap();
                assert!(matches!(graph.edges, Edges::Graph { .. }));
                assert_eq!(chain, graph, "{rollbackable:?}");
                assert_eq!(all_deps(&chain), all_deps(&graph), "{rollbackable:?}");
                assert_eq!(ranks(&chain), ranks(&graph), "{rollbackable:?}");
            }
        }
    }

    #[test]
    fn sequential_mode_adds_declared_orders() {
        let layout = SagaLayout::new(vec![true, true, true], &custom(false, &[(2, &[0])])).unwrap();
        assert_eq!(all_deps(&layout), vec![vec![], vec![0], vec![0, 1]]);
        assert_eq!(layout.dependents(0), &[1, 2]);
    }

    #[test]
    fn concurrent_mode_uses_orders_and_pivot_edges() {
        let layout =
            SagaLayout::new(vec![true, true, false, true, false], &custom(true, &[(1, &[0, 0]), (4, &[2])]))
                .unwrap();
        assert_eq!(all_deps(&layout), vec![vec![], vec![0], vec![0, 1, 3], vec![], vec![0, 1, 2, 3]]);
        assert_eq!(ranks(&layout), vec![0, 1, 3, 2, 4]);
        assert_eq!(layout.dependents(3), &[2, 4]);
        assert!(layout.is_concurrent());
    }

    #[test]
    fn empty_saga_is_valid() {
        let layout = SagaLayout::new(Vec::new(), &SagaCustomData::default()).unwrap();
        assert!(layout.is_empty());
        assert_eq!(layout.len(), 0);
    }

    #[test]
    fn layout_errors() {
        use LayoutError::*;
        let cases: Vec<(Vec<bool>, SagaCustomData, LayoutError)> = vec![
            (vec![true; 2], custom(true, &[(2, &[0])]), OutOfRange { step: 2, dep: 0, len: 2 }),
            (vec![true; 2], custom(true, &[(5, &[])]), OutOfRange { step: 5, dep: 5, len: 2 }),
            (vec![true; 2], custom(false, &[(1, &[7])]), OutOfRange { step: 1, dep: 7, len: 2 }),
            (vec![true; 2], custom(true, &[(1, &[1])]), SelfDependency(1)),
            (vec![true, false], custom(true, &[(0, &[1])]), RollbackableAfterPivot { step: 0, dep: 1 }),
            // Also a cycle (0 -> 1 -> 0 through the pivot edge), but the pivot rule is clearer.
            (vec![true, false], custom(false, &[(0, &[1])]), RollbackableAfterPivot { step: 0, dep: 1 }),
            (vec![true; 3], custom(true, &[(0, &[2]), (1, &[0]), (2, &[1])]), Cycle(0)),
            (vec![true; 4], custom(true, &[(0, &[3]), (3, &[2]), (2, &[3])]), Cycle(2)),
            // Against the sequential chain.
            (vec![true; 3], custom(false, &[(0, &[2])]), Cycle(0)),
            (vec![true, false, false], custom(false, &[(1, &[2])]), Cycle(1)),
            (vec![true, false, false], custom(true, &[(1, &[2]), (2, &[1])]), Cycle(1)),
        ];
        for (rollbackable, custom, expected) in cases {
            assert_eq!(
                SagaLayout::new(rollbackable.clone(), &custom),
                Err(expected.clone()),
                "{rollbackable:?} {custom:?}"
            );
        }
    }

    #[test]
    fn error_messages_read_well() {
        assert_eq!(
            LayoutError::Cycle(3).to_string(),
            "orders: the step dependencies form a cycle through step 3"
        );
        assert!(
            SagaCustomData::parse("[]")
                .unwrap_err()
                .to_string()
                .starts_with("custom_data is not valid saga options: ")
        );
    }

    mod props {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            #[test]
            fn any_orders_build_a_valid_graph_or_fail(
                rollbackable in prop::collection::vec(any::<bool>(), 0..=7),
                concurrent in any::<bool>(),
                raw in prop::collection::vec((0usize..8, prop::collection::vec(0usize..8, 0..3)), 0..6),
            ) {
                let custom = SagaCustomData { orders: raw.into_iter().collect(), concurrent };
                let Ok(layout) = SagaLayout::new(rollbackable.clone(), &custom) else {
                    return Ok(());
                };
                let len = rollbackable.len();
                let mut seen_ranks: Vec<usize> = (0..len).map(|i| layout.rank(i)).collect();
                seen_ranks.sort_unstable();
                prop_assert_eq!(seen_ranks, (0..len).collect::<Vec<_>>());
                for i in 0..len {
                    let deps = layout.deps(i);
                    prop_assert!(deps.windows(2).all(|w| w[0] < w[1]), "sorted, unique");
                    for &d in deps {
                        prop_assert!(layout.rank(d) < layout.rank(i), "rank is topological");
                        prop_assert!(layout.dependents(d).contains(&i));
                        prop_assert!(!rollbackable[i] || rollbackable[d], "R never waits on NR");
                    }
                    for &declared in custom.orders.get(&i).into_iter().flatten() {
                        prop_assert!(deps.contains(&declared), "declared orders kept");
                    }
                    if !rollbackable[i] {
                        for r in (0..len).filter(|&r| rollbackable[r]) {
                            prop_assert!(layout.rank(r) < layout.rank(i), "NR after every R");
                        }
                    }
                }
            }
        }
    }
}
