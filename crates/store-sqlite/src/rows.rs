//! Row <-> domain conversions: the column lists every query selects, and their decoding.

use std::collections::HashMap;
use std::time::Duration;

use dtx_core::{Branch, Global, Timestamp, TransOptions};
use dtx_store::{Error, KvRow, Loaded, Result};
use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use dtx_store::CorruptRow;

use crate::error::{map_rusqlite, map_sqlx};

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

pub(crate) use {branch_columns, global_columns, kv_columns};

pub(crate) fn get<'r, T>(row: &'r SqliteRow, column: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(|e| map_sqlx("decode row", e))
}

/// A result row of either driver (the sqlx read pool or the rusqlite writer), read by column
/// name, so both share the decoding below.
pub(crate) trait Columns {
    fn text(&self, column: &'static str) -> Result<String>;
    fn opt_text(&self, column: &'static str) -> Result<Option<String>>;
    fn int(&self, column: &'static str) -> Result<i64>;
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>>;
    fn blob(&self, column: &'static str) -> Result<Vec<u8>>;
}

impl Columns for SqliteRow {
    fn text(&self, column: &'static str) -> Result<String> {
        get(self, column)
    }
    fn opt_text(&self, column: &'static str) -> Result<Option<String>> {
        get(self, column)
    }
    fn int(&self, column: &'static str) -> Result<i64> {
        get(self, column)
    }
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>> {
        get(self, column)
    }
    fn blob(&self, column: &'static str) -> Result<Vec<u8>> {
        get(self, column)
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, column: &'static str) -> Result<String> {
        self.get(column).map_err(|e| map_rusqlite("decode row", e))
    }
    fn opt_text(&self, column: &'static str) -> Result<Option<String>> {
        self.get(column).map_err(|e| map_rusqlite("decode row", e))
    }
    fn int(&self, column: &'static str) -> Result<i64> {
        self.get(column).map_err(|e| map_rusqlite("decode row", e))
    }
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>> {
        self.get(column).map_err(|e| map_rusqlite("decode row", e))
    }
    fn blob(&self, column: &'static str) -> Result<Vec<u8>> {
        self.get(column).map_err(|e| map_rusqlite("decode row", e))
    }
}

fn time(row: &impl Columns, column: &'static str) -> Result<Timestamp> {
    row.int(column).map(Timestamp)
}

fn opt_time(row: &impl Columns, column: &'static str) -> Result<Option<Timestamp>> {
    row.opt_int(column).map(|t| t.map(Timestamp))
}

pub(crate) fn parsed<T>(row: &impl Columns, column: &'static str, gid: &str) -> Result<T>
where
    T: std::str::FromStr<Err = dtx_core::model::UnknownName>,
{
    let text = row.text(column)?;
    text.parse().map_err(|source| Error::from(CorruptRow::Name { gid: gid.to_owned(), source }))
}

/// Decodes a `trans_global` row selected with [`global_columns!`].
pub(crate) fn global(row: &impl Columns) -> Result<Global> {
    let gid = row.text("gid")?;
    let options = row.text("options")?;
    let options = TransOptions::from_json(&options)
        .map_err(|source| CorruptRow::Options { gid: gid.clone(), source })?;
    let interval = row.int("next_cron_interval")?;
    let interval = u64::try_from(interval).map_err(|_| CorruptRow::Range {
        gid: gid.clone(),
        column: "next_cron_interval",
        value: interval,
    })?;
    Ok(Global {
        id: row.int("id")?,
        trans_type: parsed(row, "trans_type", &gid)?,
        status: parsed(row, "status", &gid)?,
        protocol: row.text("protocol")?,
        query_prepared: row.text("query_prepared")?,
        custom_data: row.text("custom_data")?,
        options,
        rollback_reason: row.text("rollback_reason")?,
        result: row.text("result")?,
        create_time: time(row, "create_time")?,
        update_time: time(row, "update_time")?,
        finish_time: opt_time(row, "finish_time")?,
        rollback_time: opt_time(row, "rollback_time")?,
        next_cron_time: time(row, "next_cron_time")?,
        next_cron_interval: Duration::from_millis(interval),
        owner: row.opt_text("owner")?,
        lease_until: opt_time(row, "lease_until")?,
        gid,
    })
}

/// Decodes a `trans_branch_op` row selected with [`branch_columns!`]; returns its gid too.
pub(crate) fn branch(row: &impl Columns) -> Result<(String, Branch)> {
    let gid = row.text("gid")?;
    let attempts = row.int("attempts")?;
    let attempts = u32::try_from(attempts).map_err(|_| CorruptRow::Range {
        gid: gid.clone(),
        column: "attempts",
        value: attempts,
    })?;
    let branch = Branch {
        id: row.int("id")?,
        branch_id: row.text("branch_id")?,
        op: parsed(row, "op", &gid)?,
        url: row.text("url")?,
        payload: row.blob("payload")?,
        status: parsed(row, "status", &gid)?,
        attempts,
        last_error: row.text("last_error")?,
        create_time: time(row, "create_time")?,
        update_time: time(row, "update_time")?,
        finish_time: opt_time(row, "finish_time")?,
    };
    Ok((gid, branch))
}

/// Decodes a `kv` row selected with [`kv_columns!`].
pub(crate) fn kv(row: &SqliteRow) -> Result<KvRow> {
    Ok(KvRow {
        id: row.int("id")?,
        cat: get(row, "cat")?,
        k: get(row, "k")?,
        v: get(row, "v")?,
        version: get(row, "version")?,
        create_time: time(row, "create_time")?,
        update_time: time(row, "update_time")?,
    })
}

/// Pairs globals with their branches (`rows` ascending by id), keeping the globals' order.
pub(crate) fn assemble(globals: Vec<Global>, rows: &[SqliteRow]) -> Result<Vec<Loaded>> {
    let branches = rows.iter().map(branch).collect::<Result<Vec<_>>>()?;
    Ok(pair(globals, branches))
}

/// Pairs globals with decoded `(gid, branch)` rows (ascending by id), keeping the globals' order.
pub(crate) fn pair(globals: Vec<Global>, branches: Vec<(String, Branch)>) -> Vec<Loaded> {
    let index: HashMap<String, usize> = globals.iter().enumerate().map(|(i, g)| (g.gid.clone(), i)).collect();
    let mut loaded: Vec<Loaded> =
        globals.into_iter().map(|global| Loaded { global, branches: Vec::new() }).collect();
    for (gid, branch) in branches {
        if let Some(&i) = index.get(&gid) {
            loaded[i].branches.push(branch);
        }
    }
    loaded
}

/// Reads one transaction's branch rows (ascending id) and pairs them with its global row,
/// on whatever connection or transaction the caller is in.
pub(crate) async fn with_branches(
    conn: &mut sqlx::SqliteConnection,
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
