//! Row <-> domain conversions: the column lists every query selects, and their decoding.

use std::collections::HashMap;
use std::time::Duration;

use dtx_core::{Branch, Global, Timestamp, TransOptions};
use dtx_store::{Error, KvRow, Loaded, Result};
use sqlx::Row;
use sqlx::postgres::PgRow;

use dtx_store::CorruptRow;

use crate::error::map_sqlx;

/// The columns of `trans_global` in the order [`global`] reads them (by name).
/// Kept as one literal per query site via `concat!` so every query stays a `&'static str`.
macro_rules! global_columns {
    () => {
        "id, gid, trans_type, status, protocol, query_prepared, custom_data, options, \
         rollback_reason, result, create_time, update_time, finish_time, rollback_time, \
         next_cron_time, next_cron_interval, owner, lease_until"
    };
}

/// The columns of `trans_branch_op` that [`branch`] reads (plus `gid`, to group claimed rows).
macro_rules! branch_columns {
    () => {
        "id, gid, branch_id, op, url, payload, status, attempts, last_error, create_time, \
         update_time, finish_time"
    };
}

/// The columns of `kv` that [`kv`] reads.
macro_rules! kv_columns {
    () => {
        "id, cat, k, v, version, create_time, update_time"
    };
}

/// The time a statement decides ownership by, in epoch milliseconds: the database's clock
/// (`statement_timestamp()`: one value for the whole statement, taken when it starts, unlike
/// `now()` which is frozen at the start of a group-commit batch), unless the statement's `$1`
/// carries a fixed time ([`crate::ClockSource::Caller`]). Every write statement binds `$1`.
macro_rules! db_now {
    () => {
        "COALESCE($1::bigint, floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint)"
    };
}

pub(crate) use {branch_columns, db_now, global_columns, kv_columns};

pub(crate) fn get<'r, T>(row: &'r PgRow, column: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(|e| map_sqlx("decode row", e))
}

fn time(row: &PgRow, column: &'static str) -> Result<Timestamp> {
    get::<i64>(row, column).map(Timestamp)
}

fn opt_time(row: &PgRow, column: &'static str) -> Result<Option<Timestamp>> {
    get::<Option<i64>>(row, column).map(|t| t.map(Timestamp))
}

pub(crate) fn parsed<T>(row: &PgRow, column: &'static str, gid: &str) -> Result<T>
where
    T: std::str::FromStr<Err = dtx_core::model::UnknownName>,
{
    let text: String = get(row, column)?;
    text.parse().map_err(|source| Error::from(CorruptRow::Name { gid: gid.to_owned(), source }))
}

/// Decodes a `trans_global` row selected with [`global_columns!`].
pub(crate) fn global(row: &PgRow) -> Result<Global> {
    let gid: String = get(row, "gid")?;
    let options: String = get(row, "options")?;
    let options = TransOptions::from_json(&options)
        .map_err(|source| CorruptRow::Options { gid: gid.clone(), source })?;
    let interval: i64 = get(row, "next_cron_interval")?;
    let interval = u64::try_from(interval).map_err(|_| CorruptRow::Range {
        gid: gid.clone(),
        column: "next_cron_interval",
        value: interval,
    })?;
    Ok(Global {
        id: get(row, "id")?,
        trans_type: parsed(row, "trans_type", &gid)?,
        status: parsed(row, "status", &gid)?,
        protocol: get(row, "protocol")?,
        query_prepared: get(row, "query_prepared")?,
        custom_data: get(row, "custom_data")?,
        options,
        rollback_reason: get(row, "rollback_reason")?,
        result: get(row, "result")?,
        create_time: time(row, "create_time")?,
        update_time: time(row, "update_time")?,
        finish_time: opt_time(row, "finish_time")?,
        rollback_time: opt_time(row, "rollback_time")?,
        next_cron_time: time(row, "next_cron_time")?,
        next_cron_interval: Duration::from_millis(interval),
        owner: get(row, "owner")?,
        lease_until: opt_time(row, "lease_until")?,
        gid,
    })
}

/// Decodes a `trans_branch_op` row selected with [`branch_columns!`]; returns its gid too.
pub(crate) fn branch(row: &PgRow) -> Result<(String, Branch)> {
    let gid: String = get(row, "gid")?;
    let attempts: i64 = get(row, "attempts")?;
    let attempts = u32::try_from(attempts).map_err(|_| CorruptRow::Range {
        gid: gid.clone(),
        column: "attempts",
        value: attempts,
    })?;
    let branch = Branch {
        id: get(row, "id")?,
        branch_id: get(row, "branch_id")?,
        op: parsed(row, "op", &gid)?,
        url: get(row, "url")?,
        payload: get(row, "payload")?,
        status: parsed(row, "status", &gid)?,
        attempts,
        last_error: get(row, "last_error")?,
        create_time: time(row, "create_time")?,
        update_time: time(row, "update_time")?,
        finish_time: opt_time(row, "finish_time")?,
    };
    Ok((gid, branch))
}

/// Decodes a `kv` row selected with [`kv_columns!`].
pub(crate) fn kv(row: &PgRow) -> Result<KvRow> {
    Ok(KvRow {
        id: get(row, "id")?,
        cat: get(row, "cat")?,
        k: get(row, "k")?,
        v: get(row, "v")?,
        version: get(row, "version")?,
        create_time: time(row, "create_time")?,
        update_time: time(row, "update_time")?,
    })
}

/// Pairs globals with their branches (`rows` ascending by id), keeping the globals' order.
pub(crate) fn assemble(globals: Vec<Global>, rows: &[PgRow]) -> Result<Vec<Loaded>> {
    let index: HashMap<String, usize> = globals.iter().enumerate().map(|(i, g)| (g.gid.clone(), i)).collect();
    let mut loaded: Vec<Loaded> =
        globals.into_iter().map(|global| Loaded { global, branches: Vec::new() }).collect();
    for row in rows {
        let (gid, branch) = branch(row)?;
        if let Some(&i) = index.get(&gid) {
            loaded[i].branches.push(branch);
        }
    }
    Ok(loaded)
}

/// Reads one transaction's branch rows (ascending id) and pairs them with its global row, on
/// whatever connection or transaction the caller is in.
pub(crate) async fn with_branches(
    conn: &mut sqlx::PgConnection,
    global: Global,
    context: &'static str,
) -> Result<Loaded> {
    let branch_rows = sqlx::query(concat!(
        "SELECT ",
        branch_columns!(),
        " FROM trans_branch_op WHERE gid = $1 ORDER BY id"
    ))
    .bind(&global.gid)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| map_sqlx(context, e))?;
    assemble(vec![global], &branch_rows)?
        .pop()
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("{context}: the transaction vanished while loading")))
}
