//! The shared statements, as templates (syntax in the module docs of [`crate::sql`]). Each is
//! written once and rendered for every dialect; a dialect replaces one only through its
//! [`crate::sql::Dialect`] constants.
//!
//! Time: a statement that decides or records ownership or due times reads the clock `{now}`
//! (the database's, or `$1` when the caller's clock is the clock) and moves every caller time
//! by the same offset: a time the caller computed as `now + d` is stored as `{now} + d`. On a
//! database clock, `next_cron_time` and `lease_until` are therefore database times exactly.
//!
//! The status list `('prepared', 'submitted', 'aborting')` repeats the partial index
//! `trans_global_due` textually, so that SQLite uses it; a dialect may render it as its own
//! equivalent predicate ([`crate::sql::Dialect::UNFINISHED`]).

/// The statuses a transaction is processed in (the partial index's list).
macro_rules! unfinished {
    () => {
        "status IN ('prepared', 'submitted', 'aborting')"
    };
}

/// [`unfinished!`] as a constant: the text [`crate::sql::render`] replaces by the dialect's.
pub const UNFINISHED: &str = unfinished!();

/// Inserts a global row (`$12`, its `update_time`, is the caller's now).
pub const CREATE: &str = concat!(
    "INSERT INTO trans_global (gid, trans_type, status, protocol, query_prepared, ",
    "custom_data, options, rollback_reason, result, create_time, update_time, finish_time, ",
    "rollback_time, next_cron_time, next_cron_interval, owner, lease_until) ",
    "VALUES ($2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, {now} + ($15 - $12), $16, $17, ",
    "{now} + ($18 - $12))"
);

/// Inserts one branch row.
pub const INSERT_BRANCH: &str = "INSERT INTO trans_branch_op (gid, branch_id, op, url, payload, status, \
     attempts, last_error, create_time, update_time, finish_time) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// The batch claim: one conditional UPDATE over a sub-select, so no two claimers can both take a
/// row; with `{skip_locked}`, concurrent claimers skip rows being taken instead of waiting. The
/// sub-select also reads whether each row had an owner (a lease takeover), which `RETURNING`
/// alone cannot see. (SQLite, whose `RETURNING` cannot read the sub-select, picks and takes in
/// two statements: [`CLAIM_DUE_PICK`], [`CLAIM_DUE_TAKE`].)
pub const CLAIM_DUE: &str = concat!(
    "UPDATE trans_global SET owner = $2, lease_until = {now} + ($3 - $4) FROM (",
    "SELECT id AS due_id, CAST(CASE WHEN owner IS NULL THEN 0 ELSE 1 END AS BIGINT) AS taken_over ",
    "FROM trans_global WHERE ",
    unfinished!(),
    " AND next_cron_time <= {now} AND (owner IS NULL OR lease_until IS NULL OR lease_until < {now})",
    " ORDER BY next_cron_time LIMIT $5{skip_locked}) AS due WHERE id = due.due_id RETURNING ",
    crate::global_columns!(),
    ", due.taken_over"
);

/// The due rows a claim takes (`$1` now, `$2` limit), and whether each had an owner, for a
/// writer that is alone (SQLite: nothing changes between this and [`CLAIM_DUE_TAKE`]).
pub const CLAIM_DUE_PICK: &str = concat!(
    "SELECT id, CASE WHEN owner IS NULL THEN 0 ELSE 1 END AS taken_over FROM trans_global WHERE ",
    unfinished!(),
    " AND next_cron_time <= {now} AND (owner IS NULL OR lease_until IS NULL OR lease_until < {now})",
    " ORDER BY next_cron_time LIMIT $2"
);

/// Takes the rows [`CLAIM_DUE_PICK`] picked (`$5`: their ids as a JSON array).
pub const CLAIM_DUE_TAKE: &str = concat!(
    "UPDATE trans_global SET owner = $2, lease_until = {now} + ($3 - $4) ",
    "WHERE id IN (SELECT value FROM json_each($5)) RETURNING ",
    crate::global_columns!()
);

/// Claims one transaction (due or not) if it is not final and has no valid lease. A row locked
/// by another transaction is waited for, then judged as it is after that one commits.
pub const CLAIM: &str = concat!(
    "UPDATE trans_global SET owner = $2, lease_until = {now} + ($3 - $4) WHERE gid = $5 AND ",
    unfinished!(),
    " AND (owner IS NULL OR lease_until IS NULL OR lease_until < {now}) RETURNING ",
    crate::global_columns!()
);

/// The row a claim by gid takes (`$1` now, `$2` gid), for a writer that is alone (SQLite:
/// nothing changes between this and [`CLAIM_TAKE`]). SQLite runs a `RETURNING` clause as a
/// trigger program writing into an ephemeral table, which made [`CLAIM`] cost about twice
/// this read and [`CLAIM_TAKE`] together. With the row's packed branches (ADR 26), so that a
/// claim reads its transaction once.
pub const CLAIM_PICK: &str = concat!(
    "SELECT ",
    crate::global_columns!(),
    ", branches FROM trans_global WHERE gid = $2 AND ",
    unfinished!(),
    " AND (owner IS NULL OR lease_until IS NULL OR lease_until < {now})"
);

/// Takes the row [`CLAIM_PICK`] read (`$1` now, `$2` owner, `$3` lease_until, `$4` its id).
pub const CLAIM_TAKE: &str =
    "UPDATE trans_global SET owner = $2, lease_until = {now} + ($3 - $1) WHERE id = $4";

/// One transaction's branch rows, in no particular order: the caller sorts them by id. The
/// rows come through the `(gid, branch_id, op)` key, so an `ORDER BY id` is a sort, and SQLite
/// sorts even four rows through a temporary b-tree: about as much again as the select itself.
pub const BRANCHES_OF_GID: &str =
    concat!("SELECT ", crate::branch_columns!(), " FROM trans_branch_op WHERE gid = $1");

/// The branch rows of the transactions in the JSON array `$1` (the text stays static), in no
/// particular order, as [`BRANCHES_OF_GID`].
pub const BRANCHES_OF_JSON: &str = concat!(
    "SELECT ",
    crate::branch_columns!(),
    " FROM trans_branch_op WHERE gid IN (SELECT value FROM json_each($1))"
);

/// A transaction's packed branches (ADR 26), by its row id.
pub const PACKED_OF_ID: &str = "SELECT branches FROM trans_global WHERE id = $1";

/// The columns [`SAVE`] and [`CLAIM_SAVE`] set before `owner`.
macro_rules! save_head {
    () => {
        "UPDATE trans_global SET update_time = $2, \
         status = COALESCE($3, status), \
         finish_time = CASE WHEN $3 = $4 THEN $2 ELSE finish_time END, \
         rollback_time = CASE WHEN $3 = $5 THEN $2 ELSE rollback_time END, \
         rollback_reason = COALESCE($6, rollback_reason), "
    };
}

/// The columns [`SAVE`] and [`CLAIM_SAVE`] set after `owner`.
macro_rules! save_tail {
    () => {
        "lease_until = {now} + ($8 - $2), \
         next_cron_time = COALESCE({now} + ($9 - $2), next_cron_time), \
         next_cron_interval = COALESCE($10, next_cron_interval), \
         result = COALESCE($13, result), \
         held_host = CASE WHEN $7 THEN $14 ELSE held_host END "
    };
}

/// The fenced write of the global row: matches nothing unless `owner = $12`. Renew keeps the
/// owner and moves `lease_until`; Release (`$7`) clears both and reschedules, and sets
/// `held_host` to `$14` (NULL unless the release is a hold). `$13`: a workflow's result,
/// when it finishes.
pub const SAVE: &str = concat!(
    save_head!(),
    "owner = CASE WHEN $7 THEN NULL ELSE owner END, ",
    save_tail!(),
    "WHERE gid = $11 AND owner = $12"
);

/// [`SAVE`] of a row that [`CLAIM_PICK`] read and nothing took yet (SQLite: the writer is
/// alone): it takes the row too, setting `owner = $12` (or clearing it on a release), found by
/// its id `$15` instead of the fence. One UPDATE where [`CLAIM_TAKE`] and [`SAVE`] are two.
pub const CLAIM_SAVE: &str =
    concat!(save_head!(), "owner = CASE WHEN $7 THEN NULL ELSE $12 END, ", save_tail!(), "WHERE id = $15");

/// The fenced write of a save that only renews the lease (no status, reason, result,
/// reschedule or hold): the mid-round write before each later call. It names no column of the
/// due or held indexes, so SQLite (which rewrites the entries of every index whose column a SET
/// names, whether or not the value changed) leaves them alone: half the cost of [`SAVE`].
pub const RENEW: &str = "UPDATE trans_global SET update_time = $2, lease_until = {now} + ($3 - $2) \
     WHERE gid = $4 AND owner = $5";

/// One branch row of a save.
pub const UPDATE_BRANCH: &str = "UPDATE trans_branch_op SET status = $1, attempts = $2, last_error = $3, \
     finish_time = $4, update_time = $5 WHERE gid = $6 AND branch_id = $7 AND op = $8";

/// [`UPDATE_BRANCH`] of a row whose id the caller read (`$9`): SQLite finds it by its rowid,
/// not through the `(gid, branch_id, op)` index, and checks the key columns on the row.
pub const UPDATE_BRANCH_BY_ID: &str = "UPDATE trans_branch_op SET status = $1, attempts = $2, \
     last_error = $3, finish_time = $4, update_time = $5 WHERE id = $9 AND gid = $6 AND branch_id = $7 \
     AND op = $8";

/// The check before adding branches, locking the row until the inserts are done.
pub const ADD_BRANCHES_CHECK: &str = "SELECT id, gid, trans_type, status, owner, lease_until, \
     create_time, options, {now} AS db_now FROM trans_global WHERE gid = $2{lock}";

/// Bumps `update_time` of the row the check read (by its id: no second lookup by gid).
pub const TOUCH: &str = "UPDATE trans_global SET update_time = $1 WHERE id = $2";

/// The status before an operator stop, locked.
pub const FORCE_STOP_READ: &str = "SELECT status FROM trans_global WHERE gid = $1{lock}";

/// The operator stop: `failed`, owner cleared.
pub const FORCE_STOP: &str = concat!(
    "UPDATE trans_global SET status = $1, rollback_time = $2, update_time = $2, ",
    "rollback_reason = $3, owner = NULL, lease_until = NULL WHERE gid = $4 AND ",
    unfinished!()
);

/// Makes one transaction due now with its retry interval back to `$2`.
pub const RESET_NEXT_CRON_TIME: &str = "UPDATE trans_global SET next_cron_time = {now}, \
     next_cron_interval = $2, update_time = $3 WHERE gid = $4";

/// Pulls up to `$4` unfinished rows scheduled after `$3` (a caller time, moved onto the clock)
/// back to now. The sub-select locks its rows, so a row changed meanwhile is judged again.
pub const RESET_CRON_TIME: &str = concat!(
    "UPDATE trans_global SET next_cron_time = {now}, update_time = $2 WHERE id IN (",
    "SELECT id FROM trans_global WHERE ",
    unfinished!(),
    " AND next_cron_time > {now} + ($3 - $2) LIMIT $4{lock})"
);

/// A host came back: up to `$4` unfinished rows held for `$3` and under no valid lease become
/// due now, marked resumed (`held_host = ''`, see `Store::resume_held`). The sub-select locks its rows, so a row changed meanwhile is judged
/// again.
pub const RESUME_HELD: &str = concat!(
    "UPDATE trans_global SET next_cron_time = {now}, held_host = '', update_time = $2 WHERE id IN (",
    "SELECT id FROM trans_global WHERE held_host = $3 AND ",
    unfinished!(),
    " AND (owner IS NULL OR lease_until IS NULL OR lease_until < {now}) LIMIT $4{lock})"
);

/// A kv row at version 1.
pub const KV_INSERT: &str =
    "INSERT INTO kv (cat, k, v, version, create_time, update_time) VALUES ($1, $2, $3, 1, $4, $4)";

/// Compare-and-set of a kv row.
pub const KV_UPDATE: &str = "UPDATE kv SET v = $1, version = version + 1, update_time = $2 \
     WHERE cat = $3 AND k = $4 AND version = $5";

/// A kv row's version.
pub const KV_VERSION: &str = "SELECT version FROM kv WHERE cat = $1 AND k = $2";

/// Deletes a kv row.
pub const KV_DELETE: &str = "DELETE FROM kv WHERE cat = $1 AND k = $2";

/// One global row.
pub const LOAD_GLOBAL: &str =
    concat!("SELECT ", crate::global_columns!(), " FROM trans_global WHERE gid = $1");

/// The admin listing, newest first. `id < COALESCE(...)` (rather than `$1 IS NULL OR id < $1`)
/// keeps a plain range on the primary key, so a deep page starts where the cursor is.
pub const LIST: &str = concat!(
    "SELECT ",
    crate::global_columns!(),
    " FROM trans_global WHERE id < COALESCE($1, 9223372036854775807)",
    " AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR trans_type = $3)",
    " AND ($4 IS NULL OR create_time >= $4) AND ($5 IS NULL OR create_time <= $5)",
    " AND ($7 IS NULL OR {gid_prefix})",
    " ORDER BY id DESC LIMIT $6"
);

/// Rows per unfinished status and, per status, how many are due and held by nobody (`$1` =
/// fixed now), read through the partial index `trans_global_due` (its predicate repeated):
/// cheap however many finished rows are kept. `COUNT` of a `CASE` (not `SUM`): an integer on
/// every database.
pub const UNFINISHED_COUNTS: &str = concat!(
    "SELECT status, COUNT(*) AS n, \
     COUNT(CASE WHEN next_cron_time <= {now} \
     AND (owner IS NULL OR lease_until IS NULL OR lease_until < {now}) THEN 1 END) AS due \
     FROM trans_global WHERE ",
    unfinished!(),
    " GROUP BY status"
);

/// The finished rows per final status, in one pass without a sort: a `GROUP BY status` of every
/// row sorted them (SQLite: 0.3-0.7 s per million rows, against 0.14 s for this).
pub const FINISHED_COUNTS: &str = "SELECT COUNT(CASE WHEN status = 'succeed' THEN 1 END) AS succeed, \
     COUNT(CASE WHEN status = 'failed' THEN 1 END) AS failed FROM trans_global";

/// Retention: the oldest finished transactions written before `$1`, at most `$2`, locked (and
/// skipping rows other nodes hold), so several nodes purging at once take disjoint rows.
pub const PURGE_SELECT: &str = "SELECT id, gid FROM trans_global WHERE status IN ('succeed', 'failed') \
     AND update_time < $1 ORDER BY update_time, id LIMIT $2{skip_locked}";

/// Retention: one purged transaction's branch rows.
pub const PURGE_BRANCHES: &str = "DELETE FROM trans_branch_op WHERE gid = $1";

/// Retention: one purged transaction's global row (only while still finished).
pub const PURGE_GLOBAL: &str = "DELETE FROM trans_global WHERE id = $1 AND status IN ('succeed', 'failed')";

/// One kv row.
pub const KV_GET: &str = concat!("SELECT ", crate::kv_columns!(), " FROM kv WHERE cat = $1 AND k = $2");

/// A category's kv rows, newest first, keyset-paged by id.
pub const KV_SCAN: &str = concat!(
    "SELECT ",
    crate::kv_columns!(),
    " FROM kv WHERE cat = $1 AND id < COALESCE($2, 9223372036854775807) ORDER BY id DESC LIMIT $3"
);
