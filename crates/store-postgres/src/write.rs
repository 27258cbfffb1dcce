//! The write operations, each run by a writer inside its batch's transaction (and, in a batch of
//! several, its own savepoint). They only issue SQL: transaction control belongs to
//! [`crate::writer`].
//!
//! Time: every statement that decides or records ownership or due times reads the database
//! clock (`db_now!`, bound `$1`), and moves each caller time by the same offset: a time the
//! caller computed as `now + d` is stored as `db_now + d`. See the crate docs.

use std::collections::BTreeSet;
use std::time::Duration;

use dtx_core::time::duration_millis;
use dtx_core::{Branch, GlobalStatus, Timestamp};
use dtx_store::{BranchUpdate, Error, LeaseChange, Loaded, NewTransaction, Result, Save};
use sqlx::PgConnection;

use crate::ClockSource;
use crate::error::{map_sqlx, violated_constraint};
use crate::rows::{self, branch_columns, db_now, global_columns};

impl ClockSource {
    /// The `$1` of a statement that reads [`db_now!`]: `None` lets the database clock decide;
    /// `Some(caller's now)` makes the caller's clock the clock.
    pub(crate) fn fixed(self, now: Timestamp) -> Option<i64> {
        match self {
            ClockSource::Database => None,
            ClockSource::Caller => Some(now.as_millis()),
        }
    }
}

/// Inserts the global row and its branches. A duplicate gid fails on the unique index
/// (→ `Conflict`); the caller's transaction or savepoint then discards the partial insert.
/// The caller's "now" is the row's `update_time` (when the engine built it).
pub(crate) async fn create(conn: &mut PgConnection, clock: ClockSource, tx: &NewTransaction) -> Result<()> {
    let g = &tx.global;
    sqlx::query(concat!(
        "INSERT INTO trans_global (gid, trans_type, status, protocol, query_prepared, ",
        "custom_data, options, rollback_reason, result, create_time, update_time, finish_time, ",
        "rollback_time, next_cron_time, next_cron_interval, owner, lease_until) ",
        "VALUES ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, ",
        db_now!(),
        " + ($15 - $12), $16, $17, ",
        db_now!(),
        " + ($18 - $12))"
    ))
    .bind(clock.fixed(g.update_time))
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

    insert_branches(conn, &g.gid, &tx.branches).await.map_err(|e| branch_conflict(e, &g.gid, "create"))
}

/// Inserts branch rows of `gid`, exactly as given, in one statement; their ids are assigned in
/// the order given (`WITH ORDINALITY … ORDER BY`).
async fn insert_branches(conn: &mut PgConnection, gid: &str, branches: &[Branch]) -> Result<(), sqlx::Error> {
    if branches.is_empty() {
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
    sqlx::query(
        "INSERT INTO trans_branch_op (gid, branch_id, op, url, payload, status, attempts, \
         last_error, create_time, update_time, finish_time) \
         SELECT $1, b.branch_id, b.op, b.url, b.payload, b.status, b.attempts, b.last_error, \
         b.create_time, b.update_time, b.finish_time \
         FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[], $7::bigint[], \
         $8::text[], $9::bigint[], $10::bigint[], $11::bigint[]) WITH ORDINALITY \
         AS b(branch_id, op, url, payload, status, attempts, last_error, create_time, update_time, \
         finish_time, ord) ORDER BY b.ord",
    )
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
    .bind(finished)
    .execute(&mut *conn)
    .await
    .map(|_| ())
}

/// A failed branch insert: a unique violation names the duplicate row's transaction.
fn branch_conflict(err: sqlx::Error, gid: &str, what: &'static str) -> Error {
    match violated_constraint(&err) {
        Some(c) if c.starts_with("trans_branch_op") => {
            Error::Conflict(format!("{gid}: a branch (branch_id, op) given already exists ({c})"))
        }
        _ => map_sqlx(what, err),
    }
}

/// The claim: one UPDATE whose row set is picked by a sub-select that locks the rows it takes
/// and skips rows other transactions hold (`FOR UPDATE SKIP LOCKED`), so concurrent claimers on
/// any number of nodes never wait for each other and never both get a row. Due and lease are
/// judged by the database clock. The status list repeats the partial index `trans_global_due`.
pub(crate) const CLAIM_DUE: &str = concat!(
    "UPDATE trans_global SET owner = $2, lease_until = ",
    db_now!(),
    " + ($3 - $4) WHERE id IN (",
    "SELECT id FROM trans_global",
    " WHERE status IN ('prepared', 'submitted', 'aborting') AND next_cron_time <= ",
    db_now!(),
    " AND (owner IS NULL OR lease_until IS NULL OR lease_until < ",
    db_now!(),
    ") ORDER BY next_cron_time LIMIT $5 FOR UPDATE SKIP LOCKED",
    ") RETURNING ",
    global_columns!()
);

/// Claims up to `limit` due rows, then reads their branches (in the same transaction: the rows
/// are locked by the claim, so their branches cannot change underneath).
pub(crate) async fn claim_due(
    conn: &mut PgConnection,
    clock: ClockSource,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
) -> Result<Vec<Loaded>> {
    let rows = sqlx::query(CLAIM_DUE)
        .bind(clock.fixed(now))
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
    let branch_rows = sqlx::query(concat!(
        "SELECT ",
        branch_columns!(),
        " FROM trans_branch_op WHERE gid = ANY($1) ORDER BY id"
    ))
    .bind(gids)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| map_sqlx("claim due: branches", e))?;
    rows::assemble(globals, &branch_rows)
}

/// Claims one transaction if it is not final and has no valid lease (due or not). A row locked
/// by another transaction is waited for, then judged as it is after that one commits.
pub(crate) async fn claim(
    conn: &mut PgConnection,
    clock: ClockSource,
    gid: &str,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Option<Loaded>> {
    let row = sqlx::query(concat!(
        "UPDATE trans_global SET owner = $2, lease_until = ",
        db_now!(),
        " + ($3 - $4) WHERE gid = $5 AND status IN ('prepared', 'submitted', 'aborting')",
        " AND (owner IS NULL OR lease_until IS NULL OR lease_until < ",
        db_now!(),
        ") RETURNING ",
        global_columns!()
    ))
    .bind(clock.fixed(now))
    .bind(owner)
    .bind(lease_until.as_millis())
    .bind(now.as_millis())
    .bind(gid)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| map_sqlx("claim", e))?;
    let Some(row) = row else {
        return Ok(None);
    };
    let global = rows::global(&row)?;
    Ok(Some(rows::with_branches(conn, global, "claim: branches").await?))
}

/// The fenced write. The global UPDATE goes first and carries the fence (`owner = $token`): if
/// it matches nothing, the branch updates are never issued and the caller gets `Fenced`. The
/// new lease end and next due time are the caller's, moved onto the database clock.
pub(crate) async fn save(conn: &mut PgConnection, clock: ClockSource, save: &Save) -> Result<()> {
    let status = save.status.as_ref().map(|s| s.to.as_str());
    let reason = save.status.as_ref().and_then(|s| s.rollback_reason.as_deref());
    // Renew keeps the owner and moves lease_until; Release clears both and reschedules.
    let (release, lease_until, next_cron_time, next_cron_interval) = match &save.lease {
        LeaseChange::Renew { lease_until } => (false, Some(lease_until.as_millis()), None, None),
        LeaseChange::Release { next_cron_time, next_cron_interval } => {
            (true, None, Some(next_cron_time.as_millis()), Some(duration_millis(*next_cron_interval)))
        }
    };
    let done = sqlx::query(concat!(
        "UPDATE trans_global SET update_time = $2, ",
        "status = COALESCE($3, status), ",
        "finish_time = CASE WHEN $3 = $4 THEN $2 ELSE finish_time END, ",
        "rollback_time = CASE WHEN $3 = $5 THEN $2 ELSE rollback_time END, ",
        "rollback_reason = COALESCE($6, rollback_reason), ",
        "owner = CASE WHEN $7 THEN NULL ELSE owner END, ",
        "lease_until = ",
        db_now!(),
        " + ($8 - $2), ",
        "next_cron_time = COALESCE(",
        db_now!(),
        " + ($9 - $2), next_cron_time), ",
        "next_cron_interval = COALESCE($10, next_cron_interval) ",
        "WHERE gid = $11 AND owner = $12"
    ))
    .bind(clock.fixed(save.now))
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
    update_branches(conn, save).await
}

/// The branch half of a save, in one statement. Two updates of one row in a save: the last one
/// wins, as if applied in order.
async fn update_branches(conn: &mut PgConnection, save: &Save) -> Result<()> {
    if save.branches.is_empty() {
        return Ok(());
    }
    let mut seen = BTreeSet::new();
    let updates: Vec<&BranchUpdate> = save
        .branches
        .iter()
        .rev()
        .filter(|b| seen.insert((b.branch_id.as_str(), b.op.as_str())))
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let branch_ids: Vec<&str> = updates.iter().map(|b| b.branch_id.as_str()).collect();
    let ops: Vec<&str> = updates.iter().map(|b| b.op.as_str()).collect();
    let statuses: Vec<&str> = updates.iter().map(|b| b.status.as_str()).collect();
    let attempts: Vec<i64> = updates.iter().map(|b| i64::from(b.attempts)).collect();
    let errors: Vec<&str> = updates.iter().map(|b| b.last_error.as_str()).collect();
    let finished: Vec<Option<i64>> =
        updates.iter().map(|b| b.finish_time.map(Timestamp::as_millis)).collect();
    let rows = sqlx::query(
        "UPDATE trans_branch_op AS b SET status = u.status, attempts = u.attempts, \
         last_error = u.last_error, finish_time = u.finish_time, update_time = $2 \
         FROM UNNEST($3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::bigint[]) \
         AS u(branch_id, op, status, attempts, last_error, finish_time) \
         WHERE b.gid = $1 AND b.branch_id = u.branch_id AND b.op = u.op \
         RETURNING b.branch_id, b.op",
    )
    .bind(&save.gid)
    .bind(save.now.as_millis())
    .bind(&branch_ids)
    .bind(&ops)
    .bind(statuses)
    .bind(attempts)
    .bind(errors)
    .bind(finished)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| map_sqlx("save branches", e))?;
    if rows.len() == updates.len() {
        return Ok(());
    }
    // An update naming a branch that does not exist is an engine bug: refuse the whole save
    // rather than silently dropping a result (the caller rolls the global update back too).
    let mut found = BTreeSet::new();
    for row in &rows {
        found.insert((rows::get::<String>(row, "branch_id")?, rows::get::<String>(row, "op")?));
    }
    let missing = branch_ids
        .iter()
        .zip(&ops)
        .find(|(id, op)| !found.contains(&((**id).to_owned(), (**op).to_owned())))
        .map(|(id, op)| format!("{id}/{op}"))
        .unwrap_or_default();
    Err(Error::NotFound(format!("branch {missing} of {}", save.gid)))
}

/// Adds branch rows to a transaction that is `prepared` and not held under a valid lease (by
/// the database clock).
///
/// The global row is read `FOR UPDATE`: until this transaction ends, a claim of it by gid
/// waits (and then sees the new rows) and a batch claim skips it, so no round can start on the
/// transaction between the check and the inserts. A failed insert (a duplicate
/// `(gid, branch_id, op)`) fails the request, and its transaction or savepoint is rolled back.
pub(crate) async fn add_branches(
    conn: &mut PgConnection,
    clock: ClockSource,
    gid: &str,
    branches: &[Branch],
    now: Timestamp,
) -> Result<()> {
    let row = sqlx::query(concat!(
        "SELECT status, owner, lease_until, ",
        db_now!(),
        " AS db_now FROM trans_global WHERE gid = $2 FOR UPDATE"
    ))
    .bind(clock.fixed(now))
    .bind(gid)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| map_sqlx("add branches: check", e))?
    .ok_or_else(|| Error::NotFound(format!("transaction {gid}")))?;
    let status: String = rows::get(&row, "status")?;
    if status != GlobalStatus::Prepared.as_str() {
        return Err(Error::Precondition(format!("transaction {gid} is {status}, not prepared")));
    }
    let owner: Option<String> = rows::get(&row, "owner")?;
    let lease: Option<i64> = rows::get(&row, "lease_until")?;
    let db_now: i64 = rows::get(&row, "db_now")?;
    if let (Some(_), Some(lease)) = (owner, lease)
        && lease >= db_now
    {
        return Err(Error::Precondition(format!(
            "transaction {gid} is being processed (leased until {lease} ms, database time {db_now} ms)"
        )));
    }
    insert_branches(conn, gid, branches).await.map_err(|e| branch_conflict(e, gid, "add branch"))?;
    sqlx::query("UPDATE trans_global SET update_time = $1 WHERE gid = $2")
        .bind(now.as_millis())
        .bind(gid)
        .execute(&mut *conn)
        .await
        .map_err(|e| map_sqlx("add branches: touch", e))?;
    Ok(())
}

/// Operator stop of a non-final transaction: `failed`, owner cleared (the round holding it is
/// fenced at its next save). The status is read `FOR UPDATE`, so the UPDATE sees the same row.
pub(crate) async fn force_stop(
    conn: &mut PgConnection,
    gid: &str,
    reason: &str,
    now: Timestamp,
) -> Result<GlobalStatus> {
    let row = sqlx::query("SELECT status FROM trans_global WHERE gid = $1 FOR UPDATE")
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

/// Makes one transaction due now (database time) with its retry interval back to `base`.
pub(crate) async fn reset_next_cron_time(
    conn: &mut PgConnection,
    clock: ClockSource,
    gid: &str,
    base: Duration,
    now: Timestamp,
) -> Result<()> {
    let done = sqlx::query(concat!(
        "UPDATE trans_global SET next_cron_time = ",
        db_now!(),
        ", next_cron_interval = $2, update_time = $3 WHERE gid = $4"
    ))
    .bind(clock.fixed(now))
    .bind(duration_millis(base))
    .bind(now.as_millis())
    .bind(gid)
    .execute(&mut *conn)
    .await
    .map_err(|e| map_sqlx("reset next cron time", e))?;
    if done.rows_affected() == 0 {
        return Err(Error::NotFound(format!("transaction {gid}")));
    }
    Ok(())
}

/// Pulls up to `$4` unfinished rows scheduled after `$3` (a caller time, moved onto the
/// database clock) back to now. The sub-select locks its rows, so a row changed meanwhile is
/// judged again as it now is.
pub(crate) const RESET_CRON_TIME: &str = concat!(
    "UPDATE trans_global SET next_cron_time = ",
    db_now!(),
    ", update_time = $2 WHERE id IN (",
    "SELECT id FROM trans_global",
    " WHERE status IN ('prepared', 'submitted', 'aborting') AND next_cron_time > ",
    db_now!(),
    " + ($3 - $2) LIMIT $4 FOR UPDATE",
    ")"
);

/// Runs [`RESET_CRON_TIME`]; returns how many rows it moved.
pub(crate) async fn reset_cron_time(
    conn: &mut PgConnection,
    clock: ClockSource,
    later_than: Timestamp,
    limit: u32,
    now: Timestamp,
) -> Result<u64> {
    let done = sqlx::query(RESET_CRON_TIME)
        .bind(clock.fixed(now))
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
    conn: &mut PgConnection,
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

/// Compare-and-set: replaces the value only at `version`, which then becomes `version + 1`. A
/// concurrent update of the row is waited for, and the version is compared after it.
pub(crate) async fn kv_update(
    conn: &mut PgConnection,
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
    // Nothing matched: tell a stale version from a missing row.
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
pub(crate) async fn kv_delete(conn: &mut PgConnection, cat: &str, k: &str) -> Result<()> {
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

/// Retention: deletes up to `limit` finished transactions last written before `before`, oldest
/// first, with their branches, in one statement. `SKIP LOCKED`: nodes purging at once take
/// disjoint rows, and a row a live write holds is left for the next pass instead of waited for.
pub(crate) async fn purge_finished(conn: &mut PgConnection, before: Timestamp, limit: u32) -> Result<u64> {
    let deleted: i64 = sqlx::query_scalar(
        "WITH doomed AS (SELECT id, gid FROM trans_global \
           WHERE status IN ('succeed', 'failed') AND update_time < $1 \
           ORDER BY update_time, id LIMIT $2 FOR UPDATE SKIP LOCKED), \
         gone_branches AS (DELETE FROM trans_branch_op WHERE gid IN (SELECT gid FROM doomed)), \
         gone AS (DELETE FROM trans_global WHERE id IN (SELECT id FROM doomed) RETURNING 1) \
         SELECT COUNT(*) FROM gone",
    )
    .bind(before.as_millis())
    .bind(i64::from(limit))
    .fetch_one(conn)
    .await
    .map_err(|e| map_sqlx("purge finished", e))?;
    Ok(u64::try_from(deleted).unwrap_or(0))
}
