//! The store as the node uses it, measured: every write counts toward the write-queue depth
//! while it waits for its commit, and its latency (queued → durable) is recorded per operation.
//! A wrapper at the trait boundary, so the backends' writers stay untouched.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dtx_core::{Branch, Global, GlobalStatus, Timestamp};
use dtx_store::{
    ClaimedThen, Created, KvRow, ListFilter, Loaded, NewTransaction, Result, Save, StatusCounts, Store,
    ThenSave,
};

use crate::metrics::Metrics;

/// A [`Store`] reporting its writes to [`Metrics`].
pub struct ObservedStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl ObservedStore {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> ObservedStore {
        ObservedStore { inner, metrics }
    }

    async fn write<T>(&self, op: &'static str, fut: impl Future<Output = Result<T>>) -> Result<T> {
        self.metrics.store_write_started();
        let started = Instant::now();
        let result = fut.await;
        // A fenced or refused write is a normal answer, committed like any other.
        let ok = !matches!(result, Err(dtx_store::Error::Unavailable(_) | dtx_store::Error::Internal(_)));
        self.metrics.store_write_ended(op, ok, started.elapsed());
        result
    }
}

#[async_trait]
impl Store for ObservedStore {
    async fn create(&self, tx: NewTransaction) -> Result<()> {
        self.write("create", self.inner.create(tx)).await
    }

    async fn create_returning_ids(&self, tx: NewTransaction) -> Result<Created> {
        self.write("create", self.inner.create_returning_ids(tx)).await
    }

    async fn load(&self, gid: &str) -> Result<Option<Loaded>> {
        self.inner.load(gid).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Global>> {
        self.inner.list(filter).await
    }

    fn single_node(&self) -> bool {
        self.inner.single_node()
    }

    async fn shared_clock(&self) -> Result<Option<Timestamp>> {
        self.inner.shared_clock().await
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Loaded>> {
        self.write("claim_due", self.inner.claim_due(owner, now, lease_until, limit)).await
    }

    async fn claim(
        &self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Loaded>> {
        self.write("claim", self.inner.claim(gid, owner, now, lease_until)).await
    }

    async fn claim_then(
        &self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        then: ThenSave,
    ) -> Result<Option<ClaimedThen>> {
        self.write("claim_then", self.inner.claim_then(gid, owner, now, lease_until, then)).await
    }

    async fn save(&self, save: Save) -> Result<()> {
        self.write("save", self.inner.save(save)).await
    }

    async fn add_branches(
        &self,
        gid: &str,
        expect: dtx_store::Expect,
        branches: Vec<Branch>,
        now: Timestamp,
    ) -> Result<()> {
        self.write("add_branches", self.inner.add_branches(gid, expect, branches, now)).await
    }

    async fn force_stop(&self, gid: &str, reason: &str, now: Timestamp) -> Result<GlobalStatus> {
        self.write("force_stop", self.inner.force_stop(gid, reason, now)).await
    }

    async fn reset_next_cron_time(&self, gid: &str, base: Duration, now: Timestamp) -> Result<()> {
        self.write("reset_next_cron_time", self.inner.reset_next_cron_time(gid, base, now)).await
    }

    async fn reset_cron_time(&self, later_than: Timestamp, limit: u32, now: Timestamp) -> Result<u64> {
        self.write("reset_cron_time", self.inner.reset_cron_time(later_than, limit, now)).await
    }

    async fn resume_held(&self, host: &str, limit: u32, now: Timestamp) -> Result<u64> {
        self.write("resume_held", self.inner.resume_held(host, limit, now)).await
    }

    async fn kv_get(&self, cat: &str, k: &str) -> Result<Option<KvRow>> {
        self.inner.kv_get(cat, k).await
    }

    async fn kv_scan(&self, cat: &str, before_id: Option<i64>, limit: u32) -> Result<Vec<KvRow>> {
        self.inner.kv_scan(cat, before_id, limit).await
    }

    async fn kv_insert(&self, cat: &str, k: &str, v: &str, now: Timestamp) -> Result<()> {
        self.write("kv_insert", self.inner.kv_insert(cat, k, v, now)).await
    }

    async fn kv_update(&self, cat: &str, k: &str, v: &str, version: i64, now: Timestamp) -> Result<()> {
        self.write("kv_update", self.inner.kv_update(cat, k, v, version, now)).await
    }

    async fn kv_delete(&self, cat: &str, k: &str) -> Result<()> {
        self.write("kv_delete", self.inner.kv_delete(cat, k)).await
    }

    async fn unfinished_counts(&self, now: Timestamp) -> Result<StatusCounts> {
        self.inner.unfinished_counts(now).await
    }

    async fn finished_counts(&self, now: Timestamp) -> Result<Vec<(GlobalStatus, u64)>> {
        self.inner.finished_counts(now).await
    }

    async fn purge_finished(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.write("purge", self.inner.purge_finished(before, limit)).await
    }
}
