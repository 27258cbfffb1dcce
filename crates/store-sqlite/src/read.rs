//! Reads, served by the read pool: WAL lets them run beside the writer without blocking it.

use dtx_core::Global;
use dtx_store::sql::{self, ClockSource, Conn};
use dtx_store::{KvRow, ListFilter, Loaded, Result};
use sqlx::SqlitePool;

use crate::conn::{ReadConn, SQL};
use crate::error::map_sqlx;

async fn acquire(pool: &SqlitePool) -> Result<ReadConn> {
    let conn = pool.acquire().await.map_err(|e| map_sqlx("read connection", e))?;
    Ok(ReadConn { conn, clock: ClockSource::Caller, sql: &SQL })
}

/// A transaction and its branches, read in one snapshot (a read transaction).
pub(crate) async fn load(pool: &SqlitePool, gid: &str) -> Result<Option<Loaded>> {
    let mut conn = acquire(pool).await?;
    conn.control("BEGIN").await?;
    let loaded = sql::load_in(&mut conn, gid).await;
    match (loaded, conn.control("COMMIT").await) {
        (Ok(loaded), Ok(())) => Ok(loaded),
        (Err(e), _) | (Ok(_), Err(e)) => {
            // Its transaction may still be open: not fit to go back to the pool.
            conn.conn.close_on_drop();
            Err(e)
        }
    }
}

/// The admin listing: newest first, keyset-paged by id.
pub(crate) async fn list(pool: &SqlitePool, filter: &ListFilter) -> Result<Vec<Global>> {
    sql::list(&mut acquire(pool).await?, filter).await
}

/// One key-value row.
pub(crate) async fn kv_get(pool: &SqlitePool, cat: &str, k: &str) -> Result<Option<KvRow>> {
    sql::kv_get(&mut acquire(pool).await?, cat, k).await
}

/// A category's rows, newest (highest id) first, keyset-paged by id like [`list`].
pub(crate) async fn kv_scan(
    pool: &SqlitePool,
    cat: &str,
    before_id: Option<i64>,
    limit: u32,
) -> Result<Vec<KvRow>> {
    sql::kv_scan(&mut acquire(pool).await?, cat, before_id, limit).await
}

/// The rows per final status, in one pass.
pub(crate) async fn finished_counts(pool: &SqlitePool) -> Result<Vec<(dtx_core::GlobalStatus, u64)>> {
    sql::finished_counts(&mut acquire(pool).await?).await
}

/// Unfinished rows per status and the due backlog, through the due index.
pub(crate) async fn unfinished_counts(
    pool: &SqlitePool,
    now: dtx_core::Timestamp,
) -> Result<dtx_store::StatusCounts> {
    sql::unfinished_counts(&mut acquire(pool).await?, now).await
}
