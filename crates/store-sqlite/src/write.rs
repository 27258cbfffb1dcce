//! The write operations, each run by the writer inside the batch's transaction (and its own
//! savepoint). They only issue SQL: transaction control belongs to [`crate::writer`].

use std::time::Duration;

use dtx_core::time::duration_millis;
use dtx_core::{Branch, GlobalStatus, Timestamp};
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
        insert_branch(conn, &g.gid, b).await.map_err(|e| map_sqlx("create branch", e))?;
    }
    Ok(())
}

/// Inserts one branch row of `gid`, exactly as given (its id is assigned here).
async fn insert_branch(conn: &mut SqliteConnection, gid: &str, b: &Branch) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO trans_branch_op (gid, branch_id, op, url, payload, status, attempts, \
         last_error, create_time, update_time, finish_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(gid)
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
    .map(|_| ())
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

/// Adds branch rows to a transaction that is `prepared` and not held under a valid lease.
///
/// The check is the conditional UPDATE (it also bumps `update_time`), the inserts follow. No
/// claim can slip in between: every write runs serially on the writer task's one connection,
/// inside the batch's `BEGIN IMMEDIATE` and this request's savepoint, so nothing else writes
/// between the two statements. A failed insert (a duplicate `(gid, branch_id, op)`) rolls the
/// savepoint back: neither the bump nor any of the rows is kept.
pub(crate) async fn add_branches(
    conn: &mut SqliteConnection,
    gid: &str,
    branches: &[Branch],
    now: Timestamp,
) -> Result<()> {
    let checked = sqlx::query(
        "UPDATE trans_global SET update_time = $1 WHERE gid = $2 AND status = 'prepared' \
         AND (owner IS NULL OR lease_until IS NULL OR lease_until < $1)",
    )
    .bind(now.as_millis())
    .bind(gid)
    .execute(&mut *conn)
    .await
    .map_err(|e| map_sqlx("add branches", e))?;
    if checked.rows_affected() == 0 {
        return Err(add_branches_refusal(conn, gid, now).await);
    }
    for b in branches {
        insert_branch(conn, gid, b).await.map_err(|e| match map_sqlx("add branch", e) {
            Error::Conflict(_) => {
                Error::Conflict(format!("branch {}/{} of {gid} already exists", b.branch_id, b.op))
            }
            other => other,
        })?;
    }
    Ok(())
}

/// Why [`add_branches`] matched no row: unknown, not `prepared`, or being processed.
async fn add_branches_refusal(conn: &mut SqliteConnection, gid: &str, now: Timestamp) -> Error {
    let row = sqlx::query("SELECT status, owner, lease_until FROM trans_global WHERE gid = $1")
        .bind(gid)
        .fetch_optional(&mut *conn)
        .await;
    let row = match row {
        Ok(Some(row)) => row,
        Ok(None) => return Error::NotFound(format!("transaction {gid}")),
        Err(e) => return map_sqlx("add branches: check", e),
    };
    let status: Result<String> = rows::get(&row, "status");
    let lease: Result<Option<i64>> = rows::get(&row, "lease_until");
    match (status, lease) {
        (Ok(status), _) if status != GlobalStatus::Prepared.as_str() => {
            Error::Precondition(format!("transaction {gid} is {status}, not prepared"))
        }
        (Ok(_), Ok(lease)) => Error::Precondition(format!(
            "transaction {gid} is being processed (leased until {} ms, now {} ms)",
            lease.unwrap_or_default(),
            now.as_millis()
        )),
        (Err(e), _) | (_, Err(e)) => e,
    }
}

/// Operator stop of a non-final transaction: `failed`, owner cleared (the round holding it is
/// fenced at its next save). The status is read first, inside this request's savepoint; the
/// writer runs nothing else in between, so the UPDATE sees the same row.
pub(crate) async fn force_stop(
    conn: &mut SqliteConnection,
    gid: &str,
    reason: &str,
    now: Timestamp,
) -> Result<GlobalStatus> {
    let row = sqlx::query("SELECT status FROM trans_global WHERE gid = $1")
        .bind(gid)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| map_sqlx("force stop: read", e))?
        .ok_or_else(|| Error::NotFound(format!("transaction {gid}")))?;
    let old: GlobalStatus = rows::parsed(&row, "status", gid)?;
    if old.is_final() {
        return Err(Error::Precondition(format!("transaction {gid} already {old}")));
    }
    let done = sqlx::query(
        "UPDATE trans_global SET status = $1, rollback_time = $2, update_time = $2, \
         rollback_reason = $3, owner = NULL, lease_until = NULL \
         WHERE gid = $4 AND status IN ('prepared', 'submitted', 'aborting')",
    )
    .bind(GlobalStatus::Failed.as_str())
    .bind(now.as_millis())
    .bind(reason)
    .bind(gid)
    .execute(&mut *conn)
    .await
    .map_err(|e| map_sqlx("force stop", e))?;
    if done.rows_affected() != 1 {
        return Err(Error::Internal(anyhow::anyhow!(
            "force stop of {gid}: the row changed between the read and the update"
        )));
    }
    Ok(old)
}

/// Makes one transaction due now with its retry interval back to `base` (any status).
pub(crate) async fn reset_next_cron_time(
    conn: &mut SqliteConnection,
    gid: &str,
    base: Duration,
    now: Timestamp,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE trans_global SET next_cron_time = $1, next_cron_interval = $2, update_time = $1 \
         WHERE gid = $3",
    )
    .bind(now.as_millis())
    .bind(duration_millis(base))
    .bind(gid)
    .execute(&mut *conn)
    .await
    .map_err(|e| map_sqlx("reset next cron time", e))?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("transaction {gid}")));
    }
    Ok(())
}

/// Pulls up to `$3` unfinished rows scheduled after `$2` back to `$1`. The status list must
/// stay textually equal to the partial index `trans_global_due`, so the selection is a range
/// scan of that index.
pub(crate) const RESET_CRON_TIME: &str = concat!(
    "UPDATE trans_global SET next_cron_time = $1, update_time = $1 WHERE id IN (",
    "SELECT id FROM trans_global",
    " WHERE status IN ('prepared', 'submitted', 'aborting') AND next_cron_time > $2",
    " LIMIT $3",
    ")"
);

/// Runs [`RESET_CRON_TIME`]; returns how many rows it moved.
pub(crate) async fn reset_cron_time(
    conn: &mut SqliteConnection,
    later_than: Timestamp,
    limit: u32,
    now: Timestamp,
) -> Result<u64> {
    let done = sqlx::query(RESET_CRON_TIME)
        .bind(now.as_millis())
        .bind(later_than.as_millis())
        .bind(i64::from(limit))
        .execute(&mut *conn)
        .await
        .map_err(|e| map_sqlx("reset cron time", e))?;
    Ok(done.rows_affected())
}

/// Inserts a kv row at version 1; an existing `(cat, k)` fails on the unique index.
pub(crate) async fn kv_insert(
    conn: &mut SqliteConnection,
    cat: &str,
    k: &str,
    v: &str,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO kv (cat, k, v, version, create_time, update_time) VALUES ($1, $2, $3, 1, $4, $4)",
    )
    .bind(cat)
    .bind(k)
    .bind(v)
    .bind(now.as_millis())
    .execute(&mut *conn)
    .await
    .map_err(|e| match map_sqlx("kv insert", e) {
        Error::Conflict(_) => Error::Conflict(format!("kv {cat}/{k} already exists")),
        other => other,
    })?;
    Ok(())
}

/// Compare-and-set: replaces the value only at `version`, which then becomes `version + 1`.
pub(crate) async fn kv_update(
    conn: &mut SqliteConnection,
    cat: &str,
    k: &str,
    v: &str,
    version: i64,
    now: Timestamp,
) -> Result<()> {
    let done = sqlx::query(
        "UPDATE kv SET v = $1, version = version + 1, update_time = $2 \
         WHERE cat = $3 AND k = $4 AND version = $5",
    )
    .bind(v)
    .bind(now.as_millis())
    .bind(cat)
    .bind(k)
    .bind(version)
    .execute(&mut *conn)
    .await
    .map_err(|e| map_sqlx("kv update", e))?;
    if done.rows_affected() > 0 {
        return Ok(());
    }
    // Nothing matched: tell a stale version from a missing row (same savepoint, same state).
    let current: Option<i64> = sqlx::query_scalar("SELECT version FROM kv WHERE cat = $1 AND k = $2")
        .bind(cat)
        .bind(k)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| map_sqlx("kv update: check", e))?;
    Err(match current {
        Some(current) => Error::Conflict(format!("kv {cat}/{k} is at version {current}, not {version}")),
        None => Error::NotFound(format!("kv {cat}/{k}")),
    })
}

/// Deletes a kv row.
pub(crate) async fn kv_delete(conn: &mut SqliteConnection, cat: &str, k: &str) -> Result<()> {
    let done = sqlx::query("DELETE FROM kv WHERE cat = $1 AND k = $2")
        .bind(cat)
        .bind(k)
        .execute(&mut *conn)
        .await
        .map_err(|e| map_sqlx("kv delete", e))?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("kv {cat}/{k}")));
    }
    Ok(())
}
