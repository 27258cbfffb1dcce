//! Row decoding shared by the SQL backends: every backend selects the same columns (the macros
//! below) and exposes its result rows through [`Columns`], and these functions turn them into
//! domain types, reporting a bad value as a [`CorruptRow`].

use std::collections::HashMap;
use std::time::Duration;

use dtx_core::{Branch, Global, Timestamp, TransOptions};

use crate::{CorruptRow, Error, KvRow, Loaded, Result};

/// The columns of `trans_global` that [`global`] reads. A macro so that every query can stay
/// one `&'static str` through `concat!`.
#[macro_export]
macro_rules! global_columns {
    () => {
        "id, gid, trans_type, status, protocol, query_prepared, custom_data, options, \
         rollback_reason, result, create_time, update_time, finish_time, rollback_time, \
         next_cron_time, next_cron_interval, owner, lease_until, held_host"
    };
}

/// The columns of `trans_branch_op` that [`branch`] reads (plus `gid`, to group claimed rows).
#[macro_export]
macro_rules! branch_columns {
    () => {
        "id, gid, branch_id, op, url, payload, status, attempts, last_error, create_time, \
         update_time, finish_time"
    };
}

/// The columns of `kv` that [`kv`] reads.
#[macro_export]
macro_rules! kv_columns {
    () => {
        "id, cat, k, v, version, create_time, update_time"
    };
}

/// A result row of some driver, read by column name. Times are stored as integer
/// milliseconds, payloads as blobs.
pub trait Columns {
    /// A non-null text column.
    fn text(&self, column: &'static str) -> Result<String>;
    /// A nullable text column.
    fn opt_text(&self, column: &'static str) -> Result<Option<String>>;
    /// A non-null integer column.
    fn int(&self, column: &'static str) -> Result<i64>;
    /// A nullable integer column.
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>>;
    /// A non-null blob column.
    fn blob(&self, column: &'static str) -> Result<Vec<u8>>;
}

fn time(row: &dyn Columns, column: &'static str) -> Result<Timestamp> {
    row.int(column).map(Timestamp)
}

fn opt_time(row: &dyn Columns, column: &'static str) -> Result<Option<Timestamp>> {
    row.opt_int(column).map(|t| t.map(Timestamp))
}

/// Parses a name column (status, mode, op) into its domain type.
pub fn parsed<T>(row: &dyn Columns, column: &'static str, gid: &str) -> Result<T>
where
    T: std::str::FromStr<Err = dtx_core::model::UnknownName>,
{
    let text = row.text(column)?;
    text.parse().map_err(|source| Error::from(CorruptRow::Name { gid: gid.to_owned(), source }))
}

/// Decodes a claimed row: [`global`] plus the claim's `taken_over` column (0 or 1).
pub fn claimed(row: &dyn Columns) -> Result<(Global, bool)> {
    Ok((global(row)?, row.int("taken_over")? != 0))
}

/// Decodes a `trans_global` row selected with [`global_columns!`].
pub fn global(row: &dyn Columns) -> Result<Global> {
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
        held_host: row.opt_text("held_host")?,
        gid,
    })
}

/// Decodes a `trans_branch_op` row selected with [`branch_columns!`]; returns its gid too.
pub fn branch(row: &dyn Columns) -> Result<(String, Branch)> {
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
pub fn kv(row: &dyn Columns) -> Result<KvRow> {
    Ok(KvRow {
        id: row.int("id")?,
        cat: row.text("cat")?,
        k: row.text("k")?,
        v: row.text("v")?,
        version: row.int("version")?,
        create_time: time(row, "create_time")?,
        update_time: time(row, "update_time")?,
    })
}

/// Pairs globals with their branch rows (ascending by id), keeping the globals' order.
pub fn assemble(globals: Vec<Global>, rows: &[impl Columns]) -> Result<Vec<Loaded>> {
    let branches = rows.iter().map(|r| branch(r)).collect::<Result<Vec<_>>>()?;
    Ok(pair(globals, branches))
}

/// Pairs globals with decoded `(gid, branch)` rows (ascending by id), keeping the globals' order.
pub fn pair(globals: Vec<Global>, branches: Vec<(String, Branch)>) -> Vec<Loaded> {
    let index: HashMap<String, usize> = globals.iter().enumerate().map(|(i, g)| (g.gid.clone(), i)).collect();
    let mut loaded: Vec<Loaded> = globals
        .into_iter()
        .map(|global| Loaded { global, branches: Vec::new(), taken_over: false })
        .collect();
    for (gid, branch) in branches {
        if let Some(&i) = index.get(&gid) {
            loaded[i].branches.push(branch);
        }
    }
    loaded
}

/// [`crate::StatusCounts`] from `(status, rows, due rows)` per status, as both SQL backends
/// select them (`GROUP BY status`).
pub fn status_counts(rows: Vec<(String, i64, i64)>) -> Result<crate::StatusCounts> {
    let mut counts = crate::StatusCounts::default();
    for (status, n, due) in rows {
        let parsed = status
            .parse()
            .map_err(|source| CorruptRow::Name { gid: format!("<rows with status {status}>"), source })?;
        // COUNT(*) is never negative.
        counts.by_status.push((parsed, u64::try_from(n).unwrap_or(0)));
        counts.due += u64::try_from(due).unwrap_or(0);
    }
    counts.by_status.sort_by_key(|(s, _)| s.as_str());
    Ok(counts)
}
