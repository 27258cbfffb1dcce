//! Group commit on PostgreSQL: a few writer tasks share one queue of write requests. A writer
//! that is free takes every request queued at that moment (up to `max_batch`), runs them in one
//! database transaction on one pooled connection, and answers each caller only after the
//! COMMIT, so an `Ok` always means "durable". Under light load a request is taken at once and
//! committed alone; under load the queue fills while the writers are busy and batches grow, so
//! many sagas share one commit (one WAL flush).
//!
//! Unlike SQLite, PostgreSQL lets several transactions write at once, so there are several
//! writers: a batch waiting on the network or on a row lock does not stop the others.
//!
//! In a batch of several, each request runs under its own SAVEPOINT: a logical failure
//! (duplicate gid, lost fence, refused precondition, stale kv version) rolls back that request
//! alone and the rest of the batch still commits. A request that failed on contention (a
//! deadlock with another batch, whose locks it shared by the accident of batching) is rolled
//! back to its savepoint and run again alone after the batch. If the transaction itself breaks
//! (the connection is gone), every request of the batch gets the error and nothing of it is
//! kept; the connection is discarded.

use std::sync::Arc;
use std::time::Duration;

use dtx_core::{Branch, GlobalStatus, Timestamp};
use dtx_store::{Error, Loaded, NewTransaction, Result, Save};
use sqlx::pool::PoolConnection;
use sqlx::{PgConnection, Postgres};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::debug;

use crate::error::map_sqlx;
use crate::write;
use crate::{ClockSource, Db};

/// One write operation. Kept apart from its reply so that it can be run again.
pub(crate) enum Op {
    // Boxed: a transaction is much larger than the other requests (clippy large_enum_variant).
    Create(Box<NewTransaction>),
    ClaimDue { owner: String, now: Timestamp, lease_until: Timestamp, limit: u32 },
    Claim { gid: String, owner: String, now: Timestamp, lease_until: Timestamp },
    Save(Box<Save>),
    AddBranches { gid: String, branches: Vec<Branch>, now: Timestamp },
    ForceStop { gid: String, reason: String, now: Timestamp },
    ResetNextCronTime { gid: String, base: Duration, now: Timestamp },
    ResetCronTime { later_than: Timestamp, limit: u32, now: Timestamp },
    KvInsert { cat: String, k: String, v: String, now: Timestamp },
    KvUpdate { cat: String, k: String, v: String, version: i64, now: Timestamp },
    KvDelete { cat: String, k: String },
}

/// What a write produced; each store method expects one kind ([`FromOutput`]).
#[derive(Debug)]
pub(crate) enum Output {
    Done,
    Claimed(Vec<Loaded>),
    // Boxed: a loaded transaction is much larger than the other outputs.
    ClaimedOne(Option<Box<Loaded>>),
    Stopped(GlobalStatus),
    Count(u64),
}

/// Turns a write's [`Output`] into what the store method returns.
pub(crate) trait FromOutput: Sized {
    fn from_output(output: Output) -> Option<Self>;
}

impl FromOutput for () {
    fn from_output(output: Output) -> Option<()> {
        matches!(output, Output::Done).then_some(())
    }
}

impl FromOutput for Vec<Loaded> {
    fn from_output(output: Output) -> Option<Vec<Loaded>> {
        match output {
            Output::Claimed(v) => Some(v),
            _ => None,
        }
    }
}

impl FromOutput for Option<Loaded> {
    fn from_output(output: Output) -> Option<Option<Loaded>> {
        match output {
            Output::ClaimedOne(v) => Some(v.map(|b| *b)),
            _ => None,
        }
    }
}

impl FromOutput for GlobalStatus {
    fn from_output(output: Output) -> Option<GlobalStatus> {
        match output {
            Output::Stopped(s) => Some(s),
            _ => None,
        }
    }
}

impl FromOutput for u64 {
    fn from_output(output: Output) -> Option<u64> {
        match output {
            Output::Count(n) => Some(n),
            _ => None,
        }
    }
}

/// A queued write and the channel its caller awaits.
pub(crate) struct Job {
    pub(crate) op: Op,
    pub(crate) reply: oneshot::Sender<Result<Output>>,
}

impl Job {
    /// Answers the caller. A caller that stopped waiting is not an error: its write stands.
    fn answer(self, result: Result<Output>) {
        drop(self.reply.send(result));
    }

    /// A claim whose caller has given up: running it would lease rows to nobody until expiry.
    fn abandoned_claim(&self) -> bool {
        matches!(self.op, Op::ClaimDue { .. } | Op::Claim { .. }) && self.reply.is_closed()
    }
}

impl Op {
    async fn run(&self, conn: &mut PgConnection, clock: ClockSource) -> Result<Output> {
        Ok(match self {
            Op::Create(tx) => write::create(conn, clock, tx).await.map(|()| Output::Done)?,
            Op::ClaimDue { owner, now, lease_until, limit } => {
                Output::Claimed(write::claim_due(conn, clock, owner, *now, *lease_until, *limit).await?)
            }
            Op::Claim { gid, owner, now, lease_until } => Output::ClaimedOne(
                write::claim(conn, clock, gid, owner, *now, *lease_until).await?.map(Box::new),
            ),
            Op::Save(save) => write::save(conn, clock, save).await.map(|()| Output::Done)?,
            Op::AddBranches { gid, branches, now } => {
                write::add_branches(conn, clock, gid, branches, *now).await.map(|()| Output::Done)?
            }
            Op::ForceStop { gid, reason, now } => {
                Output::Stopped(write::force_stop(conn, gid, reason, *now).await?)
            }
            Op::ResetNextCronTime { gid, base, now } => {
                write::reset_next_cron_time(conn, clock, gid, *base, *now).await.map(|()| Output::Done)?
            }
            Op::ResetCronTime { later_than, limit, now } => {
                Output::Count(write::reset_cron_time(conn, clock, *later_than, *limit, *now).await?)
            }
            Op::KvInsert { cat, k, v, now } => {
                write::kv_insert(conn, cat, k, v, *now).await.map(|()| Output::Done)?
            }
            Op::KvUpdate { cat, k, v, version, now } => {
                write::kv_update(conn, cat, k, v, *version, *now).await.map(|()| Output::Done)?
            }
            Op::KvDelete { cat, k } => write::kv_delete(conn, cat, k).await.map(|()| Output::Done)?,
        })
    }
}

/// The queue every writer takes batches from.
pub(crate) type Queue = Arc<Mutex<mpsc::Receiver<Job>>>;

/// One writer loop: runs until every sender is gone.
pub(crate) async fn run(db: Db, queue: Queue, clock: ClockSource, max_batch: usize, id: usize) {
    let max_batch = max_batch.max(1);
    let mut batch = Vec::with_capacity(max_batch);
    loop {
        // Only the writer holding the lock waits for work; it takes what is queued and lets the
        // next free writer wait while it runs the batch.
        let taken = queue.lock().await.recv_many(&mut batch, max_batch).await;
        if taken == 0 {
            break;
        }
        run_batch(&db, clock, std::mem::take(&mut batch)).await;
    }
    debug!(writer = id, "postgres writer stopping: all store handles dropped");
}

async fn run_batch(db: &Db, clock: ClockSource, jobs: Vec<Job>) {
    let mut jobs: Vec<Job> = jobs.into_iter().filter(|j| !j.abandoned_claim()).collect();
    if jobs.is_empty() {
        return;
    }
    let mut conn = match db.acquire().await {
        Ok(conn) => conn,
        Err(err) => {
            debug!(error = %err, size = jobs.len(), "postgres write batch has no connection");
            jobs.into_iter().for_each(|j| j.answer(Err(err.replicate())));
            return;
        }
    };
    if jobs.len() == 1 {
        if let Some(job) = jobs.pop() {
            run_alone(db, &mut conn, clock, job).await;
        }
        return;
    }
    let size = jobs.len();
    let retry = match run_together(&mut conn, clock, jobs).await {
        Ok(retry) => retry,
        Err(err) => {
            // Usually the connection is gone (the server shut down or restarted).
            debug!(error = %err, size, "postgres write batch failed; nothing of it was kept");
            db.mark_down(&err);
            conn.close_on_drop();
            return;
        }
    };
    for job in retry {
        debug!("running a request again alone after contention in its batch");
        run_alone(db, &mut conn, clock, job).await;
    }
}

/// Runs one request in a transaction of its own.
async fn run_alone(db: &Db, conn: &mut PoolConnection<Postgres>, clock: ClockSource, job: Job) {
    if let Err(e) = exec(conn, "BEGIN").await {
        let err = map_sqlx("begin", e);
        db.mark_down(&err);
        conn.close_on_drop();
        job.answer(Err(err));
        return;
    }
    let result = job.op.run(conn, clock).await;
    let end = if result.is_ok() { exec(conn, "COMMIT").await } else { exec(conn, "ROLLBACK").await };
    match (result, end) {
        (Ok(output), Ok(())) => job.answer(Ok(output)),
        (Ok(_), Err(e)) => {
            let err = map_sqlx("commit", e);
            db.mark_down(&err);
            conn.close_on_drop();
            job.answer(Err(err));
        }
        (Err(err), end) => {
            if end.is_err() {
                db.mark_down(&err);
                conn.close_on_drop();
            }
            job.answer(Err(err));
        }
    }
}

/// Runs several requests in one transaction, a savepoint each; answers them after the commit.
/// Returns the requests to run again alone. `Err` means the batch's transaction broke: every
/// request has then been answered with that error.
async fn run_together(conn: &mut PgConnection, clock: ClockSource, jobs: Vec<Job>) -> Result<Vec<Job>> {
    let mut done: Vec<(Job, Result<Output>)> = Vec::with_capacity(jobs.len());
    let mut retry = Vec::new();
    let fail_all = |err: &Error, done: Vec<(Job, Result<Output>)>, rest: Vec<Job>| {
        done.into_iter().map(|(j, _)| j).chain(rest).for_each(|j| j.answer(Err(err.replicate())));
    };

    if let Err(e) = exec(conn, "BEGIN").await {
        let err = map_sqlx("begin batch", e);
        fail_all(&err, done, jobs);
        return Err(err);
    }
    let mut pending = jobs.into_iter();
    while let Some(job) = pending.next() {
        if let Err(e) = exec(conn, "SAVEPOINT request").await {
            let err = map_sqlx("savepoint", e);
            rollback(conn).await;
            fail_all(&err, done, std::iter::once(job).chain(pending).collect());
            return Err(err);
        }
        let result = job.op.run(conn, clock).await;
        let end = if result.is_ok() {
            exec(conn, "RELEASE request").await
        } else {
            match exec(conn, "ROLLBACK TO request").await {
                Ok(()) => exec(conn, "RELEASE request").await,
                Err(e) => Err(e),
            }
        };
        if let Err(e) = end {
            let err = map_sqlx("end savepoint", e);
            rollback(conn).await;
            fail_all(&err, done, std::iter::once(job).chain(pending).collect());
            return Err(err);
        }
        match result {
            // The transaction survived the failure (its savepoint rolled back fine), so this was
            // contention, not a lost connection: worth one more try on its own.
            Err(Error::Unavailable(_)) => retry.push(job),
            result => done.push((job, result)),
        }
    }
    if let Err(e) = exec(conn, "COMMIT").await {
        let err = map_sqlx("commit batch", e);
        rollback(conn).await;
        fail_all(&err, done, retry);
        return Err(err);
    }
    debug!(size = done.len(), "postgres write batch committed");
    done.into_iter().for_each(|(job, result)| job.answer(result));
    Ok(retry)
}

/// Best-effort ROLLBACK after a failure (usually the connection is already gone).
async fn rollback(conn: &mut PgConnection) {
    if let Err(e) = exec(conn, "ROLLBACK").await {
        debug!(error = %e, "rollback after a failed batch");
    }
}

/// Transaction control, as simple queries: nothing to prepare, one round trip each.
async fn exec(conn: &mut PgConnection, sql: &'static str) -> Result<(), sqlx::Error> {
    sqlx::raw_sql(sql).execute(conn).await.map(|_| ())
}
