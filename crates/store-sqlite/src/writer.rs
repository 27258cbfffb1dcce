//! Group commit: one task owns the only write connection, takes every queued write request,
//! runs them all inside one `BEGIN IMMEDIATE … COMMIT` (one fsync for the batch) and answers
//! each caller only after that commit, so an `Ok` always means "durable".
//!
//! Each request runs under its own SAVEPOINT: a logical failure (duplicate gid, lost fence)
//! rolls back that request alone and the rest of the batch still commits.

use dtx_core::Timestamp;
use dtx_store::{Error, Loaded, NewTransaction, Result, Save};
use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::error::{map_sqlx, replicate};
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
}

/// A request that has run, holding its outcome until the batch commits.
enum Done {
    Unit(Reply<()>, Result<()>),
    Many(Reply<Vec<Loaded>>, Result<Vec<Loaded>>),
    One(Reply<Option<Loaded>>, Box<Result<Option<Loaded>>>),
}

impl Done {
    fn is_ok(&self) -> bool {
        match self {
            Done::Unit(_, r) => r.is_ok(),
            Done::Many(_, r) => r.is_ok(),
            Done::One(_, r) => r.is_ok(),
        }
    }

    /// Answers the caller. A caller that stopped waiting is not an error: its write stands.
    fn send(self) {
        match self {
            Done::Unit(tx, r) => drop(tx.send(r)),
            Done::Many(tx, r) => drop(tx.send(r)),
            Done::One(tx, r) => drop(tx.send(*r)),
        }
    }

    /// Answers the caller with the batch's failure instead of its own outcome.
    fn fail(self, err: &Error) {
        match self {
            Done::Unit(tx, _) => drop(tx.send(Err(replicate(err)))),
            Done::Many(tx, _) => drop(tx.send(Err(replicate(err)))),
            Done::One(tx, _) => drop(tx.send(Err(replicate(err)))),
        }
    }
}

impl Request {
    /// Answers the caller without running the request (the batch could not even begin).
    fn fail(self, err: &Error) {
        match self {
            Request::Create { reply, .. } | Request::Save { reply, .. } => {
                drop(reply.send(Err(replicate(err))));
            }
            Request::ClaimDue { reply, .. } => drop(reply.send(Err(replicate(err)))),
            Request::Claim { reply, .. } => drop(reply.send(Err(replicate(err)))),
        }
    }

    async fn run(self, conn: &mut SqliteConnection) -> Done {
        match self {
            Request::Create { tx, reply } => Done::Unit(reply, write::create(conn, &tx).await),
            // A claimer that gave up would leave its rows leased to nobody until expiry.
            Request::ClaimDue { reply, .. } if reply.is_closed() => Done::Many(reply, Ok(Vec::new())),
            Request::Claim { reply, .. } if reply.is_closed() => Done::One(reply, Box::new(Ok(None))),
            Request::ClaimDue { owner, now, lease_until, limit, reply } => {
                Done::Many(reply, write::claim_due(conn, &owner, now, lease_until, limit).await)
            }
            Request::Claim { gid, owner, now, lease_until, reply } => {
                Done::One(reply, Box::new(write::claim(conn, &gid, &owner, now, lease_until).await))
            }
            Request::Save { save, reply } => Done::Unit(reply, write::save(conn, &save).await),
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
            done.into_iter().for_each(Done::send);
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
