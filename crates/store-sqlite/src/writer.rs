//! Group commit: one dedicated thread (`dtx-sqlite-writer`) owns the only write connection (a
//! synchronous rusqlite connection: no per-statement hand-off to a driver worker), takes every
//! queued write request, runs them all inside one `BEGIN IMMEDIATE … COMMIT` (one fsync for the
//! batch) and answers each caller only after that commit, so an `Ok` always means "durable".
//!
//! Each request runs under its own SAVEPOINT: a logical failure (duplicate gid, lost fence,
//! refused precondition, stale kv version) rolls back that request alone and the rest of the
//! batch still commits. Requests run one after another on the one connection, so a request's
//! reads and writes see no other writer in between: a read-then-write inside one request is
//! atomic.

use std::time::Duration;

use dtx_core::{Branch, GlobalStatus, Timestamp};
use dtx_store::{Error, Loaded, NewTransaction, Result, Save};
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::map_rusqlite;
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
    Purge { before: Timestamp, limit: u32, reply: Reply<u64> },
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
            Request::Purge { reply, .. } => refuse(reply, err),
        }
    }

    fn run(self, conn: &Connection) -> Done {
        match self {
            Request::Create { tx, reply } => finished(reply, write::create(conn, &tx)),
            // A claimer that gave up would leave its rows leased to nobody until expiry.
            Request::ClaimDue { reply, .. } if reply.is_closed() => finished(reply, Ok(Vec::new())),
            Request::Claim { reply, .. } if reply.is_closed() => finished(reply, Ok(None)),
            Request::ClaimDue { owner, now, lease_until, limit, reply } => {
                finished(reply, write::claim_due(conn, &owner, now, lease_until, limit))
            }
            Request::Claim { gid, owner, now, lease_until, reply } => {
                finished(reply, write::claim(conn, &gid, &owner, now, lease_until))
            }
            Request::Save { save, reply } => finished(reply, write::save(conn, &save)),
            Request::AddBranches { gid, branches, now, reply } => {
                finished(reply, write::add_branches(conn, &gid, &branches, now))
            }
            Request::ForceStop { gid, reason, now, reply } => {
                finished(reply, write::force_stop(conn, &gid, &reason, now))
            }
            Request::ResetNextCronTime { gid, base, now, reply } => {
                finished(reply, write::reset_next_cron_time(conn, &gid, base, now))
            }
            Request::ResetCronTime { later_than, limit, now, reply } => {
                finished(reply, write::reset_cron_time(conn, later_than, limit, now))
            }
            Request::KvInsert { cat, k, v, now, reply } => {
                finished(reply, write::kv_insert(conn, &cat, &k, &v, now))
            }
            Request::KvUpdate { cat, k, v, version, now, reply } => {
                finished(reply, write::kv_update(conn, &cat, &k, &v, version, now))
            }
            Request::KvDelete { cat, k, reply } => finished(reply, write::kv_delete(conn, &cat, &k)),
            Request::Purge { before, limit, reply } => {
                finished(reply, write::purge_finished(conn, before, limit))
            }
        }
    }
}

/// The writer loop, on its own thread: blocks for the first request, takes whatever else is
/// already queued (up to `max_batch`), runs the batch, and repeats until every sender is gone;
/// then closes the connection.
pub(crate) fn run(conn: Connection, mut rx: mpsc::Receiver<Request>, max_batch: usize) {
    let max_batch = max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        run_batch(&conn, batch.drain(..));
    }
    debug!("sqlite writer stopping: all store handles dropped");
    if let Err((_, e)) = conn.close() {
        warn!(error = %e, "closing the sqlite write connection failed");
    }
}

fn run_batch(conn: &Connection, mut batch: impl ExactSizeIterator<Item = Request>) {
    let size = batch.len();
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let err = map_rusqlite("begin batch", e);
        warn!(error = %err, size, "sqlite write batch could not begin");
        batch.for_each(|r| r.fail(&err));
        return;
    }

    let mut done = Vec::with_capacity(size);
    while let Some(request) = batch.next() {
        match run_one(conn, request) {
            Ok(outcome) => done.push(outcome),
            Err(err) => {
                abort(conn, &err, done, size);
                batch.for_each(|r| r.fail(&err));
                return;
            }
        }
    }

    match exec(conn, "COMMIT") {
        Ok(()) => {
            debug!(size, "sqlite write batch committed");
            done.into_iter().for_each(|d| d.send());
        }
        Err(e) => abort(conn, &map_rusqlite("commit batch", e), done, size),
    }
}

/// Runs one request under its own savepoint: released on success, rolled back to on failure
/// so that only this request's writes are undone. `Err` means the batch's transaction itself
/// is broken (SQLite may have rolled it all back after an I/O error or a full disk); the
/// request has then already been answered with that error.
fn run_one(conn: &Connection, request: Request) -> Result<Done> {
    if let Err(e) = exec(conn, "SAVEPOINT request") {
        let err = map_rusqlite("savepoint", e);
        request.fail(&err);
        return Err(err);
    }
    let outcome = request.run(conn);
    let end = if outcome.is_ok() {
        exec(conn, "RELEASE request")
    } else {
        exec(conn, "ROLLBACK TO request").and_then(|()| exec(conn, "RELEASE request"))
    };
    match end {
        Ok(()) => Ok(outcome),
        Err(e) => {
            let err = map_rusqlite("end savepoint", e);
            outcome.fail(&err);
            Err(err)
        }
    }
}

/// Rolls the batch back and fails every request that had already run.
fn abort(conn: &Connection, err: &Error, done: Vec<Done>, size: usize) {
    warn!(error = %err, size, "sqlite write batch failed, rolling back");
    if let Err(e) = exec(conn, "ROLLBACK") {
        // Usually "no transaction is active": SQLite already rolled back.
        debug!(error = %e, "rollback after a failed batch");
    }
    done.into_iter().for_each(|d| d.fail(err));
}

/// Runs a transaction-control statement (cached: the same few run for every batch).
fn exec(conn: &Connection, sql: &'static str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}
