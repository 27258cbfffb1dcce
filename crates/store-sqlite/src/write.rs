//! The write operations, each run by the writer inside the batch's transaction (and its own
//! savepoint), synchronously on its rusqlite connection. They only issue SQL: transaction
//! control belongs to [`crate::writer`]. Every statement goes through `prepare_cached`, so a
//! statement is compiled once per connection.

use std::time::Duration;

use dtx_core::time::duration_millis;
use dtx_core::{Branch, GlobalStatus, Timestamp};
use dtx_store::rows::Columns;
use dtx_store::{Error, LeaseChange, Loaded, NewTransaction, Result, Save};
use rusqlite::{Connection, params};

use crate::error::map_rusqlite;

use crate::rows::{self, Cols, branch_columns, global_columns};

/// Runs one statement; returns how many rows it changed.
fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// Inserts the global row and its branches. A duplicate gid fails on the unique index
/// (→ `Conflict`); the caller's savepoint then discards the partial insert.
pub(crate) fn create(conn: &Connection, tx: &NewTransaction) -> Result<()> {
    let g = &tx.global;
    execute(
        conn,
        "INSERT INTO trans_global (gid, trans_type, status, protocol, query_prepared, \
         custom_data, options, rollback_reason, result, create_time, update_time, finish_time, \
         rollback_time, next_cron_time, next_cron_interval, owner, lease_until) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
        params![
            g.gid,
            g.trans_type.as_str(),
            g.status.as_str(),
            g.protocol,
            g.query_prepared,
            g.custom_data,
            g.options.to_json(),
            g.rollback_reason,
            g.result,
            g.create_time.as_millis(),
            g.update_time.as_millis(),
            g.finish_time.map(Timestamp::as_millis),
            g.rollback_time.map(Timestamp::as_millis),
            g.next_cron_time.as_millis(),
            duration_millis(g.next_cron_interval),
            g.owner.as_deref(),
            g.lease_until.map(Timestamp::as_millis),
        ],
    )
    .map_err(|e| match map_rusqlite("create", e) {
        Error::Conflict(_) => Error::Conflict(format!("transaction {} already exists", g.gid)),
        other => other,
    })?;

    for b in &tx.branches {
        insert_branch(conn, &g.gid, b).map_err(|e| map_rusqlite("create branch", e))?;
    }
    Ok(())
}

/// Inserts one branch row of `gid`, exactly as given (its id is assigned here).
fn insert_branch(conn: &Connection, gid: &str, b: &Branch) -> rusqlite::Result<()> {
    execute(
        conn,
        "INSERT INTO trans_branch_op (gid, branch_id, op, url, payload, status, attempts, \
         last_error, create_time, update_time, finish_time) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        params![
            gid,
            b.branch_id,
            b.op.as_str(),
            b.url,
            b.payload.as_slice(),
            b.status.as_str(),
            i64::from(b.attempts),
            b.last_error,
            b.create_time.as_millis(),
            b.update_time.as_millis(),
            b.finish_time.map(Timestamp::as_millis),
        ],
    )
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
pub(crate) fn claim_due(
    conn: &Connection,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
) -> Result<Vec<Loaded>> {
    let mut globals = {
        let mut stmt = conn.prepare_cached(CLAIM_DUE).map_err(|e| map_rusqlite("claim due", e))?;
        let mut rows = stmt
            .query(params![owner, lease_until.as_millis(), now.as_millis(), i64::from(limit)])
            .map_err(|e| map_rusqlite("claim due", e))?;
        let mut globals = Vec::new();
        while let Some(row) = rows.next().map_err(|e| map_rusqlite("claim due", e))? {
            globals.push(rows::global(row)?);
        }
        globals
    };
    if globals.is_empty() {
        return Ok(Vec::new());
    }
    // RETURNING has no defined order: hand out the most overdue first, as selected.
    globals.sort_by_key(|g| (g.next_cron_time, g.id));
    let gids: Vec<&str> = globals.iter().map(|g| g.gid.as_str()).collect();
    let gids = serde_json::to_string(&gids)
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("claim due: gid list")))?;
    // One query for all claimed rows; json_each keeps the statement text static.
    let branches = branches(
        conn,
        concat!(
            "SELECT ",
            branch_columns!(),
            " FROM trans_branch_op WHERE gid IN (SELECT value FROM json_each($1)) ORDER BY id"
        ),
        &gids,
        "claim due: branches",
    )?;
    Ok(rows::pair(globals, branches))
}

/// Runs a branch query with one text parameter and decodes its rows (with their gid).
fn branches(
    conn: &Connection,
    sql: &'static str,
    param: &str,
    context: &'static str,
) -> Result<Vec<(String, Branch)>> {
    let mut stmt = conn.prepare_cached(sql).map_err(|e| map_rusqlite(context, e))?;
    let mut rows = stmt.query([param]).map_err(|e| map_rusqlite(context, e))?;
    let mut branches = Vec::new();
    while let Some(row) = rows.next().map_err(|e| map_rusqlite(context, e))? {
        branches.push(rows::branch(row)?);
    }
    Ok(branches)
}

/// Claims one transaction if it is not final and has no valid lease (due or not).
pub(crate) fn claim(
    conn: &Connection,
    gid: &str,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Option<Loaded>> {
    let global = {
        let mut stmt = conn
            .prepare_cached(concat!(
                "UPDATE trans_global SET owner = $1, lease_until = $2",
                " WHERE gid = $3 AND status IN ('prepared', 'submitted', 'aborting')",
                " AND (owner IS NULL OR lease_until IS NULL OR lease_until < $4)",
                " RETURNING ",
                global_columns!()
            ))
            .map_err(|e| map_rusqlite("claim", e))?;
        let mut rows = stmt
            .query(params![owner, lease_until.as_millis(), gid, now.as_millis()])
            .map_err(|e| map_rusqlite("claim", e))?;
        let global = match rows.next().map_err(|e| map_rusqlite("claim", e))? {
            Some(row) => rows::global(row)?,
            None => return Ok(None),
        };
        // Step the UPDATE to completion (a gid matches at most one row).
        while rows.next().map_err(|e| map_rusqlite("claim", e))?.is_some() {}
        global
    };
    let branches = branches(
        conn,
        concat!("SELECT ", branch_columns!(), " FROM trans_branch_op WHERE gid = $1 ORDER BY id"),
        &global.gid,
        "claim: branches",
    )?;
    rows::pair(vec![global], branches)
        .pop()
        .map(Some)
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("claim: the transaction vanished while loading")))
}

/// The fenced write. The global UPDATE goes first and carries the fence (`owner = $token`):
/// if it matches nothing, the branch updates are never issued and the caller gets `Fenced`.
pub(crate) fn save(conn: &Connection, save: &Save) -> Result<()> {
    let status = save.status.as_ref().map(|s| s.to.as_str());
    let reason = save.status.as_ref().and_then(|s| s.rollback_reason.as_deref());
    // Renew keeps the owner and moves lease_until; Release clears both and reschedules.
    let (release, lease_until, next_cron_time, next_cron_interval) = match &save.lease {
        LeaseChange::Renew { lease_until } => (false, Some(lease_until.as_millis()), None, None),
        LeaseChange::Release { next_cron_time, next_cron_interval } => {
            (true, None, Some(next_cron_time.as_millis()), Some(duration_millis(*next_cron_interval)))
        }
    };
    let done = execute(
        conn,
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
        params![
            save.now.as_millis(),
            status,
            GlobalStatus::Succeed.as_str(),
            GlobalStatus::Failed.as_str(),
            reason,
            release,
            lease_until,
            next_cron_time,
            next_cron_interval,
            save.gid,
            save.owner,
        ],
    )
    .map_err(|e| map_rusqlite("save", e))?;
    if done == 0 {
        return Err(Error::Fenced { gid: save.gid.clone() });
    }

    for b in &save.branches {
        let done = execute(
            conn,
            "UPDATE trans_branch_op SET status = $1, attempts = $2, last_error = $3, \
             finish_time = $4, update_time = $5 WHERE gid = $6 AND branch_id = $7 AND op = $8",
            params![
                b.status.as_str(),
                i64::from(b.attempts),
                b.last_error,
                b.finish_time.map(Timestamp::as_millis),
                save.now.as_millis(),
                save.gid,
                b.branch_id,
                b.op.as_str(),
            ],
        )
        .map_err(|e| map_rusqlite("save branch", e))?;
        // An update naming a branch that does not exist is an engine bug: refuse the whole
        // save rather than silently dropping a result.
        if done == 0 {
            return Err(Error::NotFound(format!("branch {}/{} of {}", b.branch_id, b.op, save.gid)));
        }
    }
    Ok(())
}

/// Adds branch rows to a transaction that is `prepared` and not held under a valid lease.
///
/// The check is the conditional UPDATE (it also bumps `update_time`), the inserts follow. No
/// claim can slip in between: every write runs serially on the writer thread's one connection,
/// inside the batch's `BEGIN IMMEDIATE` and this request's savepoint, so nothing else writes
/// between the two statements. A failed insert (a duplicate `(gid, branch_id, op)`) rolls the
/// savepoint back: neither the bump nor any of the rows is kept.
pub(crate) fn add_branches(conn: &Connection, gid: &str, branches: &[Branch], now: Timestamp) -> Result<()> {
    let checked = execute(
        conn,
        "UPDATE trans_global SET update_time = $1 WHERE gid = $2 AND status = 'prepared' \
         AND (owner IS NULL OR lease_until IS NULL OR lease_until < $1)",
        params![now.as_millis(), gid],
    )
    .map_err(|e| map_rusqlite("add branches", e))?;
    if checked == 0 {
        return Err(add_branches_refusal(conn, gid, now));
    }
    for b in branches {
        insert_branch(conn, gid, b).map_err(|e| match map_rusqlite("add branch", e) {
            Error::Conflict(_) => {
                Error::Conflict(format!("branch {}/{} of {gid} already exists", b.branch_id, b.op))
            }
            other => other,
        })?;
    }
    Ok(())
}

/// Why [`add_branches`] matched no row: unknown, not `prepared`, or being processed.
fn add_branches_refusal(conn: &Connection, gid: &str, now: Timestamp) -> Error {
    let row = conn
        .prepare_cached("SELECT status, owner, lease_until FROM trans_global WHERE gid = $1")
        .and_then(|mut stmt| {
            stmt.query_row([gid], |row| Ok((Cols(row).text("status"), Cols(row).opt_int("lease_until"))))
        });
    let (status, lease) = match row {
        Ok(row) => row,
        Err(rusqlite::Error::QueryReturnedNoRows) => return Error::NotFound(format!("transaction {gid}")),
        Err(e) => return map_rusqlite("add branches: check", e),
    };
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
pub(crate) fn force_stop(conn: &Connection, gid: &str, reason: &str, now: Timestamp) -> Result<GlobalStatus> {
    let old = conn.prepare_cached("SELECT status FROM trans_global WHERE gid = $1").and_then(|mut stmt| {
        stmt.query_row([gid], |row| Ok(rows::parsed::<_, GlobalStatus>(row, "status", gid)))
    });
    let old = match old {
        Ok(old) => old?,
        Err(rusqlite::Error::QueryReturnedNoRows) => {
            return Err(Error::NotFound(format!("transaction {gid}")));
        }
        Err(e) => return Err(map_rusqlite("force stop: read", e)),
    };
    if old.is_final() {
        return Err(Error::Precondition(format!("transaction {gid} already {old}")));
    }
    let done = execute(
        conn,
        "UPDATE trans_global SET status = $1, rollback_time = $2, update_time = $2, \
         rollback_reason = $3, owner = NULL, lease_until = NULL \
         WHERE gid = $4 AND status IN ('prepared', 'submitted', 'aborting')",
        params![GlobalStatus::Failed.as_str(), now.as_millis(), reason, gid],
    )
    .map_err(|e| map_rusqlite("force stop", e))?;
    if done != 1 {
        return Err(Error::Internal(anyhow::anyhow!(
            "force stop of {gid}: the row changed between the read and the update"
        )));
    }
    Ok(old)
}

/// Makes one transaction due now with its retry interval back to `base` (any status).
pub(crate) fn reset_next_cron_time(
    conn: &Connection,
    gid: &str,
    base: Duration,
    now: Timestamp,
) -> Result<()> {
    let done = execute(
        conn,
        "UPDATE trans_global SET next_cron_time = $1, next_cron_interval = $2, update_time = $1 \
         WHERE gid = $3",
        params![now.as_millis(), duration_millis(base), gid],
    )
    .map_err(|e| map_rusqlite("reset next cron time", e))?;
    if done == 0 {
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
pub(crate) fn reset_cron_time(
    conn: &Connection,
    later_than: Timestamp,
    limit: u32,
    now: Timestamp,
) -> Result<u64> {
    let done =
        execute(conn, RESET_CRON_TIME, params![now.as_millis(), later_than.as_millis(), i64::from(limit)])
            .map_err(|e| map_rusqlite("reset cron time", e))?;
    u64::try_from(done)
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context("reset cron time: row count")))
}

/// Inserts a kv row at version 1; an existing `(cat, k)` fails on the unique index.
pub(crate) fn kv_insert(conn: &Connection, cat: &str, k: &str, v: &str, now: Timestamp) -> Result<()> {
    execute(
        conn,
        "INSERT INTO kv (cat, k, v, version, create_time, update_time) VALUES ($1, $2, $3, 1, $4, $4)",
        params![cat, k, v, now.as_millis()],
    )
    .map_err(|e| match map_rusqlite("kv insert", e) {
        Error::Conflict(_) => Error::Conflict(format!("kv {cat}/{k} already exists")),
        other => other,
    })?;
    Ok(())
}

/// Compare-and-set: replaces the value only at `version`, which then becomes `version + 1`.
pub(crate) fn kv_update(
    conn: &Connection,
    cat: &str,
    k: &str,
    v: &str,
    version: i64,
    now: Timestamp,
) -> Result<()> {
    let done = execute(
        conn,
        "UPDATE kv SET v = $1, version = version + 1, update_time = $2 \
         WHERE cat = $3 AND k = $4 AND version = $5",
        params![v, now.as_millis(), cat, k, version],
    )
    .map_err(|e| map_rusqlite("kv update", e))?;
    if done > 0 {
        return Ok(());
    }
    // Nothing matched: tell a stale version from a missing row (same savepoint, same state).
    let current = conn
        .prepare_cached("SELECT version FROM kv WHERE cat = $1 AND k = $2")
        .and_then(|mut stmt| stmt.query_row([cat, k], |row| row.get::<_, i64>(0)));
    Err(match current {
        Ok(current) => Error::Conflict(format!("kv {cat}/{k} is at version {current}, not {version}")),
        Err(rusqlite::Error::QueryReturnedNoRows) => Error::NotFound(format!("kv {cat}/{k}")),
        Err(e) => map_rusqlite("kv update: check", e),
    })
}

/// Deletes a kv row.
pub(crate) fn kv_delete(conn: &Connection, cat: &str, k: &str) -> Result<()> {
    let done = execute(conn, "DELETE FROM kv WHERE cat = $1 AND k = $2", params![cat, k])
        .map_err(|e| map_rusqlite("kv delete", e))?;
    if done == 0 {
        return Err(Error::NotFound(format!("kv {cat}/{k}")));
    }
    Ok(())
}

/// Retention: deletes up to `limit` finished transactions last written before `before`, oldest
/// first, with their branches. Runs in the writer's batch like any write, so a purge never
/// waits for (or makes wait) the database lock; a small `limit` keeps the batch short.
pub(crate) fn purge_finished(conn: &Connection, before: Timestamp, limit: u32) -> Result<u64> {
    let doomed: Vec<(i64, String)> = {
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, gid FROM trans_global WHERE status IN ('succeed', 'failed') \
                 AND update_time < $1 ORDER BY update_time, id LIMIT $2",
            )
            .map_err(|e| map_rusqlite("purge: select", e))?;
        let rows = stmt
            .query_map(params![before.as_millis(), i64::from(limit)], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| map_rusqlite("purge: select", e))?;
        rows.collect::<rusqlite::Result<_>>().map_err(|e| map_rusqlite("purge: select", e))?
    };
    if doomed.is_empty() {
        return Ok(0);
    }
    let internal = |e: serde_json::Error| Error::Internal(anyhow::Error::new(e).context("purge: id list"));
    let gids = serde_json::to_string(&doomed.iter().map(|(_, g)| g.as_str()).collect::<Vec<_>>())
        .map_err(internal)?;
    let ids =
        serde_json::to_string(&doomed.iter().map(|(id, _)| *id).collect::<Vec<_>>()).map_err(internal)?;
    execute(
        conn,
        "DELETE FROM trans_branch_op WHERE gid IN (SELECT value FROM json_each($1))",
        params![gids],
    )
    .map_err(|e| map_rusqlite("purge: branches", e))?;
    let done =
        execute(conn, "DELETE FROM trans_global WHERE id IN (SELECT value FROM json_each($1))", params![ids])
            .map_err(|e| map_rusqlite("purge: globals", e))?;
    u64::try_from(done).map_err(|e| Error::Internal(anyhow::Error::new(e).context("purge: row count")))
}
