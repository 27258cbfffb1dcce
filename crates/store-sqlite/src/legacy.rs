//! Branch rows written before ADR 26 (`trans_branch_op`), moved into their transactions'
//! `branches` column when the store opens: the packing is the store's own format, which a SQL
//! migration cannot write. One transaction, so a crash leaves the rows where they were.

use dtx_core::Branch;
use dtx_store::{Error, Result, packed, rows};

use crate::error::map_rusqlite;

/// Moves every `trans_branch_op` row into its transaction's packed branches (in id order,
/// after any branches the row already has), then drops the table. Nothing to do once it is
/// gone. Returns how many rows moved.
pub(crate) fn move_branch_rows(conn: &mut rusqlite::Connection) -> Result<u64> {
    let what = "move branch rows into their transactions";
    let exists: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'trans_branch_op'",
            [],
            |r| r.get(0),
        )
        .map_err(|e| map_rusqlite(what, e))?;
    if exists == 0 {
        return Ok(0);
    }
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| map_rusqlite(what, e))?;
    let mut moved = 0u64;
    {
        let mut select = tx
            .prepare(
                "SELECT gid, id, branch_id, op, url, payload, status, attempts, last_error, create_time, \
                 update_time, finish_time FROM trans_branch_op ORDER BY gid, id",
            )
            .map_err(|e| map_rusqlite(what, e))?;
        let mut rows = select.query([]).map_err(|e| map_rusqlite(what, e))?;
        let mut update = tx
            .prepare("UPDATE trans_global SET branches = ?2 WHERE gid = ?1")
            .map_err(|e| map_rusqlite(what, e))?;
        let mut current: Option<(String, Vec<Branch>)> = None;
        let mut flush = |gid: &str, branches: &[Branch]| -> Result<()> {
            update
                .execute(rusqlite::params![gid, packed::encode(branches)])
                .map_err(|e| map_rusqlite(what, e))?;
            Ok(())
        };
        while let Some(row) = rows.next().map_err(|e| map_rusqlite(what, e))? {
            let (gid, branch) = rows::branch(&Legacy(row))?;
            moved += 1;
            match &mut current {
                Some((g, list)) if *g == gid => list.push(branch),
                _ => {
                    if let Some((g, list)) = current.take() {
                        flush(&g, &list)?;
                    }
                    current = Some((gid, vec![branch]));
                }
            }
        }
        if let Some((g, list)) = current {
            flush(&g, &list)?;
        }
    }
    tx.execute_batch("DROP TABLE trans_branch_op").map_err(|e| map_rusqlite(what, e))?;
    tx.commit().map_err(|e| map_rusqlite(what, e))?;
    if moved > 0 {
        tracing::info!(moved, "sqlite: branch rows moved into their transactions (ADR 26)");
    }
    Ok(moved)
}

/// A `trans_branch_op` row, read by the shared decoding.
struct Legacy<'a, 'r>(&'a rusqlite::Row<'r>);

impl Legacy<'_, '_> {
    fn get<T: rusqlite::types::FromSql>(&self, column: &'static str) -> Result<T> {
        self.0.get(column).map_err(|e| map_rusqlite("decode a branch row", e))
    }
}

impl rows::Columns for Legacy<'_, '_> {
    fn text(&self, column: &'static str) -> Result<String> {
        self.get(column)
    }
    fn opt_text(&self, column: &'static str) -> Result<Option<String>> {
        self.get(column)
    }
    fn int(&self, column: &'static str) -> Result<i64> {
        self.get(column)
    }
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>> {
        self.get(column)
    }
    fn blob(&self, column: &'static str) -> Result<Vec<u8>> {
        // Rows written as text (any SQLite value) are read as their bytes.
        let value: rusqlite::types::Value = self.get(column)?;
        match value {
            rusqlite::types::Value::Blob(b) => Ok(b),
            rusqlite::types::Value::Text(t) => Ok(t.into_bytes()),
            rusqlite::types::Value::Null => Ok(Vec::new()),
            other => Err(Error::Internal(anyhow::anyhow!("branch payload is {other:?}, not bytes"))),
        }
    }
}
