//! 2-phase messages: a prepared message is decided by its check-back once timed out; a
//! submitted one runs its actions (sequentially, or concurrently) until every one succeeded.
//! A message never rolls back: FAILURE from an action is retried like an error.

use std::time::Duration;

use crate::model::GlobalStatus;
use crate::outcome::Outcome;
use crate::retry::RetryKind;
use crate::saga::Phase;
use crate::time::Timestamp;

/// A msg's `custom_data` is not valid (`{"delay": seconds}`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("custom_data is not valid msg options: {0}")]
pub struct BadCustomData(String);

#[derive(Debug, Default, serde::Deserialize)]
struct MsgCustomData {
    #[serde(default)]
    delay: Option<u64>,
}

/// The delay a msg's `custom_data` asks for before its actions first run (`{"delay": seconds}`;
/// empty, `null` or no `delay` = none). The one parser of it: validation, submit and the round
/// all read the delay here.
pub fn delay(custom_data: &str) -> Result<Option<Duration>, BadCustomData> {
    let text = custom_data.trim();
    if text.is_empty() || text == "null" {
        return Ok(None);
    }
    let parsed: MsgCustomData = serde_json::from_str(text).map_err(|e| BadCustomData(e.to_string()))?;
    Ok(parsed.delay.filter(|&d| d > 0).map(Duration::from_secs))
}

/// When a delayed msg's delay ends (counted from its creation), if it has one.
pub fn delayed_until(create_time: Timestamp, custom_data: &str) -> Option<Timestamp> {
    delay(custom_data).ok().flatten().map(|d| create_time.add(d))
}

/// What to do next in a msg round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Prepared and timed out: call `query_prepared` and decide from its answer.
    CheckBack,
    /// Start these action rows (indices) now.
    Start(Vec<usize>),
    /// Every action succeeded.
    Finish,
    /// Nothing to start now: wait for running calls, or end the round if none is running.
    Wait,
}

/// What a check-back answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckBack {
    /// The local transaction committed: `submitted`, run the actions.
    Commit,
    /// It never committed: `failed`, the actions never run.
    Fail,
    /// Unknown yet: ask again later (fixed interval for ONGOING, backoff for errors).
    AskAgain(RetryKind),
}

/// Decides the next step. `actions` are the phases of the action rows in row order.
///
/// Sequentially, one action runs at a time in row order and the round stops at the first one
/// without success ([`Phase::Waiting`]). Concurrently, every action not yet done starts at once;
/// those that answered without success this round wait for the next one. Call it again after
/// each change; the round ends on [`Decision::Wait`] with nothing running.
///
/// An action in [`Phase::Failed`] (never produced for a msg, see [`action_phase_after`]) is
/// never restarted, so such a message waits forever rather than guessing.
pub fn plan(status: GlobalStatus, actions: &[Phase], concurrent: bool, timed_out: bool) -> Decision {
    match status {
        GlobalStatus::Prepared if timed_out => Decision::CheckBack,
        GlobalStatus::Submitted => plan_actions(actions, concurrent),
        // A prepared msg within its time waits for the client; a msg never rolls back, and
        // `succeed` / `failed` are final.
        GlobalStatus::Prepared | GlobalStatus::Aborting | GlobalStatus::Succeed | GlobalStatus::Failed => {
            Decision::Wait
        }
    }
}

fn plan_actions(actions: &[Phase], concurrent: bool) -> Decision {
    if actions.iter().all(|&p| p == Phase::Succeeded) {
        return Decision::Finish;
    }
    let startable = |i: &usize| matches!(actions[*i], Phase::NotStarted | Phase::Retry);
    if concurrent {
        let start: Vec<usize> = (0..actions.len()).filter(startable).collect();
        return if start.is_empty() { Decision::Wait } else { Decision::Start(start) };
    }
    if actions.iter().any(|&p| matches!(p, Phase::Running | Phase::Waiting)) {
        return Decision::Wait;
    }
    match (0..actions.len()).find(startable) {
        Some(i) => Decision::Start(vec![i]),
        None => Decision::Wait,
    }
}

/// Reads a check-back answer. Fail closed: only a clear success commits.
pub fn check_back(outcome: &Outcome) -> CheckBack {
    match outcome {
        Outcome::Success => CheckBack::Commit,
        Outcome::Failure(_) => CheckBack::Fail,
        Outcome::Ongoing => CheckBack::AskAgain(RetryKind::Ongoing),
        // Unknown is not committed: running the actions of a rolled-back local transaction
        // could not be undone.
        Outcome::Error(_) => CheckBack::AskAgain(RetryKind::Error),
    }
}

/// The phase of an action after a call (FAILURE is retried, never final).
pub fn action_phase_after(outcome: &Outcome) -> Phase {
    match outcome {
        Outcome::Success => Phase::Succeeded,
        Outcome::Failure(_) | Outcome::Ongoing | Outcome::Error(_) => Phase::Waiting,
    }
}

#[cfg(test)]
#[path = "msg_tests.rs"]
mod tests;
