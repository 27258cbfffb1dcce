//! Group commit: one dedicated thread (`dtx-sqlite-writer`) owns the only write connection (a
//! synchronous rusqlite connection: no per-statement hand-off to a driver worker), takes every
//! queued write request, runs them all inside one `BEGIN IMMEDIATE … COMMIT` (one fsync for the
//! batch) and answers each caller only after that commit, so an `Ok` always means "durable".
//!
//! A batch runs without a savepoint per request (ADR 12: the two statements and the page
//! copies into the statement journal were ~10 % of the coordinator's CPU per saga). When a
//! request fails (duplicate gid, lost fence, refused precondition, stale kv version) or its
//! caller gave up while it ran, the batch is rolled back, that request is set aside to run
//! alone afterwards (where it gets its own answer), and the others are run again: those before
//! it together, those after it together, so each request runs at most about twice. Requests
//! run one after another on the one connection, so a request's reads and writes see no other
//! writer in between: a read-then-write inside one request is atomic. The operations themselves are the shared ones
//! of `dtx_store::sql`, run on [`Lite`].

use dtx_store::Error;
use dtx_store::write::Job;
use rusqlite::Connection;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::conn::{Lite, Names, exec, now};
use crate::error::map_rusqlite;

/// The writer loop, on its own thread: blocks for the first request, takes whatever else is
/// already queued (up to `max_batch`), runs the batch, and repeats until every sender is gone;
/// then closes the connection.
pub(crate) fn run(mut conn: Connection, mut rx: mpsc::Receiver<Job>, max_batch: usize) {
    let max_batch = max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    let mut names = Names::default();
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        run_batch(&mut conn, &mut names, batch.drain(..));
    }
    debug!("sqlite writer stopping: all store handles dropped");
    if let Err((_, e)) = conn.close() {
        warn!(error = %e, "closing the sqlite write connection failed");
    }
}

fn run_batch(conn: &mut Connection, names: &mut Names, batch: impl Iterator<Item = Job>) {
    let mut alone = Vec::new();
    // As in `dtx_store::sql::group`: after a failure the requests before the failed one (they
    // ran fine) and those after it are tried again as two batches, so each request runs at
    // most about twice however many of a batch fail.
    let mut pending = vec![batch.collect::<Vec<Job>>()];
    while let Some(mut jobs) = pending.pop() {
        // A caller that gave up (deadline) is not run, so a refused request never lands later.
        jobs.retain(|j| !j.abandoned());
        if jobs.is_empty() {
            continue;
        }
        match attempt(conn, names, jobs) {
            Attempt::Committed => {}
            Attempt::RolledBack { failed, mut rest } => {
                let after = rest.split_off(failed + 1);
                if let Some(failed) = rest.pop()
                    && !failed.abandoned()
                {
                    alone.push(failed);
                }
                pending.push(after);
                pending.push(rest);
            }
            Attempt::Broken(err, unanswered) => {
                warn!(error = %err, size = unanswered.len(), "sqlite write batch failed, rolling back");
                let rest = pending.into_iter().flatten();
                unanswered.into_iter().chain(rest).chain(alone).for_each(|j| j.fail(&err));
                return;
            }
        }
    }
    for job in alone {
        debug!("running a request alone: it failed in its batch");
        run_alone(conn, names, job);
    }
}

/// How one try of a batch ended.
enum Attempt {
    /// Committed; every request answered.
    Committed,
    /// `rest[failed]` did not succeed (or its caller left), so nothing of the batch was kept.
    RolledBack { failed: usize, rest: Vec<Job> },
    /// The transaction itself failed (BEGIN or COMMIT: an I/O error, a full disk); nothing of
    /// it was kept and these requests are unanswered.
    Broken(Error, Vec<Job>),
}

/// One try of a batch in one transaction.
fn attempt(conn: &mut Connection, names: &mut Names, jobs: Vec<Job>) -> Attempt {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        return Attempt::Broken(map_rusqlite("begin batch", e), jobs);
    }
    let mut outputs = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        match now(dtx_store::sql::run(&mut Lite { conn: &mut *conn, names: &mut *names }, &job.op)) {
            // As before the batch: the write of a caller that gave up meanwhile must not land.
            Ok(output) if !job.abandoned() => outputs.push(output),
            _ => {
                rollback(conn);
                return Attempt::RolledBack { failed: i, rest: jobs };
            }
        }
    }
    if let Err(e) = exec(conn, "COMMIT") {
        rollback(conn);
        return Attempt::Broken(map_rusqlite("commit batch", e), jobs);
    }
    debug!(size = jobs.len(), "sqlite write batch committed");
    for (job, output) in jobs.into_iter().zip(outputs) {
        job.answer(Ok(output));
    }
    Attempt::Committed
}

/// Runs one request in a transaction of its own and answers it.
fn run_alone(conn: &mut Connection, names: &mut Names, job: Job) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        job.answer(Err(map_rusqlite("begin", e)));
        return;
    }
    let result = now(dtx_store::sql::run(&mut Lite { conn: &mut *conn, names: &mut *names }, &job.op));
    let result = match result {
        Ok(output) if !job.abandoned() => match exec(conn, "COMMIT") {
            Ok(()) => Ok(output),
            Err(e) => {
                rollback(conn);
                Err(map_rusqlite("commit", e))
            }
        },
        Ok(_) => {
            rollback(conn);
            Err(Error::Unavailable("the caller stopped waiting; the write was rolled back".into()))
        }
        Err(err) => {
            rollback(conn);
            Err(err)
        }
    };
    job.answer(result);
}

/// Best-effort ROLLBACK (after an I/O error SQLite may have rolled back already).
fn rollback(conn: &Connection) {
    if let Err(e) = exec(conn, "ROLLBACK") {
        debug!(error = %e, "rollback of a sqlite write transaction");
    }
}
