//! `dtx-store`: the storage contract of dtx.
//!
//! The engine knows only the [`Store`] trait. Every method is one *atomic domain operation*
//! (one database transaction inside the backend), and every write made while processing a
//! transaction is **fenced by its owner token**: the atomic-update ownership pattern.
//!
//! - [`Store::create`] inserts a transaction already owned by the node that received it.
//! - [`Store::claim_due`] takes due, unowned (or lease-expired) transactions in one conditional
//!   `UPDATE ... SET owner = :token, lease_until = :until WHERE ... RETURNING`.
//! - [`Store::save`] applies branch results, a status change and a lease change in one write,
//!   only if the row is still owned by the caller's token; otherwise [`Error::Fenced`] and
//!   nothing changes, and the caller must stop calling participants for that transaction.
//!
//! Backends: `dtx-store-sqlite` (embedded default), `dtx-store-postgres` (several nodes sharing
//! one database; leases and due times on the database clock). The conformance suite that every backend
//! runs lives in [`testsuite`] (feature `testsuite`).

use std::time::Duration;

use async_trait::async_trait;
use dtx_core::{Branch, BranchStatus, Global, GlobalStatus, Op, Timestamp, TransType};

#[cfg(feature = "memory")]
pub mod memory;
pub mod packed;
pub mod rows;
pub mod sql;
pub mod testenv;
#[cfg(feature = "testsuite")]
pub mod testsuite;
pub mod write;

/// What can go wrong in a store operation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The transaction (or row) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A unique key already exists (duplicate gid on create, duplicate branch).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The caller no longer owns the transaction (another node claimed it after the lease
    /// expired, or it was force-stopped). Nothing was written.
    #[error("ownership of {gid} lost: the row is not owned by this token any more")]
    Fenced {
        /// The transaction whose write was rejected.
        gid: String,
    },
    /// The transaction is not in a state that allows the operation (e.g. adding branches to a
    /// transaction that is no longer `prepared`, or is being processed). Nothing was written.
    #[error("precondition failed: {0}")]
    Precondition(String),
    /// The database is unreachable or busy; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else (corrupt row, SQL error...).
    #[error("store internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    /// True for errors worth retrying later (the database may come back).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_))
    }
}

impl Error {
    /// A copy of this error for every request of a batch that failed as a whole (`Error` is
    /// not `Clone`: its internal source is not).
    pub fn replicate(&self) -> Error {
        match self {
            Error::NotFound(s) => Error::NotFound(s.clone()),
            Error::Conflict(s) => Error::Conflict(s.clone()),
            Error::Fenced { gid } => Error::Fenced { gid: gid.clone() },
            Error::Precondition(s) => Error::Precondition(s.clone()),
            Error::Unavailable(s) => Error::Unavailable(s.clone()),
            Error::Internal(e) => Error::Internal(anyhow::anyhow!("{e:#}")),
        }
    }
}

/// A stored row that does not decode into the domain types (every backend reports it so).
#[derive(Debug, thiserror::Error)]
pub enum CorruptRow {
    /// A status / type / op column holds an unknown name.
    #[error("{gid}: {source}")]
    Name {
        /// The transaction.
        gid: String,
        /// The unknown name.
        #[source]
        source: dtx_core::model::UnknownName,
    },
    /// The `options` column is not valid JSON for `TransOptions`.
    #[error("{gid}: bad options json")]
    Options {
        /// The transaction.
        gid: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// An integer column is out of range for its domain type.
    #[error("{gid}: column {column} out of range: {value}")]
    Range {
        /// The transaction.
        gid: String,
        /// The column.
        column: &'static str,
        /// The stored value.
        value: i64,
    },
}

impl From<CorruptRow> for Error {
    fn from(err: CorruptRow) -> Error {
        Error::Internal(anyhow::Error::new(err).context("corrupt row"))
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A new transaction to insert, already owned by `global.owner` until `global.lease_until`.
#[derive(Debug, Clone)]
pub struct NewTransaction {
    /// The global row (its `id` is ignored and assigned by the store).
    pub global: Global,
    /// Its branch rows, in order (their ids are assigned in this order).
    pub branches: Vec<Branch>,
}

/// What [`Store::create_returning_ids`] gives back: the transaction as it was passed in (a
/// caller that goes on to process it needs no copy made before the write) and its branch rows'
/// ids.
#[derive(Debug)]
pub struct Created {
    /// The transaction, unchanged.
    pub tx: NewTransaction,
    /// Its branch rows' ids in the order given; empty where the backend did not learn them.
    pub ids: Vec<i64>,
}

/// A transaction loaded with its branches (branches ordered by id).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    /// The global row.
    pub global: Global,
    /// The branch rows, ascending id.
    pub branches: Vec<Branch>,
    /// Set by [`Store::claim_due`] when the row was taken from an owner whose lease had
    /// expired (that node died or stalled), not from no owner. False everywhere else.
    pub taken_over: bool,
}

/// The new state of one branch row, identified by `(branch_id, op)` within the transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct BranchUpdate {
    /// The row's id as the caller read it from the store (SQLite's packed branches: the
    /// position, ADR 26); 0 when not known. A backend may find the branch by it, checking the
    /// key (ADR 25).
    pub id: i64,
    /// Which branch.
    pub branch_id: String,
    /// Which op of it.
    pub op: Op,
    /// New status.
    pub status: BranchStatus,
    /// New attempt count.
    pub attempts: u32,
    /// New last error ("" when none).
    pub last_error: String,
    /// Set when the branch reaches a final status.
    pub finish_time: Option<Timestamp>,
}

/// A change of the global status, written with the fence.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    /// The new status. `succeed` sets `finish_time`, `failed` sets `rollback_time` (to `now`).
    pub to: GlobalStatus,
    /// When `Some`, replaces `rollback_reason`.
    pub rollback_reason: Option<String>,
    /// When `Some`, replaces `result` (a workflow's result, written when it finishes).
    pub result: Option<String>,
}

/// What happens to the ownership after a [`Store::save`].
#[derive(Debug, Clone, PartialEq)]
pub enum LeaseChange {
    /// Keep owning it, with the lease extended to this time.
    Renew {
        /// New `lease_until`.
        lease_until: Timestamp,
    },
    /// Keep owning it with the lease extended, and set when it is due should this owner die
    /// (a prepared transaction just submitted or aborted is due at once, not at its old
    /// timeout). One write with the status change it goes with.
    RenewRescheduled {
        /// New `lease_until`.
        lease_until: Timestamp,
        /// New `next_cron_time`.
        next_cron_time: Timestamp,
        /// New `next_cron_interval`.
        next_cron_interval: Duration,
    },
    /// Give it up (`owner` and `lease_until` cleared) and schedule the next processing.
    Release {
        /// When the scheduler should next process it.
        next_cron_time: Timestamp,
        /// The retry interval to remember (for backoff).
        next_cron_interval: Duration,
    },
    /// [`LeaseChange::Release`], recording that its next call is held because `host` is down
    /// (`held_host`), until [`Store::resume_held`] or a later release clears it.
    Hold {
        /// The host's next probe time (when to try again at the latest).
        next_cron_time: Timestamp,
        /// The retry interval to remember.
        next_cron_interval: Duration,
        /// The participant host (`dtx_core::health::host_of`).
        host: String,
    },
}

/// What to save with a claim, decided on the row just claimed ([`Store::claim_then`]): the
/// fenced write to apply in the same store write, or `None` to keep the claim alone. Called
/// inside the store's write (possibly more than once, if the batch is retried), so it must be
/// a pure function of the row.
#[derive(Clone)]
pub struct ThenSave(pub std::sync::Arc<DecideSave>);

/// The function inside a [`ThenSave`].
pub type DecideSave = dyn Fn(&Loaded) -> Option<Save> + Send + Sync;

impl std::fmt::Debug for ThenSave {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ThenSave(..)")
    }
}

/// A row [`Store::claim_then`] claimed, as it was before the save, and whether the save was
/// applied.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedThen {
    /// The claimed transaction, as the claim read it.
    pub loaded: Loaded,
    /// The decision was a save, and it was written with the claim.
    pub saved: bool,
}

/// One fenced write: applied only if the transaction is still owned by `owner`.
#[derive(Debug, Clone, PartialEq)]
pub struct Save {
    /// The transaction.
    pub gid: String,
    /// The owner token the caller holds.
    pub owner: String,
    /// The write time (`update_time`).
    pub now: Timestamp,
    /// Branch rows to update.
    pub branches: Vec<BranchUpdate>,
    /// Optional status change.
    pub status: Option<StatusChange>,
    /// The lease afterwards.
    pub lease: LeaseChange,
}

/// What [`Store::add_branches`] checks of the transaction besides its being `prepared` and
/// unowned: that it is of the mode the branches are for, and that it has not timed out. (The
/// checks run inside the write, so a registration costs one store round trip, not a read and
/// a write.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// The mode the registration is for (`tcc`, `xa`, `workflow`).
    pub trans_type: TransType,
    /// The server's `timeout_to_fail`, for a transaction without its own.
    pub default_timeout: Duration,
}

impl Expect {
    /// [`Error::Precondition`] when the stored transaction (of `trans_type`, created at
    /// `create_time`, with its own `timeout_to_fail` seconds) is of another mode or timed out
    /// by `now`. SQLite's registration touch says the same in SQL (`REGISTER_TOUCH` in
    /// `dtx-store-sqlite`, ADR 25): change both together.
    pub fn check(
        &self,
        gid: &str,
        trans_type: TransType,
        timeout_to_fail: u64,
        create_time: Timestamp,
        now: Timestamp,
    ) -> Result<()> {
        if trans_type != self.trans_type {
            return Err(Error::Precondition(format!(
                "gid {gid} is used by a {trans_type} transaction, not {}",
                self.trans_type
            )));
        }
        let t = dtx_core::timeout::effective_timeout(trans_type, timeout_to_fail, self.default_timeout);
        if dtx_core::timeout::is_timed_out(create_time, t, now) {
            return Err(Error::Precondition(format!(
                "transaction {gid} timed out after {} seconds and is being cancelled",
                t.unwrap_or_default().as_secs()
            )));
        }
        Ok(())
    }
}

/// Filters of the admin listing (`/api/dtmsvr/all`), newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListFilter {
    /// Only ids strictly below this (the cursor); `None` = from the newest.
    pub before_id: Option<i64>,
    /// Page size.
    pub limit: u32,
    /// Only this status.
    pub status: Option<GlobalStatus>,
    /// Only this mode.
    pub trans_type: Option<TransType>,
    /// `create_time >= this`.
    pub created_from: Option<Timestamp>,
    /// `create_time <= this`.
    pub created_to: Option<Timestamp>,
    /// Only gids starting with this (matched literally: `%` and `_` are plain characters).
    pub gid_prefix: Option<String>,
}

/// How many transactions there are per status, and how many are due (admin UI, metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Rows per status; statuses without rows are absent.
    pub by_status: Vec<(GlobalStatus, u64)>,
    /// Unfinished rows whose `next_cron_time <= now` and that no node holds under a valid
    /// lease: the scheduler's backlog.
    pub due: u64,
}

impl StatusCounts {
    /// These (unfinished) counts with the finished ones added, every status ordered by name.
    pub fn with_finished(mut self, finished: Vec<(GlobalStatus, u64)>) -> StatusCounts {
        self.by_status.extend(finished);
        self.by_status.sort_by_key(|(s, _)| s.as_str());
        self
    }
}

/// A key-value row (category `topics`: key = topic name, value = JSON list of subscribers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvRow {
    /// Storage id (the `scanKV` cursor).
    pub id: i64,
    /// Category.
    pub cat: String,
    /// Key.
    pub k: String,
    /// Value.
    pub v: String,
    /// Incremented by every update (compare-and-set).
    pub version: i64,
    /// When it was created.
    pub create_time: Timestamp,
    /// Last write.
    pub update_time: Timestamp,
}

/// The storage contract. Implementations must be safe to share between tasks and, for
/// server backends, between processes (several dtx nodes).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a transaction and its branches atomically. Durable before it returns `Ok`.
    /// A duplicate gid → [`Error::Conflict`], and nothing is written.
    async fn create(&self, tx: NewTransaction) -> Result<()>;

    /// [`Store::create`], giving the transaction back with the ids its branches got, in the
    /// order given, where the backend learns them without another statement (SQLite: their
    /// positions when packed, ADR 26, else they follow the last row id); empty where it does
    /// not. The round that follows updates rows of known id by their id (ADR 25). Backends
    /// with a write queue send the transaction back from their writer rather than have the
    /// caller copy it first; wrappers forward it.
    async fn create_returning_ids(&self, tx: NewTransaction) -> Result<Created> {
        let kept = tx.clone();
        self.create(tx).await.map(|()| Created { tx: kept, ids: Vec::new() })
    }

    /// Loads a transaction with its branches (`None` if unknown).
    async fn load(&self, gid: &str) -> Result<Option<Loaded>>;

    /// Lists global rows for the admin API.
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Global>>;

    /// The store's clock now, when the store keeps one timeline for every node sharing it
    /// (PostgreSQL: the database's clock); `None` when the caller's clock is the timeline (the
    /// embedded SQLite store serves one node). Nodes correct their clocks to it, so timeouts
    /// and recorded times do not depend on every node's clock being right.
    async fn shared_clock(&self) -> Result<Option<Timestamp>> {
        Ok(None)
    }

    /// Whether one dtx node is all this store ever serves (the embedded SQLite file, the
    /// in-memory store). Then only that node's own operator actions can stop its rounds, and
    /// the engine may call a saga's later actions on attempts its insert recorded (ADR 21);
    /// a store shared by nodes (PostgreSQL, MySQL) keeps a fenced write before each of them.
    fn single_node(&self) -> bool {
        false
    }

    /// Claims up to `limit` due transactions for `owner`, atomically: status in
    /// (prepared, submitted, aborting), `next_cron_time <= now`, and no valid lease
    /// (`owner` null or `lease_until < now`). Sets `owner` and `lease_until`. No two callers
    /// ever get the same transaction while its lease is valid. [`Loaded::taken_over`] tells
    /// which rows had an owner (an expired lease) before this claim.
    async fn claim_due(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Loaded>>;

    /// Claims one transaction by gid if it is not final and has no valid lease.
    /// `Ok(None)` when it is owned by someone else, final, or unknown.
    async fn claim(
        &self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Loaded>>;

    /// Applies a fenced write. [`Error::Fenced`] (and nothing written) when `owner` no longer
    /// owns the transaction. Durable before it returns `Ok`.
    async fn save(&self, save: Save) -> Result<()>;

    /// [`Store::claim`], then the save `then` decides on the claimed row, if any. A store whose
    /// one writer runs requests in turn (SQLite) does both in one write, so a prepared
    /// transaction's submit waits for one commit instead of two (ADR 22); the default is the
    /// two writes. Either way the save is durable before `Ok`, and a failed save leaves the
    /// row claimed (the lease expires) or, in one write, unclaimed.
    async fn claim_then(
        &self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        then: ThenSave,
    ) -> Result<Option<ClaimedThen>> {
        let Some(loaded) = self.claim(gid, owner, now, lease_until).await? else {
            return Ok(None);
        };
        let saved = match (then.0)(&loaded) {
            Some(save) => {
                self.save(save).await?;
                true
            }
            None => false,
        };
        Ok(Some(ClaimedThen { loaded, saved }))
    }

    /// Adds branch rows to a transaction, atomically, only while it is `prepared`, not owned
    /// under a valid lease (no round is processing it) and passes `expect` (mode, timeout). A
    /// duplicate `(branch_id, op)` → [`Error::Conflict`]; unknown gid → [`Error::NotFound`];
    /// wrong status, mode, timed out or owned → [`Error::Precondition`]. Nothing is written on
    /// error.
    async fn add_branches(
        &self,
        gid: &str,
        expect: Expect,
        branches: Vec<Branch>,
        now: Timestamp,
    ) -> Result<()>;

    /// Operator stop: any non-final transaction becomes `failed` (rollback_time = now,
    /// rollback_reason = `reason`), and its owner is cleared, so the round processing it is
    /// fenced out at its next write. Returns the status it had. Unknown gid →
    /// [`Error::NotFound`]; already final → [`Error::Precondition`].
    async fn force_stop(&self, gid: &str, reason: &str, now: Timestamp) -> Result<GlobalStatus>;

    /// Operator "retry now": `next_cron_time = now` and the interval back to `base` for one
    /// transaction (any status). Unknown gid → [`Error::NotFound`].
    async fn reset_next_cron_time(&self, gid: &str, base: Duration, now: Timestamp) -> Result<()>;

    /// Operator "retry everything backed off too far": for up to `limit` unfinished
    /// transactions whose `next_cron_time > later_than`, set `next_cron_time = now`. Returns
    /// how many were reset.
    async fn reset_cron_time(&self, later_than: Timestamp, limit: u32, now: Timestamp) -> Result<u64>;

    /// A host came back: makes up to `limit` unfinished transactions held for `host`
    /// (`held_host = host`) and under no valid lease due now, with `held_host = ""` (resumed:
    /// a node that still sees the host down lets their calls go, as probes, instead of holding
    /// them again). The condition on `held_host` is the fence: a row released or re-held since
    /// is not touched. Returns how many it released (fewer than `limit`: none is left). The next
    /// release of the row clears the mark.
    async fn resume_held(&self, host: &str, limit: u32, now: Timestamp) -> Result<u64>;

    /// One key-value row.
    async fn kv_get(&self, cat: &str, k: &str) -> Result<Option<KvRow>>;

    /// Rows of a category, newest first, ids strictly below `before_id` when given.
    async fn kv_scan(&self, cat: &str, before_id: Option<i64>, limit: u32) -> Result<Vec<KvRow>>;

    /// Inserts a row with version 1. Existing `(cat, k)` → [`Error::Conflict`].
    async fn kv_insert(&self, cat: &str, k: &str, v: &str, now: Timestamp) -> Result<()>;

    /// Replaces the value if the row still has `version` (then version + 1). Otherwise
    /// [`Error::Conflict`] (someone else changed it); unknown row → [`Error::NotFound`].
    async fn kv_update(&self, cat: &str, k: &str, v: &str, version: i64, now: Timestamp) -> Result<()>;

    /// Deletes a row. Unknown → [`Error::NotFound`].
    async fn kv_delete(&self, cat: &str, k: &str) -> Result<()>;

    /// Rows per unfinished status (`prepared`, `submitted`, `aborting`; statuses without rows
    /// are absent) and the due backlog at `now`, at a cost that does not grow with the finished
    /// rows kept (the SQL backends read the due index).
    async fn unfinished_counts(&self, now: Timestamp) -> Result<StatusCounts>;

    /// The rows per final status (`failed`, `succeed`; statuses without rows are absent),
    /// ordered by name. Reads every row (in one pass without a sort in the SQL backends).
    async fn finished_counts(&self, now: Timestamp) -> Result<Vec<(GlobalStatus, u64)>>;

    /// Rows per status, and the due backlog at `now`: [`Store::unfinished_counts`] with
    /// [`Store::finished_counts`].
    async fn status_counts(&self, now: Timestamp) -> Result<StatusCounts> {
        let unfinished = self.unfinished_counts(now).await?;
        Ok(unfinished.with_finished(self.finished_counts(now).await?))
    }

    /// Retention: deletes up to `limit` finished transactions (`succeed`, `failed`) last
    /// written before `before` (`update_time < before`), oldest first, with their branch rows,
    /// atomically per call. Unfinished transactions are never touched. Returns how many were
    /// deleted (fewer than `limit`: nothing older is left). Safe to run on several nodes at
    /// once: concurrent callers delete disjoint rows.
    async fn purge_finished(&self, before: Timestamp, limit: u32) -> Result<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicate_keeps_the_kind() {
        assert!(matches!(Error::Fenced { gid: "g".into() }.replicate(), Error::Fenced { gid } if gid == "g"));
        assert!(Error::Unavailable("x".into()).replicate().is_retryable());
        let e = Error::Internal(anyhow::anyhow!("boom")).replicate();
        assert!(matches!(&e, Error::Internal(inner) if inner.to_string().contains("boom")));
    }
}
