//! The shared `Store` conformance suite on PostgreSQL, each test in a fresh database of the
//! server named by `DTX_TEST_POSTGRES_URL` (skipped with a notice when it is unset; a failure
//! under `CI=true`). It runs twice:
//!
//! - `caller_clock`: the stores trust the caller's clock ([`ClockSource::Caller`]): the SQL is
//!   the one the database clock uses, with `$1` bound to the caller's `now`.
//! - `database_clock`: the production path ([`ClockSource::Database`], `$1` NULL, every time
//!   judged and recorded by the database's clock), in a database whose clock functions read a
//!   time the test sets ([`testing::fake_database_clock`]). Before each call, the database's
//!   clock is set to the call's `now`, so the suite's explicit times are the database's.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dtx_core::{Branch, Global, GlobalStatus, Timestamp};
use dtx_store::{KvRow, ListFilter, Loaded, NewTransaction, Result, Save, StatusCounts, Store};
use dtx_store_postgres::testing::{self, FakeClock};
use dtx_store_postgres::{ClockSource, PgOptions, PgStore};

mod caller_clock {
    use super::*;

    async fn fresh_store() -> Option<(Arc<dyn Store>, ())> {
        let url = testing::fresh_database("postgres conformance").await?;
        let opts = PgOptions { clock: ClockSource::Caller, ..PgOptions::default() };
        let store = PgStore::open(&url, opts).await.expect("open postgres store");
        Some((Arc::new(store), ()))
    }

    dtx_store::store_test_suite!(fresh_store);
}

mod database_clock {
    use super::*;

    async fn fresh_store() -> Option<(Arc<dyn Store>, ())> {
        let url = testing::fresh_database("postgres conformance (database clock)").await?;
        let clock = testing::fake_database_clock(&url).await.expect("fake database clock");
        let opts = PgOptions { clock: ClockSource::Database, ..PgOptions::default() };
        let store = PgStore::open(&url, opts).await.expect("open postgres store");
        // The store's clock is the one the test sets, or this suite would prove nothing.
        let t = dtx_store::testsuite::T0;
        clock.set(t).await.expect("set the database clock");
        assert_eq!(store.db_now().await.expect("db_now"), t, "the database clock is the test's");
        Some((Arc::new(OnDatabaseClock { store, clock }), ()))
    }

    dtx_store::store_test_suite!(fresh_store);
}

/// A store whose database clock is set to each call's `now` before the call.
struct OnDatabaseClock {
    store: PgStore,
    clock: FakeClock,
}

impl OnDatabaseClock {
    async fn at(&self, now: Timestamp) {
        self.clock.set(now).await.expect("set the database clock");
    }
}

#[async_trait]
impl Store for OnDatabaseClock {
    async fn create(&self, tx: NewTransaction) -> Result<()> {
        // The engine builds a transaction at its `update_time`.
        self.at(tx.global.update_time).await;
        self.store.create(tx).await
    }
    async fn load(&self, gid: &str) -> Result<Option<Loaded>> {
        self.store.load(gid).await
    }
    async fn list(&self, filter: &ListFilter) -> Result<Vec<Global>> {
        self.store.list(filter).await
    }
    fn single_node(&self) -> bool {
        self.store.single_node()
    }

    async fn shared_clock(&self) -> Result<Option<Timestamp>> {
        self.store.shared_clock().await
    }
    async fn claim_due(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Loaded>> {
        self.at(now).await;
        self.store.claim_due(owner, now, lease_until, limit).await
    }
    async fn claim(
        &self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Loaded>> {
        self.at(now).await;
        self.store.claim(gid, owner, now, lease_until).await
    }
    async fn save(&self, save: Save) -> Result<()> {
        self.at(save.now).await;
        self.store.save(save).await
    }
    async fn add_branches(
        &self,
        gid: &str,
        expect: dtx_store::Expect,
        branches: Vec<Branch>,
        now: Timestamp,
    ) -> Result<()> {
        self.at(now).await;
        self.store.add_branches(gid, expect, branches, now).await
    }
    async fn force_stop(&self, gid: &str, reason: &str, now: Timestamp) -> Result<GlobalStatus> {
        self.at(now).await;
        self.store.force_stop(gid, reason, now).await
    }
    async fn reset_next_cron_time(&self, gid: &str, base: Duration, now: Timestamp) -> Result<()> {
        self.at(now).await;
        self.store.reset_next_cron_time(gid, base, now).await
    }
    async fn reset_cron_time(&self, later_than: Timestamp, limit: u32, now: Timestamp) -> Result<u64> {
        self.at(now).await;
        self.store.reset_cron_time(later_than, limit, now).await
    }
    async fn resume_held(&self, host: &str, limit: u32, now: Timestamp) -> Result<u64> {
        self.at(now).await;
        self.store.resume_held(host, limit, now).await
    }
    async fn kv_get(&self, cat: &str, k: &str) -> Result<Option<KvRow>> {
        self.store.kv_get(cat, k).await
    }
    async fn kv_scan(&self, cat: &str, before_id: Option<i64>, limit: u32) -> Result<Vec<KvRow>> {
        self.store.kv_scan(cat, before_id, limit).await
    }
    async fn kv_insert(&self, cat: &str, k: &str, v: &str, now: Timestamp) -> Result<()> {
        self.at(now).await;
        self.store.kv_insert(cat, k, v, now).await
    }
    async fn kv_update(&self, cat: &str, k: &str, v: &str, version: i64, now: Timestamp) -> Result<()> {
        self.at(now).await;
        self.store.kv_update(cat, k, v, version, now).await
    }
    async fn kv_delete(&self, cat: &str, k: &str) -> Result<()> {
        self.store.kv_delete(cat, k).await
    }
    async fn unfinished_counts(&self, now: Timestamp) -> Result<StatusCounts> {
        self.at(now).await;
        self.store.unfinished_counts(now).await
    }
    async fn finished_counts(&self, now: Timestamp) -> Result<Vec<(dtx_core::GlobalStatus, u64)>> {
        self.at(now).await;
        self.store.finished_counts(now).await
    }
    async fn purge_finished(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.store.purge_finished(before, limit).await
    }
}
