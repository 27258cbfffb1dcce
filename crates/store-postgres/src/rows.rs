//! Row <-> domain conversions: the column lists every query selects, and their decoding.

use dtx_core::{Branch, Global};
use dtx_store::rows::{self as shared, Columns};
use dtx_store::{Error, KvRow, Loaded, Result};
use sqlx::Row;
use sqlx::postgres::PgRow;

use crate::error::map_sqlx;

/// The time a statement decides ownership by, in epoch milliseconds: the database's clock
/// (`statement_timestamp()`: one value for the whole statement, taken when it starts, unlike
/// `now()` which is frozen at the start of a group-commit batch), unless the statement's `$1`
/// carries a fixed time ([`crate::ClockSource::Caller`]). Every write statement binds `$1`.
macro_rules! db_now {
    () => {
        "COALESCE($1::bigint, floor(extract(epoch FROM statement_timestamp()) * 1000)::bigint)"
    };
}

pub(crate) use db_now;
pub(crate) use dtx_store::{branch_columns, global_columns, kv_columns};

pub(crate) fn get<'r, T>(row: &'r PgRow, column: &'static str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(|e| map_sqlx("decode row", e))
}

/// Local handle on a driver row: the orphan rule keeps `Columns` impls off foreign row types.
pub(crate) struct Cols<'a, R>(pub(crate) &'a R);

/// Decodes a `trans_global` row selected with `global_columns!`.
pub(crate) fn global<R>(row: &R) -> Result<Global>
where
    for<'a> Cols<'a, R>: Columns,
{
    shared::global(&Cols(row))
}

/// Decodes a `trans_branch_op` row selected with `branch_columns!`; returns its gid too.
pub(crate) fn branch<R>(row: &R) -> Result<(String, Branch)>
where
    for<'a> Cols<'a, R>: Columns,
{
    shared::branch(&Cols(row))
}

/// Decodes a `kv` row selected with `kv_columns!`.
pub(crate) fn kv<R>(row: &R) -> Result<KvRow>
where
    for<'a> Cols<'a, R>: Columns,
{
    shared::kv(&Cols(row))
}

/// Parses a name column (status, mode, op) into its domain type.
pub(crate) fn parsed<R, T>(row: &R, column: &'static str, gid: &str) -> Result<T>
where
    for<'a> Cols<'a, R>: Columns,
    T: std::str::FromStr<Err = dtx_core::model::UnknownName>,
{
    shared::parsed(&Cols(row), column, gid)
}

/// Pairs globals with their branch rows (ascending by id), keeping the globals' order.
pub(crate) fn assemble<R>(globals: Vec<Global>, rows: &[R]) -> Result<Vec<Loaded>>
where
    for<'a> Cols<'a, R>: Columns,
{
    let branches = rows.iter().map(branch).collect::<Result<Vec<_>>>()?;
    Ok(shared::pair(globals, branches))
}

/// PostgreSQL rows feed the shared decoding of `dtx_store::rows`.
impl Columns for Cols<'_, PgRow> {
    fn text(&self, column: &'static str) -> Result<String> {
        get(self.0, column)
    }
    fn opt_text(&self, column: &'static str) -> Result<Option<String>> {
        get(self.0, column)
    }
    fn int(&self, column: &'static str) -> Result<i64> {
        get(self.0, column)
    }
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>> {
        get(self.0, column)
    }
    fn blob(&self, column: &'static str) -> Result<Vec<u8>> {
        get(self.0, column)
    }
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
