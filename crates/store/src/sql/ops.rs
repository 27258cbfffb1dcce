//! Every store operation, once, over a [`Conn`]: the order of statements, the fence, and the
//! meaning of "nothing matched". Writes run inside the transaction (and savepoint) the writer
//! opened; reads inside the snapshot the backend opened.

use dtx_core::time::duration_millis;
use dtx_core::{Branch, Global, GlobalStatus, Timestamp, TransOptions, TransType};

use super::{Arg, Conn};
use crate::rows;
use crate::write::{Output, WriteOp};
use crate::{
    BranchUpdate, ClaimedThen, Error, Expect, KvRow, LeaseChange, ListFilter, Loaded, NewTransaction, Result,
    Save, StatusCounts, ThenSave,
};

/// Runs one write operation.
pub async fn run<C: Conn>(conn: &mut C, op: &WriteOp) -> Result<Output> {
    Ok(match op {
        WriteOp::Create(tx) => Output::Created(create(conn, tx).await?),
        WriteOp::ClaimDue { owner, now, lease_until, limit } => {
            Output::Claimed(claim_due(conn, owner, *now, *lease_until, *limit).await?)
        }
        WriteOp::Claim { gid, owner, now, lease_until } => {
            Output::ClaimedOne(claim(conn, gid, owner, *now, *lease_until).await?.map(Box::new))
        }
        WriteOp::ClaimThen { gid, owner, now, lease_until, then } => {
            Output::ClaimedThen(claim_then(conn, gid, owner, *now, *lease_until, then).await?.map(Box::new))
        }
        WriteOp::Save(s) => save(conn, s).await.map(|()| Output::Done)?,
        WriteOp::AddBranches { gid, expect, branches, now } => {
            add_branches(conn, gid, expect, branches, *now).await.map(|()| Output::Done)?
        }
        WriteOp::ForceStop { gid, reason, now } => {
            Output::Stopped(force_stop(conn, gid, reason, *now).await?)
        }
        WriteOp::ResetNextCronTime { gid, base, now } => {
            let args = [
                Arg::Int(conn.fixed(*now)),
                Arg::int(duration_millis(*base)),
                Arg::time(*now),
                Arg::text(gid),
            ];
            let sql = &conn.sql().reset_next_cron_time;
            if conn.execute(sql, &args, "reset next cron time").await? == 0 {
                return Err(Error::NotFound(format!("transaction {gid}")));
            }
            Output::Done
        }
        WriteOp::PurgeFinished { before, limit } => {
            Output::Count(purge_finished(conn, *before, *limit).await?)
        }
        WriteOp::ResetCronTime { later_than, limit, now } => {
            let args = [
                Arg::Int(conn.fixed(*now)),
                Arg::time(*now),
                Arg::time(*later_than),
                Arg::int(i64::from(*limit)),
            ];
            Output::Count(conn.execute(&conn.sql().reset_cron_time, &args, "reset cron time").await?)
        }
        WriteOp::ResumeHeld { host, limit, now } => {
            let args =
                [Arg::Int(conn.fixed(*now)), Arg::time(*now), Arg::text(host), Arg::int(i64::from(*limit))];
            Output::Count(conn.execute(&conn.sql().resume_held, &args, "resume held").await?)
        }
        WriteOp::KvInsert { cat, k, v, now } => {
            let args = [Arg::text(cat), Arg::text(k), Arg::text(v), Arg::time(*now)];
            conn.execute(&conn.sql().kv_insert, &args, "kv insert").await.map_err(|e| match e {
                Error::Conflict(_) => Error::Conflict(format!("kv {cat}/{k} already exists")),
                other => other,
            })?;
            Output::Done
        }
        WriteOp::KvUpdate { cat, k, v, version, now } => {
            kv_update(conn, cat, k, v, *version, *now).await.map(|()| Output::Done)?
        }
        WriteOp::KvDelete { cat, k } => {
            let sql = &conn.sql().kv_delete;
            if conn.execute(sql, &[Arg::text(cat), Arg::text(k)], "kv delete").await? == 0 {
                return Err(Error::NotFound(format!("kv {cat}/{k}")));
            }
            Output::Done
        }
    })
}

/// The parameters of [`super::templates::INSERT_BRANCH`].
pub fn branch_args<'a>(gid: &'a str, b: &'a Branch) -> [Arg<'a>; 11] {
    [
        Arg::text(gid),
        Arg::text(&b.branch_id),
        Arg::text(b.op.as_str()),
        Arg::text(&b.url),
        Arg::Blob(&b.payload),
        Arg::text(b.status.as_str()),
        Arg::int(i64::from(b.attempts)),
        Arg::text(&b.last_error),
        Arg::time(b.create_time),
        Arg::time(b.update_time),
        Arg::opt_time(b.finish_time),
    ]
}

/// The parameters of [`super::templates::UPDATE_BRANCH`].
pub(crate) fn update_args<'a>(gid: &'a str, now: Timestamp, b: &'a BranchUpdate) -> [Arg<'a>; 8] {
    [
        Arg::text(b.status.as_str()),
        Arg::int(i64::from(b.attempts)),
        Arg::text(&b.last_error),
        Arg::opt_time(b.finish_time),
        Arg::time(now),
        Arg::text(gid),
        Arg::text(&b.branch_id),
        Arg::text(b.op.as_str()),
    ]
}

/// A failed branch insert: a unique violation is a branch given twice (or already there).
pub fn branch_conflict(err: Error, gid: &str, which: &str) -> Error {
    match err {
        Error::Conflict(_) => Error::Conflict(format!("{which} of {gid} already exists")),
        other => other,
    }
}

/// Inserts branch rows one statement each, in the order given; a duplicate is a `Conflict`
/// naming the row ([`Conn::insert_branches`], and SQLite's fallback from a multi-row insert).
pub async fn insert_branches_one_by_one<C: Conn + ?Sized>(
    conn: &mut C,
    gid: &str,
    branches: &[Branch],
) -> Result<()> {
    let sql = &conn.sql().insert_branch;
    for b in branches {
        conn.execute(sql, &branch_args(gid, b), "insert branch")
            .await
            .map_err(|e| branch_conflict(e, gid, &format!("branch {}/{}", b.branch_id, b.op)))?;
    }
    Ok(())
}

/// Applies a save's branch updates to branch rows ([`Conn::update_branches`]' default). A row
/// whose id the caller knows is found by it (one b-tree search instead of two); an id that
/// names no row of that key (an id from before the branches became rows, ADR 26) falls back
/// to the key.
pub async fn update_branch_rows<C: Conn + ?Sized>(
    conn: &mut C,
    gid: &str,
    now: Timestamp,
    updates: &[BranchUpdate],
) -> Result<()> {
    for b in updates {
        let args = update_args(gid, now, b);
        let mut matched = 0;
        if b.id > 0 {
            let [a1, a2, a3, a4, a5, a6, a7, a8] = args;
            let by_id = [a1, a2, a3, a4, a5, a6, a7, a8, Arg::int(b.id)];
            matched = conn.execute(&conn.sql().update_branch_by_id, &by_id, "save branch").await?;
        }
        if matched == 0 {
            matched = conn.execute(&conn.sql().update_branch, &args, "save branch").await?;
        }
        if matched == 0 {
            return Err(missing_branch(gid, &b.branch_id, b.op.as_str()));
        }
    }
    Ok(())
}

/// A JSON array of gids: the one parameter of the statements that read several transactions'
/// rows (their text stays static).
pub fn gid_list(gids: &[&str]) -> Result<String> {
    serde_json::to_string(gids).map_err(|e| Error::Internal(anyhow::Error::new(e).context("gid list")))
}

/// The branch rows of the given transactions (ascending id), with their gids
/// ([`Conn::branches_of`]' default).
pub async fn branch_rows_of<C: Conn + ?Sized>(conn: &mut C, gids: &[&str]) -> Result<Vec<(String, Branch)>> {
    let json = gid_list(gids)?;
    let sql = &conn.sql().branches_of_json;
    let mut rows = conn.fetch(sql, &[Arg::text(&json)], "branches", rows::branch).await?;
    // The statement does not order them (see the template).
    rows.sort_by_key(|(_, b)| b.id);
    Ok(rows)
}

/// A save naming a branch that does not exist is an engine bug: the whole save is refused
/// rather than a result silently dropped (the caller rolls the global update back too).
pub fn missing_branch(gid: &str, branch_id: &str, op: &str) -> Error {
    Error::NotFound(format!("branch {branch_id}/{op} of {gid}"))
}

/// Inserts the global row and its branches. A duplicate gid fails on the unique index
/// (→ `Conflict`); the caller's transaction or savepoint then discards the partial insert.
/// The caller's "now" is the row's `update_time` (when the engine built it). Returns the branch
/// rows' ids where the connection knows them ([`Conn::inserted_ids`]).
async fn create<C: Conn>(conn: &mut C, tx: &NewTransaction) -> Result<Vec<i64>> {
    let g = &tx.global;
    let options = g.options.to_json();
    let args = [
        Arg::Int(conn.fixed(g.update_time)),
        Arg::text(&g.gid),
        Arg::text(g.trans_type.as_str()),
        Arg::text(g.status.as_str()),
        Arg::text(&g.protocol),
        Arg::text(&g.query_prepared),
        Arg::text(&g.custom_data),
        Arg::text(&options),
        Arg::text(&g.rollback_reason),
        Arg::text(&g.result),
        Arg::time(g.create_time),
        Arg::time(g.update_time),
        Arg::opt_time(g.finish_time),
        Arg::opt_time(g.rollback_time),
        Arg::time(g.next_cron_time),
        Arg::int(duration_millis(g.next_cron_interval)),
        Arg::Text(g.owner.as_deref()),
        Arg::opt_time(g.lease_until),
    ];
    conn.create_row(&g.gid, &args, &tx.branches).await
}

/// A failed insert of a global row: a unique violation is its gid taken.
pub fn gid_conflict(err: Error, gid: &str) -> Error {
    match err {
        Error::Conflict(_) => Error::Conflict(format!("transaction {gid} already exists")),
        other => other,
    }
}

/// Claims up to `limit` due rows, then reads their branches (in the same transaction: the rows
/// are claimed, so their branches cannot change underneath). The most overdue come first.
async fn claim_due<C: Conn>(
    conn: &mut C,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
    limit: u32,
) -> Result<Vec<Loaded>> {
    let mut claimed = conn.claim_due_rows(owner, now, lease_until, limit).await?;
    if claimed.is_empty() {
        return Ok(Vec::new());
    }
    claimed.sort_by_key(|(g, _)| (g.next_cron_time, g.id));
    let (globals, taken_over): (Vec<Global>, Vec<bool>) = claimed.into_iter().unzip();
    let gids: Vec<&str> = globals.iter().map(|g| g.gid.as_str()).collect();
    let branches = conn.branches_of(&gids).await?;
    let mut loaded = rows::pair(globals, branches);
    for (l, taken) in loaded.iter_mut().zip(taken_over) {
        l.taken_over = taken;
    }
    Ok(loaded)
}

/// Claims one transaction if it is not final and has no valid lease (due or not).
async fn claim<C: Conn>(
    conn: &mut C,
    gid: &str,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Option<Loaded>> {
    if C::ALONE {
        let Some(loaded) = pick(conn, gid, owner, now, lease_until).await? else {
            return Ok(None);
        };
        conn.take_row(loaded.global.id, owner, now, lease_until, None).await?;
        return Ok(Some(loaded));
    }
    let Some(global) = conn.claim_row(gid, owner, now, lease_until).await? else {
        return Ok(None);
    };
    with_branches(conn, global).await.map(Some)
}

/// A claim and the save its decision asks for, in the caller's one transaction. Where the
/// writer is alone ([`Conn::ALONE`]), the row and its branches are read, the save is decided on
/// them, and one UPDATE both takes the row and writes the save's global half (`CLAIM_SAVE`),
/// where a claim's UPDATE and the save's are two. A save fenced by another owner (which no
/// decision makes) goes the long way there too: take, then a fenced save.
async fn claim_then<C: Conn>(
    conn: &mut C,
    gid: &str,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
    then: &ThenSave,
) -> Result<Option<ClaimedThen>> {
    let (loaded, in_one) = if C::ALONE {
        let Some(loaded) = pick(conn, gid, owner, now, lease_until).await? else {
            return Ok(None);
        };
        (loaded, true)
    } else {
        let Some(loaded) = claim(conn, gid, owner, now, lease_until).await? else {
            return Ok(None);
        };
        (loaded, false)
    };
    let id = loaded.global.id;
    let saved = match (then.0)(&loaded) {
        Some(s) if in_one && s.owner == owner && s.gid == gid => {
            conn.take_row(id, owner, now, lease_until, Some(&s)).await?;
            // Packed branches are in the row: the take wrote them.
            if !s.branches.is_empty() && !conn.sql().branches_in_row {
                conn.update_branches(&s.gid, s.now, &s.branches).await?;
            }
            true
        }
        other => {
            if in_one {
                conn.take_row(id, owner, now, lease_until, None).await?;
            }
            match other {
                Some(s) => {
                    save(conn, &s).await?;
                    true
                }
                None => false,
            }
        }
    };
    Ok(Some(ClaimedThen { loaded, saved }))
}

/// Where the writer is alone ([`Conn::ALONE`]): the transaction a claim by gid would take, read
/// with its branches in one statement (`CLAIM_PICK`) and shown as owned by `owner`; the caller
/// takes the row ([`Conn::take_row`]).
async fn pick<C: Conn>(
    conn: &mut C,
    gid: &str,
    owner: &str,
    now: Timestamp,
    lease_until: Timestamp,
) -> Result<Option<Loaded>> {
    let Some((mut global, packed)) = conn.pick_row(gid, now).await? else {
        return Ok(None);
    };
    global.owner = Some(owner.to_owned());
    global.lease_until = Some(lease_until);
    load_branches(conn, global, Some(packed)).await.map(Some)
}

/// Decodes a row's packed branches (ADR 26); a value that does not decode is a corrupt row.
pub fn unpack(gid: &str, bytes: &[u8]) -> Result<Vec<Branch>> {
    crate::packed::decode(bytes)
        .map_err(|e| Error::Internal(anyhow::Error::new(e).context(format!("corrupt row {gid}"))))
}

/// Pairs a global row with its branch rows (or its packed branches).
async fn with_branches<C: Conn>(conn: &mut C, global: Global) -> Result<Loaded> {
    let packed = if conn.sql().branches_in_row {
        let of_id = &conn.sql().packed_of_id;
        conn.fetch(of_id, &[Arg::int(global.id)], "branches", |row| row.blob("branches")).await?.pop()
    } else {
        None
    };
    load_branches(conn, global, packed).await
}

/// Pairs a global row with its branches: `packed`, the row's packed value when it was read,
/// else its branch rows.
async fn load_branches<C: Conn>(conn: &mut C, global: Global, packed: Option<Vec<u8>>) -> Result<Loaded> {
    // An empty value: the branches are rows (a large transaction, or one written before).
    if let Some(bytes) = packed.filter(|b| !b.is_empty()) {
        let branches = unpack(&global.gid, &bytes)?;
        return Ok(Loaded { global, branches, taken_over: false });
    }
    let branches =
        conn.fetch(&conn.sql().branches_of_gid, &[Arg::text(&global.gid)], "branches", rows::branch).await?;
    let mut branches: Vec<Branch> = branches.into_iter().map(|(_, b)| b).collect();
    // The statement does not order them (see the template).
    branches.sort_by_key(|b| b.id);
    Ok(Loaded { global, branches, taken_over: false })
}

/// The fenced write. The global UPDATE goes first and carries the fence (`owner = $token`): if
/// it matches nothing, the branch updates are never issued and the caller gets `Fenced`.
async fn save<C: Conn>(conn: &mut C, save: &Save) -> Result<()> {
    if conn.sql().branches_in_row && !save.branches.is_empty() {
        // One UPDATE: the fence, the global half and the packed branches.
        if conn.save_with_branches(save).await? == 0 {
            return Err(Error::Fenced { gid: save.gid.clone() });
        }
        return Ok(());
    }
    let matched = match (&save.status, &save.lease) {
        (None, LeaseChange::Renew { lease_until }) => {
            let args = [
                Arg::Int(conn.fixed(save.now)),
                Arg::time(save.now),
                Arg::time(*lease_until),
                Arg::text(&save.gid),
                Arg::text(&save.owner),
            ];
            conn.execute(&conn.sql().renew, &args, "save").await?
        }
        _ => save_global(conn, save).await?,
    };
    if matched == 0 {
        return Err(Error::Fenced { gid: save.gid.clone() });
    }
    if save.branches.is_empty() {
        return Ok(());
    }
    conn.update_branches(&save.gid, save.now, &save.branches).await
}

/// The global half of a save that changes more than the lease: [`super::templates::SAVE`].
async fn save_global<C: Conn>(conn: &mut C, save: &Save) -> Result<u64> {
    let args = save_args(conn.fixed(save.now), save);
    conn.execute(&conn.sql().save, &args, "save").await
}

/// The parameters of [`super::templates::SAVE`] (`$1` to `$14`) for `save`, `fixed` being
/// the connection's `$1` ([`Conn::fixed`]).
pub fn save_args(fixed: Option<i64>, save: &Save) -> [Arg<'_>; 14] {
    let status = save.status.as_ref().map(|s| s.to.as_str());
    let reason = save.status.as_ref().and_then(|s| s.rollback_reason.as_deref());
    let result = save.status.as_ref().and_then(|s| s.result.as_deref());
    let (release, lease_until, next_cron_time, next_cron_interval, held_host) = lease_columns(&save.lease);
    [
        Arg::Int(fixed),
        Arg::time(save.now),
        Arg::Text(status),
        Arg::text(GlobalStatus::Succeed.as_str()),
        Arg::text(GlobalStatus::Failed.as_str()),
        Arg::Text(reason),
        Arg::Bool(release),
        Arg::Int(lease_until),
        Arg::Int(next_cron_time),
        Arg::Int(next_cron_interval),
        Arg::text(&save.gid),
        Arg::text(&save.owner),
        Arg::Text(result),
        Arg::Text(held_host),
    ]
}

/// The columns a [`LeaseChange`] writes: whether the owner is released, then `lease_until`,
/// `next_cron_time`, `next_cron_interval` (each `None` when kept, or cleared for the lease)
/// and `held_host`.
pub fn lease_columns(lease: &LeaseChange) -> (bool, Option<i64>, Option<i64>, Option<i64>, Option<&str>) {
    match lease {
        LeaseChange::Renew { lease_until } => (false, Some(lease_until.as_millis()), None, None, None),
        LeaseChange::RenewRescheduled { lease_until, next_cron_time, next_cron_interval } => (
            false,
            Some(lease_until.as_millis()),
            Some(next_cron_time.as_millis()),
            Some(duration_millis(*next_cron_interval)),
            None,
        ),
        LeaseChange::Release { next_cron_time, next_cron_interval } => {
            (true, None, Some(next_cron_time.as_millis()), Some(duration_millis(*next_cron_interval)), None)
        }
        LeaseChange::Hold { next_cron_time, next_cron_interval, host } => (
            true,
            None,
            Some(next_cron_time.as_millis()),
            Some(duration_millis(*next_cron_interval)),
            Some(host.as_str()),
        ),
    }
}

/// What [`add_branches`] checks first.
struct Check {
    id: i64,
    trans_type: TransType,
    status: String,
    owner: Option<String>,
    lease_until: Option<i64>,
    db_now: i64,
    create_time: Timestamp,
    timeout_to_fail: u64,
}

fn check(row: &dyn rows::Columns) -> Result<Check> {
    let gid = row.text("gid")?;
    let options = row.text("options")?;
    let options = TransOptions::from_json(&options)
        .map_err(|source| crate::CorruptRow::Options { gid: gid.clone(), source })?;
    Ok(Check {
        id: row.int("id")?,
        trans_type: rows::parsed(row, "trans_type", &gid)?,
        status: row.text("status")?,
        owner: row.opt_text("owner")?,
        lease_until: row.opt_int("lease_until")?,
        db_now: row.int("db_now")?,
        create_time: Timestamp(row.int("create_time")?),
        timeout_to_fail: options.timeout_to_fail,
    })
}

/// Adds branch rows to a transaction that is `prepared` and not held under a valid lease (by
/// the clock). The global row is read `{lock}`ed: until this transaction ends, a claim of it
/// waits or skips it, so no round can start between the check and the inserts (on SQLite the
/// writer is alone, which is the same). A duplicate `(gid, branch_id, op)` fails the request,
/// and its savepoint is rolled back. A backend may first try the common case without the read
/// ([`Conn::try_register_branches`]); the check then runs only when that matched nothing.
async fn add_branches<C: Conn>(
    conn: &mut C,
    gid: &str,
    expect: &Expect,
    branches: &[Branch],
    now: Timestamp,
) -> Result<()> {
    if conn.try_register_branches(gid, expect, branches, now).await? {
        return Ok(());
    }
    let args = [Arg::Int(conn.fixed(now)), Arg::text(gid)];
    let row = conn.fetch(&conn.sql().add_branches_check, &args, "add branches: check", check).await?;
    let row = row.into_iter().next().ok_or_else(|| Error::NotFound(format!("transaction {gid}")))?;
    let prepared = row.status == GlobalStatus::Prepared.as_str();
    if row.trans_type != expect.trans_type || prepared {
        expect.check(gid, row.trans_type, row.timeout_to_fail, row.create_time, now)?;
    }
    if !prepared {
        return Err(Error::Precondition(format!("transaction {gid} is {}, not prepared", row.status)));
    }
    if let (Some(_), Some(lease)) = (row.owner, row.lease_until)
        && lease >= row.db_now
    {
        return Err(Error::Precondition(format!(
            "transaction {gid} is being processed (leased until {lease} ms, now {} ms)",
            row.db_now
        )));
    }
    conn.register_branches(gid, row.id, branches, now).await
}

/// Operator stop of a non-final transaction: `failed`, owner cleared (the round holding it is
/// fenced at its next save). The status is read `{lock}`ed, so the UPDATE sees the same row.
async fn force_stop<C: Conn>(conn: &mut C, gid: &str, reason: &str, now: Timestamp) -> Result<GlobalStatus> {
    let sql = &conn.sql().force_stop_read;
    let old = conn
        .fetch(sql, &[Arg::text(gid)], "force stop: read", |row| {
            rows::parsed::<GlobalStatus>(row, "status", "")
        })
        .await?;
    let old = old.into_iter().next().ok_or_else(|| Error::NotFound(format!("transaction {gid}")))?;
    if old.is_final() {
        return Err(Error::Precondition(format!("transaction {gid} already {old}")));
    }
    let args = [Arg::text(GlobalStatus::Failed.as_str()), Arg::time(now), Arg::text(reason), Arg::text(gid)];
    if conn.execute(&conn.sql().force_stop, &args, "force stop").await? != 1 {
        return Err(Error::Internal(anyhow::anyhow!(
            "force stop of {gid}: the row changed between the read and the update"
        )));
    }
    Ok(old)
}

/// Compare-and-set: replaces the value only at `version`, which then becomes `version + 1`.
async fn kv_update<C: Conn>(
    conn: &mut C,
    cat: &str,
    k: &str,
    v: &str,
    version: i64,
    now: Timestamp,
) -> Result<()> {
    let args = [Arg::text(v), Arg::time(now), Arg::text(cat), Arg::text(k), Arg::int(version)];
    if conn.execute(&conn.sql().kv_update, &args, "kv update").await? > 0 {
        return Ok(());
    }
    // Nothing matched: tell a stale version from a missing row.
    let sql = &conn.sql().kv_version;
    let current = conn
        .fetch(sql, &[Arg::text(cat), Arg::text(k)], "kv update: check", |row| row.int("version"))
        .await?;
    Err(match current.first() {
        Some(current) => Error::Conflict(format!("kv {cat}/{k} is at version {current}, not {version}")),
        None => Error::NotFound(format!("kv {cat}/{k}")),
    })
}

/// A transaction and its branches; run it inside a snapshot (see each backend's `load`).
pub async fn load_in<C: Conn>(conn: &mut C, gid: &str) -> Result<Option<Loaded>> {
    let rows = conn.fetch(&conn.sql().load_global, &[Arg::text(gid)], "load global", rows::global).await?;
    let Some(global) = rows.into_iter().next() else {
        return Ok(None);
    };
    with_branches(conn, global).await.map(Some)
}

/// The admin listing: newest first, keyset-paged by id.
pub async fn list<C: Conn>(conn: &mut C, filter: &ListFilter) -> Result<Vec<Global>> {
    let args = [
        Arg::Int(filter.before_id),
        Arg::Text(filter.status.map(|s| s.as_str())),
        Arg::Text(filter.trans_type.map(|t| t.as_str())),
        Arg::opt_time(filter.created_from),
        Arg::opt_time(filter.created_to),
        Arg::int(i64::from(filter.limit)),
        Arg::Text(filter.gid_prefix.as_deref()),
    ];
    conn.fetch(&conn.sql().list, &args, "list", rows::global).await
}

/// Unfinished rows per status, and the due backlog at `now` (through the due index).
pub async fn unfinished_counts<C: Conn>(conn: &mut C, now: Timestamp) -> Result<StatusCounts> {
    let args = [Arg::Int(conn.fixed(now))];
    let decode: crate::sql::Decode<(String, i64, i64)> =
        |row| Ok((row.text("status")?, row.int("n")?, row.int("due")?));
    rows::status_counts(conn.fetch(&conn.sql().unfinished_counts, &args, "unfinished counts", decode).await?)
}

/// The finished rows per final status (statuses without rows left out).
pub async fn finished_counts<C: Conn>(conn: &mut C) -> Result<Vec<(GlobalStatus, u64)>> {
    let decode: crate::sql::Decode<(i64, i64)> = |row| Ok((row.int("succeed")?, row.int("failed")?));
    let rows = conn.fetch(&conn.sql().finished_counts, &[], "finished counts", decode).await?;
    let (succeed, failed) = rows.first().copied().unwrap_or((0, 0));
    // COUNT is never negative.
    let counts = [(GlobalStatus::Failed, failed), (GlobalStatus::Succeed, succeed)];
    Ok(counts.into_iter().filter(|(_, n)| *n > 0).map(|(s, n)| (s, u64::try_from(n).unwrap_or(0))).collect())
}

/// Retention: deletes up to `limit` finished transactions written before `before`, oldest
/// first, with their branches. The rows are picked and locked first, then deleted one by one
/// by id, so a concurrent purge on another node never leaves branches without their global row.
async fn purge_finished<C: Conn>(conn: &mut C, before: Timestamp, limit: u32) -> Result<u64> {
    let decode: crate::sql::Decode<(i64, String)> = |row| Ok((row.int("id")?, row.text("gid")?));
    let args = [Arg::time(before), Arg::int(i64::from(limit))];
    let doomed = conn.fetch(&conn.sql().purge_select, &args, "purge: select", decode).await?;
    let mut deleted = 0;
    for (id, gid) in &doomed {
        conn.execute(&conn.sql().purge_branches, &[Arg::text(gid)], "purge: branches").await?;
        deleted += conn.execute(&conn.sql().purge_global, &[Arg::int(*id)], "purge: global").await?;
    }
    Ok(deleted)
}

/// One key-value row.
pub async fn kv_get<C: Conn>(conn: &mut C, cat: &str, k: &str) -> Result<Option<KvRow>> {
    let rows = conn.fetch(&conn.sql().kv_get, &[Arg::text(cat), Arg::text(k)], "kv get", rows::kv).await?;
    Ok(rows.into_iter().next())
}

/// A category's rows, newest (highest id) first, keyset-paged by id like [`list`].
pub async fn kv_scan<C: Conn>(
    conn: &mut C,
    cat: &str,
    before_id: Option<i64>,
    limit: u32,
) -> Result<Vec<KvRow>> {
    let args = [Arg::text(cat), Arg::Int(before_id), Arg::int(i64::from(limit))];
    conn.fetch(&conn.sql().kv_scan, &args, "kv scan", rows::kv).await
}
