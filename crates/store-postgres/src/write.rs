//! What PostgreSQL does differently from the shared statements of `dtx_store::sql`: its
//! dialect (the database clock, row locks) and the branch writes of a transaction as one
//! statement each (`UNNEST` over arrays) instead of one per row.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use dtx_core::{Branch, Timestamp};
use dtx_store::sql::{ClockSource, Dialect, Placeholders, Statements};
use dtx_store::{BranchUpdate, NewTransaction, Result, Save};
use sqlx::Postgres;
use sqlx::postgres::PgRow;

use crate::error::map_sqlx;

/// PostgreSQL's SQL.
pub(crate) struct Pg;

impl Dialect for Pg {
    const PLACEHOLDERS: Placeholders = Placeholders::Dollar;
    /// `statement_timestamp()`: one value for the whole statement, taken when it starts, unlike
    /// `now()` which is frozen at the start of a group-commit batch.
    const NOW: &'static str =
        "COALESCE($1::bigint, floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint)";
    const LOCK: &'static str = " FOR UPDATE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    /// Valid here, but unused: `branches_of` binds a text array instead.
    const BRANCHES_OF_JSON: &'static str = concat!(
        "SELECT ",
        dtx_store::branch_columns!(),
        " FROM trans_branch_op WHERE gid IN (SELECT jsonb_array_elements_text($1::jsonb)) ORDER BY id"
    );
}

/// The statements, rendered once.
pub(crate) static SQL: LazyLock<Statements> = LazyLock::new(Statements::new::<Pg>);

dtx_store::sqlx_conn!(PgConn, Postgres, PgRow, map_sqlx, {
    async fn branches_of(&mut self, gids: &[&str]) -> Result<Vec<(String, Branch)>> {
        // A text array: the planner knows its size, unlike a JSON array's elements.
        dtx_store::sql::count_statements(1);
        let rows = sqlx::query(concat!(
            "SELECT ",
            dtx_store::branch_columns!(),
            " FROM trans_branch_op WHERE gid = ANY($1) ORDER BY id"
        ))
        .bind(gids)
        .fetch_all(&mut *self.conn)
        .await
        .map_err(|e| map_sqlx("claim due: branches", e))?;
        rows.iter().map(|row| dtx_store::rows::branch(&SqlxRow(row))).collect()
    }

    async fn insert_branches(&mut self, gid: &str, branches: &[Branch]) -> Result<()> {
        insert_branches(&mut self.conn, gid, branches, None).await
    }

    /// The insert and the touch (by gid) in one statement (ADR 12).
    async fn register_branches(
        &mut self,
        gid: &str,
        _id: i64,
        branches: &[Branch],
        now: Timestamp,
    ) -> Result<()> {
        insert_branches(&mut self.conn, gid, branches, Some(now)).await
    }

    async fn update_branches(&mut self, gid: &str, now: Timestamp, updates: &[BranchUpdate]) -> Result<()> {
        update_branches(&mut self.conn, gid, now, updates).await
    }

    const MULTI_ROW: bool = true;

    /// The multi-row statement joins its arrays with the tables by gid. Its plan is made once
    /// per connection and kept; made while a table is new and small (or not yet analyzed), it
    /// would scan the table whole, and go on doing so as the table grows, until the next
    /// ANALYZE. Only the unique indexes' nested loops are sensible at any size, so the batch's
    /// transaction rules out the others (one round trip with the BEGIN).
    const MULTI_ROW_BEGIN: &'static str = "BEGIN; SET LOCAL enable_seqscan = off; \
         SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

    async fn write_rows(&mut self, creates: &[&NewTransaction], saves: &[&Save]) -> Result<bool> {
        crate::multi_row::write_rows(&mut self.conn, self.clock == ClockSource::Caller, creates, saves).await
    }
});

/// The INSERT of branch rows of `$1` (in the order given: `WITH ORDINALITY … ORDER BY`).
macro_rules! insert_branches_sql {
    () => {
        "INSERT INTO trans_branch_op (gid, branch_id, op, url, payload, status, attempts, \
         last_error, create_time, update_time, finish_time) \
         SELECT $1, b.branch_id, b.op, b.url, b.payload, b.status, b.attempts, b.last_error, \
         b.create_time, b.update_time, b.finish_time \
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::bigint[], \
         $8::text[], $9::bigint[], $10::bigint[], $11::bigint[]) WITH ORDINALITY \
         AS b(branch_id, op, url, payload, status, attempts, last_error, create_time, update_time, \
         finish_time, ord) ORDER BY b.ord"
    };
}

/// Inserts branch rows of `gid`, exactly as given, in one statement; their ids are assigned in
/// the order given. With `touch`, the same statement also sets the transaction's
/// `update_time` to it (a registration: one statement instead of two).
async fn insert_branches(
    conn: &mut sqlx::PgConnection,
    gid: &str,
    branches: &[Branch],
    touch: Option<Timestamp>,
) -> Result<()> {
    if branches.is_empty() && touch.is_none() {
        return Ok(());
    }
    let branch_ids: Vec<&str> = branches.iter().map(|b| b.branch_id.as_str()).collect();
    let ops: Vec<&str> = branches.iter().map(|b| b.op.as_str()).collect();
    let urls: Vec<&str> = branches.iter().map(|b| b.url.as_str()).collect();
    let payloads: Vec<&[u8]> = branches.iter().map(|b| b.payload.as_slice()).collect();
    let statuses: Vec<&str> = branches.iter().map(|b| b.status.as_str()).collect();
    let attempts: Vec<i64> = branches.iter().map(|b| i64::from(b.attempts)).collect();
    let errors: Vec<&str> = branches.iter().map(|b| b.last_error.as_str()).collect();
    let created: Vec<i64> = branches.iter().map(|b| b.create_time.as_millis()).collect();
    let updated: Vec<i64> = branches.iter().map(|b| b.update_time.as_millis()).collect();
    let finished: Vec<Option<i64>> =
        branches.iter().map(|b| b.finish_time.map(Timestamp::as_millis)).collect();
    dtx_store::sql::count_statements(1);
    let sql = match touch {
        None => insert_branches_sql!(),
        Some(_) => concat!(
            "WITH inserted AS (",
            insert_branches_sql!(),
            " RETURNING 1) UPDATE trans_global SET update_time = $12 WHERE gid = $1"
        ),
    };
    let mut query = sqlx::query(sql)
        .bind(gid)
        .bind(branch_ids)
        .bind(ops)
        .bind(urls)
        .bind(payloads)
        .bind(statuses)
        .bind(attempts)
        .bind(errors)
        .bind(created)
        .bind(updated)
        .bind(finished);
    if let Some(now) = touch {
        query = query.bind(now.as_millis());
    }
    query.execute(&mut *conn).await.map(|_| ()).map_err(|e| {
        dtx_store::sql::branch_conflict(map_sqlx("insert branches", e), gid, "a branch (branch_id, op) given")
    })
}

/// A save's branch updates with only the last one of each row (one statement cannot update a
/// row twice; the last one wins, as if applied in order), in the order given.
pub(crate) fn last_per_row(updates: &[BranchUpdate]) -> Vec<&BranchUpdate> {
    let mut seen = BTreeSet::new();
    let mut last: Vec<&BranchUpdate> =
        updates.iter().rev().filter(|b| seen.insert((b.branch_id.as_str(), b.op.as_str()))).collect();
    last.reverse();
    last
}

/// The branch half of a save, in one statement. Two updates of one row in a save: the last one
/// wins, as if applied in order.
async fn update_branches(
    conn: &mut sqlx::PgConnection,
    gid: &str,
    now: Timestamp,
    updates: &[BranchUpdate],
) -> Result<()> {
    let updates = last_per_row(updates);
    let branch_ids: Vec<&str> = updates.iter().map(|b| b.branch_id.as_str()).collect();
    let ops: Vec<&str> = updates.iter().map(|b| b.op.as_str()).collect();
    let statuses: Vec<&str> = updates.iter().map(|b| b.status.as_str()).collect();
    let attempts: Vec<i64> = updates.iter().map(|b| i64::from(b.attempts)).collect();
    let errors: Vec<&str> = updates.iter().map(|b| b.last_error.as_str()).collect();
    let finished: Vec<Option<i64>> =
        updates.iter().map(|b| b.finish_time.map(Timestamp::as_millis)).collect();
    dtx_store::sql::count_statements(1);
    let found: Vec<(String, String)> = sqlx::query_as(
        "UPDATE trans_branch_op AS b SET status = u.status, attempts = u.attempts, \
         last_error = u.last_error, finish_time = u.finish_time, update_time = $2 \
         FROM UNNEST($3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::bigint[]) \
         AS u(branch_id, op, status, attempts, last_error, finish_time) \
         WHERE b.gid = $1 AND b.branch_id = u.branch_id AND b.op = u.op \
         RETURNING b.branch_id, b.op",
    )
    .bind(gid)
    .bind(now.as_millis())
    .bind(&branch_ids)
    .bind(&ops)
    .bind(statuses)
    .bind(attempts)
    .bind(errors)
    .bind(finished)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| map_sqlx("save branches", e))?;
    if found.len() == updates.len() {
        return Ok(());
    }
    let found: BTreeSet<(&str, &str)> = found.iter().map(|(b, o)| (b.as_str(), o.as_str())).collect();
    let missing = branch_ids.iter().zip(&ops).find(|(id, op)| !found.contains(&(**id, **op)));
    let (id, op) = missing.map(|(id, op)| (*id, *op)).unwrap_or_default();
    Err(dtx_store::sql::missing_branch(gid, id, op))
}
