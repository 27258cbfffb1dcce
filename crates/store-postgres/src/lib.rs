//! `dtx-store-postgres`: the PostgreSQL backend of the dtx [`Store`], for several dtx nodes
//! sharing one database (PostgreSQL, or a PostgreSQL-compatible distributed database).
//!
//! - **Ownership.** A claim is one statement: `UPDATE trans_global SET owner = $token,
//!   lease_until = … WHERE id IN (SELECT id … FOR UPDATE SKIP LOCKED) RETURNING …`. Whoever's
//!   UPDATE took a row owns it; concurrent claimers on other nodes skip rows being taken instead
//!   of waiting for them. Every later write of the owner carries `AND owner = $token`, and one
//!   that matches nothing fails [`Error::Fenced`] with nothing written, exactly as on SQLite.
//! - **Time comes from the database clock.** Node clocks drift; the database's clock is the
//!   one clock every node sees. With [`ClockSource::Database`] (the default, and what the server
//!   uses) each statement that decides or records ownership reads `db_now` from PostgreSQL
//!   (`statement_timestamp()`, in epoch milliseconds) and:
//!   - judges "due" and "lease expired" by it: `next_cron_time <= db_now`,
//!     `lease_until < db_now`, never by the `now` the engine passed in;
//!   - stores every lease end or due time the engine computed from its own clock as the same
//!     distance from `db_now`: `lease_until = db_now + ($lease_until - $now)`,
//!     `next_cron_time = db_now + ($next_cron_time - $now)` (for a create, `$now` is the row's
//!     `update_time`). A node whose clock is minutes off therefore still leases for exactly its
//!     lease duration and schedules retries exactly its interval ahead, on the shared timeline.
//!
//!   So `next_cron_time` and `lease_until` are database times, exactly. The other times
//!   (`create_time`, `update_time`, `finish_time`, ...) and timeouts (`create_time` +
//!   `timeout_to_fail`) come from the node, whose clock the server corrects to this one
//!   ([`Store::shared_clock`], re-measured every 30 s): they are on the database's timeline too,
//!   to within the measurement's few milliseconds.
//!
//!   [`ClockSource::Caller`] trusts the caller's `now` instead (the SQL is the same, with the
//!   database clock replaced by the caller's): the conformance suite uses it to drive time
//!   explicitly, as it does on SQLite. It is not safe for several nodes.
//! - **Group commit and pooling.** One connection pool ([`PgOptions::pool_size`]) serves reads
//!   and a few writer tasks. Writes are queued; a free writer takes everything queued at that
//!   moment and commits it as one transaction (a request that fails rolls the batch back and
//!   runs alone; the others are tried again), and every caller's reply waits for that commit
//!   (`dtx_store::sql::group`). Several writers run at once, as PostgreSQL allows.
//! - **Outages.** A lost connection, a server shutting down or restarting, or no connection
//!   within [`PgOptions::acquire_timeout`] is [`Error::Unavailable`] (the API answers 503); a
//!   failed batch keeps nothing. The pool reconnects by itself when the database is back, so a
//!   node carries on without a restart. [`PgStore::open`] itself fails at once if the database
//!   cannot be reached, so a bad URL is reported at start.
//! - **Schema.** `migrations/postgres` at the workspace root (same versions and names as
//!   `migrations/sqlite`), applied by [`PgStore::open`] under sqlx's migration lock, so nodes
//!   starting together do not race.
//!
//! Layout: `writer` (the batch loops), `write` (the SQL of each write), `read` (load, list, kv),
//! `rows` (row decoding, the clock expression), `error` (PostgreSQL errors →
//! [`dtx_store::Error`]); `testing` (feature `testing`): fresh databases and throwaway clusters
//! for tests.

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
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool};
use tracing::info;

mod error;
mod multi_row;
mod read;
mod write;

#[cfg(feature = "testing")]
pub mod testing;

pub use dtx_store::sql::ClockSource;

use crate::error::map_sqlx;
use crate::write::{PgConn, SQL};

/// Tuning of a [`PgStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// Most connections to the database, shared by reads and the writers (default 10).
    pub pool_size: u32,
    /// Writer tasks committing batches in parallel (default 2; at most `pool_size`). A batch's
    /// creates and saves cost one statement whatever its size, so fewer, larger batches cost
    /// PostgreSQL less CPU per transaction (ADR 12); two keep one batch running while the
    /// other waits on its commit or on a row lock.
    pub writers: usize,
    /// The most write requests committed together in one transaction (default 128).
    pub max_batch: usize,
    /// How long an operation waits for a connection (including reconnecting to a database that
    /// went away) before it fails `Unavailable` (default 5 s).
    pub acquire_timeout: Duration,
    /// How long [`PgStore::open`] waits for the first connection (default 10 s).
    pub connect_timeout: Duration,
    /// Whose clock decides leases and due times (default: the database's).
    pub clock: ClockSource,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            pool_size: 10,
            writers: 2,
            max_batch: 128,
            acquire_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            clock: ClockSource::Database,
        }
    }
}

impl PgOptions {
    /// Options for a pool of `pool_size` connections: two writers (one if the pool has fewer
    /// than four connections, so that reads keep at least half of it).
    pub fn with_pool_size(pool_size: u32) -> PgOptions {
        let pool_size = pool_size.max(1);
        PgOptions { pool_size, writers: (pool_size as usize / 2).clamp(1, 2), ..PgOptions::default() }
    }
}

/// The PostgreSQL [`Store`]. Cheap to clone; every clone shares the pool and the writers.
/// The writer tasks stop when the last clone is dropped.
#[derive(Clone)]
pub struct PgStore {
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
    pool: PgPool,
    health: Arc<Health>,
    clock: ClockSource,
}

impl group::Pool for Db {
    type Conn = PgConn;

    async fn acquire(&self) -> Result<PgConn> {
        let conn =
            self.health.acquire(async { self.pool.acquire().await.map_err(|e| map_sqlx("connect", e)) });
        Ok(PgConn { conn: conn.await?, clock: self.clock, sql: &SQL })
    }

    fn mark_down(&self, err: &Error) {
        self.health.mark_down(err);
    }
}

impl group::PooledConn for PgConn {
    fn discard(mut self) {
        self.conn.close_on_drop();
    }
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`, or
    /// `postgresql://…`), applies the migrations and starts the writer tasks. Must be called
    /// inside a Tokio runtime.
    ///
    /// Fails at once, rather than retrying, when the URL is not a PostgreSQL URL
    /// ([`Error::Internal`]) or the database cannot be reached within
    /// [`PgOptions::connect_timeout`] ([`Error::Unavailable`]).
    pub async fn open(url: &str, opts: PgOptions) -> Result<PgStore> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("not a valid PostgreSQL URL")))?
            .application_name("dtx");

        // One plain connection first: the pool would keep retrying a refused connection until
        // its acquire timeout, and a wrong address should be reported at start, plainly.
        let mut conn = tokio::time::timeout(opts.connect_timeout, PgConnection::connect_with(&connect))
            .await
            .map_err(|_| {
                Error::Unavailable(format!(
                    "PostgreSQL did not answer within {:?} ({}:{})",
                    opts.connect_timeout,
                    connect.get_host(),
                    connect.get_port()
                ))
            })?
            .map_err(|e| map_sqlx("connect", e))?;
        sqlx::migrate!("../../migrations/postgres")
            .run(&mut conn)
            .await
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("postgres migrations")))?;
        if let Err(e) = conn.close().await {
            tracing::debug!(error = %e, "closing the migration connection");
        }

        let pool_size = opts.pool_size.max(1);
        let pool = PgPoolOptions::new()
            .max_connections(pool_size)
            .min_connections(0)
            .acquire_timeout(opts.acquire_timeout)
            .connect_lazy_with(connect.clone());

        let max_batch = opts.max_batch.max(1);
        let writers = opts.writers.clamp(1, pool_size as usize);
        // A few batches of headroom; beyond that, callers wait (backpressure).
        let (writes, rx) = Writes::channel(max_batch.saturating_mul(4), "postgres");
        let health = Health::new("PostgreSQL", opts.acquire_timeout);
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
            "postgres store open"
        );
        Ok(PgStore { inner: Arc::new(Inner { writes, db, clock: opts.clock }) })
    }

    /// The database clock now, the time leases and due times are judged by.
    pub async fn db_now(&self) -> Result<Timestamp> {
        read::db_now(&self.inner.db).await.map(Timestamp)
    }
}

#[async_trait]
impl Store for PgStore {
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
