//! What SQLite does differently from the shared statements of `dtx_store::sql`: its dialect
//! (numbered `?n` parameters; no row locks, since one writer thread does every write; the
//! caller's clock, since one node owns the file), and the two connections that run them: the
//! writer's synchronous rusqlite connection ([`Lite`]) and the sqlx read pool's ([`ReadConn`]).

use std::future::Future;
use std::pin::pin;
use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use dtx_core::time::duration_millis;
use dtx_core::{Branch, Global};
use dtx_core::{Timestamp, timeout};
use dtx_store::rows::Columns;
use dtx_store::sql::{
    Arg, Conn, Decode, Dialect, Picked, Placeholders, Sql, Statements, branch_rows_of, gid_list,
    insert_branches_one_by_one, render, save_args, templates, update_branch_rows,
};
use dtx_store::{BranchUpdate, Error, Expect, LeaseChange, Result, Save, packed};
use rusqlite::types::{ToSql, ToSqlOutput, Value, ValueRef};
use sqlx::Sqlite;
use sqlx::sqlite::SqliteRow;

use crate::error::{map_rusqlite, map_sqlx};
use crate::functions::{Outcome, PACKED_LIMIT};

/// SQLite's SQL.
pub(crate) struct Lite3;

impl Dialect for Lite3 {
    const PLACEHOLDERS: Placeholders = Placeholders::NumberedQuestion;
    /// The caller's clock: one node owns the database.
    const NOW: &'static str = "$1";
    const LOCK: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    /// The due index's predicate (migration `20261207000000`, ADR 16): no IN list of three
    /// constants, which SQLite builds into an ephemeral b-tree on every row write.
    const UNFINISHED: &'static str = "status NOT IN ('succeed', 'failed')";
    /// A transaction is one row (ADR 26).
    const BRANCHES_IN_ROW: bool = true;
}

/// The statements, rendered once.
pub(crate) static SQL: LazyLock<Statements> = LazyLock::new(Statements::new::<Lite3>);

/// The claim in two statements (SQLite's `RETURNING` cannot read a sub-select, where the
/// previous owner is seen); the writer is alone, so nothing changes in between.
pub(crate) static CLAIM_DUE_PICK: LazyLock<Sql> =
    LazyLock::new(|| render::<Lite3>(templates::CLAIM_DUE_PICK));
static CLAIM_DUE_TAKE: LazyLock<Sql> = LazyLock::new(|| render::<Lite3>(templates::CLAIM_DUE_TAKE));

/// The claim by gid in two statements, without `RETURNING` (see the templates).
static CLAIM_PICK: LazyLock<Sql> = LazyLock::new(|| render::<Lite3>(templates::CLAIM_PICK));
static CLAIM_TAKE: LazyLock<Sql> = LazyLock::new(|| render::<Lite3>(templates::CLAIM_TAKE));
/// The take and a save decided on the picked row, in one UPDATE (ADR 25).
pub(crate) static CLAIM_SAVE: LazyLock<Sql> = LazyLock::new(|| render::<Lite3>(templates::CLAIM_SAVE));

/// Matches a transaction whose branches are packed (ADR 26). A statement that changes packed
/// branches matches nothing where they are rows, which sends the writer to the rows: a
/// condition, where a refusal of the function would cost an error per write.
const PACKED: &str = " AND branches <> x''";

/// `template` (an UPDATE ending in its WHERE clause) also setting the packed branches (ADR
/// 26) from the update list in parameter `param`, applied by [`crate::functions`]'s
/// `dtx_apply`, and matching only where they are packed.
fn applying(template: &str, param: &str) -> String {
    let at = template.rfind(" WHERE ").unwrap_or(template.len());
    format!("{}, branches = dtx_apply(branches, {param}){}{PACKED}", &template[..at], &template[at..])
}

/// `CREATE` with the packed branches (`$19`): a transaction is one row (ADR 26).
pub(crate) static CREATE_PACKED: LazyLock<Sql> = LazyLock::new(|| {
    let t = templates::CREATE.replacen("lease_until) VALUES", "lease_until, branches) VALUES", 1);
    let t = t.strip_suffix(')').unwrap_or(&t);
    render::<Lite3>(&format!("{t}, $19)"))
});
/// `SAVE` that also applies branch updates (`$15`).
pub(crate) static SAVE_PACKED: LazyLock<Sql> =
    LazyLock::new(|| render::<Lite3>(&applying(templates::SAVE, "$15")));
/// `RENEW` that also applies branch updates (`$6`): the mark before a call.
pub(crate) static RENEW_PACKED: LazyLock<Sql> =
    LazyLock::new(|| render::<Lite3>(&applying(templates::RENEW, "$6")));
/// `CLAIM_SAVE` that also applies branch updates (`$16`).
pub(crate) static CLAIM_SAVE_PACKED: LazyLock<Sql> =
    LazyLock::new(|| render::<Lite3>(&applying(templates::CLAIM_SAVE, "$16")));
/// Branch updates outside a save (the [`Conn::update_branches`] contract).
static APPLY_BY_GID: LazyLock<Sql> = LazyLock::new(|| {
    render::<Lite3>(&format!(
        "UPDATE trans_global SET branches = dtx_apply(branches, $2) WHERE gid = $1{PACKED}"
    ))
});
/// Branches added to a transaction (the [`Conn::insert_branches`] contract).
static APPEND_BY_GID: LazyLock<Sql> = LazyLock::new(|| {
    render::<Lite3>(&format!(
        "UPDATE trans_global SET branches = dtx_append(branches, $2) WHERE gid = $1{PACKED}"
    ))
});
/// A registration after its check: the touch and the branches.
static REGISTER_BY_ID: LazyLock<Sql> = LazyLock::new(|| {
    render::<Lite3>(&format!(
        "UPDATE trans_global SET update_time = $1, branches = dtx_append(branches, $3) WHERE id = $2{PACKED}"
    ))
});
/// The packed branches of the transactions in the JSON array `$1`.
static PACKED_OF_JSON: LazyLock<Sql> = LazyLock::new(|| {
    render::<Lite3>("SELECT gid, branches FROM trans_global WHERE gid IN (SELECT value FROM json_each($1))")
});

/// Which row a registration's touch matches (ADR 25): of gid `$2` and mode `$3`, `prepared`,
/// not under a lease running at `$1`, and not timed out. The timeout is the row's own
/// `timeout_to_fail` (seconds, in its options) or else `$4` (the server default for the mode
/// in milliseconds; 0 = none), as `dtx_core::timeout` decides it.
const REGISTER_WHERE: &str = "WHERE gid = $2 AND trans_type = $3 \
     AND status = 'prepared' AND (owner IS NULL OR lease_until IS NULL OR lease_until < $1) \
     AND COALESCE($1 - create_time < NULLIF(COALESCE(NULLIF(json_extract(NULLIF(options, ''), \
     '$.timeout_to_fail'), 0) * 1000, $4), 0), 1)";

/// A registration's touch that is also its check (ADR 25) and appends the branches (`$5`, ADR
/// 26): `update_time = $1` where [`REGISTER_WHERE`] matches.
pub(crate) static REGISTER_TOUCH: LazyLock<Sql> = LazyLock::new(|| {
    render::<Lite3>(&format!(
        "UPDATE trans_global SET update_time = $1, branches = dtx_append(branches, $5) {REGISTER_WHERE}{PACKED}"
    ))
});
/// [`REGISTER_TOUCH`] of a transaction whose branches are rows: the touch alone.
static REGISTER_TOUCH_ROWS: LazyLock<Sql> =
    LazyLock::new(|| render::<Lite3>(&format!("UPDATE trans_global SET update_time = $1 {REGISTER_WHERE}")));
/// A transaction's packed branches, by gid (before they move to rows).
static PACKED_OF_GID: LazyLock<Sql> =
    LazyLock::new(|| render::<Lite3>("SELECT branches FROM trans_global WHERE gid = $1"));
/// Marks a transaction's branches as rows (an empty value).
static TO_ROWS: LazyLock<Sql> =
    LazyLock::new(|| render::<Lite3>("UPDATE trans_global SET branches = x'' WHERE gid = $1"));

dtx_store::sqlx_conn!(ReadConn, Sqlite, SqliteRow, map_sqlx);

/// The writer thread's connection, running the shared operations synchronously: every method
/// finishes without waiting, so [`now`] drives an operation to its end in one poll (no
/// executor, no hand-off to another thread, no allocation).
pub(crate) struct Lite<'c> {
    pub(crate) conn: &'c mut rusqlite::Connection,
    pub(crate) names: &'c mut Names,
}

/// The column names of each query the writer has run, keyed by the address of its text: every
/// statement is a `&'static str` rendered once, so an address names one text for good. Read
/// from SQLite once per statement instead of once per query (rusqlite copies and checks them
/// as UTF-8 on every call: ~10,000 instructions per TCC, whose claim reads five rows).
#[derive(Default)]
pub(crate) struct Names(std::collections::HashMap<usize, Box<[String]>>);

impl Lite<'_> {
    /// Runs a statement that calls `dtx_apply` or `dtx_append` ([`crate::functions`]): a
    /// missing branch is `NotFound`, a duplicate `Conflict` (each naming the branch and
    /// `gid`, as the row layout's errors did); a full value is an outcome for the caller to
    /// write rows instead.
    fn run_packed(&mut self, sql: &Sql, args: &[Arg<'_>], what: &'static str, gid: &str) -> Result<Outcome> {
        dtx_store::sql::count_statements(1);
        let mut stmt = self.conn.prepare_cached(sql.text).map_err(|e| map_rusqlite(what, e))?;
        match stmt.execute(rusqlite::params_from_iter(sql.bound(args).map(Bind))) {
            Ok(changed) => Ok(Outcome::Changed(changed as u64)),
            Err(e) => crate::functions::refusal(&e, gid).unwrap_or_else(|| Err(map_rusqlite(what, e))),
        }
    }

    /// Moves a transaction's packed branches into branch rows, in order, and marks its value
    /// as rows: its branches outgrew [`PACKED_LIMIT`].
    async fn spill(&mut self, gid: &str) -> Result<()> {
        let packed = self
            .fetch(&PACKED_OF_GID, &[Arg::text(gid)], "branches to rows", |row| row.blob("branches"))
            .await?;
        let Some(bytes) = packed.first() else {
            return Err(Error::NotFound(format!("transaction {gid}")));
        };
        let branches = dtx_store::sql::unpack(gid, bytes)?;
        insert_branches_one_by_one(self, gid, &branches).await?;
        self.execute(&TO_ROWS, &[Arg::text(gid)], "branches to rows").await?;
        tracing::debug!(gid, branches = branches.len(), "sqlite: packed branches moved to rows");
        Ok(())
    }

    /// Adds branches as rows: the transaction's branches are rows, or (`full`) its packed
    /// branches are full and move to rows first.
    async fn add_as_rows(&mut self, gid: &str, full: bool, branches: &[Branch]) -> Result<()> {
        if full {
            self.spill(gid).await?;
        }
        insert_branches_one_by_one(self, gid, branches).await
    }

    /// A save's write: `packed` (which also applies the save's branch updates, the last of
    /// `args`) where the branches are packed; where it matches nothing (the branches are rows,
    /// or the fence or condition failed), `plain`, the same write without them, and then the
    /// branch rows. The global rows it matched.
    async fn write_applying(
        &mut self,
        packed: &Sql,
        plain: &Sql,
        args: &[Arg<'_>],
        what: &'static str,
        save: &Save,
    ) -> Result<u64> {
        if let Outcome::Changed(n @ 1..) = self.run_packed(packed, args, what, &save.gid)? {
            return Ok(n);
        }
        let matched = self.execute(plain, &args[..args.len() - 1], what).await?;
        if matched > 0 {
            update_branch_rows(self, &save.gid, save.now, &save.branches).await?;
        }
        Ok(matched)
    }
}

/// Runs a future that never waits (an operation on [`Lite`]) to its end.
pub(crate) fn now<T>(op: impl Future<Output = Result<T>>) -> Result<T> {
    match pin!(op).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(Error::Internal(anyhow::anyhow!("a sqlite write waited, which it never does"))),
    }
}

/// An argument as rusqlite binds it (the orphan rule keeps `ToSql` off `Arg` itself).
struct Bind<'a>(Arg<'a>);

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            Arg::Int(Some(i)) => ToSqlOutput::Owned(Value::Integer(i)),
            Arg::Text(Some(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Int(None) | Arg::Text(None) => ToSqlOutput::Owned(Value::Null),
            Arg::Bool(b) => ToSqlOutput::Owned(Value::Integer(i64::from(b))),
            Arg::Blob(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// A writer row, read through the shared decoding. Columns are found in `names`, the query's
/// column names read once per query: rusqlite's lookup by name asks SQLite for every column's
/// name and compares it case-insensitively on every `get` (~70,000 instructions per TCC, whose
/// claim reads its global and branch rows).
struct Row<'a, 'r> {
    row: &'a rusqlite::Row<'r>,
    names: &'a [String],
    /// Where the next column is looked for first: decoders mostly read columns in the order
    /// the statement lists them.
    next: std::cell::Cell<usize>,
}

impl Row<'_, '_> {
    fn get<T: rusqlite::types::FromSql>(&self, column: &'static str) -> Result<T> {
        let hint = self.next.get();
        let at = match self.names.get(hint) {
            Some(n) if n == column => Some(hint),
            _ => self.names.iter().position(|n| n == column),
        };
        if let Some(i) = at {
            self.next.set(i + 1);
        }
        // Exactly as the statements spell them; SQLite's own lookup (case-insensitive) otherwise.
        let got = match at {
            Some(i) => self.row.get(i),
            None => self.row.get(column),
        };
        got.map_err(|e| map_rusqlite("decode row", e))
    }
}

impl Columns for Row<'_, '_> {
    fn text(&self, column: &'static str) -> Result<String> {
        self.get(column)
    }
    fn opt_text(&self, column: &'static str) -> Result<Option<String>> {
        self.get(column)
    }
    fn int(&self, column: &'static str) -> Result<i64> {
        self.get(column)
    }
    fn opt_int(&self, column: &'static str) -> Result<Option<i64>> {
        self.get(column)
    }
    fn blob(&self, column: &'static str) -> Result<Vec<u8>> {
        self.get(column)
    }
}

impl Conn for Lite<'_> {
    fn sql(&self) -> &'static Statements {
        &SQL
    }

    fn fixed(&self, now: Timestamp) -> Option<i64> {
        Some(now.as_millis())
    }

    // Every statement goes through `prepare_cached`: compiled once per connection.
    async fn execute(&mut self, sql: &Sql, args: &[Arg<'_>], what: &'static str) -> Result<u64> {
        dtx_store::sql::count_statements(1);
        let mut stmt = self.conn.prepare_cached(sql.text).map_err(|e| map_rusqlite(what, e))?;
        let changed = stmt
            .execute(rusqlite::params_from_iter(sql.bound(args).map(Bind)))
            .map_err(|e| map_rusqlite(what, e))?;
        u64::try_from(changed).map_err(|e| Error::Internal(anyhow::Error::new(e).context(what)))
    }

    async fn fetch<T: Send>(
        &mut self,
        sql: &Sql,
        args: &[Arg<'_>],
        what: &'static str,
        decode: Decode<T>,
    ) -> Result<Vec<T>> {
        dtx_store::sql::count_statements(1);
        let mut stmt = self.conn.prepare_cached(sql.text).map_err(|e| map_rusqlite(what, e))?;
        let names = self
            .names
            .0
            .entry(sql.text.as_ptr() as usize)
            .or_insert_with(|| stmt.column_names().into_iter().map(str::to_owned).collect());
        let mut rows = stmt
            .query(rusqlite::params_from_iter(sql.bound(args).map(Bind)))
            .map_err(|e| map_rusqlite(what, e))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(|e| map_rusqlite(what, e))? {
            out.push(decode(&Row { row, names, next: std::cell::Cell::new(0) })?);
        }
        Ok(out)
    }

    /// One INSERT: the global row with its packed branches; beyond [`PACKED_LIMIT`], the
    /// global row and then its branch rows. A branch given twice is refused here, as the row
    /// layout's unique key refused it.
    async fn create_row(&mut self, gid: &str, args: &[Arg<'_>], branches: &[Branch]) -> Result<Vec<i64>> {
        if let Some(b) = packed::first_duplicate(branches) {
            return Err(Error::Conflict(format!("branch {}/{} of {gid} already exists", b.branch_id, b.op)));
        }
        let packed = packed::encode(branches);
        if packed.len() > PACKED_LIMIT {
            self.execute(&SQL.create, args, "create")
                .await
                .map_err(|e| dtx_store::sql::gid_conflict(e, gid))?;
            insert_branches_one_by_one(self, gid, branches).await?;
            return Ok(self.inserted_ids(branches.len()));
        }
        let mut all = [Arg::Int(None); 19];
        for (slot, arg) in all.iter_mut().zip(args) {
            *slot = *arg;
        }
        all[18] = Arg::Blob(&packed);
        self.execute(&CREATE_PACKED, &all, "create")
            .await
            .map_err(|e| dtx_store::sql::gid_conflict(e, gid))?;
        // Their positions (ADR 26).
        Ok((1..=branches.len() as i64).collect())
    }

    /// Appended to the transaction's packed branches, or its rows.
    async fn insert_branches(&mut self, gid: &str, branches: &[Branch]) -> Result<()> {
        let packed = packed::encode(branches);
        match self.run_packed(
            &APPEND_BY_GID,
            &[Arg::text(gid), Arg::Blob(&packed)],
            "insert branches",
            gid,
        )? {
            Outcome::Changed(0) => self.add_as_rows(gid, false, branches).await,
            Outcome::Changed(_) => Ok(()),
            Outcome::Full => self.add_as_rows(gid, true, branches).await,
        }
    }

    /// One UPDATE: the touch that checks (see [`REGISTER_TOUCH`]) also appends the branches.
    /// Nothing matched: the caller's check reads the row and says why.
    async fn try_register_branches(
        &mut self,
        gid: &str,
        expect: &Expect,
        branches: &[Branch],
        now: Timestamp,
    ) -> Result<bool> {
        let default = timeout::effective_timeout(expect.trans_type, 0, expect.default_timeout);
        let packed = packed::encode(branches);
        let args = [
            Arg::time(now),
            Arg::text(gid),
            Arg::text(expect.trans_type.as_str()),
            Arg::int(default.map_or(0, duration_millis)),
            Arg::Blob(&packed),
        ];
        let full = match self.run_packed(&REGISTER_TOUCH, &args, "add branches", gid)? {
            Outcome::Changed(0) => false,
            Outcome::Changed(_) => return Ok(true),
            Outcome::Full => true,
        };
        // Matched nothing: refused, or the branches are rows (then the touch alone matches).
        // Full: matched (the append runs on matched rows only). Nothing changed since.
        if self.execute(&REGISTER_TOUCH_ROWS, &args[..4], "add branches").await? == 0 {
            return Ok(false);
        }
        self.add_as_rows(gid, full, branches).await?;
        Ok(true)
    }

    /// The touch and the branches in one UPDATE.
    async fn register_branches(
        &mut self,
        gid: &str,
        id: i64,
        branches: &[Branch],
        now: Timestamp,
    ) -> Result<()> {
        let packed = packed::encode(branches);
        let args = [Arg::time(now), Arg::int(id), Arg::Blob(&packed)];
        // The caller checked the row: matching nothing, its branches are rows.
        let full = match self.run_packed(&REGISTER_BY_ID, &args, "add branches", gid)? {
            Outcome::Changed(0) => false,
            Outcome::Changed(_) => return Ok(()),
            Outcome::Full => true,
        };
        self.execute(&SQL.touch, &args[..2], "add branches: touch").await?;
        self.add_as_rows(gid, full, branches).await
    }

    async fn update_branches(&mut self, gid: &str, now: Timestamp, updates: &[BranchUpdate]) -> Result<()> {
        let packed = packed::encode_updates(now, updates);
        match self.run_packed(&APPLY_BY_GID, &[Arg::text(gid), Arg::Blob(&packed)], "save branch", gid)? {
            Outcome::Changed(0) | Outcome::Full => update_branch_rows(self, gid, now, updates).await,
            Outcome::Changed(_) => Ok(()),
        }
    }

    async fn save_with_branches(&mut self, save: &Save) -> Result<u64> {
        let packed = packed::encode_updates(save.now, &save.branches);
        match (&save.status, &save.lease) {
            (None, LeaseChange::Renew { lease_until }) => {
                let args = [
                    Arg::Int(self.fixed(save.now)),
                    Arg::time(save.now),
                    Arg::time(*lease_until),
                    Arg::text(&save.gid),
                    Arg::text(&save.owner),
                    Arg::Blob(&packed),
                ];
                self.write_applying(&RENEW_PACKED, &SQL.renew, &args, "save", save).await
            }
            _ => {
                let [a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14] =
                    save_args(self.fixed(save.now), save);
                let args = [a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, Arg::Blob(&packed)];
                self.write_applying(&SAVE_PACKED, &SQL.save, &args, "save", save).await
            }
        }
    }

    /// Packed branches from the global rows; the branch rows of those whose branches are rows.
    async fn branches_of(&mut self, gids: &[&str]) -> Result<Vec<(String, Branch)>> {
        let decode: Decode<(String, Vec<u8>)> = |row| Ok((row.text("gid")?, row.blob("branches")?));
        let rows = self.fetch(&PACKED_OF_JSON, &[Arg::text(&gid_list(gids)?)], "branches", decode).await?;
        let mut out = Vec::new();
        let mut as_rows = Vec::new();
        for (gid, bytes) in &rows {
            if bytes.is_empty() {
                as_rows.push(gid.as_str());
                continue;
            }
            for b in dtx_store::sql::unpack(gid, bytes)? {
                out.push((gid.clone(), b));
            }
        }
        if !as_rows.is_empty() {
            out.extend(branch_rows_of(self, &as_rows).await?);
        }
        Ok(out)
    }

    fn inserted_ids(&self, n: usize) -> Vec<i64> {
        let last = self.conn.last_insert_rowid();
        // At most a transaction's rows: the cast cannot wrap.
        (0..n as i64).rev().map(|back| last - back).collect()
    }

    async fn control(&mut self, sql: &'static str) -> Result<()> {
        exec(self.conn, sql).map_err(|e| map_rusqlite("transaction control", e))
    }

    /// The writer is alone: nothing changes between a pick and its take.
    const ALONE: bool = true;

    async fn pick_row(&mut self, gid: &str, now: Timestamp) -> Result<Option<Picked>> {
        let args = [Arg::time(now), Arg::text(gid)];
        let picked = self
            .fetch(&CLAIM_PICK, &args, "claim", |row| {
                Ok((dtx_store::rows::global(row)?, row.blob("branches")?))
            })
            .await?;
        Ok(picked.into_iter().next())
    }

    async fn take_row(
        &mut self,
        id: i64,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        save: Option<&Save>,
    ) -> Result<()> {
        let taken = match save {
            None => {
                let args = [Arg::time(now), Arg::text(owner), Arg::time(lease_until), Arg::int(id)];
                self.execute(&CLAIM_TAKE, &args, "claim").await?
            }
            Some(save) => {
                // `SAVE`'s fourteen, then the id: an array, no allocation per claim.
                let [a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14] =
                    save_args(self.fixed(save.now), save);
                if save.branches.is_empty() {
                    let args = [a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, Arg::int(id)];
                    self.execute(&CLAIM_SAVE, &args, "claim and save").await?
                } else {
                    // The branch updates too: the shared claim-then leaves them to this take.
                    let packed = packed::encode_updates(save.now, &save.branches);
                    let args = [
                        a1,
                        a2,
                        a3,
                        a4,
                        a5,
                        a6,
                        a7,
                        a8,
                        a9,
                        a10,
                        a11,
                        a12,
                        a13,
                        a14,
                        Arg::int(id),
                        Arg::Blob(&packed),
                    ];
                    self.write_applying(&CLAIM_SAVE_PACKED, &CLAIM_SAVE, &args, "claim and save", save)
                        .await?
                }
            }
        };
        if taken != 1 {
            return Err(Error::Internal(anyhow::anyhow!("claim of row {id}: the row it read is gone")));
        }
        Ok(())
    }

    async fn claim_due_rows(
        &mut self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<(Global, bool)>> {
        let pick = |row: &dyn Columns| Ok((row.int("id")?, row.int("taken_over")? != 0));
        let args = [Arg::time(now), Arg::int(i64::from(limit))];
        let picked = self.fetch(&CLAIM_DUE_PICK, &args, "claim due", pick).await?;
        if picked.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = picked.iter().map(|(id, _)| id.to_string()).collect();
        let json = format!("[{}]", ids.join(","));
        let args =
            [Arg::time(now), Arg::text(owner), Arg::time(lease_until), Arg::time(now), Arg::text(&json)];
        let taken = self.fetch(&CLAIM_DUE_TAKE, &args, "claim due", dtx_store::rows::global).await?;
        let was_owned: std::collections::HashSet<i64> =
            picked.into_iter().filter(|(_, owned)| *owned).map(|(id, _)| id).collect();
        Ok(taken
            .into_iter()
            .map(|g| {
                let owned = was_owned.contains(&g.id);
                (g, owned)
            })
            .collect())
    }
}

/// Runs a transaction-control statement (cached: the same few run for every batch).
pub(crate) fn exec(conn: &rusqlite::Connection, sql: &'static str) -> rusqlite::Result<()> {
    dtx_store::sql::count_statements(1);
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}
