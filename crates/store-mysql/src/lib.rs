//! `dtx-store-mysql`: the MySQL / MariaDB backend of the dtx [`Store`], for several dtx nodes
//! sharing one database (MySQL 8, or MariaDB 10.6 or newer: both have `SKIP LOCKED`). The same
//! guarantees as the PostgreSQL backend, from the same shared code (`dtx_store::sql`); only the
//! SQL that differs is here.
//!
//! - **Ownership.** A claim picks and locks its rows with `SELECT id … FOR UPDATE SKIP LOCKED`
//!   (concurrent claimers on other nodes skip rows being taken instead of waiting for them),
//!   then sets `owner = $token, lease_until = …` on them in the same transaction (MySQL has no
//!   `UPDATE … RETURNING`, and refuses a sub-select of the table being updated). Every later
//!   write of the owner carries `AND owner = $token`; one that matches nothing fails
//!   [`Error::Fenced`] with nothing written. Row counts are rows *matched*
//!   (`CLIENT_FOUND_ROWS`), so an update writing the values a row already has still counts.
//! - **Time comes from the database clock**, exactly as on PostgreSQL: with
//!   [`ClockSource::Database`] every statement that decides or records ownership reads
//!   `NOW(6)` (fixed for the statement; sessions run in UTC) in epoch milliseconds, judges due
//!   and expired leases by it and stores lease ends and due times as the same distance from it
//!   as the caller computed from its own clock. [`Store::shared_clock`] reads `SYSDATE(6)`, so
//!   the server corrects the engine's clock to the database's.
//! - **Isolation.** Writer sessions run at READ COMMITTED: InnoDB then takes no gap locks, so
//!   claims, inserts and fenced updates of different transactions do not block each other;
//!   every locking read and update sees the latest committed row. `load` reads in a
//!   REPEATABLE READ, read-only snapshot.
//! - **Group commit and pooling, outages, schema**: as on PostgreSQL (`dtx_store::sql::group`):
//!   a few writers commit batches (a failed request rolls its batch back and runs alone), and
//!   answer after the durable
//!   COMMIT; an unreachable database is [`Error::Unavailable`] (503) and the pool reconnects by
//!   itself. `migrations/mysql` (same versions and names as the other backends) is applied by
//!   [`MySqlStore::open`] under sqlx's migration lock.
//!
//! Layout: `write` (the dialect and the claims), `read` (load, list, kv, the clock), `error`
//! (MySQL errors → [`dtx_store::Error`]); `testing` (feature `testing`): fresh databases and
//! throwaway servers for tests.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dtx_core::{Branch, Global, GlobalStatus, Timestamp};
use dtx_store::sql::group::{self, Health};
use dtx_store::write::Writes;
use dtx_store::{
    Created, Error, KvRow, ListFilter, Loaded, NewTransaction, Result, Save, StatusCounts, Store,
};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions};
use sqlx::{Connection, MySqlConnection, MySqlPool};
use tracing::info;

mod error;
mod read;
mod write;

#[cfg(feature = "testing")]
pub mod testing;

pub use dtx_store::sql::ClockSource;

use crate::error::map_sqlx;
use crate::write::{MyConn, SQL};

/// Tuning of a [`MySqlStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MySqlOptions {
    /// Most connections to the database, shared by reads and the writers (default 10).
    pub pool_size: u32,
    /// Writer tasks committing batches in parallel (default 4; at most `pool_size`).
    pub writers: usize,
    /// The most write requests committed together in one transaction (default 128).
    pub max_batch: usize,
    /// How long an operation waits for a connection (including reconnecting to a database that
    /// went away) before it fails `Unavailable` (default 5 s).
    pub acquire_timeout: Duration,
    /// How long [`MySqlStore::open`] waits for the first connection (default 10 s).
    pub connect_timeout: Duration,
    /// Whose clock decides leases and due times (default: the database's).
    pub clock: ClockSource,
}

impl Default for MySqlOptions {
    fn default() -> MySqlOptions {
        MySqlOptions {
            pool_size: 10,
            writers: 4,
            max_batch: 128,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            clock: ClockSource::Database,
        }
    }
}

impl MySqlOptions {
    /// Options for a pool of `pool_size` connections, with writers for about half of them.
    pub fn with_pool_size(pool_size: u32) -> MySqlOptions {
        let pool_size = pool_size.max(1);
        MySqlOptions { pool_size, writers: (pool_size as usize / 2).clamp(1, 8), ..MySqlOptions::default() }
    }
}

/// The MySQL / MariaDB [`Store`]. Cheap to clone; every clone shares the pool and the writers.
/// The writer tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct MySqlStore {
    inner: Arc<Inner>,
}

struct Inner {
    writes: Writes,
    db: Db,
    clock: ClockSource,
}

/// The pool, and whether the database is known to be down.
#[derive(Clone)]
pub(crate) struct Db {
    pool: MySqlPool,
    health: Arc<Health>,
    clock: ClockSource,
}

impl group::Pool for Db {
    type Conn = MyConn;

    async fn acquire(&self) -> Result<MyConn> {
        let conn =
            self.health.acquire(async { self.pool.acquire().await.map_err(|e| map_sqlx("connect", e)) });
        Ok(MyConn { conn: conn.await?, clock: self.clock, sql: &SQL })
    }

    fn mark_down(&self, err: &Error) {
        self.health.mark_down(err);
    }
}

impl group::PooledConn for MyConn {
    fn discard(mut self) {
        self.conn.close_on_drop();
    }
}

impl std::fmt::Debug for MySqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlStore").finish_non_exhaustive()
    }
}

impl MySqlStore {
    /// Connects to the database at `url` (`mysql://user:password@host:port/database`; MariaDB
    /// too), applies the migrations and starts the writer tasks. Must be called inside a Tokio
    /// runtime.
    ///
    /// Fails at once, rather than retrying, when the URL is not a MySQL URL
    /// ([`Error::Internal`]) or the database cannot be reached within
    /// [`MySqlOptions::connect_timeout`] ([`Error::Unavailable`]).
    pub async fn open(url: &str, opts: MySqlOptions) -> Result<MySqlStore> {
        let connect = MySqlConnectOptions::from_str(url)
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("not a valid MySQL URL")))?
            // Epoch conversions of NOW(6) are exact in UTC (no daylight-saving fold).
            .timezone(Some("+00:00".to_owned()));

        // One plain connection first: the pool would keep retrying a refused connection until
        // its acquire timeout, and a wrong address should be reported at start, plainly.
        let mut conn = tokio::time::timeout(opts.connect_timeout, MySqlConnection::connect_with(&connect))
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "MySQL did not answer within {:?} ({}:{})",
                    opts.connect_timeout,
                    connect.get_host(),
                    connect.get_port()
                ))
            })?
            .map_err(|e| map_sqlx("connect", e))?;
        sqlx::migrate!("../../migrations/mysql")
            .run(&mut conn)
            .await
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("mysql migrations")))?;
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the migration connection");
        }

        let pool_size = opts.pool_size.max(1);
        let pool = MySqlPoolOptions::new()
            .max_connections(pool_size)
            .min_connections(0)
            .acquire_timeout(opts.acquire_timeout)
            // No gap locks: claims, inserts and fenced updates of different transactions do not
            // block each other (see the crate docs).
            .after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::raw_sql("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .connect_lazy_with(connect.clone());

        let max_batch = opts.max_batch.max(1);
        let writers = opts.writers.clamp(1, pool_size as usize);
        // A few batches of headroom; beyond that, callers wait (backpressure).
        let (writes, rx) = Writes::channel(max_batch.saturating_mul(4), "mysql");
        let health = Health::new("MySQL", opts.acquire_timeout);
        let db = Db { pool, health, clock: opts.clock };
        group::spawn(db.clone(), rx, writers, max_batch);
        info!(
            host = connect.get_host(),
            port = connect.get_port(),
            database = connect.get_database().unwrap_or_default(),
            pool_size,
            writers,
            max_batch,
            clock = ?opts.clock,
            "mysql store open"
        );
        Ok(MySqlStore { inner: Arc::new(Inner { writes, db, clock: opts.clock }) })
    }

    /// The database clock now, the time leases and due times are judged by.
    pub async fn db_now(&self) -> Result<Timestamp> {
        read::db_now(&self.inner.db).await.map(Timestamp)
    }
}

#[async_trait]
impl Store for MySqlStore {
    async fn create(&self, tx: NewTransaction) -> Result<()> {
        self.inner.writes.create(tx).await
    }

    async fn create_returning_ids(&self, tx: NewTransaction) -> Result<Created> {
        self.inner.writes.create_returning_ids(tx).await
    }

    async fn load(&self, gid: &str) -> Result<Option<Loaded>> {
        read::load(&self.inner.db, gid).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Global>> {
        read::list(&self.inner.db, filter).await
    }

    async fn shared_clock(&self) -> Result<Option<Timestamp>> {
        match self.inner.clock {
            ClockSource::Database => self.db_now().await.map(Some),
            // The caller drives time (tests): its clock is the timeline.
            ClockSource::Caller => Ok(None),
        }
    }

    async fn claim_due(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Loaded>> {
        self.inner.writes.claim_due(owner, now, lease_until, limit).await
    }

    async fn claim(
        &self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Loaded>> {
        self.inner.writes.claim(gid, owner, now, lease_until).await
    }

    async fn save(&self, save: Save) -> Result<()> {
        self.inner.writes.save(save).await
    }

    async fn add_branches(
        &self,
        gid: &str,
        expect: dtx_store::Expect,
        branches: Vec<Branch>,
        now: Timestamp,
    ) -> Result<()> {
        self.inner.writes.add_branches(gid, expect, branches, now).await
    }

    async fn force_stop(&self, gid: &str, reason: &str, now: Timestamp) -> Result<GlobalStatus> {
        self.inner.writes.force_stop(gid, reason, now).await
    }

    async fn reset_next_cron_time(&self, gid: &str, base: Duration, now: Timestamp) -> Result<()> {
        self.inner.writes.reset_next_cron_time(gid, base, now).await
    }

    async fn reset_cron_time(&self, later_than: Timestamp, limit: u32, now: Timestamp) -> Result<u64> {
        self.inner.writes.reset_cron_time(later_than, limit, now).await
    }

    async fn resume_held(&self, host: &str, limit: u32, now: Timestamp) -> Result<u64> {
        self.inner.writes.resume_held(host, limit, now).await
    }

    async fn kv_get(&self, cat: &str, k: &str) -> Result<Option<KvRow>> {
        read::kv_get(&self.inner.db, cat, k).await
    }

    async fn kv_scan(&self, cat: &str, before_id: Option<i64>, limit: u32) -> Result<Vec<KvRow>> {
        read::kv_scan(&self.inner.db, cat, before_id, limit).await
    }

    async fn kv_insert(&self, cat: &str, k: &str, v: &str, now: Timestamp) -> Result<()> {
        self.inner.writes.kv_insert(cat, k, v, now).await
    }

    async fn kv_update(&self, cat: &str, k: &str, v: &str, version: i64, now: Timestamp) -> Result<()> {
        self.inner.writes.kv_update(cat, k, v, version, now).await
    }

    async fn kv_delete(&self, cat: &str, k: &str) -> Result<()> {
        self.inner.writes.kv_delete(cat, k).await
    }

    async fn unfinished_counts(&self, now: Timestamp) -> Result<StatusCounts> {
        read::unfinished_counts(&self.inner.db, now).await
    }

    async fn finished_counts(&self, _now: Timestamp) -> Result<Vec<(GlobalStatus, u64)>> {
        read::finished_counts(&self.inner.db).await
    }

    async fn purge_finished(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.inner.writes.purge_finished(before, limit).await
    }
}

#[cfg(test)]
mod tests;
