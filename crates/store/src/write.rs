//! The write requests every backend queues to its group-commit writer, the answers they get,
//! and the handle the `Store` methods send them through. One copy for all backends: a backend
//! owns only the loop that commits them (module `sql::group` for the async drivers, its own
//! for SQLite's dedicated thread).

use std::time::Duration;

use dtx_core::{Branch, GlobalStatus, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::{ClaimedThen, Created, Error, Expect, Loaded, NewTransaction, Result, Save, ThenSave};

/// One write operation. Kept apart from its reply so that it can be run again.
#[derive(Debug)]
pub enum WriteOp {
    /// [`crate::Store::create`]. Boxed: a transaction is much larger than the other requests.
    Create(Box<NewTransaction>),
    /// [`crate::Store::claim_due`].
    ClaimDue { owner: String, now: Timestamp, lease_until: Timestamp, limit: u32 },
    /// [`crate::Store::claim`].
    Claim { gid: String, owner: String, now: Timestamp, lease_until: Timestamp },
    /// [`crate::Store::claim_then`], in one write.
    ClaimThen { gid: String, owner: String, now: Timestamp, lease_until: Timestamp, then: ThenSave },
    /// [`crate::Store::save`].
    Save(Save),
    /// [`crate::Store::add_branches`].
    AddBranches { gid: String, expect: Expect, branches: Vec<Branch>, now: Timestamp },
    /// [`crate::Store::force_stop`].
    ForceStop { gid: String, reason: String, now: Timestamp },
    /// [`crate::Store::reset_next_cron_time`].
    ResetNextCronTime { gid: String, base: Duration, now: Timestamp },
    /// [`crate::Store::reset_cron_time`].
    ResetCronTime { later_than: Timestamp, limit: u32, now: Timestamp },
    /// [`crate::Store::resume_held`].
    ResumeHeld { host: String, limit: u32, now: Timestamp },
    /// [`crate::Store::kv_insert`].
    KvInsert { cat: String, k: String, v: String, now: Timestamp },
    /// [`crate::Store::kv_update`].
    KvUpdate { cat: String, k: String, v: String, version: i64, now: Timestamp },
    /// [`crate::Store::kv_delete`].
    KvDelete { cat: String, k: String },
    /// [`crate::Store::purge_finished`].
    PurgeFinished { before: Timestamp, limit: u32 },
}

/// What a write produced; each store method expects one kind ([`FromOutput`]).
#[derive(Debug)]
pub enum Output {
    /// Nothing to return.
    Done,
    /// A create: its branch rows' ids in the order given, or none where the connection does
    /// not know them ([`crate::sql::Conn::inserted_ids`]).
    Created(Vec<i64>),
    /// A create's answer to its caller: the transaction back, with the ids of `Created` (none
    /// after a batch's multi-row statement). Made by [`Job::answer`].
    Returned(Box<NewTransaction>, Vec<i64>),
    /// Rows claimed by [`WriteOp::ClaimDue`].
    Claimed(Vec<Loaded>),
    /// The row claimed by [`WriteOp::Claim`] (boxed: much larger than the other outputs).
    ClaimedOne(Option<Box<Loaded>>),
    /// The row claimed by [`WriteOp::ClaimThen`], and whether its save was written.
    ClaimedThen(Option<Box<ClaimedThen>>),
    /// The status a force-stopped transaction had.
    Stopped(GlobalStatus),
    /// Rows changed.
    Count(u64),
}

/// Turns a write's [`Output`] into what the store method returns.
pub trait FromOutput: Sized {
    /// `None` when the output is of another kind (a bug).
    fn from_output(output: Output) -> Option<Self>;
}

impl FromOutput for () {
    fn from_output(output: Output) -> Option<()> {
        matches!(output, Output::Done | Output::Created(_) | Output::Returned(..)).then_some(())
    }
}

/// A create's transaction and branch row ids ([`Output::Returned`]).
impl FromOutput for Created {
    fn from_output(output: Output) -> Option<Created> {
        match output {
            Output::Returned(tx, ids) => Some(Created { tx: *tx, ids }),
            _ => None,
        }
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

impl FromOutput for Option<ClaimedThen> {
    fn from_output(output: Output) -> Option<Option<ClaimedThen>> {
        match output {
            Output::ClaimedThen(v) => Some(v.map(|b| *b)),
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
#[derive(Debug)]
pub struct Job {
    /// The write.
    pub op: WriteOp,
    reply: oneshot::Sender<Result<Output>>,
}

impl Job {
    /// Answers the caller. A caller that stopped waiting is not an error: its write stands.
    pub fn answer(self, result: Result<Output>) {
        let Job { op, reply } = self;
        // A create's transaction goes back to its caller, who processes it next: moved, not
        // copied before the write. `Done`: a batch's multi-row statement wrote it, ids unknown.
        let result = match (op, result) {
            (WriteOp::Create(tx), Ok(Output::Created(ids))) => Ok(Output::Returned(tx, ids)),
            (WriteOp::Create(tx), Ok(Output::Done)) => Ok(Output::Returned(tx, Vec::new())),
            (_, result) => result,
        };
        drop(reply.send(result));
    }

    /// Answers the caller with a copy of a failure shared by its whole batch.
    pub fn fail(self, err: &Error) {
        self.answer(Err(err.replicate()));
    }

    /// A request whose caller has given up before it ran (its deadline passed, or it was
    /// cancelled): it is not run. A caller that got `Unavailable` must not find its write applied
    /// later (a refused submit stored after all), and a claim would lease rows to nobody.
    /// Saves are no exception: a round that gave up on its write has stopped calling anyone.
    pub fn abandoned(&self) -> bool {
        self.reply.is_closed()
    }
}

/// The sending end of a backend's write queue: every write method of a `Store` is one call.
#[derive(Debug, Clone)]
pub struct Writes {
    tx: mpsc::Sender<Job>,
    /// Says which writer stopped, in the error.
    name: &'static str,
}

impl Writes {
    /// A queue holding up to `capacity` jobs (beyond that, callers wait: backpressure) and its
    /// receiving end, for the backend's writer(s). `name` names the backend in errors.
    pub fn channel(capacity: usize, name: &'static str) -> (Writes, mpsc::Receiver<Job>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (Writes { tx, name }, rx)
    }

    /// Queues a write and waits for its post-commit answer.
    pub async fn run<T: FromOutput>(&self, op: WriteOp) -> Result<T> {
        // The answer is dropped when the writer stopped, or when the request's batch outlived the
        // batch deadline (`sql::group::BATCH_DEADLINE`) and was abandoned.
        let stopped = || {
            Error::Unavailable(format!(
                "the {} writer gave no answer (it stopped, or its batch timed out)",
                self.name
            ))
        };
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job { op, reply }).await.map_err(|_| stopped())?;
        let output = answer.await.map_err(|_| stopped())??;
        T::from_output(output).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("the {} writer answered with the wrong kind", self.name))
        })
    }

    /// [`crate::Store::create`].
    pub async fn create(&self, tx: NewTransaction) -> Result<()> {
        self.run(WriteOp::Create(Box::new(tx))).await
    }

    /// [`crate::Store::create_returning_ids`].
    pub async fn create_returning_ids(&self, tx: NewTransaction) -> Result<Created> {
        self.run(WriteOp::Create(Box::new(tx))).await
    }

    /// [`crate::Store::claim_due`].
    pub async fn claim_due(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        limit: u32,
    ) -> Result<Vec<Loaded>> {
        self.run(WriteOp::ClaimDue { owner: owner.to_owned(), now, lease_until, limit }).await
    }

    /// [`crate::Store::claim`].
    pub async fn claim(
        &self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Loaded>> {
        self.run(WriteOp::Claim { gid: gid.to_owned(), owner: owner.to_owned(), now, lease_until }).await
    }

    /// [`crate::Store::claim_then`], as one write.
    pub async fn claim_then(
        &self,
        gid: &str,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
        then: ThenSave,
    ) -> Result<Option<ClaimedThen>> {
        let op = WriteOp::ClaimThen { gid: gid.to_owned(), owner: owner.to_owned(), now, lease_until, then };
        self.run(op).await
    }

    /// [`crate::Store::save`].
    pub async fn save(&self, save: Save) -> Result<()> {
        self.run(WriteOp::Save(save)).await
    }

    /// [`crate::Store::add_branches`].
    pub async fn add_branches(
        &self,
        gid: &str,
        expect: Expect,
        branches: Vec<Branch>,
        now: Timestamp,
    ) -> Result<()> {
        self.run(WriteOp::AddBranches { gid: gid.to_owned(), expect, branches, now }).await
    }

    /// [`crate::Store::force_stop`].
    pub async fn force_stop(&self, gid: &str, reason: &str, now: Timestamp) -> Result<GlobalStatus> {
        self.run(WriteOp::ForceStop { gid: gid.to_owned(), reason: reason.to_owned(), now }).await
    }

    /// [`crate::Store::reset_next_cron_time`].
    pub async fn reset_next_cron_time(&self, gid: &str, base: Duration, now: Timestamp) -> Result<()> {
        self.run(WriteOp::ResetNextCronTime { gid: gid.to_owned(), base, now }).await
    }

    /// [`crate::Store::reset_cron_time`].
    pub async fn reset_cron_time(&self, later_than: Timestamp, limit: u32, now: Timestamp) -> Result<u64> {
        self.run(WriteOp::ResetCronTime { later_than, limit, now }).await
    }

    /// [`crate::Store::resume_held`].
    pub async fn resume_held(&self, host: &str, limit: u32, now: Timestamp) -> Result<u64> {
        self.run(WriteOp::ResumeHeld { host: host.to_owned(), limit, now }).await
    }

    /// [`crate::Store::purge_finished`].
    pub async fn purge_finished(&self, before: Timestamp, limit: u32) -> Result<u64> {
        self.run(WriteOp::PurgeFinished { before, limit }).await
    }

    /// [`crate::Store::kv_insert`].
    pub async fn kv_insert(&self, cat: &str, k: &str, v: &str, now: Timestamp) -> Result<()> {
        self.run(WriteOp::KvInsert { cat: cat.to_owned(), k: k.to_owned(), v: v.to_owned(), now }).await
    }

    /// [`crate::Store::kv_update`].
    pub async fn kv_update(&self, cat: &str, k: &str, v: &str, version: i64, now: Timestamp) -> Result<()> {
        let op = WriteOp::KvUpdate { cat: cat.to_owned(), k: k.to_owned(), v: v.to_owned(), version, now };
        self.run(op).await
    }

    /// [`crate::Store::kv_delete`].
    pub async fn kv_delete(&self, cat: &str, k: &str) -> Result<()> {
        self.run(WriteOp::KvDelete { cat: cat.to_owned(), k: k.to_owned() }).await
    }
}
