//! Group commit: one dedicated thread (`dtx-sqlite-writer`) owns the only write connection (a
//! synchronous rusqlite connection: no per-statement hand-off to a driver worker), takes every
//! queued write request, runs them all inside one `BEGIN IMMEDIATE … COMMIT` (one fsync for the
//! batch) and answers each caller only after that commit, so an `Ok` always means "durable".
//!
//! Each request runs under its own SAVEPOINT: a logical failure (duplicate gid, lost fence,
//! refused precondition, stale kv version) rolls back that request alone and the rest of the
//! batch still commits. Requests run one after another on the one connection, so a request's
//! reads and writes see no other writer in between: a read-then-write inside one request is
//! atomic. The operations themselves are the shared ones of `dtx_store::sql`, run on
//! [`Lite`].

use dtx_store::write::{Job, Output};
use dtx_store::{Error, Result};
use rusqlite::Connection;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::conn::{Lite, exec, now};
use crate::error::map_rusqlite;

/// The writer loop, on its own thread: blocks for the first request, takes whatever else is
/// already queued (up to `max_batch`), runs the batch, and repeats until every sender is gone;
/// then closes the connection.
pub(crate) fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let max_batch = max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    let mut done = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, batch.drain(..), &mut done);
    }
    debug!("sqlite writer stopping: all store handles dropped");
    if let Err((_, e)) = conn.close() {
        warn!(error = %e, "closing the sqlite write connection failed");
    }
}

type Done = Vec<(Job, Result<Output>)>;

fn run_batch(conn: &mut Connection, mut batch: impl ExactSizeIterator<Item = Job>, done: &mut Done) {
    let size = batch.len();
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let err = map_rusqlite("begin batch", e);
        warn!(error = %err, size, "sqlite write batch could not begin");
        batch.for_each(|j| j.fail(&err));
        return;
    }

    while let Some(job) = batch.next() {
        // Its caller gave up (deadline): not run, so a refused request never lands later.
        if job.abandoned() {
            continue;
        }
        if let Err(err) = run_one(conn, job, done) {
            abort(conn, &err, done, size);
            batch.for_each(|j| j.fail(&err));
            return;
        }
    }

    match exec(conn, "COMMIT") {
        Ok(()) => {
            debug!(size, "sqlite write batch committed");
            done.drain(..).for_each(|(job, result)| job.answer(result));
        }
        Err(e) => abort(conn, &map_rusqlite("commit batch", e), done, size),
    }
}

/// Runs one request under its own savepoint: released on success, rolled back to on failure
/// so that only this request's writes are undone. `Err` means the batch's transaction itself
/// is broken (SQLite may have rolled it all back after an I/O error or a full disk); the
/// request has then already been answered with that error.
fn run_one(conn: &mut Connection, job: Job, done: &mut Done) -> Result<()> {
    if let Err(e) = exec(conn, "SAVEPOINT request") {
        let err = map_rusqlite("savepoint", e);
        job.fail(&err);
        return Err(err);
    }
    let result = now(dtx_store::sql::run(&mut Lite(conn), &job.op));
    let end = if result.is_ok() {
        exec(conn, "RELEASE SAVEPOINT request")
    } else {
        exec(conn, "ROLLBACK TO SAVEPOINT request").and_then(|()| exec(conn, "RELEASE SAVEPOINT request"))
    };
    match end {
        Ok(()) => {
            done.push((job, result));
            Ok(())
        }
        Err(e) => {
            let err = map_rusqlite("end savepoint", e);
            job.fail(&err);
            Err(err)
        }
    }
}

/// Rolls the batch back and fails every request that had already run.
fn abort(conn: &Connection, err: &Error, done: &mut Done, size: usize) {
    warn!(error = %err, size, "sqlite write batch failed, rolling back");
    if let Err(e) = exec(conn, "ROLLBACK") {
        // Usually "no transaction is active": SQLite already rolled back.
        debug!(error = %e, "rollback after a failed batch");
    }
    done.drain(..).for_each(|(job, _)| job.fail(err));
}
