//! The store as requests use it, bounded (load shedding, ADR 0009): every operation has a
//! deadline, and writes other than saves are admitted to the backend's write queue only while
//! fewer than `max_queued_writes` are outstanding. Past either limit the caller gets
//! `Unavailable` (the API answers 503 with `Retry-After`, gRPC `Unavailable`) instead of
//! hanging on a saturated queue or a database that stopped answering.
//!
//! - A write refused at admission was never queued: nothing of it is stored.
//! - A write whose deadline passes while queued is dropped by its writer unrun (a backend skips
//!   requests whose caller is gone, `dtx_store::write::Job::abandoned`), so a refused submit does
//!   not land later. One already running when its deadline passes may still commit; it is never
//!   reported as a success, and the rounds of this node act only on writes reported durable
//!   (persist, then act), so no acknowledged transaction depends on it.
//! - Saves (lease renewals and the progress writes of owned rounds) skip admission: they are
//!   bounded by the round cap already, and a full queue of new work must not starve the rounds
//!   that hold leases.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dtx_core::{Branch, Global, GlobalStatus, Timestamp};
use dtx_store::{
    ClaimedThen, Created, Error, KvRow, ListFilter, Loaded, NewTransaction, Result, Save, StatusCounts,
    Store, ThenSave,
};
use tokio::sync::Semaphore;

/// Limits of a [`GuardedStore`].
#[derive(Debug, Clone, Copy)]
pub struct Guard {
    /// The database, as messages name it (`PostgreSQL`).
    pub name: &'static str,
    /// The deadline of one store operation (queue wait included).
    pub deadline: Duration,
    /// How many writes (saves excepted) may be outstanding at once.
    pub max_queued_writes: usize,
    /// How long a write waits for admission before it is refused.
    pub shed_after: Duration,
}

/// A [`Store`] with deadlines and an admission limit on its write queue.
pub struct GuardedStore {
    inner: Arc<dyn Store>,
    guard: Guard,
    queue: Semaphore,
}

impl GuardedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, guard: Guard) -> GuardedStore {
        GuardedStore { inner, guard, queue: Semaphore::new(guard.max_queued_writes.max(1)) }
    }

    /// Runs `fut` within the deadline.
    async fn bounded<T>(&self, what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        match tokio::time::timeout(self.guard.deadline, fut).await {
            Ok(result) => result,
            Err(_) => Err(Error::Unavailable(format!(
                "{} did not complete {what} within {:?}; retry later",
                self.guard.name, self.guard.deadline
            ))),
        }
    }

    /// A write that must first be admitted to the queue.
    async fn admitted<T>(&self, what: &str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        let wait = self.guard.shed_after.min(self.guard.deadline);
        let Ok(Ok(_permit)) = tokio::time::timeout(wait, self.queue.acquire()).await else {
            return Err(Error::Unavailable(format!(
                "overloaded: {} store writes outstanding for over {wait:?}; retry later",
                self.guard.max_queued_writes
            )));
        };
        self.bounded(what, fut).await
    }
}

#[async_trait]
impl Store for GuardedStore {
    async fn create(&self, tx: NewTransaction) -> Result<()> {
        self.admitted("create", self.inner.create(tx)).await
    }

    async fn create_returning_ids(&self, tx: NewTransaction) -> Result<Created> {
        self.admitted("create", self.inner.create_returning_ids(tx)).await
    }

    async fn load(&self, gid: &str) -> Result<Option<Loaded>> {
        self.bounded("load", self.inner.load(gid)).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Global>> {
        self.bounded("list", self.inner.list(filter)).await
    }

    fn single_node(&self) -> bool {
        self.inner.single_node()
    }

    async fn shared_clock(&self) -> Result<Option<Timestamp>> {
        self.bounded("a clock read", self.inner.shared_clock()).await
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Loaded>> {
        self.admitted("claim_due", self.inner.claim_due(owner, now, lease_until, limit)).await
    }

    async fn claim(
        &self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Loaded>> {
        self.admitted("claim", self.inner.claim(gid, owner, now, lease_until)).await
    }

    async fn claim_then(
        &self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        then: ThenSave,
    ) -> Result<Option<ClaimedThen>> {
        self.admitted("claim", self.inner.claim_then(gid, owner, now, lease_until, then)).await
    }

    async fn save(&self, save: Save) -> Result<()> {
        // The reserved lane: no admission (see the module's comment).
        self.bounded("save", self.inner.save(save)).await
    }

    async fn add_branches(
        &self,
        gid: &str,
        expect: dtx_store::Expect,
        branches: Vec<Branch>,
        now: Timestamp,
    ) -> Result<()> {
        self.admitted("add_branches", self.inner.add_branches(gid, expect, branches, now)).await
    }

    async fn force_stop(&self, gid: &str, reason: &str, now: Timestamp) -> Result<GlobalStatus> {
        self.admitted("force_stop", self.inner.force_stop(gid, reason, now)).await
    }

    async fn reset_next_cron_time(&self, gid: &str, base: Duration, now: Timestamp) -> Result<()> {
        self.admitted("reset_next_cron_time", self.inner.reset_next_cron_time(gid, base, now)).await
    }

    async fn reset_cron_time(&self, later_than: Timestamp, limit: u32, now: Timestamp) -> Result<u64> {
        self.admitted("reset_cron_time", self.inner.reset_cron_time(later_than, limit, now)).await
    }

    async fn resume_held(&self, host: &str, limit: u32, now: Timestamp) -> Result<u64> {
        self.admitted("resume_held", self.inner.resume_held(host, limit, now)).await
    }

    async fn kv_get(&self, cat: &str, k: &str) -> Result<Option<KvRow>> {
        self.bounded("kv_get", self.inner.kv_get(cat, k)).await
    }

    async fn kv_scan(&self, cat: &str, before_id: Option<i64>, limit: u32) -> Result<Vec<KvRow>> {
        self.bounded("kv_scan", self.inner.kv_scan(cat, before_id, limit)).await
    }

    async fn kv_insert(&self, cat: &str, k: &str, v: &str, now: Timestamp) -> Result<()> {
        self.admitted("kv_insert", self.inner.kv_insert(cat, k, v, now)).await
    }

    async fn kv_update(&self, cat: &str, k: &str, v: &str, version: i64, now: Timestamp) -> Result<()> {
        self.admitted("kv_update", self.inner.kv_update(cat, k, v, version, now)).await
    }

    async fn kv_delete(&self, cat: &str, k: &str) -> Result<()> {
        self.admitted("kv_delete", self.inner.kv_delete(cat, k)).await
    }

    async fn unfinished_counts(&self, now: Timestamp) -> Result<StatusCounts> {
        self.bounded("unfinished_counts", self.inner.unfinished_counts(now)).await
    }

    async fn finished_counts(&self, now: Timestamp) -> Result<Vec<(GlobalStatus, u64)>> {
        self.bounded("finished_counts", self.inner.finished_counts(now)).await
    }

    async fn purge_finished(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.admitted("purge", self.inner.purge_finished(before, limit)).await
    }
}
