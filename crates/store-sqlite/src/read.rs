//! Reads, served by the read pool: WAL lets them run beside the writer without blocking it.

use dtx_core::Global;
use dtx_store::{ListFilter, Loaded, Result};
use sqlx::SqlitePool;

use crate::error::map_sqlx;
use crate::rows::{self, global_columns};

/// A transaction and its branches, read in one snapshot (a read transaction).
pub(crate) async fn load(pool: &SqlitePool, gid: &str) -> Result<Option<Loaded>> {
    let mut tx = pool.begin().await.map_err(|e| map_sqlx("load: begin", e))?;
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
pub(crate) async fn list(pool: &SqlitePool, filter: &ListFilter) -> Result<Vec<Global>> {
    // `id < COALESCE(...)` (rather than `$1 IS NULL OR id < $1`) keeps a plain range on the
    // rowid, so a deep page starts where the cursor is instead of scanning from the newest row.
    let rows = sqlx::query(concat!(
        "SELECT ",
        global_columns!(),
        " FROM trans_global",
        " WHERE id < COALESCE($1, 9223372036854775807)",
        " AND ($2 IS NULL OR status = $2)",
        " AND ($3 IS NULL OR trans_type = $3)",
        " AND ($4 IS NULL OR create_time >= $4)",
        " AND ($5 IS NULL OR create_time <= $5)",
        " ORDER BY id DESC LIMIT $6"
    ))
    .bind(filter.before_id)
    .bind(filter.status.map(|s| s.as_str()))
    .bind(filter.trans_type.map(|t| t.as_str()))
    .bind(filter.created_from.map(|t| t.as_millis()))
    .bind(filter.created_to.map(|t| t.as_millis()))
    .bind(i64::from(filter.limit))
    .fetch_all(pool)
    .await
    .map_err(|e| map_sqlx("list", e))?;
    rows.iter().map(rows::global).collect()
}
