//! Group commit: one task owns the only write connection, takes every queued write request,
//! runs them all inside one `BEGIN IMMEDIATE … COMMIT` (one fsync for the batch) and answers
//! each caller only after that commit, so an `Ok` always means "durable".
//!
//! Each request runs under its own SAVEPOINT: a logical failure (duplicate gid, lost fence,
//! refused precondition, stale kv version) rolls back that request alone and the rest of the
//! batch still commits. Requests run one after another on the one connection, so a request's
//! reads and writes see no other writer in between: a read-then-write inside one request is
//! atomic.

use std::time::Duration;

use dtx_core::{Branch, GlobalStatus, Timestamp};
use dtx_store::{Error, Loaded, NewTransaction, Result, Save};
use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::map_sqlx;
use crate::write;

/// Where a request's answer goes.
pub(crate) type Reply<T> = oneshot::Sender<Result<T>>;

/// One write, with the channel its caller awaits.
pub(crate) enum Request {
    // Boxed: a transaction is much larger than the other requests (clippy large_enum_variant).
    Create { tx: Box<NewTransaction>, reply: Reply<()> },
    ClaimDue { owner: String, now: Timestamp, lease_until: Timestamp, limit: u32, reply: Reply<Vec<Loaded>> },
    Claim { gid: String, owner: String, now: Timestamp, lease_until: Timestamp, reply: Reply<Option<Loaded>> },
    Save { save: Save, reply: Reply<()> },
    AddBranches { gid: String, branches: Vec<Branch>, now: Timestamp, reply: Reply<()> },
    ForceStop { gid: String, reason: String, now: Timestamp, reply: Reply<GlobalStatus> },
    ResetNextCronTime { gid: String, base: Duration, now: Timestamp, reply: Reply<()> },
    ResetCronTime { later_than: Timestamp, limit: u32, now: Timestamp, reply: Reply<u64> },
    KvInsert { cat: String, k: String, v: String, now: Timestamp, reply: Reply<()> },
    KvUpdate { cat: String, k: String, v: String, version: i64, now: Timestamp, reply: Reply<()> },
    KvDelete { cat: String, k: String, reply: Reply<()> },
}

/// A request that has run, holding its outcome until the batch commits.
type Done = Box<dyn Answer>;

/// What the batch does with a request's outcome once it knows whether the batch committed.
trait Answer: Send {
    fn is_ok(&self) -> bool;
    /// Answers the caller. A caller that stopped waiting is not an error: its write stands.
    fn send(self: Box<Self>);
    /// Answers the caller with the batch's failure instead of its own outcome.
    fn fail(self: Box<Self>, err: &Error);
}

/// The one [`Answer`]: a request's result and where it goes, for any result type.
struct Outcome<T> {
    reply: Reply<T>,
    result: Result<T>,
}

impl<T: Send + 'static> Answer for Outcome<T> {
    fn is_ok(&self) -> bool {
        self.result.is_ok()
    }

    fn send(self: Box<Self>) {
        drop(self.reply.send(self.result));
    }

    fn fail(self: Box<Self>, err: &Error) {
        drop(self.reply.send(Err(err.replicate())));
    }
}

/// Boxes a request's outcome for the batch.
fn finished<T: Send + 'static>(reply: Reply<T>, result: Result<T>) -> Done {
    Box::new(Outcome { reply, result })
}

/// Answers a request that never ran with the batch's failure.
fn refuse<T>(reply: Reply<T>, err: &Error) {
    drop(reply.send(Err(err.replicate())));
}

impl Request {
    /// Answers the caller without running the request (the batch could not even begin).
    fn fail(self, err: &Error) {
        match self {
            Request::Create { reply, .. }
            | Request::Save { reply, .. }
            | Request::AddBranches { reply, .. }
            | Request::ResetNextCronTime { reply, .. }
            | Request::KvInsert { reply, .. }
            | Request::KvUpdate { reply, .. }
            | Request::KvDelete { reply, .. } => refuse(reply, err),
            Request::ClaimDue { reply, .. } => refuse(reply, err),
            Request::Claim { reply, .. } => refuse(reply, err),
            Request::ForceStop { reply, .. } => refuse(reply, err),
            Request::ResetCronTime { reply, .. } => refuse(reply, err),
        }
    }

    async fn run(self, conn: &mut SqliteConnection) -> Done {
        match self {
            Request::Create { tx, reply } => finished(reply, write::create(conn, &tx).await),
            // A claimer that gave up would leave its rows leased to nobody until expiry.
            Request::ClaimDue { reply, .. } if reply.is_closed() => finished(reply, Ok(Vec::new())),
            Request::Claim { reply, .. } if reply.is_closed() => finished(reply, Ok(None)),
            Request::ClaimDue { owner, now, lease_until, limit, reply } => {
                finished(reply, write::claim_due(conn, &owner, now, lease_until, limit).await)
            }
            Request::Claim { gid, owner, now, lease_until, reply } => {
                finished(reply, write::claim(conn, &gid, &owner, now, lease_until).await)
            }
            Request::Save { save, reply } => finished(reply, write::save(conn, &save).await),
            Request::AddBranches { gid, branches, now, reply } => {
                finished(reply, write::add_branches(conn, &gid, &branches, now).await)
            }
            Request::ForceStop { gid, reason, now, reply } => {
                finished(reply, write::force_stop(conn, &gid, &reason, now).await)
            }
            Request::ResetNextCronTime { gid, base, now, reply } => {
                finished(reply, write::reset_next_cron_time(conn, &gid, base, now).await)
            }
            Request::ResetCronTime { later_than, limit, now, reply } => {
                finished(reply, write::reset_cron_time(conn, later_than, limit, now).await)
            }
            Request::KvInsert { cat, k, v, now, reply } => {
                finished(reply, write::kv_insert(conn, &cat, &k, &v, now).await)
            }
            Request::KvUpdate { cat, k, v, version, now, reply } => {
                finished(reply, write::kv_update(conn, &cat, &k, &v, version, now).await)
            }
            Request::KvDelete { cat, k, reply } => finished(reply, write::kv_delete(conn, &cat, &k).await),
        }
    }
}

/// The writer loop: runs until every sender is gone, then closes the connection.
pub(crate) async fn run(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Request>, max_batch: usize) {
    let max_batch = max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    // `recv_many` waits for the first request, then takes whatever else is already queued.
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        run_batch(&mut conn, batch.drain(..)).await;
    }
    debug!("sqlite writer stopping: all store handles dropped");
    if let Err(e) = sqlx::Connection::close(conn).await {
        warn!(error = %e, "closing the sqlite write connection failed");
    }
}

async fn run_batch(conn: &mut SqliteConnection, mut batch: impl ExactSizeIterator<Item = Request>) {
    let size = batch.len();
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE").await {
        let err = map_sqlx("begin batch", e);
        warn!(error = %err, size, "sqlite write batch could not begin");
        batch.for_each(|r| r.fail(&err));
        return;
    }

    let mut done = Vec::with_capacity(size);
    while let Some(request) = batch.next() {
        match run_one(conn, request).await {
            Ok(outcome) => done.push(outcome),
            Err(err) => {
                abort(conn, &err, done, size).await;
                batch.for_each(|r| r.fail(&err));
                return;
            }
        }
    }

    match exec(conn, "COMMIT").await {
        Ok(()) => {
            debug!(size, "sqlite write batch committed");
            done.into_iter().for_each(|d| d.send());
        }
        Err(e) => abort(conn, &map_sqlx("commit batch", e), done, size).await,
    }
}

/// Runs one request under its own savepoint: released on success, rolled back to on failure
/// so that only this request's writes are undone. `Err` means the batch's transaction itself
/// is broken (SQLite may have rolled it all back after an I/O error or a full disk); the
/// request has then already been answered with that error.
async fn run_one(conn: &mut SqliteConnection, request: Request) -> Result<Done> {
    if let Err(e) = exec(conn, "SAVEPOINT request").await {
        let err = map_sqlx("savepoint", e);
        request.fail(&err);
        return Err(err);
    }
    let outcome = request.run(conn).await;
    let end = if outcome.is_ok() {
        exec(conn, "RELEASE request").await
    } else {
        match exec(conn, "ROLLBACK TO request").await {
            Ok(()) => exec(conn, "RELEASE request").await,
            Err(e) => Err(e),
        }
    };
    match end {
        Ok(()) => Ok(outcome),
        Err(e) => {
            let err = map_sqlx("end savepoint", e);
            outcome.fail(&err);
            Err(err)
        }
    }
}

/// Rolls the batch back and fails every request that had already run.
async fn abort(conn: &mut SqliteConnection, err: &Error, done: Vec<Done>, size: usize) {
    warn!(error = %err, size, "sqlite write batch failed, rolling back");
    if let Err(e) = exec(conn, "ROLLBACK").await {
        // Usually "no transaction is active": SQLite already rolled back.
        debug!(error = %e, "rollback after a failed batch");
    }
    done.into_iter().for_each(|d| d.fail(err));
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query(sql).execute(conn).await.map(|_| ())
}
