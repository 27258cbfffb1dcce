//! The sub-transaction barrier (features `sqlite`, `postgres`, `mysql`): makes a branch
//! handler safe against the three things a coordinator's retries cause, with DTM's algorithm
//! and table, so services in other languages can share it.
//!
//! # When a handler needs the barrier
//!
//! The coordinator calls every branch *at least once*: a call whose answer was lost is sent
//! again, and calls can overtake each other. A handler whose business is not naturally
//! idempotent (it adds to a balance, inserts an order, sends a message) therefore sees:
//!
//! - **duplicates**: the same `(gid, branch_id, op)` twice, possibly at the same time;
//! - **null compensation**: a compensation (`compensate` / `cancel`) for an action that never
//!   ran here (the action's request was lost or timed out before it arrived) — undoing it
//!   would undo something that never happened;
//! - **hanging**: that lost action arriving *after* its compensation — running it now would
//!   leave an effect nobody will ever undo.
//!
//! [`Barrier::call`] runs the business in one database transaction with an insert into the
//! barrier table: the unique key `(gid, branch_id, op, barrier_id)` lets exactly one call of
//! each op commit, and a compensation first inserts its action's row (the *origin* row), so
//! that a compensation which finds no action skips, and the late action then finds its row
//! taken and skips too. A skipped call answers success: the coordinator must not retry it.
//! The business SQL must run on the transaction it is given, in the same database as the
//! barrier table; only then is "barrier row committed" the same thing as "business done".
//!
//! Handlers that are idempotent by themselves (set a status to a value, read-only checks) do
//! not need it; handlers touching another system (an HTTP call, a queue) cannot be covered
//! by a database transaction at all.
//!
//! # Why `barrier_id` does not break idempotency
//!
//! `barrier_id` is `01` for the first [`Barrier::call`] on a [`Barrier`] value, `02` for the
//! second, and so on. It is **not** a counter across requests: every incoming request builds
//! a fresh `Barrier`, so a retried request makes the same calls in the same order and gets
//! the same ids (`01`, `02`...), which the unique key then deduplicates. The counter only
//! tells apart several guarded pieces of business inside *one* handler (e.g. two accounts
//! updated in two separate transactions).
//!
//! # Messages
//!
//! [`crate::Msg::do_and_submit`] runs its local transaction under the barrier
//! `(msg, gid, "00", "msg")` (row reason `msg`). The check-back, [`query_prepared`], inserts
//! the same row with reason `rollback` if it is absent: whichever commits first wins, so a
//! slow local transaction that loses is rolled back ([`Skip::MsgDecided`]) and the message is
//! never delivered without its local effect, nor the other way round.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), dtx_client::Error> {
//! use dtx_client::barrier::{self, Barrier, Barriered, Skip};
//! use dtx_client::BranchInfo;
//!
//! // One connection: every connection to "sqlite::memory:" is a database of its own.
//! let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
//! barrier::create_table(&pool, None).await?;
//! sqlx::query("CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER)").execute(&pool).await?;
//! sqlx::query("INSERT INTO account VALUES (1, 100)").execute(&pool).await?;
//!
//! let action = BranchInfo::new("gid-1", "saga", "01", "action")?;
//! let compensate = BranchInfo::new("gid-1", "saga", "01", "compensate")?;
//! let debit = async |conn: &mut sqlx::SqliteConnection| -> Result<(), dtx_client::Error> {
//!     sqlx::query("UPDATE account SET balance = balance - 30 WHERE id = 1").execute(conn).await?;
//!     Ok(())
//! };
//!
//! // The compensation arrives first: null compensation, skipped...
//! let r = Barrier::new(&compensate).call(&pool, async |_tx| Ok::<_, dtx_client::Error>(())).await?;
//! assert_eq!(r, Barriered::Skipped(Skip::NullCompensation));
//! // ...and the late action is skipped too (hanging).
//! assert_eq!(Barrier::new(&action).call(&pool, debit).await?, Barriered::Skipped(Skip::AlreadyDone));
//! let balance: i64 = sqlx::query_scalar("SELECT balance FROM account").fetch_one(&pool).await?;
//! assert_eq!(balance, 100);
//! # Ok(()) }
//! ```

mod sql;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub use sql::{BarrierDatabase, BarrierTable, Dialect};

use crate::{BranchInfo, Error};

/// The `branch_id` and `op` of a message's local transaction (and its check-back).
pub const MSG_BRANCH_ID: &str = "00";
/// The op of a message's local transaction.
pub const MSG_OP: &str = "msg";
/// The `barrier_id` of a message's local transaction.
pub const MSG_BARRIER_ID: &str = "01";

/// What [`Barrier::call`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Barriered<T> {
    /// The business ran and committed with the barrier row; its result.
    Ran(T),
    /// The business did not run; the handler should answer success.
    Skipped(Skip),
}

impl<T> Barriered<T> {
    /// The business result, if it ran.
    pub fn ran(self) -> Option<T> {
        match self {
            Barriered::Ran(v) => Some(v),
            Barriered::Skipped(_) => None,
        }
    }
}

/// Why a barrier skipped the business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// This op already ran (a duplicate), or its compensation already ran (hanging).
    AlreadyDone,
    /// A compensation whose action never ran here: nothing to undo.
    NullCompensation,
    /// A message's local transaction whose fate was already decided (it committed before, or
    /// the check-back marked it rolled back). [`crate::Msg::do_and_submit`] reports it as
    /// [`Error::Duplicated`].
    MsgDecided,
}

/// The barrier of one branch call. Build one per incoming request.
#[derive(Debug)]
pub struct Barrier {
    trans_type: String,
    gid: String,
    branch_id: String,
    op: String,
    table: Option<BarrierTable>,
    next: AtomicU32,
}

/// The op whose row a compensation inserts first: the op it undoes.
fn origin_op(op: &str) -> Option<&'static str> {
    match op {
        "cancel" => Some("try"),
        "compensate" | "rollback" => Some("action"),
        _ => None,
    }
}

impl Barrier {
    /// The barrier of the branch call `branch`, on the database's default table.
    pub fn new(branch: &BranchInfo) -> Barrier {
        Barrier {
            trans_type: branch.trans_type.clone(),
            gid: branch.gid.clone(),
            branch_id: branch.branch_id.clone(),
            op: branch.op.clone(),
            table: None,
            next: AtomicU32::new(0),
        }
    }

    /// Uses another table than [`BarrierDatabase::DEFAULT_TABLE`].
    pub fn with_table(mut self, table: BarrierTable) -> Barrier {
        self.table = Some(table);
        self
    }

    /// Runs `business` at most once for this branch call, in a transaction on `pool` that
    /// also inserts the barrier rows (DTM's algorithm):
    ///
    /// 1. a compensation (`cancel`, `compensate`, `rollback`) first inserts-or-ignores the row
    ///    of the op it undoes (`try` / `action`), reason = this op;
    /// 2. insert-or-ignore this op's row;
    /// 3. `msg` whose row existed: [`Skip::MsgDecided`];
    /// 4. a compensation that inserted the origin row: [`Skip::NullCompensation`] (committed,
    ///    so the late action finds the row);
    /// 5. this op's row existed: [`Skip::AlreadyDone`];
    /// 6. else run `business` on the transaction's connection: commit when it returns `Ok`, roll back
    ///    (no barrier row stays) when it returns `Err` or panics.
    ///
    /// A concurrent duplicate waits on the row lock of the first call and then skips.
    pub async fn call<DB, T, E>(
        &self,
        pool: &sqlx::Pool<DB>,
        business: impl AsyncFnOnce(&mut DB::Connection) -> Result<T, E>,
    ) -> Result<Barriered<T>, E>
    where
        DB: BarrierDatabase,
        E: From<sqlx::Error>,
    {
        let barrier_id = format!("{:02}", self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let table = self.table.clone().unwrap_or_else(BarrierTable::default_for::<DB>);
        let insert = table.insert_sql(DB::DIALECT);
        let mut tx = pool.begin().await?;
        let mut origin_inserted = false;
        if let Some(origin) = origin_op(&self.op) {
            let row = [self.trans_type.as_str(), &self.gid, &self.branch_id, origin, &barrier_id, &self.op];
            origin_inserted = DB::insert_ignore(&mut *tx, &insert, row).await? > 0;
        }
        let row = [self.trans_type.as_str(), &self.gid, &self.branch_id, &self.op, &barrier_id, &self.op];
        let current_inserted = DB::insert_ignore(&mut *tx, &insert, row).await? > 0;
        let skip = if self.op == MSG_OP && !current_inserted {
            Some(Skip::MsgDecided)
        } else if origin_inserted {
            Some(Skip::NullCompensation)
        } else if !current_inserted {
            Some(Skip::AlreadyDone)
        } else {
            None
        };
        if let Some(skip) = skip {
            tracing::debug!(gid = %self.gid, branch_id = %self.branch_id, op = %self.op, ?skip, "barrier skipped the business");
            tx.commit().await?;
            return Ok(Barriered::Skipped(skip));
        }
        // On Err the transaction is dropped: sqlx rolls it back, and the barrier rows with it.
        let value = business(&mut *tx).await?;
        tx.commit().await?;
        Ok(Barriered::Ran(value))
    }
}

/// The message check-back (`query_prepared`) on the barrier table: marks the message's local
/// transaction as rolled back unless it already committed, then reports which won.
/// `Ok(())` = committed (the coordinator submits the message); [`Error::Failure`] = rolled
/// back (the coordinator fails the message; a late local transaction is refused).
///
/// `table`: `None` for [`BarrierDatabase::DEFAULT_TABLE`].
pub async fn query_prepared<DB: BarrierDatabase>(
    pool: &sqlx::Pool<DB>,
    table: Option<&BarrierTable>,
    gid: &str,
) -> Result<(), Error> {
    let table = table.cloned().unwrap_or_else(BarrierTable::default_for::<DB>);
    let mut conn = pool.acquire().await?;
    let row = ["msg", gid, MSG_BRANCH_ID, MSG_OP, MSG_BARRIER_ID, "rollback"];
    DB::insert_ignore(&mut *conn, &table.insert_sql(DB::DIALECT), row).await?;
    let key = [gid, MSG_BRANCH_ID, MSG_OP, MSG_BARRIER_ID];
    let reason = DB::select_reason(&mut *conn, &table.select_reason_sql(DB::DIALECT), key).await?;
    match reason.as_deref() {
        Some("rollback") => Err(Error::Failure(format!("message {gid}: its local transaction rolled back"))),
        Some(_) => Ok(()),
        None => Err(Error::Protocol(format!("message {gid}: the barrier row vanished"))),
    }
}

/// Creates the barrier table (and its schema / database, when the name is qualified) if it
/// does not exist. `table`: `None` for [`BarrierDatabase::DEFAULT_TABLE`]. The same DDL ships
/// with the crate as `sql/barrier.{sqlite,postgres,mysql}.sql`.
pub async fn create_table<DB: BarrierDatabase>(
    pool: &sqlx::Pool<DB>,
    table: Option<&BarrierTable>,
) -> Result<(), Error> {
    let table = table.cloned().unwrap_or_else(BarrierTable::default_for::<DB>);
    let mut conn = pool.acquire().await?;
    for stmt in table.ddl(DB::DIALECT)? {
        DB::execute(&mut *conn, &stmt).await?;
    }
    Ok(())
}

/// Deletes barrier rows created more than `older_than` ago, `batch` rows per statement (so no
/// statement locks the table for long), until none is left; returns how many were deleted.
///
/// DTM never deletes barrier rows (dtm-labs/dtm#389). A row only matters while the
/// coordinator may still call its branch, so keep rows well beyond the longest time a
/// transaction can stay unfinished (its timeout plus retries). Rows without `create_time`
/// (DTM's PostgreSQL DDL leaves it NULL) are never deleted.
pub async fn cleanup<DB: BarrierDatabase>(
    pool: &sqlx::Pool<DB>,
    table: Option<&BarrierTable>,
    older_than: Duration,
    batch: u32,
) -> Result<u64, Error> {
    let table = table.cloned().unwrap_or_else(BarrierTable::default_for::<DB>);
    let sql = table.delete_batch_sql(DB::DIALECT);
    let age = i64::try_from(older_than.as_secs()).unwrap_or(i64::MAX);
    let batch = i64::from(batch.max(1));
    let mut total = 0;
    loop {
        let mut conn = pool.acquire().await?;
        let n = DB::delete_batch(&mut *conn, &sql, age, batch).await?;
        total += n;
        if n < batch as u64 {
            return Ok(total);
        }
    }
}
