//! One processing round of a transaction: drive its state machine, persist, call participants.
//!
//! A round runs while this node owns the transaction (an insert or a claim gave it a lease). It
//! ends in a final status, or by releasing the row with the next retry time, or because the
//! ownership was lost (fenced write): then it stops at once and calls nobody else.

pub(crate) mod ctx;
pub(crate) mod exec;
mod msg;
pub mod saga;
mod tcc;
mod workflow;

use dtx_core::saga::Phase;
use dtx_core::{GlobalStatus, Op, TransType};
use dtx_store::Loaded;
use tracing::Instrument;

use crate::round::ctx::Premarks;
use crate::{EngineEvent, Inner};

/// How a round ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundEnd {
    /// The transaction reached a final status.
    Finished {
        /// `succeed` or `failed`.
        status: GlobalStatus,
        /// The rollback reason (empty on success).
        reason: String,
    },
    /// Released for a later round.
    Pending {
        /// The status it was left in.
        status: GlobalStatus,
        /// The rollback reason so far.
        reason: String,
    },
    /// The ownership was lost (or the store failed); another round will carry on.
    Abandoned,
}

/// Why a round runs (the `mode` of its span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundMode {
    /// Right after a client's call wrote the transaction (submit of a saga or message; submit
    /// or abort of a TCC; a re-submit): the node that wrote it runs it at once.
    Submit,
    /// The scheduler claimed it when due from no owner: a retry after errors or ONGOING, a
    /// timeout, a message's check-back or delay, an operator's "retry now".
    Scheduled,
    /// The scheduler claimed it from an owner whose lease had expired (that node died or
    /// stalled): recovery.
    Takeover,
}

impl RoundMode {
    /// The span field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            RoundMode::Submit => "submit",
            RoundMode::Scheduled => "scheduled",
            RoundMode::Takeover => "takeover",
        }
    }
}

/// Runs one round of an owned transaction. `premarks`: attempts its insert already persisted.
pub(crate) async fn run(
    inner: &Inner,
    loaded: Loaded,
    owner: String,
    premarks: Premarks,
    mode: RoundMode,
) -> RoundEnd {
    let gid = loaded.global.gid.clone();
    // Metrics hooks around the round (crate::observe); the round itself is `run_mode`.
    let info = crate::observe::RoundInfo {
        trans_type: loaded.global.trans_type,
        create_time: loaded.global.create_time,
        forward_only: crate::Engine::is_forward_only(&loaded),
    };
    inner.observer.round_started(&info);
    // Debug level: with logs at info and no span export the span is never built (building one
    // formatted its fields for the log layer: ~4 % of a saga's instructions); events at info and
    // above name their gid themselves.
    let span = tracing::debug_span!("round", gid = %loaded.global.gid, trans_type = %info.trans_type,
        mode = mode.as_str());
    if let Some(export) = &inner.export
        && let Some((parent, state)) = crate::trace_context::stored(&loaded.global.options.branch_headers)
    {
        export.set_parent(&span, parent, state);
    }
    let end = run_mode(inner, loaded, owner, premarks).instrument(span).await;
    inner.observer.round_ended(&info, &end, inner.clock.now());
    inner.emit(EngineEvent::RoundEnded { gid, end: end.clone() });
    end
}

async fn run_mode(inner: &Inner, loaded: Loaded, owner: String, premarks: Premarks) -> RoundEnd {
    match loaded.global.trans_type {
        TransType::Saga => saga::SagaRound::new(inner, loaded, owner, premarks).run().await,
        TransType::Tcc => tcc::run(inner, loaded, owner, premarks).await,
        TransType::Msg => msg::run(inner, loaded, owner, premarks).await,
        TransType::Xa => tcc::run_phase_two(inner, loaded, owner, premarks, dtx_core::xa::plan).await,
        TransType::Workflow => workflow::run(inner, loaded, owner).await,
    }
}

/// The rows the first round of a transaction just submitted from `prepared` calls: the
/// phase-two rows of a TCC or XA (one at a time), the actions of a message, in the order
/// their plan calls them when every call succeeds. The first call(s)' attempts are written
/// with the status change (the submit's one write), so the round's first call needs no write
/// of its own, as a new saga's first actions ([`saga::premark_first_actions`]). With `ahead`
/// ([`crate::Inner::marks_ahead`], ADR 21) the same write records the first attempt of every
/// later call too (not counted in the round's rows until it is called); these modes never
/// compensate, so a mark whose call never came only means the call is made by a later round,
/// as it would be anyway. Without `ahead`, every later call is preceded by its own write.
pub(crate) fn premark_first_calls(
    loaded: &mut Loaded,
    premarks: &mut ctx::Premarks,
    ahead: Option<u64>,
) -> Vec<dtx_store::BranchUpdate> {
    let marks = first_call_marks(loaded, ahead);
    let updates = mark_updates(loaded, &marks);
    for m in marks {
        let b = &mut loaded.branches[m.row];
        if m.ahead.is_none() {
            b.attempts = m.attempts;
        }
        premarks.push(ctx::Premark {
            branch_id: b.branch_id.clone(),
            op: b.op,
            attempts: m.attempts,
            ahead: m.ahead,
        });
    }
    updates
}

/// The branch updates [`premark_first_calls`] writes, from the row as claimed: the claim's own
/// write decides them on a borrowed row (ADR 22), without a copy of it.
pub(crate) fn first_call_updates(loaded: &Loaded, ahead: Option<u64>) -> Vec<dtx_store::BranchUpdate> {
    mark_updates(loaded, &first_call_marks(loaded, ahead))
}

/// One attempt [`premark_first_calls`] records: the row, its attempt count, and for a later
/// call the operator-stop count it was recorded under.
struct Mark {
    row: usize,
    attempts: u32,
    ahead: Option<u64>,
}

/// The marks of a row about to become `submitted` (whatever its stored status).
fn first_call_marks(loaded: &Loaded, ahead: Option<u64>) -> Vec<Mark> {
    let mut marks = Vec::new();
    let waves = calls_in_order(&loaded.global, GlobalStatus::Submitted, &loaded.branches);
    for (wave, rows) in waves.into_iter().enumerate() {
        let later = wave > 0;
        if later && ahead.is_none() {
            break;
        }
        for row in rows {
            let attempts = loaded.branches[row].attempts;
            // A later call already attempted, or already marked in an earlier wave.
            if later && (attempts != 0 || marks.iter().any(|m: &Mark| m.row == row)) {
                continue;
            }
            marks.push(Mark { row, attempts: attempts + 1, ahead: if later { ahead } else { None } });
        }
    }
    marks
}

fn mark_updates(loaded: &Loaded, marks: &[Mark]) -> Vec<dtx_store::BranchUpdate> {
    marks
        .iter()
        .map(|m| {
            let b = &loaded.branches[m.row];
            dtx_store::BranchUpdate {
                id: b.id,
                branch_id: b.branch_id.clone(),
                op: b.op,
                status: b.status,
                attempts: m.attempts,
                last_error: b.last_error.clone(),
                finish_time: b.finish_time,
            }
        })
        .collect()
}

/// The calls a submitted TCC, XA or message makes if every one succeeds, in waves (rows called
/// together), by asking its plan again after each wave as if it had succeeded.
fn calls_in_order(
    global: &dtx_core::Global,
    status: GlobalStatus,
    branches: &[dtx_core::Branch],
) -> Vec<Vec<usize>> {
    let mut waves = Vec::new();
    match global.trans_type {
        TransType::Tcc | TransType::Xa => {
            let plan =
                if global.trans_type == TransType::Tcc { dtx_core::tcc::plan } else { dtx_core::xa::plan };
            let mut rows: Vec<dtx_core::tcc::Row> =
                branches.iter().map(|b| dtx_core::tcc::Row { op: b.op, status: b.status }).collect();
            while let dtx_core::tcc::Decision::Call(row) = plan(status, &rows, false) {
                if waves.len() > branches.len() {
                    break;
                }
                rows[row].status = dtx_core::BranchStatus::Succeed;
                waves.push(vec![row]);
            }
        }
        TransType::Msg => {
            let actions: Vec<usize> = (0..branches.len()).filter(|&i| branches[i].op == Op::Action).collect();
            let mut phases: Vec<Phase> = actions
                .iter()
                .map(|&i| Phase::from_stored(branches[i].status, branches[i].attempts))
                .collect();
            while let dtx_core::msg::Decision::Start(start) =
                dtx_core::msg::plan(status, &phases, global.options.concurrent, false)
            {
                if waves.len() > actions.len() {
                    break;
                }
                for &k in &start {
                    phases[k] = Phase::Succeeded;
                }
                waves.push(start.into_iter().map(|k| actions[k]).collect());
            }
        }
        TransType::Saga | TransType::Workflow => {}
    }
    waves
}
