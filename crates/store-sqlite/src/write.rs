//! The write operations, each run by the writer inside the batch's transaction (and its own
//! savepoint). They only issue SQL: transaction control belongs to [`crate::writer`].

use dtx_core::time::duration_millis;
use dtx_core::{GlobalStatus, Timestamp};
use dtx_store::{Error, LeaseChange, Loaded, NewTransaction, Result, Save};
use sqlx::SqliteConnection;

use crate::error::map_sqlx;
use crate::rows::{self, branch_columns, global_columns};

/// Inserts the global row and its branches. A duplicate gid fails on the unique index
/// (→ `Conflict`); the caller's savepoint then discards the partial insert.
pub(crate) async fn create(conn: &mut SqliteConnection, tx: &NewTransaction) -> Result<()> {
    let g = &tx.global;
    sqlx::query(
        "INSERT INTO trans_global (gid, trans_type, status, protocol, query_prepared, \
         custom_data, options, rollback_reason, result, create_time, update_time, finish_time, \
         rollback_time, next_cron_time, next_cron_interval, owner, lease_until) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(&g.gid)
    .bind(g.trans_type.as_str())
    .bind(g.status.as_str())
    .bind(&g.protocol)
    .bind(&g.query_prepared)
    .bind(&g.custom_data)
    .bind(g.options.to_json())
    .bind(&g.rollback_reason)
    .bind(&g.result)
    .bind(g.create_time.as_millis())
    .bind(g.update_time.as_millis())
    .bind(g.finish_time.map(Timestamp::as_millis))
    .bind(g.rollback_time.map(Timestamp::as_millis))
    .bind(g.next_cron_time.as_millis())
    .bind(duration_millis(g.next_cron_interval))
    .bind(g.owner.as_deref())
    .bind(g.lease_until.map(Timestamp::as_millis))
    .execute(&mut *conn)
    .await
    .map_err(|e| match map_sqlx("create", e) {
        Error::Conflict(_) => Error::Conflict(format!("transaction {} already exists", g.gid)),
        other => other,
    })?;

    for b in &tx.branches {
        sqlx::query(
            "INSERT INTO trans_branch_op (gid, branch_id, op, url, payload, status, attempts, \
             last_error, create_time, update_time, finish_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&g.gid)
        .bind(&b.branch_id)
        .bind(b.op.as_str())
        .bind(&b.url)
        .bind(b.payload.as_slice())
        .bind(b.status.as_str())
        .bind(i64::from(b.attempts))
        .bind(&b.last_error)
        .bind(b.create_time.as_millis())
        .bind(b.update_time.as_millis())
        .bind(b.finish_time.map(Timestamp::as_millis))
        .execute(&mut *conn)
        .await
        .map_err(|e| map_sqlx("create branch", e))?;
    }
    Ok(())
}

/// The claim: one conditional UPDATE, so no two claimers can both match a row. The status list
/// must stay textually equal to the partial index `trans_global_due` for SQLite to use it.
pub(crate) const CLAIM_DUE: &str = concat!(
    "UPDATE trans_global SET owner = $1, lease_until = $2 WHERE id IN (",
    "SELECT id FROM trans_global",
    " WHERE status IN ('prepared', 'submitted', 'aborting') AND next_cron_time <= $3",
    " AND (owner IS NULL OR lease_until IS NULL OR lease_until < $3)",
    " ORDER BY next_cron_time LIMIT $4",
    ") RETURNING ",
    global_columns!()
);

/// Claims up to `limit` due rows, then reads their branches.
pub(crate) async fn claim_due(
    conn: &mut SqliteConnection,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
) -> Result<Vec<Loaded>> {
    let rows = sqlx::query(CLAIM_DUE)
        .bind(owner)
        .bind(lease_until.as_millis())
        .bind(now.as_millis())
        .bind(i64::from(limit))
        .fetch_all(&mut *conn)
        .await
        .map_err(|e| map_sqlx("claim due", e))?;
    let mut globals = rows.iter().map(rows::global).collect::<Result<Vec<_>>>()?;
    if globals.is_empty() {
        return Ok(Vec::new());
    }
    // RETURNING has no defined order: hand out the most overdue first, as selected.
    globals.sort_by_key(|g| (g.next_cron_time, g.id));
    let gids: Vec<&str> = globals.iter().map(|g| g.gid.as_str()).collect();
    let gids = serde_json::to_string(&gids)
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("claim due: gid list")))?;
    // One query for all claimed rows; json_each keeps the statement text static.
    let branch_rows = sqlx::query(concat!(
        "SELECT ",
        branch_columns!(),
        " FROM trans_branch_op WHERE gid IN (SELECT value FROM json_each($1)) ORDER BY id"
    ))
    .bind(gids)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| map_sqlx("claim due: branches", e))?;
    rows::assemble(globals, &branch_rows)
}

/// Claims one transaction if it is not final and has no valid lease (due or not).
pub(crate) async fn claim(
    conn: &mut SqliteConnection,
    gid: &str,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Option<Loaded>> {
    let row = sqlx::query(concat!(
        "UPDATE trans_global SET owner = $1, lease_until = $2",
        " WHERE gid = $3 AND status IN ('prepared', 'submitted', 'aborting')",
        " AND (owner IS NULL OR lease_until IS NULL OR lease_until < $4)",
        " RETURNING ",
        global_columns!()
    ))
    .bind(owner)
    .bind(lease_until.as_millis())
    .bind(gid)
    .bind(now.as_millis())
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| map_sqlx("claim", e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let global = rows::global(&row)?;
    Ok(Some(rows::with_branches(conn, global, "claim: branches").await?))
}

/// The fenced write. The global UPDATE goes first and carries the fence (`owner = $token`):
/// if it matches nothing, the branch updates are never issued and the caller gets `Fenced`.
pub(crate) async fn save(conn: &mut SqliteConnection, save: &Save) -> Result<()> {
    let status = save.status.as_ref().map(|s| s.to.as_str());
    let reason = save.status.as_ref().and_then(|s| s.rollback_reason.as_deref());
    // Renew keeps the owner and moves lease_until; Release clears both and reschedules.
    let (release, lease_until, next_cron_time, next_cron_interval) = match &save.lease {
        LeaseChange::Renew { lease_until } => (false, Some(lease_until.as_millis()), None, None),
        LeaseChange::Release { next_cron_time, next_cron_interval } => {
            (true, None, Some(next_cron_time.as_millis()), Some(duration_millis(*next_cron_interval)))
        }
    };
    let done = sqlx::query(
        "UPDATE trans_global SET update_time = $1, \
         status = COALESCE($2, status), \
         finish_time = CASE WHEN $2 = $3 THEN $1 ELSE finish_time END, \
         rollback_time = CASE WHEN $2 = $4 THEN $1 ELSE rollback_time END, \
         rollback_reason = COALESCE($5, rollback_reason), \
         owner = CASE WHEN $6 THEN NULL ELSE owner END, \
         lease_until = $7, \
         next_cron_time = COALESCE($8, next_cron_time), \
         next_cron_interval = COALESCE($9, next_cron_interval) \
         WHERE gid = $10 AND owner = $11",
    )
    .bind(save.now.as_millis())
    .bind(status)
    .bind(GlobalStatus::Succeed.as_str())
    .bind(GlobalStatus::Failed.as_str())
    .bind(reason)
    .bind(release)
    .bind(lease_until)
    .bind(next_cron_time)
    .bind(next_cron_interval)
    .bind(&save.gid)
    .bind(&save.owner)
    .execute(&mut *conn)
    .await
    .map_err(|e| map_sqlx("save", e))?;
    if done.rows_affected() == 0 {
        return Err(Error::Fenced { gid: save.gid.clone() });
    }

    for b in &save.branches {
        let done = sqlx::query(
            "UPDATE trans_branch_op SET status = $1, attempts = $2, last_error = $3, \
             finish_time = $4, update_time = $5 WHERE gid = $6 AND branch_id = $7 AND op = $8",
        )
        .bind(b.status.as_str())
        .bind(i64::from(b.attempts))
        .bind(&b.last_error)
        .bind(b.finish_time.map(Timestamp::as_millis))
        .bind(save.now.as_millis())
        .bind(&save.gid)
        .bind(&b.branch_id)
        .bind(b.op.as_str())
        .execute(&mut *conn)
        .await
        .map_err(|e| map_sqlx("save branch", e))?;
        // An update naming a branch that does not exist is an engine bug: refuse the whole
        // save rather than silently dropping a result.
        if done.rows_affected() == 0 {
            return Err(Error::NotFound(format!("branch {}/{} of {}", b.branch_id, b.op, save.gid)));
        }
    }
    Ok(())
}
