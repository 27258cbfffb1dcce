//! The readable report: each scenario's checks and timelines, the final state, and the
//! `N passed, M failed` line.

use std::fmt::Write;

/// One checked invariant.
#[derive(Debug, Clone)]
pub struct Check {
    /// What must hold.
    pub what: String,
    /// Whether it held.
    pub ok: bool,
    /// What was seen.
    pub seen: String,
}

/// One scenario's outcome.
#[derive(Debug, Clone, Default)]
pub struct ScenarioReport {
    /// `1. happy path`...
    pub name: String,
    /// The invariants checked.
    pub checks: Vec<Check>,
    /// Timelines and notes, printed under the checks.
    pub details: Vec<String>,
    /// An error that stopped the scenario before its checks.
    pub error: Option<String>,
    /// How long it took.
    pub millis: u128,
}

impl ScenarioReport {
    /// A new, empty report.
    pub fn new(name: &str) -> ScenarioReport {
        ScenarioReport { name: name.to_owned(), ..ScenarioReport::default() }
    }

    /// Records that `what` must hold; `seen` says what was observed.
    pub fn check(&mut self, what: impl Into<String>, ok: bool, seen: impl std::fmt::Display) {
        self.checks.push(Check { what: what.into(), ok, seen: seen.to_string() });
    }

    /// Checks `seen == expected`.
    pub fn expect_eq<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: impl Into<String>,
        seen: T,
        expected: T,
    ) {
        let ok = seen == expected;
        let text = if ok { format!("{seen:?}") } else { format!("{seen:?}, expected {expected:?}") };
        self.check(what, ok, text);
    }

    /// Adds a detail line (a timeline, a note).
    pub fn note(&mut self, line: impl Into<String>) {
        self.details.push(line.into());
    }

    /// Passed: no error, at least one check, and every check held.
    pub fn passed(&self) -> bool {
        self.error.is_none() && !self.checks.is_empty() && self.checks.iter().all(|c| c.ok)
    }
}

/// The whole run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The scenarios, in order.
    pub scenarios: Vec<ScenarioReport>,
    /// The final stock, coupons and orders, as text.
    pub final_state: Vec<String>,
}

impl Report {
    /// Scenarios whose invariants all held.
    pub fn passed(&self) -> usize {
        self.scenarios.iter().filter(|s| s.passed()).count()
    }

    /// Scenarios with a failed invariant or an error.
    pub fn failed(&self) -> usize {
        self.scenarios.len() - self.passed()
    }

    /// The report as text, ending with `N passed, M failed`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.scenarios {
            let verdict = if s.passed() { "PASS" } else { "FAIL" };
            let _ = writeln!(out, "== {} [{verdict}, {} ms]", s.name, s.millis);
            if let Some(e) = &s.error {
                let _ = writeln!(out, "   error: {e}");
            }
            for c in &s.checks {
                let mark = if c.ok { "ok  " } else { "FAIL" };
                let _ = writeln!(out, "   {mark} {}: {}", c.what, c.seen);
            }
            for d in &s.details {
                let _ = writeln!(out, "   {d}");
            }
            out.push('\n');
        }
        if !self.final_state.is_empty() {
            let _ = writeln!(out, "== final state");
            for line in &self.final_state {
                let _ = writeln!(out, "   {line}");
            }
            out.push('\n');
        }
        let _ = writeln!(out, "{} passed, {} failed", self.passed(), self.failed());
        out
    }
}
