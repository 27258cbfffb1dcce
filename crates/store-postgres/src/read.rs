//! Reads, on pooled connections beside the writers: MVCC lets them run without locks.

use dtx_core::Global;
use dtx_store::sql::group::{Pool, PooledConn};
use dtx_store::sql::{self, Conn};
use dtx_store::{KvRow, ListFilter, Loaded, Result};

use crate::Db;
use crate::error::map_sqlx;

/// A transaction and its branches, read in one snapshot (a repeatable-read, read-only
/// transaction), so a save committing in between cannot pair an old global row with new
/// branches.
pub(crate) async fn load(db: &Db, gid: &str) -> Result<Option<Loaded>> {
    let mut conn = db.acquire().await?;
    conn.control("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY").await?;
    let loaded = sql::load_in(&mut conn, gid).await;
    match (loaded, conn.control("COMMIT").await) {
        (Ok(loaded), Ok(())) => Ok(loaded),
        (Err(e), _) | (Ok(_), Err(e)) => {
            // Its transaction may still be open: not fit to go back to the pool.
            conn.discard();
            Err(e)
        }
    }
}

/// The admin listing: newest first, keyset-paged by id.
pub(crate) async fn list(db: &Db, filter: &ListFilter) -> Result<Vec<Global>> {
    sql::list(&mut db.acquire().await?, filter).await
}

/// One key-value row.
pub(crate) async fn kv_get(db: &Db, cat: &str, k: &str) -> Result<Option<KvRow>> {
    sql::kv_get(&mut db.acquire().await?, cat, k).await
}

/// A category's rows, newest (highest id) first, keyset-paged by id like [`list`].
pub(crate) async fn kv_scan(db: &Db, cat: &str, before_id: Option<i64>, limit: u32) -> Result<Vec<KvRow>> {
    sql::kv_scan(&mut db.acquire().await?, cat, before_id, limit).await
}

/// The database clock, in epoch milliseconds.
pub(crate) async fn db_now(db: &Db) -> Result<i64> {
    let mut conn = db.acquire().await?;
    dtx_store::sql::count_statements(1);
    sqlx::query_scalar("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint")
        .fetch_one(&mut *conn.conn)
        .await
        .map_err(|e| map_sqlx("read the database clock", e))
}

/// The rows per final status, in one pass.
pub(crate) async fn finished_counts(db: &Db) -> Result<Vec<(dtx_core::GlobalStatus, u64)>> {
    sql::finished_counts(&mut db.acquire().await?).await
}

/// Unfinished rows per status and the due backlog, through the due index.
pub(crate) async fn unfinished_counts(db: &Db, now: dtx_core::Timestamp) -> Result<dtx_store::StatusCounts> {
    sql::unfinished_counts(&mut db.acquire().await?, now).await
}
