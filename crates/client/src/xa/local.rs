//! The participant side of XA on PostgreSQL and MySQL / MariaDB (see the parent module).

use sqlx::Connection;

use crate::barrier::{BarrierDatabase, BarrierTable, Barriered, Dialect, Skip};
use crate::{BranchInfo, Client, Error};

/// The `barrier_id` of an XA branch's barrier row.
const XA_BARRIER_ID: &str = "01";
/// The op of an XA branch's barrier row (the local action and the rollback write the same row).
const XA_OP: &str = "action";
/// PostgreSQL: undefined object ("prepared transaction ... does not exist").
const PG_UNDEFINED_OBJECT: &str = "42704";
/// MySQL / MariaDB: XAER_NOTA, unknown xid.
const MYSQL_XAER_NOTA: &str = "XAE04";

/// The xid of an XA branch, `<gid>-<branch_id>` as DTM's. It is written into SQL statements
/// as a string literal (XA statements take no parameters), so quotes, backslashes and control
/// characters are refused, as are xids over MySQL's 64 bytes.
pub fn xid(info: &BranchInfo) -> Result<String, Error> {
    let xid = format!("{}-{}", info.gid, info.branch_id);
    if xid.len() > 64 {
        return Err(Error::InvalidInput(format!("xid {xid}: longer than 64 bytes")));
    }
    if xid.chars().any(|c| matches!(c, '\'' | '\\' | '"') || c.is_control()) {
        return Err(Error::InvalidInput(format!(
            "xid {xid:?}: quotes, backslashes and control characters are not allowed"
        )));
    }
    Ok(xid)
}

fn xa_dialect<DB: BarrierDatabase>() -> Result<Dialect, Error> {
    match DB::DIALECT {
        Dialect::Sqlite => Err(Error::InvalidInput(
            "XA needs PostgreSQL or MySQL (SQLite has no prepared transactions)".into(),
        )),
        d => Ok(d),
    }
}

/// Whether a phase-two error means "this xid is not (or no longer) prepared": done already.
fn is_unknown_xid(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            let code = d.code();
            matches!(code.as_deref(), Some(PG_UNDEFINED_OBJECT | MYSQL_XAER_NOTA))
                || d.message().contains("XAER_NOTA")
        }
        _ => false,
    }
}

/// The action of an XA branch (op `action`, called by [`crate::Xa::call_branch`]): on a
/// connection of its own, opens the XA transaction (PostgreSQL `BEGIN`, MySQL `XA START`),
/// inserts the branch's barrier row, runs `business` on it, registers the branch with
/// `client` (the coordinator named by `info.coordinator`) for phase two at
/// `info.phase2_url`, and prepares (`PREPARE TRANSACTION` / `XA END` + `XA PREPARE`). The data
/// stays invisible to others until the coordinator commits it ([`phase_two`]).
///
/// If anything fails the local transaction is rolled back and the error returned (the
/// caller's scope then aborts the global transaction). If the barrier row exists already,
/// the business does not run: [`Barriered::Skipped`] when the branch was done before (a
/// duplicate call), [`Error::Failure`] when phase two already rolled it back.
///
/// `table`: `None` for [`BarrierDatabase::DEFAULT_TABLE`].
pub async fn local<DB, T, E>(
    client: &Client,
    info: &BranchInfo,
    pool: &sqlx::Pool<DB>,
    table: Option<&BarrierTable>,
    business: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, E>,
) -> Result<Barriered<T>, E>
where
    DB: BarrierDatabase,
    E: From<sqlx::Error> + From<Error>,
{
    let dialect = xa_dialect::<DB>()?;
    if info.trans_type != "xa" || info.op != "action" {
        return Err(Error::InvalidInput(format!(
            "an XA local transaction runs for an xa action, not {} {}",
            info.trans_type, info.op
        ))
        .into());
    }
    if info.phase2_url.is_empty() {
        return Err(Error::InvalidInput(
            "XA action without phase2_url: call it through Xa::call_branch".into(),
        )
        .into());
    }
    let xid = xid(info)?;
    let table = table.cloned().unwrap_or_else(BarrierTable::default_for::<DB>);
    // A connection of its own: an XA transaction is bound to its session, which must not go
    // back to the pool half-way (it closes when dropped, which ends an unprepared transaction).
    let mut conn = pool.acquire().await?.detach();
    let begin = match dialect {
        Dialect::MySql => format!("XA START '{xid}'"),
        _ => "BEGIN".to_owned(),
    };
    DB::execute(&mut conn, &begin).await?;
    let row = ["xa", info.gid.as_str(), &info.branch_id, XA_OP, XA_BARRIER_ID, &info.op];
    let inserted = match DB::insert_ignore(&mut conn, &table.insert_sql(dialect), row).await {
        Ok(n) => n > 0,
        Err(e) => return Err(abort_local::<DB>(conn, dialect, &xid, e.into()).await.into()),
    };
    if !inserted {
        let _ = abort_local::<DB>(conn, dialect, &xid, Error::Protocol(String::new())).await;
        let mut conn = pool.acquire().await?;
        let key = [info.gid.as_str(), &info.branch_id, XA_OP, XA_BARRIER_ID];
        let reason = DB::select_reason(&mut conn, &table.select_reason_sql(dialect), key).await?;
        return match reason.as_deref() {
            Some("rollback") => {
                Err(Error::failure(format!("XA branch {xid} was already rolled back")).into())
            }
            _ => Ok(Barriered::Skipped(Skip::AlreadyDone)),
        };
    }
    let value = match business(&mut conn).await {
        Ok(v) => v,
        Err(e) => {
            let _ = abort_local::<DB>(conn, dialect, &xid, Error::Protocol(String::new())).await;
            return Err(e);
        }
    };
    // Registered before the prepare: a prepared transaction must never exist without the
    // coordinator knowing whom to tell how it ends.
    if let Err(e) = client.register_xa_branch(&info.gid, &info.branch_id, &info.phase2_url).await {
        return Err(abort_local::<DB>(conn, dialect, &xid, e).await.into());
    }
    let prepare: Vec<String> = match dialect {
        Dialect::MySql => vec![format!("XA END '{xid}'"), format!("XA PREPARE '{xid}'")],
        _ => vec![format!("PREPARE TRANSACTION '{xid}'")],
    };
    for stmt in &prepare {
        if let Err(e) = DB::execute(&mut conn, stmt).await {
            return Err(abort_local::<DB>(conn, dialect, &xid, e.into()).await.into());
        }
    }
    // The prepared transaction outlives the session.
    let _ = conn.close().await;
    Ok(Barriered::Ran(value))
}

/// Ends an unprepared local transaction and gives the connection up; returns `error`.
async fn abort_local<DB: BarrierDatabase>(
    mut conn: DB::Connection,
    dialect: Dialect,
    xid: &str,
    error: Error,
) -> Error {
    let stmts = match dialect {
        // XA END fails harmlessly when the transaction already ended.
        Dialect::MySql => vec![format!("XA END '{xid}'"), format!("XA ROLLBACK '{xid}'")],
        _ => vec!["ROLLBACK".to_owned()],
    };
    for stmt in &stmts {
        let _ = DB::execute(&mut conn, stmt).await;
    }
    // Closing ends whatever is left of the session's transaction.
    let _ = conn.close().await;
    error
}

/// Phase two of an XA branch (op `commit` or `rollback`, called by the coordinator on the
/// branch's `phase2_url`): `COMMIT PREPARED` / `ROLLBACK PREPARED` (MySQL `XA COMMIT` /
/// `XA ROLLBACK`) of the branch's xid. An xid the database does not know counts as done (a
/// retry after success, or a branch that never prepared). After a rollback the barrier row is
/// inserted (reason `rollback`) if absent, so that a late action does not prepare anything.
///
/// `table`: `None` for [`BarrierDatabase::DEFAULT_TABLE`].
pub async fn phase_two<DB: BarrierDatabase>(
    pool: &sqlx::Pool<DB>,
    table: Option<&BarrierTable>,
    info: &BranchInfo,
) -> Result<(), Error> {
    let dialect = xa_dialect::<DB>()?;
    let xid = xid(info)?;
    let sql = match (dialect, info.op.as_str()) {
        (Dialect::MySql, "commit") => format!("XA COMMIT '{xid}'"),
        (Dialect::MySql, "rollback") => format!("XA ROLLBACK '{xid}'"),
        (_, "commit") => format!("COMMIT PREPARED '{xid}'"),
        (_, "rollback") => format!("ROLLBACK PREPARED '{xid}'"),
        (_, op) => return Err(Error::InvalidInput(format!("XA phase two is commit or rollback, not {op}"))),
    };
    let mut conn = pool.acquire().await?;
    match DB::execute(&mut conn, &sql).await {
        Ok(()) => {}
        Err(e) if is_unknown_xid(&e) => {
            tracing::debug!(%xid, op = %info.op, "xid not prepared: phase two already done")
        }
        Err(e) => return Err(e.into()),
    }
    if info.op == "rollback" {
        let table = table.cloned().unwrap_or_else(BarrierTable::default_for::<DB>);
        let row = ["xa", info.gid.as_str(), &info.branch_id, XA_OP, XA_BARRIER_ID, "rollback"];
        DB::insert_ignore(&mut conn, &table.insert_sql(dialect), row).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xids_are_gid_dash_branch_and_safe_to_quote() {
        let b = |gid: &str| BranchInfo::new(gid, "xa", "01", "action").unwrap();
        assert_eq!(xid(&b("g1")).unwrap(), "g1-01");
        assert!(xid(&b("it's")).is_err());
        assert!(xid(&b("a\\b")).is_err());
        assert!(xid(&b(&"g".repeat(62))).is_err());
    }
}
