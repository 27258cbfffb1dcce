//! What MySQL / MariaDB do differently from the shared statements of `dtx_store::sql`: the
//! dialect (anonymous `?` parameters, the clock `NOW(6)` in UTC, `LIMIT` on UPDATE), and the
//! claims, which cannot be one `UPDATE … RETURNING` here: the rows are picked and locked with
//! `SELECT … FOR UPDATE SKIP LOCKED`, then updated and read in the same transaction.

use std::sync::LazyLock;

use dtx_core::{Branch, Global, Timestamp};
use dtx_store::sql::{Dialect, Placeholders, Statements};
use dtx_store::{Error, Result};
use sqlx::MySql;
use sqlx::mysql::MySqlRow;

use crate::error::map_sqlx;

/// The database clock in epoch milliseconds: `NOW(6)` is fixed for the whole statement, taken
/// when it starts (the session's time zone is UTC, so the conversion is exact).
macro_rules! clock {
    () => {
        "CAST(FLOOR(UNIX_TIMESTAMP(NOW(6)) * 1000) AS SIGNED)"
    };
}

/// The statuses a transaction is processed in.
macro_rules! unfinished {
    () => {
        "status IN ('prepared', 'submitted', 'aborting')"
    };
}

/// MySQL's SQL.
pub(crate) struct My;

impl Dialect for My {
    const PLACEHOLDERS: Placeholders = Placeholders::Question;
    const NOW: &'static str = concat!("COALESCE($1, ", clock!(), ")");
    const LOCK: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    /// `LENGTH` counts bytes here; the prefix is compared by characters.
    const GID_PREFIX: &'static str = "LEFT(gid, CHAR_LENGTH($7)) = $7";
    /// MySQL refuses a sub-select of the table being updated; it has `UPDATE … LIMIT` instead.
    const RESET_CRON_TIME: &'static str = concat!(
        "UPDATE trans_global SET next_cron_time = {now}, update_time = $2 WHERE ",
        unfinished!(),
        " AND next_cron_time > {now} + ($3 - $2) LIMIT $4"
    );
    /// The same restriction as `RESET_CRON_TIME`.
    const RESUME_HELD: &'static str = concat!(
        "UPDATE trans_global SET next_cron_time = {now}, held_host = '', update_time = $2 WHERE held_host = $3 AND ",
        unfinished!(),
        " AND (owner IS NULL OR lease_until IS NULL OR lease_until < {now}) LIMIT $4"
    );
}

/// The statements, rendered once.
pub(crate) static SQL: LazyLock<Statements> = LazyLock::new(Statements::new::<My>);

dtx_store::sqlx_conn!(MyConn, MySql, MySqlRow, map_sqlx, {
    async fn branches_of(&mut self, gids: &[&str]) -> Result<Vec<(String, Branch)>> {
        if gids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            concat!(
                "SELECT ",
                dtx_store::branch_columns!(),
                " FROM trans_branch_op WHERE gid IN ({}) ORDER BY id"
            ),
            marks(padded_len(gids.len()))
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for gid in padded(gids) {
            query = query.bind(*gid);
        }
        dtx_store::sql::count_statements(1);
        let rows = query.fetch_all(&mut *self.conn).await.map_err(|e| map_sqlx("claim due: branches", e))?;
        rows.iter().map(|row| dtx_store::rows::branch(&SqlxRow(row))).collect()
    }

    async fn claim_due_rows(
        &mut self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<(Global, bool)>> {
        let fixed = self.clock.fixed(now);
        // Concurrent claimers on any number of nodes skip the rows another one is taking.
        dtx_store::sql::count_statements(1);
        // `taken_over`: the row had an owner (its lease expired).
        let picked: Vec<(i64, i64)> = sqlx::query_as(concat!(
            "SELECT id, CASE WHEN owner IS NULL THEN 0 ELSE 1 END FROM trans_global WHERE ",
            unfinished!(),
            " AND next_cron_time <= COALESCE(?, ",
            clock!(),
            ") AND (owner IS NULL OR lease_until IS NULL OR lease_until < COALESCE(?, ",
            clock!(),
            ")) ORDER BY next_cron_time LIMIT ? FOR UPDATE SKIP LOCKED"
        ))
        .bind(fixed)
        .bind(fixed)
        .bind(i64::from(limit))
        .fetch_all(&mut *self.conn)
        .await
        .map_err(|e| map_sqlx("claim due", e))?;
        let ids: Vec<i64> = picked.iter().map(|(id, _)| *id).collect();
        let taken: std::collections::HashSet<i64> =
            picked.iter().filter(|(_, t)| *t != 0).map(|(id, _)| *id).collect();
        let rows = self.take(&ids, owner, now, lease_until, "claim due").await?;
        Ok(rows
            .into_iter()
            .map(|g| {
                let owned = taken.contains(&g.id);
                (g, owned)
            })
            .collect())
    }

    async fn claim_row(
        &mut self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Global>> {
        let fixed = self.clock.fixed(now);
        // A row locked by another transaction is waited for, then judged as it now is.
        dtx_store::sql::count_statements(1);
        let ids: Vec<i64> = sqlx::query_scalar(concat!(
            "SELECT id FROM trans_global WHERE gid = ? AND ",
            unfinished!(),
            " AND (owner IS NULL OR lease_until IS NULL OR lease_until < COALESCE(?, ",
            clock!(),
            ")) FOR UPDATE"
        ))
        .bind(gid)
        .bind(fixed)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(|e| map_sqlx("claim", e))?;
        Ok(self.take(&ids, owner, now, lease_until, "claim").await?.pop())
    }
});

impl MyConn {
    /// Leases the rows `ids` (locked by this transaction) to `owner` and reads them back.
    async fn take(
        &mut self,
        ids: &[i64],
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        what: &'static str,
    ) -> Result<Vec<Global>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let update = format!(
            concat!(
                "UPDATE trans_global SET owner = ?, lease_until = COALESCE(?, ",
                clock!(),
                ") + (? - ?) WHERE id IN ({})"
            ),
            marks(padded_len(ids.len()))
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(update))
            .bind(owner)
            .bind(self.clock.fixed(now))
            .bind(lease_until.as_millis())
            .bind(now.as_millis());
        for id in padded(ids) {
            query = query.bind(*id);
        }
        dtx_store::sql::count_statements(1);
        let done = query.execute(&mut *self.conn).await.map_err(|e| map_sqlx(what, e))?;
        if done.rows_affected() != ids.len() as u64 {
            return Err(Error::Internal(anyhow::anyhow!("{what}: a locked row changed under its lock")));
        }
        let select = format!(
            concat!("SELECT ", dtx_store::global_columns!(), " FROM trans_global WHERE id IN ({})"),
            marks(padded_len(ids.len()))
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(select));
        for id in padded(ids) {
            query = query.bind(*id);
        }
        dtx_store::sql::count_statements(1);
        let rows = query.fetch_all(&mut *self.conn).await.map_err(|e| map_sqlx(what, e))?;
        rows.iter().map(|row| dtx_store::rows::global(&SqlxRow(row))).collect()
    }
}

/// The length an `IN` list of `n` values is padded to: the next power of two, so a handful of
/// statement texts cover every list and stay prepared in the connection's statement cache. An
/// unprepared statement ends with a COM_STMT_CLOSE, which has no reply: the next command then
/// waits in the socket (sqlx leaves Nagle's algorithm on) for the server's delayed ACK, which
/// made each claim take tens of milliseconds.
pub(crate) fn padded_len(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

/// `items`, the last one repeated up to [`padded_len`]: a value listed twice in `IN (…)`
/// matches its rows once.
pub(crate) fn padded<T>(items: &[T]) -> impl Iterator<Item = &T> {
    let pad = padded_len(items.len()) - items.len();
    items.iter().chain(items.last().into_iter().cycle().take(pad))
}

/// `?, ?, …` (`n` of them): the parameters of an `IN` list.
fn marks(n: usize) -> String {
    let mut s = "?, ".repeat(n);
    s.truncate(s.len().saturating_sub(2));
    s
}
