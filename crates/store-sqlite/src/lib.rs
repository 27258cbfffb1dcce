//! `dtx-store-sqlite`: the embedded SQLite backend of the dtx [`Store`].
//!
//! - **One writer, group commit.** Every write (create, claim, save, add_branches, the operator
//!   stop and resets, kv writes) is sent to a single thread that owns the only write connection
//!   (synchronous rusqlite, so a statement costs no hand-off to a driver worker thread).
//!   It batches whatever is queued into one `BEGIN IMMEDIATE … COMMIT` (one fsync for many
//!   sagas) and answers each caller after the commit, so `Ok` means durable. A SAVEPOINT per
//!   request keeps one request's `Conflict`, `Fenced` or `Precondition` from affecting the
//!   others (module `writer`). Requests run one at a time, so a check followed by a write
//!   inside one request is atomic.
//! - **Concurrent reads.** `load`, `list`, `kv_get` and `kv_scan` use a separate read-only
//!   pool; WAL lets readers run beside the writer.
//! - **Durability.** `synchronous = FULL` by default: an acknowledged write survives power loss.
//!   [`Synchronous::Normal`] survives a process crash only, and is faster.
//! - **Schema.** `migrations/sqlite` at the workspace root, applied by [`SqliteStore::open`]
//!   (through sqlx, on a connection closed before the writer starts).
//!
//! Layout: `writer` (the batch loop, rusqlite), `conn` (the SQLite dialect and the connections
//! the shared operations of `dtx_store::sql` run on), `read` (load, list, kv; the sqlx read
//! pool), `error` (SQLite errors → [`dtx_store::Error`]). The SQL and the logic of every
//! operation are shared with the other backends (`dtx_store::sql`).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use dtx_core::{Branch, Global, GlobalStatus, Timestamp};
use dtx_store::write::Writes;
use dtx_store::{
    ClaimedThen, Created, Error, KvRow, ListFilter, Loaded, NewTransaction, Result, Save, StatusCounts,
    Store, ThenSave,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};
use tracing::info;

mod conn;
mod error;
mod functions;
mod read;
mod writer;

use crate::error::{map_rusqlite, map_sqlx};

/// How long a connection waits for a lock held by another connection before giving up
/// (then the operation fails `Unavailable`). Only matters if another process opens the file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Compiled statements the writer keeps (rusqlite's `prepare_cached`, an LRU). rusqlite's
/// default is 16, fewer than the 44 statements the writer can run (the 29 shared ones, the
/// multi-row branch inserts, one per row count, SQLite's claims, transaction control). Every
/// kind of transaction at once, sagas of several lengths and the scheduler's claims can use
/// more than 16 in turn, and an LRU too small for a cycle misses every time: each statement
/// compiled again, ~63,000 instructions. (A mixed run of 1,200 sagas, TCCs and messages
/// compiled 91 statements in all: no misses at 16 yet.) 64 holds them all.
const WRITER_STATEMENTS: usize = 64;

/// SQLite's `synchronous` setting for the write connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// fsync the WAL on every commit: an acknowledged write survives power loss.
    #[default]
    Full,
    /// fsync only at checkpoints: survives a crash of the process, not of the machine.
    Normal,
}

impl FromStr for Synchronous {
    type Err = String;

    fn from_str(s: &str) -> Result<Synchronous, String> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Synchronous::Full),
            "normal" => Ok(Synchronous::Normal),
            _ => Err(format!("unknown synchronous mode '{s}' (expected full or normal)")),
        }
    }
}

impl From<Synchronous> for SqliteSynchronous {
    fn from(s: Synchronous) -> SqliteSynchronous {
        match s {
            Synchronous::Full => SqliteSynchronous::Full,
            Synchronous::Normal => SqliteSynchronous::Normal,
        }
    }
}

impl Synchronous {
    /// The value of `PRAGMA synchronous`.
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        }
    }
}

/// Tuning of a [`SqliteStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Durability of each commit (default [`Synchronous::Full`]).
    pub synchronous: Synchronous,
    /// The most write requests committed together in one transaction (default 256).
    pub max_batch: usize,
    /// Connections serving `load` / `list` (default 4).
    pub read_pool_size: u32,
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions { synchronous: Synchronous::Full, max_batch: 256, read_pool_size: 4 }
    }
}

/// The SQLite [`Store`]. Cheap to clone; every clone shares the writer and the read pool.
/// The writer thread stops when the last clone is dropped.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writes: Writes,
    reads: SqlitePool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it if missing) the database at `url` (`sqlite://dtx.db`,
    /// `sqlite:///abs/path.db`), applies the migrations and starts the writer thread.
    /// Must be called inside a Tokio runtime. In-memory databases are not supported: the
    /// writer and the readers must see the same file.
    pub async fn open(url: &str, opts: SqliteOptions) -> Result<SqliteStore> {
        if url.contains(":memory:") || url.contains("mode=memory") {
            return Err(Error::Internal(anyhow::anyhow!("in-memory sqlite is not supported: {url}")));
        }
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|e| map_sqlx("parse sqlite url", e))?
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(false);

        let write_opts = base
            .clone()
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(opts.synchronous.into());
        let mut conn =
            SqliteConnection::connect_with(&write_opts).await.map_err(|e| map_sqlx("open sqlite", e))?;
        sqlx::migrate!("../../migrations/sqlite")
            .run(&mut conn)
            .await
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("sqlite migrations")))?;
        conn.close().await.map_err(|e| map_sqlx("close the migration connection", e))?;
        let writer_conn = open_writer(write_opts.get_filename(), opts.synchronous)?;

        // query_only guards the "reads never write" split: a write on a reader would bypass
        // the writer's batching and contend for the database lock.
        let read_opts = base.pragma("query_only", "ON");
        let reads = SqlitePoolOptions::new()
            .max_connections(opts.read_pool_size.max(1))
            .connect_with(read_opts)
            .await
            .map_err(|e| map_sqlx("open sqlite read pool", e))?;

        let max_batch = opts.max_batch.max(1);
        // A few batches of headroom; beyond that, callers wait (backpressure).
        let (writes, rx) = Writes::channel(max_batch.saturating_mul(4), "sqlite");
        std::thread::Builder::new()
            .name("dtx-sqlite-writer".to_owned())
            .spawn(move || writer::run(writer_conn, rx, max_batch))
            .map_err(|e| Error::Internal(anyhow::Error::new(e).context("start the sqlite writer thread")))?;
        info!(
            url,
            synchronous = ?opts.synchronous,
            max_batch,
            read_pool_size = opts.read_pool_size,
            "sqlite store open"
        );
        Ok(SqliteStore { inner: Arc::new(Inner { writes, reads }) })
    }
}

/// Opens the writer's connection (the file exists: the migrations created it) with the same
/// settings the sqlx connections use: WAL, `synchronous` as asked, the busy timeout, no
/// foreign-key enforcement (the bundled SQLite would otherwise turn it on).
fn open_writer(path: &std::path::Path, synchronous: Synchronous) -> Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)
        .map_err(|e| map_rusqlite("open sqlite writer", e))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| map_rusqlite("sqlite writer: busy_timeout", e))?;
    conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| map_rusqlite("sqlite writer: journal_mode", e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Internal(anyhow::anyhow!("sqlite writer: journal_mode is {mode}, not wal")));
    }
    conn.pragma_update(None, "synchronous", synchronous.pragma())
        .map_err(|e| map_rusqlite("sqlite writer: synchronous", e))?;
    conn.pragma_update(None, "foreign_keys", false)
        .map_err(|e| map_rusqlite("sqlite writer: foreign_keys", e))?;
    functions::register(&conn).map_err(|e| map_rusqlite("sqlite writer: functions", e))?;
    Ok(conn)
}

#[async_trait]
impl Store for SqliteStore {
    /// The file belongs to one node: its writer thread and leases on that node's clock.
    fn single_node(&self) -> bool {
        true
    }

    async fn create(&self, tx: NewTransaction) -> Result<()> {
        self.inner.writes.create(tx).await
    }

    async fn create_returning_ids(&self, tx: NewTransaction) -> Result<Created> {
        self.inner.writes.create_returning_ids(tx).await
    }

    async fn load(&self, gid: &str) -> Result<Option<Loaded>> {
        read::load(&self.inner.reads, gid).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Global>> {
        read::list(&self.inner.reads, filter).await
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

    /// One write: the writer runs the claim and its save in turn, nothing in between.
    async fn claim_then(
        &self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        then: ThenSave,
    ) -> Result<Option<ClaimedThen>> {
        self.inner.writes.claim_then(gid, owner, now, lease_until, then).await
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
        read::kv_get(&self.inner.reads, cat, k).await
    }

    async fn kv_scan(&self, cat: &str, before_id: Option<i64>, limit: u32) -> Result<Vec<KvRow>> {
        read::kv_scan(&self.inner.reads, cat, before_id, limit).await
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
        read::unfinished_counts(&self.inner.reads, now).await
    }

    async fn finished_counts(&self, _now: Timestamp) -> Result<Vec<(GlobalStatus, u64)>> {
        read::finished_counts(&self.inner.reads).await
    }

    async fn purge_finished(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.inner.writes.purge_finished(before, limit).await
    }
}

#[cfg(test)]
mod tests;
