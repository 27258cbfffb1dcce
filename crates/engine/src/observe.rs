//! Hooks the engine calls at the points an operator wants to count: rounds, participant calls,
//! fenced writes, claims. The server implements [`Observer`] with Prometheus metrics; the engine
//! itself keeps no metrics, so it stays free of any exporter.
//!
//! Every hook is called on the hot path: implementations must be cheap (atomic updates), never
//! block and never fail. Every method has an empty default, so [`NoObserver`] costs nothing.

use std::time::Duration;

use dtx_core::{Outcome, Timestamp, TransType};

use crate::participant::CallRequest;
use crate::round::RoundEnd;

/// What a round looked like, for [`Observer::round_ended`].
#[derive(Debug, Clone, Copy)]
pub struct RoundInfo {
    /// The transaction's mode.
    pub trans_type: TransType,
    /// When the transaction was created (for the "handled duration").
    pub create_time: Timestamp,
    /// A saga that had passed its pivot when the round began (it only goes forward).
    pub forward_only: bool,
}

/// Receives the engine's events. Shared by every round (`Arc`), called concurrently.
pub trait Observer: Send + Sync + 'static {
    /// A round of an owned transaction starts.
    fn round_started(&self, _round: &RoundInfo) {}

    /// That round ended (`now`: the engine's clock at the end).
    fn round_ended(&self, _round: &RoundInfo, _end: &RoundEnd, _now: Timestamp) {}

    /// A participant answered (or failed to) after `elapsed`. Not called for steps without a URL.
    fn branch_called(&self, _call: &CallRequest, _outcome: &Outcome, _elapsed: Duration) {}

    /// A fenced write was refused: this node had lost the transaction (lease taken over or
    /// force-stopped) and its round stopped.
    fn fenced(&self) {}

    /// The scheduler claimed `n` due transactions in one statement.
    fn claimed(&self, _n: usize) {}

    /// Of those, `n` were taken from an owner whose lease had expired (lease takeovers:
    /// that node died, stalled, or shut down with rounds unfinished).
    fn taken_over(&self, _n: usize) {}

    /// Retention deleted `n` finished transactions.
    fn purged(&self, _n: u64) {}

    /// This node marked a participant host down (`crate::health`).
    fn host_down(&self, _host: &str) {}

    /// A host this node saw down answered again after `down_for`.
    fn host_up(&self, _host: &str, _down_for: Duration) {}

    /// A call went out as the probe of a down host.
    fn host_probed(&self, _host: &str) {}

    /// A call was not made because its host is down (the transaction is held).
    fn call_held(&self, _host: &str) {}

    /// `n` transactions held for a host that came back were made due.
    fn resumed(&self, _host: &str, _n: u64) {}
}

/// The observer that records nothing (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {}
