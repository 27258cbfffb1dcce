//! What the SQL backends share: the statements (written once, in [`templates`], rendered per
//! [`Dialect`]), the logic of every operation over a small connection trait ([`Conn`],
//! module `ops`), and the async group-commit writer ([`group`]).
//!
//! A backend supplies only what differs:
//! - a [`Dialect`]: how a parameter is written (`$1`, `?1`, `?`), the database clock
//!   expression, row locking, and the few statements whose SQL differs;
//! - a [`Conn`]: runs a statement on its driver (sqlx, or rusqlite on SQLite's writer thread)
//!   and overrides the steps it does better or differently (PostgreSQL's array inserts,
//!   MySQL's claims without `UPDATE … RETURNING`);
//! - the loop that commits batches ([`group::run`] for pooled async drivers).
//!
//! Templates write parameters as `$n` (n from 1; `$1` is always the fixed "now" of
//! [`ClockSource::Caller`] in statements that read the clock), `{now}` for the clock in epoch
//! milliseconds, `{lock}` for `FOR UPDATE` and `{skip_locked}` for `FOR UPDATE SKIP LOCKED`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use dtx_core::{Branch, Global, Timestamp};

use crate::rows::Columns;
use crate::{BranchUpdate, Expect, NewTransaction, Result, Save};

pub mod group;
mod ops;
mod sqlx_conn;
pub mod templates;

pub use ops::{
    branch_args, branch_conflict, branch_rows_of, finished_counts, gid_conflict, gid_list,
    insert_branches_one_by_one, kv_get, kv_scan, lease_columns, list, load_in, missing_branch, run,
    save_args, unfinished_counts, unpack, update_branch_rows,
};

/// A row [`Conn::pick_row`] read, and its packed branches (empty: they are rows).
pub type Picked = (Global, Vec<u8>);

/// Statements this process has sent to its database, on every backend: reads, writes and
/// transaction control. Process-wide on purpose: it is the benchmark's "statements per
/// transaction" and the `dtx_store_statements` metric, and one process has one store.
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// Counts `n` statements sent to the database (each backend calls it where it runs them).
pub fn count_statements(n: u64) {
    STATEMENTS.fetch_add(n, Ordering::Relaxed);
}

/// Statements sent to the database by this process so far.
pub fn statements() -> u64 {
    STATEMENTS.load(Ordering::Relaxed)
}

/// Whose clock decides leases and due times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ClockSource {
    /// The database's clock. The only safe choice for several nodes.
    #[default]
    Database,
    /// The `now` each call passes in: deterministic tests driving time by hand, and SQLite
    /// (one node: its clock is the clock).
    Caller,
}

impl ClockSource {
    /// The `$1` of a statement that reads `{now}`: `None` lets the database clock decide;
    /// `Some(caller's now)` makes the caller's clock the clock.
    pub fn fixed(self, now: Timestamp) -> Option<i64> {
        match self {
            ClockSource::Database => None,
            ClockSource::Caller => Some(now.as_millis()),
        }
    }
}

/// One statement parameter. Times are integer milliseconds.
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    /// An integer (or NULL).
    Int(Option<i64>),
    /// A text (or NULL).
    Text(Option<&'a str>),
    /// A boolean.
    Bool(bool),
    /// A blob.
    Blob(&'a [u8]),
}

impl<'a> Arg<'a> {
    /// A non-null text.
    pub fn text(s: &'a str) -> Arg<'a> {
        Arg::Text(Some(s))
    }

    /// A non-null integer.
    pub fn int(i: i64) -> Arg<'a> {
        Arg::Int(Some(i))
    }

    /// A time.
    pub fn time(t: Timestamp) -> Arg<'a> {
        Arg::Int(Some(t.as_millis()))
    }

    /// An optional time.
    pub fn opt_time(t: Option<Timestamp>) -> Arg<'a> {
        Arg::Int(t.map(Timestamp::as_millis))
    }
}

/// A statement rendered for one dialect, built once per process.
#[derive(Debug)]
pub struct Sql {
    /// The SQL text.
    pub text: &'static str,
    /// For dialects whose placeholders are anonymous (`?`): the template parameter (0-based)
    /// each placeholder binds, in order. Empty: the arguments bind as given.
    pub order: &'static [usize],
}

impl Sql {
    /// The arguments in the order the statement's placeholders take them.
    pub fn bound<'s, 'a>(&'s self, args: &'s [Arg<'a>]) -> impl Iterator<Item = Arg<'a>> + 's {
        let n = if self.order.is_empty() { args.len() } else { self.order.len() };
        (0..n).filter_map(move |k| {
            let i = if self.order.is_empty() { k } else { *self.order.get(k)? };
            args.get(i).copied()
        })
    }
}

/// How parameters are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholders {
    /// `$1` (PostgreSQL): numbered, reusable.
    Dollar,
    /// `?1` (SQLite): numbered, reusable.
    NumberedQuestion,
    /// `?` (MySQL): anonymous; a parameter used twice is bound twice ([`Sql::order`]).
    Question,
}

/// What differs in the SQL text of a backend.
pub trait Dialect {
    /// How a parameter is written.
    const PLACEHOLDERS: Placeholders;
    /// The clock in epoch milliseconds, as a BIGINT: the database's, unless `$1` is not NULL.
    const NOW: &'static str;
    /// Locks the rows a `SELECT` reads until the transaction ends ("" when the writer is alone).
    const LOCK: &'static str;
    /// Locks the rows a `SELECT` reads, skipping rows locked by others.
    const SKIP_LOCKED: &'static str;
    /// The predicate of "not final" that the due index `trans_global_due` repeats, replacing
    /// the templates' `status IN ('prepared', 'submitted', 'aborting')` (SQLite: ADR 16).
    const UNFINISHED: &'static str = templates::UNFINISHED;
    /// [`templates::RESET_CRON_TIME`] or the dialect's own.
    const RESET_CRON_TIME: &'static str = templates::RESET_CRON_TIME;
    /// [`templates::RESUME_HELD`] (MySQL cannot sub-select the table it updates).
    const RESUME_HELD: &'static str = templates::RESUME_HELD;
    /// [`templates::BRANCHES_OF_JSON`] or the dialect's own (`$1`: a JSON array of gids).
    const BRANCHES_OF_JSON: &'static str = templates::BRANCHES_OF_JSON;
    /// True when `gid` starts with `$7`, compared exactly (no `LIKE`: `%` and `_` are plain
    /// characters, and case matters).
    const GID_PREFIX: &'static str = "substr(gid, 1, length($7)) = $7";
    /// Whether a transaction's branches are packed into its global row's `branches` column
    /// ([`crate::packed`], ADR 26) instead of `trans_branch_op` rows. Such a backend's writer
    /// overrides every [`Conn`] step that writes branches; the shared reads follow this flag.
    const BRANCHES_IN_ROW: bool = false;
}

/// Renders a template for dialect `D` (see the module docs for the template syntax).
pub fn render<D: Dialect>(template: &str) -> Sql {
    let text = template
        .replace(templates::UNFINISHED, D::UNFINISHED)
        .replace("{now}", D::NOW)
        .replace("{lock}", D::LOCK)
        .replace("{skip_locked}", D::SKIP_LOCKED)
        .replace("{gid_prefix}", D::GID_PREFIX);
    let mut out = String::with_capacity(text.len());
    let mut order = Vec::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        let number: Option<usize> = after[..digits].parse().ok().filter(|n| *n > 0);
        match (number, D::PLACEHOLDERS) {
            (None, _) => out.push('$'),
            (Some(n), Placeholders::Dollar) => out.push_str(&format!("${n}")),
            (Some(n), Placeholders::NumberedQuestion) => out.push_str(&format!("?{n}")),
            (Some(n), Placeholders::Question) => {
                out.push('?');
                order.push(n - 1);
            }
        }
        rest = &after[if number.is_some() { digits } else { 0 }..];
    }
    out.push_str(rest);
    // Built once per process and kept for its lifetime: the drivers' statement caches key on
    // the text, and `&'static` text is what sqlx takes without copying.
    Sql { text: out.leak(), order: order.leak() }
}

/// Every shared statement, rendered for one dialect ([`Statements::new`], once per process).
#[derive(Debug)]
#[allow(missing_docs, reason = "each field is the template of the same name in `templates`")]
pub struct Statements {
    pub create: Sql,
    pub insert_branch: Sql,
    pub claim_due: Sql,
    pub claim: Sql,
    pub branches_of_gid: Sql,
    pub branches_of_json: Sql,
    pub save: Sql,
    pub renew: Sql,
    pub update_branch: Sql,
    pub update_branch_by_id: Sql,
    pub add_branches_check: Sql,
    pub touch: Sql,
    pub force_stop_read: Sql,
    pub force_stop: Sql,
    pub reset_next_cron_time: Sql,
    pub reset_cron_time: Sql,
    pub resume_held: Sql,
    pub kv_insert: Sql,
    pub kv_update: Sql,
    pub kv_version: Sql,
    pub kv_delete: Sql,
    pub load_global: Sql,
    pub list: Sql,
    pub kv_get: Sql,
    pub kv_scan: Sql,
    pub unfinished_counts: Sql,
    pub finished_counts: Sql,
    pub purge_select: Sql,
    pub purge_branches: Sql,
    pub purge_global: Sql,
    /// [`Dialect::BRANCHES_IN_ROW`].
    pub branches_in_row: bool,
    pub packed_of_id: Sql,
}

impl Statements {
    /// Renders every template for `D`.
    pub fn new<D: Dialect>() -> Statements {
        use templates as t;
        Statements {
            create: render::<D>(t::CREATE),
            insert_branch: render::<D>(t::INSERT_BRANCH),
            claim_due: render::<D>(t::CLAIM_DUE),
            claim: render::<D>(t::CLAIM),
            branches_of_gid: render::<D>(t::BRANCHES_OF_GID),
            branches_of_json: render::<D>(D::BRANCHES_OF_JSON),
            save: render::<D>(t::SAVE),
            renew: render::<D>(t::RENEW),
            update_branch: render::<D>(t::UPDATE_BRANCH),
            update_branch_by_id: render::<D>(t::UPDATE_BRANCH_BY_ID),
            add_branches_check: render::<D>(t::ADD_BRANCHES_CHECK),
            touch: render::<D>(t::TOUCH),
            force_stop_read: render::<D>(t::FORCE_STOP_READ),
            force_stop: render::<D>(t::FORCE_STOP),
            reset_next_cron_time: render::<D>(t::RESET_NEXT_CRON_TIME),
            reset_cron_time: render::<D>(D::RESET_CRON_TIME),
            resume_held: render::<D>(D::RESUME_HELD),
            kv_insert: render::<D>(t::KV_INSERT),
            kv_update: render::<D>(t::KV_UPDATE),
            kv_version: render::<D>(t::KV_VERSION),
            kv_delete: render::<D>(t::KV_DELETE),
            load_global: render::<D>(t::LOAD_GLOBAL),
            list: render::<D>(t::LIST),
            kv_get: render::<D>(t::KV_GET),
            kv_scan: render::<D>(t::KV_SCAN),
            unfinished_counts: render::<D>(t::UNFINISHED_COUNTS),
            finished_counts: render::<D>(t::FINISHED_COUNTS),
            purge_select: render::<D>(t::PURGE_SELECT),
            purge_branches: render::<D>(t::PURGE_BRANCHES),
            purge_global: render::<D>(t::PURGE_GLOBAL),
            branches_in_row: D::BRANCHES_IN_ROW,
            packed_of_id: render::<D>(t::PACKED_OF_ID),
        }
    }
}

/// The error of a step only a writer that is alone has ([`Conn::ALONE`]).
fn alone_only(step: &str) -> crate::Error {
    crate::Error::Internal(anyhow::anyhow!("{step} is only for a writer that is alone (Conn::ALONE)"))
}

/// Decodes one result row.
pub type Decode<T> = fn(&dyn Columns) -> Result<T>;

/// A connection the shared operations run on, inside the transaction its writer (or reader)
/// opened. Driver errors come back already mapped to [`crate::Error`] (a unique violation is
/// `Conflict`, an unreachable database `Unavailable`), with `what` in the message.
///
/// The provided methods are the portable way to do a step; a backend overrides one when its
/// database does it better (one statement for many rows) or cannot do it so.
pub trait Conn: Send {
    /// The statements of this connection's dialect.
    fn sql(&self) -> &'static Statements;

    /// The `$1` of statements reading `{now}` (see [`ClockSource::fixed`]).
    fn fixed(&self, now: Timestamp) -> Option<i64>;

    /// Runs a statement; returns how many rows it changed (matched, for an UPDATE).
    fn execute(
        &mut self,
        sql: &Sql,
        args: &[Arg<'_>],
        what: &'static str,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// Runs a query and decodes its rows.
    fn fetch<T: Send>(
        &mut self,
        sql: &Sql,
        args: &[Arg<'_>],
        what: &'static str,
        decode: Decode<T>,
    ) -> impl Future<Output = Result<Vec<T>>> + Send;

    /// Runs a transaction-control statement (`BEGIN`, `SAVEPOINT request`, `COMMIT`...).
    fn control(&mut self, sql: &'static str) -> impl Future<Output = Result<()>> + Send;

    /// Whether [`Conn::write_rows`] writes many creates and saves in a few statements. When it
    /// does, the group writer hands it the creates and saves of a whole batch at once.
    const MULTI_ROW: bool = false;

    /// What opens the transaction of a batch that [`Conn::write_rows`] writes (one round trip:
    /// it may hold several statements, e.g. settings for that transaction only).
    const MULTI_ROW_BEGIN: &'static str = "BEGIN";

    /// Writes `creates` and `saves` (of different transactions) in as few statements as the
    /// database allows: one per table and kind of write, whatever the batch's size, instead of
    /// two per request. `Ok(false)` (or an error): one of them would not succeed on its own (a
    /// duplicate gid, a lost fence, a missing branch); the caller rolls the transaction back
    /// and runs them one by one, so that each gets its own answer.
    fn write_rows(
        &mut self,
        creates: &[&NewTransaction],
        saves: &[&Save],
    ) -> impl Future<Output = Result<bool>> + Send {
        let _ = (creates, saves);
        async { Ok(false) }
    }

    /// Inserts a global row (`args`: [`templates::CREATE`]'s) and its branches; returns the
    /// branches' ids where known without a statement ([`Conn::inserted_ids`]).
    fn create_row(
        &mut self,
        gid: &str,
        args: &[Arg<'_>],
        branches: &[Branch],
    ) -> impl Future<Output = Result<Vec<i64>>> + Send {
        async move {
            let create = &self.sql().create;
            self.execute(create, args, "create").await.map_err(|e| ops::gid_conflict(e, gid))?;
            self.insert_branches(gid, branches).await?;
            Ok(self.inserted_ids(branches.len()))
        }
    }

    /// A save with branch updates where they are packed in the row
    /// ([`Dialect::BRANCHES_IN_ROW`]): one fenced UPDATE; returns the rows it matched (0:
    /// fenced). Only for such a backend.
    fn save_with_branches(&mut self, save: &Save) -> impl Future<Output = Result<u64>> + Send {
        let _ = save;
        async {
            Err(crate::Error::Internal(anyhow::anyhow!("save_with_branches is only for packed branches")))
        }
    }

    /// Inserts branch rows of `gid`, exactly as given; their ids ascend in the order given.
    fn insert_branches(&mut self, gid: &str, branches: &[Branch]) -> impl Future<Output = Result<()>> + Send {
        ops::insert_branches_one_by_one(self, gid, branches)
    }

    /// The ids of the last `n` rows [`Conn::insert_branches`] inserted, in order, where the
    /// connection knows them without a statement (SQLite: the writer is alone, so they are the
    /// last row id and the `n - 1` before it); empty otherwise.
    fn inserted_ids(&self, n: usize) -> Vec<i64> {
        let _ = n;
        Vec::new()
    }

    /// Inserts branch rows of a registration (as [`Conn::insert_branches`]) and bumps the
    /// `update_time` of the transaction (row `id`) to `now`; the caller holds the global row's
    /// lock.
    fn register_branches(
        &mut self,
        gid: &str,
        id: i64,
        branches: &[Branch],
        now: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send {
        async move {
            self.insert_branches(gid, branches).await?;
            let touch = &self.sql().touch;
            self.execute(touch, &[Arg::time(now), Arg::int(id)], "add branches: touch").await?;
            Ok(())
        }
    }

    /// A registration in its common case, without the check's read: a backend whose writer is
    /// alone (SQLite) bumps `update_time` only where the transaction is of `expect`'s mode,
    /// `prepared`, not leased and not timed out, and inserts the rows if that matched.
    /// `Ok(false)`: not tried, or the transaction is not in that state; the caller then
    /// checks it and says why (or registers after all, if the check finds nothing wrong).
    fn try_register_branches(
        &mut self,
        gid: &str,
        expect: &Expect,
        branches: &[Branch],
        now: Timestamp,
    ) -> impl Future<Output = Result<bool>> + Send {
        let _ = (gid, expect, branches, now);
        async { Ok(false) }
    }

    /// Applies the branch half of a save; `NotFound` names an update that matched no row
    /// ([`ops::update_branch_rows`]).
    fn update_branches(
        &mut self,
        gid: &str,
        now: Timestamp,
        updates: &[BranchUpdate],
    ) -> impl Future<Output = Result<()>> + Send {
        ops::update_branch_rows(self, gid, now, updates)
    }

    /// The branch rows of the given transactions (ascending id), with their gids.
    fn branches_of(&mut self, gids: &[&str]) -> impl Future<Output = Result<Vec<(String, Branch)>>> + Send {
        ops::branch_rows_of(self, gids)
    }

    /// Takes up to `limit` due rows (one `UPDATE … RETURNING` in the template); unordered.
    /// Each with whether it had an owner before (a lease takeover).
    fn claim_due_rows(
        &mut self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<(Global, bool)>>> + Send {
        async move {
            let args = [
                Arg::Int(self.fixed(now)),
                Arg::text(owner),
                Arg::time(lease_until),
                Arg::time(now),
                Arg::int(i64::from(limit)),
            ];
            self.fetch(&self.sql().claim_due, &args, "claim due", crate::rows::claimed).await
        }
    }

    /// Whether this connection's writer is alone (SQLite): a row [`Conn::pick_row`] read is
    /// still as read when [`Conn::take_row`] takes it later in the same request, so a claim
    /// and the save decided on it can be one UPDATE ([`crate::Store::claim_then`]).
    const ALONE: bool = false;

    /// The row a claim by gid would take (not final, no valid lease), read but not taken, with
    /// its packed branches (empty: they are rows). Only where [`Conn::ALONE`].
    fn pick_row(&mut self, gid: &str, now: Timestamp) -> impl Future<Output = Result<Option<Picked>>> + Send {
        let _ = (gid, now);
        async { Err(alone_only("pick_row")) }
    }

    /// Takes the row [`Conn::pick_row`] read (by its id): owner and lease, and with `save`
    /// the global half of that save in the same UPDATE. Only where [`Conn::ALONE`].
    fn take_row(
        &mut self,
        id: i64,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        save: Option<&Save>,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (id, owner, now, lease_until, save);
        async { Err(alone_only("take_row")) }
    }

    /// Takes one transaction if it is not final and has no valid lease (a writer that is alone
    /// picks and takes instead: [`Conn::pick_row`], [`Conn::take_row`]).
    fn claim_row(
        &mut self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> impl Future<Output = Result<Option<Global>>> + Send {
        async move {
            let args = [
                Arg::Int(self.fixed(now)),
                Arg::text(owner),
                Arg::time(lease_until),
                Arg::time(now),
                Arg::text(gid),
            ];
            let rows = self.fetch(&self.sql().claim, &args, "claim", crate::rows::global).await?;
            Ok(rows.into_iter().next())
        }
    }
}
