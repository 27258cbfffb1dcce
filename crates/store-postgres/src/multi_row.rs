//! The creates and saves of a whole group-commit batch in one statement (ADR 12): each kind of
//! write is one `UNNEST` over arrays, and the four are data-modifying CTEs of one query, so a
//! batch of any size costs the same four statements' parsing, planning and round trip (one),
//! instead of two statements per request.
//!
//! The statement answers how many rows each part wrote; the caller compares them with what it
//! asked and rolls the batch back when they differ (a lost fence, a missing branch). A
//! duplicate gid or branch fails the statement on its unique index. Either way the batch then
//! runs request by request, where each request gets its own answer.

use dtx_core::time::duration_millis;
use dtx_core::{Branch, Global, GlobalStatus, Timestamp};
use dtx_store::{BranchUpdate, NewTransaction, Result, Save};
use sqlx::Row;

use crate::error::map_sqlx;

/// `{now}` of the shared templates for row `u`: the database clock in epoch milliseconds, or
/// the row's own now (`u.now`) when the caller's clock is the clock (`$1`). The clock is an
/// uncorrelated sub-select, which PostgreSQL evaluates once per statement, not once per row
/// (its value is the same for the whole statement either way).
macro_rules! row_now {
    () => {
        "(CASE WHEN $1 THEN u.now ELSE (SELECT floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint) END)"
    };
}

/// `$1` caller clock; `$2`, `$3` the statuses `succeed` and `failed`; `$4`–`$20` the new
/// global rows; `$21`–`$31` their branches; `$32`–`$42` the saves' global updates (fenced by
/// owner); `$43`–`$50` their branch updates. Ids ascend in the order given (`ORDINALITY`).
const WRITE_ROWS: &str = concat!(
    "WITH new_g AS (INSERT INTO trans_global (gid, trans_type, status, protocol, ",
    "query_prepared, custom_data, options, rollback_reason, result, create_time, update_time, ",
    "finish_time, rollback_time, next_cron_time, next_cron_interval, owner, lease_until) ",
    "SELECT u.gid, u.trans_type, u.status, u.protocol, u.query_prepared, u.custom_data, ",
    "u.options, u.rollback_reason, u.result, u.create_time, u.now, u.finish_time, ",
    "u.rollback_time, ",
    row_now!(),
    " + (u.next_cron_time - u.now), u.next_cron_interval, u.owner, ",
    row_now!(),
    " + (u.lease_until - u.now) ",
    "FROM UNNEST($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], ",
    "$10::text[], $11::text[], $12::text[], $13::bigint[], $14::bigint[], $15::bigint[], ",
    "$16::bigint[], $17::bigint[], $18::bigint[], $19::text[], $20::bigint[]) WITH ORDINALITY ",
    "AS u(gid, trans_type, status, protocol, query_prepared, custom_data, options, ",
    "rollback_reason, result, create_time, now, finish_time, rollback_time, next_cron_time, ",
    "next_cron_interval, owner, lease_until, ord) ORDER BY u.ord RETURNING 1), ",
    "new_b AS (INSERT INTO trans_branch_op (gid, branch_id, op, url, payload, status, attempts, ",
    "last_error, create_time, update_time, finish_time) ",
    "SELECT b.gid, b.branch_id, b.op, b.url, b.payload, b.status, b.attempts, b.last_error, ",
    "b.create_time, b.update_time, b.finish_time ",
    "FROM UNNEST($21::text[], $22::text[], $23::text[], $24::text[], $25::bytea[], $26::text[], ",
    "$27::bigint[], $28::text[], $29::bigint[], $30::bigint[], $31::bigint[]) WITH ORDINALITY ",
    "AS b(gid, branch_id, op, url, payload, status, attempts, last_error, create_time, ",
    "update_time, finish_time, ord) ORDER BY b.ord RETURNING 1), ",
    "saved_g AS (UPDATE trans_global AS g SET update_time = u.now, ",
    "status = COALESCE(u.status, g.status), ",
    "finish_time = CASE WHEN u.status = $2 THEN u.now ELSE g.finish_time END, ",
    "rollback_time = CASE WHEN u.status = $3 THEN u.now ELSE g.rollback_time END, ",
    "rollback_reason = COALESCE(u.reason, g.rollback_reason), ",
    "owner = CASE WHEN u.release THEN NULL ELSE g.owner END, ",
    "lease_until = ",
    row_now!(),
    " + (u.lease_until - u.now), next_cron_time = COALESCE(",
    row_now!(),
    " + (u.next_cron_time - u.now), g.next_cron_time), ",
    "next_cron_interval = COALESCE(u.next_cron_interval, g.next_cron_interval), ",
    "result = COALESCE(u.result, g.result), ",
    "held_host = CASE WHEN u.release THEN u.held_host ELSE g.held_host END ",
    "FROM UNNEST($32::text[], $33::text[], $34::bigint[], $35::text[], $36::text[], $37::bool[], ",
    "$38::bigint[], $39::bigint[], $40::bigint[], $41::text[], $42::text[]) ",
    "AS u(gid, owner, now, status, reason, release, lease_until, next_cron_time, ",
    "next_cron_interval, result, held_host) ",
    "WHERE g.gid = u.gid AND g.owner = u.owner RETURNING 1), ",
    "saved_b AS (UPDATE trans_branch_op AS b SET status = u.status, attempts = u.attempts, ",
    "last_error = u.last_error, finish_time = u.finish_time, update_time = u.now ",
    "FROM UNNEST($43::text[], $44::text[], $45::text[], $46::text[], $47::bigint[], $48::text[], ",
    "$49::bigint[], $50::bigint[]) ",
    "AS u(gid, branch_id, op, status, attempts, last_error, finish_time, now) ",
    "WHERE b.gid = u.gid AND b.branch_id = u.branch_id AND b.op = u.op RETURNING 1) ",
    "SELECT (SELECT count(*) FROM new_g) AS new_g, (SELECT count(*) FROM new_b) AS new_b, ",
    "(SELECT count(*) FROM saved_g) AS saved_g, (SELECT count(*) FROM saved_b) AS saved_b"
);

/// Writes `creates` and `saves` (of different transactions) in one statement, inside the
/// caller's transaction. `Ok(false)`: a fence did not hold or a branch to update is missing,
/// and the caller must roll back; `Err`: the statement failed (a duplicate gid or branch, or
/// the connection), nothing of it applied.
pub(crate) async fn write_rows(
    conn: &mut sqlx::PgConnection,
    caller_clock: bool,
    creates: &[&NewTransaction],
    saves: &[&Save],
) -> Result<bool> {
    let globals = |f: fn(&Global) -> &str| -> Vec<&str> { creates.iter().map(|t| f(&t.global)).collect() };
    let global_times = |f: fn(&Global) -> Option<Timestamp>| -> Vec<Option<i64>> {
        creates.iter().map(|t| f(&t.global).map(Timestamp::as_millis)).collect()
    };
    let branches: Vec<(&str, &Branch)> =
        creates.iter().flat_map(|t| t.branches.iter().map(|b| (t.global.gid.as_str(), b))).collect();
    let branch = |f: fn(&Branch) -> &str| -> Vec<&str> { branches.iter().map(|(_, b)| f(b)).collect() };
    let branch_times = |f: fn(&Branch) -> Option<Timestamp>| -> Vec<Option<i64>> {
        branches.iter().map(|(_, b)| f(b).map(Timestamp::as_millis)).collect()
    };
    let leases: Vec<_> = saves.iter().map(|s| dtx_store::sql::lease_columns(&s.lease)).collect();
    let updates = branch_updates(saves);
    let update = |f: fn(&BranchUpdate) -> &str| -> Vec<&str> { updates.iter().map(|(_, b)| f(b)).collect() };

    dtx_store::sql::count_statements(1);
    let row = sqlx::query(WRITE_ROWS)
        .bind(caller_clock)
        .bind(GlobalStatus::Succeed.as_str())
        .bind(GlobalStatus::Failed.as_str())
        // The new global rows.
        .bind(globals(|g| &g.gid))
        .bind(globals(|g| g.trans_type.as_str()))
        .bind(globals(|g| g.status.as_str()))
        .bind(globals(|g| &g.protocol))
        .bind(globals(|g| &g.query_prepared))
        .bind(globals(|g| &g.custom_data))
        .bind(creates.iter().map(|t| t.global.options.to_json()).collect::<Vec<_>>())
        .bind(globals(|g| &g.rollback_reason))
        .bind(globals(|g| &g.result))
        .bind(global_times(|g| Some(g.create_time)))
        .bind(global_times(|g| Some(g.update_time)))
        .bind(global_times(|g| g.finish_time))
        .bind(global_times(|g| g.rollback_time))
        .bind(global_times(|g| Some(g.next_cron_time)))
        .bind(creates.iter().map(|t| duration_millis(t.global.next_cron_interval)).collect::<Vec<_>>())
        .bind(creates.iter().map(|t| t.global.owner.as_deref()).collect::<Vec<_>>())
        .bind(global_times(|g| g.lease_until))
        // Their branches.
        .bind(branches.iter().map(|(gid, _)| *gid).collect::<Vec<_>>())
        .bind(branch(|b| &b.branch_id))
        .bind(branch(|b| b.op.as_str()))
        .bind(branch(|b| &b.url))
        .bind(branches.iter().map(|(_, b)| b.payload.as_slice()).collect::<Vec<_>>())
        .bind(branch(|b| b.status.as_str()))
        .bind(branches.iter().map(|(_, b)| i64::from(b.attempts)).collect::<Vec<_>>())
        .bind(branch(|b| &b.last_error))
        .bind(branch_times(|b| Some(b.create_time)))
        .bind(branch_times(|b| Some(b.update_time)))
        .bind(branch_times(|b| b.finish_time))
        // The saves' global updates.
        .bind(saves.iter().map(|s| s.gid.as_str()).collect::<Vec<_>>())
        .bind(saves.iter().map(|s| s.owner.as_str()).collect::<Vec<_>>())
        .bind(saves.iter().map(|s| s.now.as_millis()).collect::<Vec<_>>())
        .bind(saves.iter().map(|s| s.status.as_ref().map(|c| c.to.as_str())).collect::<Vec<_>>())
        .bind(
            saves
                .iter()
                .map(|s| s.status.as_ref().and_then(|c| c.rollback_reason.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(leases.iter().map(|l| l.0).collect::<Vec<_>>())
        .bind(leases.iter().map(|l| l.1).collect::<Vec<_>>())
        .bind(leases.iter().map(|l| l.2).collect::<Vec<_>>())
        .bind(leases.iter().map(|l| l.3).collect::<Vec<_>>())
        .bind(saves.iter().map(|s| s.status.as_ref().and_then(|c| c.result.as_deref())).collect::<Vec<_>>())
        .bind(leases.iter().map(|l| l.4).collect::<Vec<_>>())
        // Their branch updates.
        .bind(updates.iter().map(|(s, _)| s.gid.as_str()).collect::<Vec<_>>())
        .bind(update(|b| &b.branch_id))
        .bind(update(|b| b.op.as_str()))
        .bind(update(|b| b.status.as_str()))
        .bind(updates.iter().map(|(_, b)| i64::from(b.attempts)).collect::<Vec<_>>())
        .bind(update(|b| &b.last_error))
        .bind(updates.iter().map(|(_, b)| b.finish_time.map(Timestamp::as_millis)).collect::<Vec<_>>())
        .bind(updates.iter().map(|(s, _)| s.now.as_millis()).collect::<Vec<_>>())
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| map_sqlx("write batch", e))?;
    let count = |column: &str| -> Result<usize> {
        let n: i64 = row.try_get(column).map_err(|e| map_sqlx("write batch: counts", e))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    };
    Ok(count("new_g")? == creates.len()
        && count("new_b")? == branches.len()
        && count("saved_g")? == saves.len()
        && count("saved_b")? == updates.len())
}

/// The branch updates of `saves`, each with its save (the last one of each row per save:
/// [`crate::write::last_per_row`]; the saves are of different transactions).
fn branch_updates<'a>(saves: &[&'a Save]) -> Vec<(&'a Save, &'a BranchUpdate)> {
    saves
        .iter()
        .flat_map(|s| crate::write::last_per_row(&s.branches).into_iter().map(move |b| (*s, b)))
        .collect()
}
