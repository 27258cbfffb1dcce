//! `dtx-core`: the pure domain of the dtx coordinator.
//!
//! Nothing here performs I/O, spawns tasks or reads a clock: every function takes the current time
//! as an argument and returns decisions for the engine (`dtx-engine`) to carry out. That keeps the
//! rules that matter (which branch runs next, when a saga rolls back, how long to wait before a
//! retry) exhaustively testable.
//!
//! Layout:
//! - [`allow`]: which participant addresses may be called (`--participant-allow`).
//! - [`time`]: [`Timestamp`] (milliseconds since the Unix epoch, UTC).
//! - [`gid`]: the gid rule every front door applies.
//! - [`model`]: the global transaction ([`Global`]), its [`Branch`]es, statuses and ops.
//! - [`options`]: per-transaction options ([`TransOptions`]) as DTM clients send them.
//! - [`outcome`]: what a participant call returned ([`Outcome`]), read per DTM's result protocol.
//! - [`health`]: participant host health (down after failures, probes, resume rate).
//! - [`retry`]: the retry policy (exponential backoff with jitter, fixed interval for ONGOING).
//! - [`saga`]: the saga graph scheduler with pivot ordering.
//! - [`tcc`]: TCC phase two (confirm all / cancel all, newest first).
//! - [`msg`]: 2-phase messages (check-back, actions).
//! - [`xa`]: XA phase two (commit all / roll back all, oldest first).
//! - [`workflow`]: workflow registration and finishing rules.
//! - [`lifecycle`]: what prepare / submit / abort do in each status (idempotency rules).
//! - [`timeout`]: when a transaction is past its `timeout_to_fail`.

pub mod allow;
pub mod gid;
pub mod health;
pub mod lifecycle;
pub mod model;
pub mod msg;
pub mod options;
pub mod outcome;
pub mod retry;
pub mod saga;
pub mod tcc;
pub mod time;
pub mod timeout;
pub mod workflow;
pub mod xa;

pub use model::{Branch, BranchStatus, Global, GlobalStatus, Op, TransType};
pub use options::TransOptions;
pub use outcome::Outcome;
pub use time::Timestamp;
