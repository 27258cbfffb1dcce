//! Group commit for pooled async drivers (PostgreSQL, MySQL): a few writer tasks share one
//! queue of write requests. A writer that is free takes every request queued at that moment (up
//! to `max_batch`), runs them in one database transaction on one pooled connection, and answers
//! each caller only after the COMMIT, so an `Ok` always means "durable". Under light load a
//! request is taken at once and committed alone; under load the queue fills while the writers
//! are busy and batches grow, so many transactions share one commit (one log flush).
//!
//! Several writers run at once, as these databases allow: a batch waiting on the network or on
//! a row lock does not stop the others.
//!
//! A batch of several runs without a savepoint per request (each would cost two round trips):
//! when one request fails (duplicate gid, lost fence, refused precondition, stale kv version,
//! contention with another batch), the batch is rolled back, that request runs again alone in a
//! transaction of its own (and gets its own answer there), and the others are tried together
//! again. If the transaction itself breaks (the connection is gone), every request of the batch
//! gets the error and nothing of it is kept; the connection is discarded.
//!
//! A backend that can ([`Conn::MULTI_ROW`], PostgreSQL) writes a batch's creates and saves, the
//! requests of every saga, all at once in one statement ([`Conn::write_rows`]); if that
//! statement refuses one of them, the batch is rolled back and runs request by request as above.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::sync::{Mutex, mpsc};
use tracing::{debug, info, warn};

use super::Conn;
use crate::write::{Job, Output, WriteOp};
use crate::{Error, NewTransaction, Result, Save};

/// A connection of a pool, as the writer uses it.
pub trait PooledConn: Conn {
    /// Closes the connection instead of returning it to the pool (its state is unknown).
    fn discard(self);
}

/// Where writers get connections.
pub trait Pool: Clone + Send + Sync + 'static {
    /// A pooled connection.
    type Conn: PooledConn;
    /// A connection (failing `Unavailable` while the database is unreachable).
    fn acquire(&self) -> impl Future<Output = Result<Self::Conn>> + Send;
    /// Notes a failure that may mean the database is down.
    fn mark_down(&self, err: &Error);
}

/// Whether a database is known to be down, and how long to wait for a connection meanwhile.
#[derive(Debug)]
pub struct Health {
    down: AtomicBool,
    acquire_timeout: Duration,
    name: &'static str,
}

/// While the database is known to be down, how long an operation waits for a connection before
/// failing: long enough to connect to a database that is back, short enough that a client gets
/// its 503 promptly instead of after the full acquire timeout.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Health {
    /// Up, for the database called `name` in messages.
    pub fn new(name: &'static str, acquire_timeout: Duration) -> Arc<Health> {
        Arc::new(Health { down: AtomicBool::new(false), acquire_timeout, name })
    }

    /// Waits for `acquire`. The first failure marks the database down (logged once); while it
    /// is down, attempts give up after a second; the first success marks it up again.
    pub async fn acquire<T>(&self, acquire: impl Future<Output = Result<T>>) -> Result<T> {
        let down = self.down.load(Ordering::Relaxed);
        let limit = if down { PROBE_TIMEOUT.min(self.acquire_timeout) } else { self.acquire_timeout };
        let err = match tokio::time::timeout(limit, acquire).await {
            Ok(Ok(conn)) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    info!(database = self.name, "database reachable again");
                }
                return Ok(conn);
            }
            Ok(Err(e)) => e,
            Err(_) => Error::Unavailable(format!(
                "{} is unreachable or not accepting work (no connection within {limit:?})",
                self.name
            )),
        };
        self.mark_down(&err);
        Err(err)
    }

    /// Notes a failure: one that says the database is unreachable marks it down (logged once per
    /// outage, not per attempt).
    pub fn mark_down(&self, err: &Error) {
        if err.is_retryable() && !self.down.swap(true, Ordering::Relaxed) {
            warn!(database = self.name, error = %err, "database unreachable; operations fail until it is back");
        }
    }
}

/// The queue every writer takes batches from.
pub type Queue = Arc<Mutex<mpsc::Receiver<Job>>>;

/// Starts `writers` writer tasks on `rx`; they stop when every sender is gone.
pub fn spawn<P: Pool>(pool: P, rx: mpsc::Receiver<Job>, writers: usize, max_batch: usize) {
    let queue: Queue = Arc::new(Mutex::new(rx));
    for id in 0..writers.max(1) {
        tokio::spawn(run(pool.clone(), queue.clone(), max_batch, id));
    }
}

/// One writer loop: runs until every sender is gone.
pub async fn run<P: Pool>(pool: P, queue: Queue, max_batch: usize, id: usize) {
    let max_batch = max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        // Only the writer holding the lock waits for work; it takes what is queued and lets the
        // next free writer wait while it runs the batch.
        let taken = queue.lock().await.recv_many(&mut batch, max_batch).await;
        if taken == 0 {
            break;
        }
        run_batch(&pool, std::mem::take(&mut batch)).await;
    }
    debug!(writer = id, "writer stopping: all store handles dropped");
}

async fn run_batch<P: Pool>(pool: &P, jobs: Vec<Job>) {
    let mut jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.abandoned()).collect();
    if jobs.is_empty() {
        return;
    }
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(err) => {
            debug!(error = %err, size = jobs.len(), "write batch has no connection");
            jobs.into_iter().for_each(|j| j.fail(&err));
            return;
        }
    };
    if jobs.len() == 1 {
        if let Some(job) = jobs.pop() {
            match tokio::time::timeout(BATCH_DEADLINE, run_alone(pool, &mut conn, job)).await {
                Ok(true) => {}
                Ok(false) => conn.discard(),
                Err(_) => hung(pool, conn, 1),
            }
        }
        return;
    }
    let size = jobs.len();
    let together = match tokio::time::timeout(BATCH_DEADLINE, run_together(&mut conn, jobs)).await {
        Ok(result) => result,
        Err(_) => return hung(pool, conn, size),
    };
    let retry = match together {
        Ok(retry) => retry,
        Err(err) => {
            // Usually the connection is gone (the server shut down or restarted).
            debug!(error = %err, size, "write batch failed; nothing of it was kept");
            pool.mark_down(&err);
            conn.discard();
            return;
        }
    };
    let mut retry = retry.into_iter();
    while let Some(job) = retry.next() {
        debug!("running a request alone: it failed in its batch");
        if !run_alone(pool, &mut conn, job).await {
            conn.discard();
            let err = Error::Unavailable("the connection broke before this request could run".into());
            retry.for_each(|j| j.fail(&err));
            return;
        }
    }
}

/// The longest a batch may take on its connection. A database that is stopped (not down: its
/// sockets stay open, nothing answers) would otherwise hold the writer for ever. Past it the
/// batch's callers have long had their `Unavailable` (the server's store deadline is shorter),
/// the connection is closed, and the database rolls back the open transaction when it notices,
/// so nothing of the batch is half-applied; only a COMMIT already sent may still take effect,
/// as after any connection lost mid-commit.
pub const BATCH_DEADLINE: Duration = Duration::from_secs(10);

/// A batch outlived [`BATCH_DEADLINE`]: its requests were dropped unanswered (their callers see
/// `Unavailable`); the connection is discarded, and the database marked down.
fn hung<P: Pool>(pool: &P, conn: P::Conn, size: usize) {
    let err = Error::Unavailable(format!("a write batch got no answer within {BATCH_DEADLINE:?}"));
    warn!(size, "write batch timed out; its connection is closed");
    pool.mark_down(&err);
    conn.discard();
}

/// Runs one request in a transaction of its own. `false`: the connection's state is unknown
/// (a failed BEGIN, COMMIT or ROLLBACK) and it must be discarded.
async fn run_alone<P: Pool>(pool: &P, conn: &mut P::Conn, job: Job) -> bool {
    if let Err(err) = conn.control("BEGIN").await {
        pool.mark_down(&err);
        job.answer(Err(err));
        return false;
    }
    let result = super::run(conn, &job.op).await;
    // A caller that gave up meanwhile (the database hung past its deadline) was told
    // `Unavailable`: its write must not land after all.
    let result = if job.abandoned() { Err(gone()) } else { result };
    let end = if result.is_ok() { conn.control("COMMIT").await } else { conn.control("ROLLBACK").await };
    match (result, end) {
        (Ok(output), Ok(())) => {
            job.answer(Ok(output));
            true
        }
        (Ok(_), Err(err)) => {
            pool.mark_down(&err);
            job.answer(Err(err));
            false
        }
        (Err(err), end) => {
            let healthy = end.is_ok();
            if !healthy {
                pool.mark_down(&err);
            }
            job.answer(Err(err));
            healthy
        }
    }
}

/// Runs several requests in one transaction; answers them after the commit. Returns the
/// requests to run again alone. `Err` means the batch's transaction broke: every request not
/// yet answered has then been answered with that error.
///
/// No savepoint per request (two more round trips each, about half the statements of a saga's
/// writes): the batch is optimistic. When a request fails (a duplicate gid, a lost fence, a
/// refused precondition, contention) or its caller gave up, the whole transaction is rolled
/// back and that request is set aside to run alone (where it gets its own answer). The
/// requests before it, which just ran fine, are tried again together, and so, separately, are
/// the ones after it: every request runs at most about twice however many of a batch fail
/// (retrying all the others together after each failure made a batch with many failing
/// requests quadratic: a batch of 40 requests, half of them refused, held its writer for
/// seconds).
async fn run_together<C: Conn>(conn: &mut C, jobs: Vec<Job>) -> Result<Vec<Job>> {
    let mut alone = Vec::new();
    let mut pending = vec![jobs];
    let mut multi_row = C::MULTI_ROW;
    while let Some(jobs) = pending.pop() {
        let jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.abandoned()).collect();
        if jobs.is_empty() {
            continue;
        }
        match attempt(conn, jobs, multi_row).await {
            Ok(Attempt::Committed) => {}
            Ok(Attempt::RolledBack { failed, mut jobs }) => {
                let after = jobs.split_off(failed + 1);
                if let Some(failed) = jobs.pop()
                    && !failed.abandoned()
                {
                    alone.push(failed);
                }
                pending.push(after);
                pending.push(jobs);
            }
            Ok(Attempt::RowsRefused { jobs }) => {
                // Which request refused is not known from a multi-row statement: the requests
                // go one by one now, which isolates it.
                debug!(size = jobs.len(), "multi-row write refused; running the batch request by request");
                multi_row = false;
                pending.push(jobs);
            }
            Err((err, unanswered)) => {
                let rest = pending.into_iter().flatten();
                unanswered.into_iter().chain(rest).chain(alone).for_each(|j| j.fail(&err));
                return Err(err);
            }
        }
    }
    Ok(alone)
}

/// How one try of a batch ended.
enum Attempt {
    /// Committed; every request answered.
    Committed,
    /// `jobs[failed]` did not succeed, so nothing of the batch was kept: the others (those
    /// before it ran fine, those after it did not run) are to be tried again.
    RolledBack { failed: usize, jobs: Vec<Job> },
    /// The multi-row write of the batch's creates and saves ([`Conn::write_rows`]) refused one
    /// of them; nothing was kept.
    RowsRefused { jobs: Vec<Job> },
}

/// Whether a request is written by [`Conn::write_rows`] when the backend has it.
fn is_row_write(op: &WriteOp) -> bool {
    matches!(op, WriteOp::Create(_) | WriteOp::Save(_))
}

/// One try of a batch in one transaction: with `multi_row`, its creates and saves first, all
/// at once ([`Conn::write_rows`]), then the other requests one by one. (Requests of one batch
/// are of different transactions, or concurrent and unanswered: any order is one they could
/// have run in.) `Err`: the transaction broke, with the requests not answered.
async fn attempt<C: Conn>(
    conn: &mut C,
    jobs: Vec<Job>,
    multi_row: bool,
) -> Result<Attempt, (Error, Vec<Job>)> {
    let multi_row = multi_row && jobs.iter().filter(|j| is_row_write(&j.op)).nth(1).is_some();
    if let Err(err) = conn.control(if multi_row { C::MULTI_ROW_BEGIN } else { "BEGIN" }).await {
        return Err((err, jobs));
    }
    if multi_row {
        let creates: Vec<&NewTransaction> = jobs
            .iter()
            .filter_map(|j| match &j.op {
                WriteOp::Create(tx) => Some(&**tx),
                _ => None,
            })
            .collect();
        let saves: Vec<&Save> = jobs
            .iter()
            .filter_map(|j| match &j.op {
                WriteOp::Save(s) => Some(s),
                _ => None,
            })
            .collect();
        if !matches!(conn.write_rows(&creates, &saves).await, Ok(true)) {
            if let Err(err) = conn.control("ROLLBACK").await {
                return Err((err, jobs));
            }
            return Ok(Attempt::RowsRefused { jobs });
        }
    }
    let mut outputs = Vec::with_capacity(jobs.len());
    for (i, job) in jobs.iter().enumerate() {
        // The creates and saves are written already when `multi_row`.
        let ran = if multi_row && is_row_write(&job.op) {
            Ok(Output::Done)
        } else {
            super::run(conn, &job.op).await
        };
        // As in `run_alone`: the write of a caller that gave up meanwhile must not land.
        match ran {
            Ok(output) if !job.abandoned() => outputs.push(output),
            _ => {
                if let Err(err) = conn.control("ROLLBACK").await {
                    return Err((err, jobs));
                }
                return Ok(Attempt::RolledBack { failed: i, jobs });
            }
        }
    }
    if let Err(err) = conn.control("COMMIT").await {
        rollback(conn).await;
        return Err((err, jobs));
    }
    debug!(size = jobs.len(), "write batch committed");
    for (job, output) in jobs.into_iter().zip(outputs) {
        job.answer(Ok(output));
    }
    Ok(Attempt::Committed)
}

/// The answer (nobody reads it) for a request whose caller stopped waiting while it ran.
fn gone() -> Error {
    Error::Unavailable("the caller stopped waiting; the write was rolled back".into())
}

/// Best-effort ROLLBACK after a failure (usually the connection is already gone).
async fn rollback<C: Conn>(conn: &mut C) {
    if let Err(e) = conn.control("ROLLBACK").await {
        debug!(error = %e, "rollback after a failed batch");
    }
}
