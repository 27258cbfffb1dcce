//! Reads, on pooled connections beside the writers: MVCC lets them run without locks.

use dtx_core::Global;
use dtx_core::Timestamp;
use dtx_store::{KvRow, ListFilter, Loaded, Result, StatusCounts};

use crate::Db;
use crate::error::map_sqlx;
use crate::rows::{self, global_columns, kv_columns};

/// A transaction and its branches, read in one snapshot (a repeatable-read, read-only
/// transaction), so a save committing in between cannot pair an old global row with new
/// branches.
pub(crate) async fn load(db: &Db, gid: &str) -> Result<Option<Loaded>> {
    let mut conn = db.acquire().await?;
    let mut tx = sqlx::Connection::begin_with(&mut *conn, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| map_sqlx("load: begin", e))?;
    let row = sqlx::query(concat!("SELECT ", global_columns!(), " FROM trans_global WHERE gid = $1"))
        .bind(gid)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| map_sqlx("load global", e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let global = rows::global(&row)?;
    let loaded = rows::with_branches(&mut tx, global, "load branches").await?;
    tx.commit().await.map_err(|e| map_sqlx("load: commit", e))?;
    Ok(Some(loaded))
}

/// The admin listing: newest first, keyset-paged by id.
pub(crate) async fn list(db: &Db, filter: &ListFilter) -> Result<Vec<Global>> {
    let mut conn = db.acquire().await?;
    // `id < COALESCE(...)` keeps a plain range on the primary key, so a deep page starts where
    // the cursor is instead of scanning from the newest row.
    let rows = sqlx::query(concat!(
        "SELECT ",
        global_columns!(),
        " FROM trans_global",
        " WHERE id < COALESCE($1, 9223372036854775807)",
        " AND ($2::text IS NULL OR status = $2)",
        " AND ($3::text IS NULL OR trans_type = $3)",
        " AND ($4::bigint IS NULL OR create_time >= $4)",
        " AND ($5::bigint IS NULL OR create_time <= $5)",
        " AND ($7::text IS NULL OR starts_with(gid, $7))",
        " ORDER BY id DESC LIMIT $6"
    ))
    .bind(filter.before_id)
    .bind(filter.status.map(|s| s.as_str()))
    .bind(filter.trans_type.map(|t| t.as_str()))
    .bind(filter.created_from.map(|t| t.as_millis()))
    .bind(filter.created_to.map(|t| t.as_millis()))
    .bind(i64::from(filter.limit))
    .bind(filter.gid_prefix.as_deref())
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| map_sqlx("list", e))?;
    rows.iter().map(rows::global).collect()
}

/// One key-value row.
pub(crate) async fn kv_get(db: &Db, cat: &str, k: &str) -> Result<Option<KvRow>> {
    let mut conn = db.acquire().await?;
    let row = sqlx::query(concat!("SELECT ", kv_columns!(), " FROM kv WHERE cat = $1 AND k = $2"))
        .bind(cat)
        .bind(k)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| map_sqlx("kv get", e))?;
    row.as_ref().map(rows::kv).transpose()
}

/// A category's rows, newest (highest id) first, keyset-paged by id like [`list`].
pub(crate) async fn kv_scan(db: &Db, cat: &str, before_id: Option<i64>, limit: u32) -> Result<Vec<KvRow>> {
    let mut conn = db.acquire().await?;
    let rows = sqlx::query(concat!(
        "SELECT ",
        kv_columns!(),
        " FROM kv WHERE cat = $1 AND id < COALESCE($2, 9223372036854775807)",
        " ORDER BY id DESC LIMIT $3"
    ))
    .bind(cat)
    .bind(before_id)
    .bind(i64::from(limit))
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| map_sqlx("kv scan", e))?;
    rows.iter().map(rows::kv).collect()
}

/// The database clock, in epoch milliseconds.
pub(crate) async fn db_now(db: &Db) -> Result<i64> {
    let mut conn = db.acquire().await?;
    sqlx::query_scalar("SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint")
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| map_sqlx("read the database clock", e))
}

/// Rows per status and the due backlog, in one scan. `now` is the caller's (corrected) clock.
pub(crate) async fn status_counts(db: &Db, now: Timestamp) -> Result<StatusCounts> {
    let mut conn = db.acquire().await?;
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT status, COUNT(*), COALESCE(SUM(CASE WHEN status IN ('prepared', 'submitted', 'aborting') \
         AND next_cron_time <= $1 AND (owner IS NULL OR lease_until IS NULL OR lease_until < $1) \
         THEN 1 ELSE 0 END), 0)::bigint FROM trans_global GROUP BY status",
    )
    .bind(now.as_millis())
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| map_sqlx("status counts", e))?;
    dtx_store::rows::status_counts(rows)
}
