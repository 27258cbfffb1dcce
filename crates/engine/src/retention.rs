//! Retention: finished transactions older than the retention period are deleted, in small
//! batches with a pause between them, so a purge never holds the store for long (live writes
//! interleave with it). Every node runs it; the store makes concurrent purges safe (disjoint
//! rows on PostgreSQL, the one writer on SQLite).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dtx_core::{GlobalStatus, Timestamp};
use dtx_store::StatusCounts;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::{Engine, Result};

/// How old the finished counts of [`Engine::status_counts`] may be before a call recounts
/// them. Counting finished rows reads all of them (~0.15 s per million on SQLite), too much for
/// every metrics scrape; the unfinished ones are counted every time.
pub const FINISHED_COUNTS_MAX_AGE: Duration = Duration::from_secs(60);

/// How long a call waits for a recount before it answers with the previous count. Waiting
/// (rather than answering at once and recounting behind) keeps the recount out of whatever the
/// caller does next; it takes ~0.15 s per million rows on SQLite.
const RECOUNT_WAIT: Duration = Duration::from_secs(1);

/// Finished transactions per status, as counted at a time (engine clock).
type Counted = (Timestamp, Vec<(GlobalStatus, u64)>);

/// The last count of finished transactions per status, and whether a recount is running.
#[derive(Debug, Default)]
pub(crate) struct FinishedCounts {
    /// When (engine clock) and what was counted.
    last: Mutex<Option<Counted>>,
    recounting: AtomicBool,
    /// Woken when a count ends (done or failed).
    ended: Notify,
}

impl FinishedCounts {
    fn last(&self) -> Option<Counted> {
        self.last.lock().ok().and_then(|last| last.clone())
    }

    fn set(&self, at: Timestamp, counts: Vec<(GlobalStatus, u64)>) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some((at, counts));
        }
    }

    /// Rows were deleted: the next read starts a recount (and still gets the old counts).
    fn outdate(&self) {
        if let Ok(mut last) = self.last.lock()
            && let Some((at, _)) = last.as_mut()
        {
            *at = Timestamp::ZERO;
        }
    }
}

/// How retention runs (see [`Engine::run_retention`]).
#[derive(Debug, Clone, Copy)]
pub struct RetentionOptions {
    /// Finished transactions last written longer ago than this are deleted. Zero keeps all.
    pub keep: Duration,
    /// Transactions deleted per store call (one short transaction each).
    pub batch: u32,
    /// Pause between two batches of one pass, leaving the store to live traffic.
    pub pause: Duration,
    /// Time between passes.
    pub every: Duration,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        RetentionOptions {
            keep: Duration::from_secs(7 * 24 * 3600),
            batch: 200,
            pause: Duration::from_millis(20),
            every: Duration::from_secs(60),
        }
    }
}

impl Engine {
    /// Rows per status and the due backlog. The unfinished statuses and the backlog are
    /// counted now; the finished ones (`succeed`, `failed`) come from the last count, which is
    /// at most [`FINISHED_COUNTS_MAX_AGE`] old: past that (or after a purge) the call recounts
    /// and waits for it, up to a second if an older count can answer meanwhile.
    pub async fn status_counts(&self) -> Result<StatusCounts> {
        let now = self.now();
        let unfinished = self.inner.store.unfinished_counts(now).await?;
        let kept = &self.inner.finished;
        let finished = match kept.last() {
            Some((at, counts)) if now.since(at) < FINISHED_COUNTS_MAX_AGE => counts,
            stale => {
                // The count runs as its own task: a caller that gives up (the scrape's deadline)
                // does not cancel it, so a slow count still lands for the next caller. With an
                // older count to fall back on, the wait is short; the first count is awaited.
                let ended = kept.ended.notified();
                self.recount_finished(now);
                if stale.is_some() {
                    let _ = tokio::time::timeout(RECOUNT_WAIT, ended).await;
                } else {
                    ended.await;
                }
                match kept.last() {
                    Some((_, counts)) => counts,
                    None => {
                        return Err(crate::Error::Unavailable(
                            "counting the finished transactions failed (the log says why)".into(),
                        ));
                    }
                }
            }
        };
        Ok(unfinished.with_finished(finished))
    }

    /// Starts a count of the finished transactions (every row) in the background, unless one
    /// is running; its result is kept, and `ended` is notified either way.
    fn recount_finished(&self, now: Timestamp) {
        if self.inner.finished.recounting.swap(true, Ordering::AcqRel) {
            return;
        }
        let engine = self.clone();
        tokio::spawn(async move {
            let kept = &engine.inner.finished;
            match engine.inner.store.finished_counts(now).await {
                Ok(finished) => kept.set(now, finished),
                Err(e) => warn!(error = %e, "counting the finished transactions failed"),
            }
            kept.recounting.store(false, Ordering::Release);
            kept.ended.notify_waiters();
        });
    }

    /// One retention pass: deletes every finished transaction last written more than
    /// `older_than` ago, `batch` at a time with `pause` in between. Returns how many.
    pub async fn purge(&self, older_than: Duration, batch: u32, pause: Duration) -> Result<u64> {
        let before = self.now().sub(older_than);
        let batch = batch.max(1);
        let mut total = 0;
        loop {
            let n = self.inner.store.purge_finished(before, batch).await?;
            total += n;
            if n > 0 {
                self.inner.finished.outdate();
            }
            self.inner.observer.purged(n);
            if n < u64::from(batch) || self.inner.shutdown.is_cancelled() {
                return Ok(total);
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// Runs retention passes until shutdown (nothing when `keep` is zero).
    pub async fn run_retention(&self, opts: RetentionOptions) {
        if opts.keep.is_zero() {
            return;
        }
        loop {
            match self.purge(opts.keep, opts.batch, opts.pause).await {
                Ok(0) => debug!("retention: nothing to delete"),
                Ok(n) => info!(deleted = n, "retention: finished transactions deleted"),
                Err(e) => warn!(error = %e, "retention pass failed; retrying at the next one"),
            }
            tokio::select! {
                _ = self.inner.shutdown.cancelled() => return,
                _ = tokio::time::sleep(opts.every) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use dtx_store::Store;
    use dtx_store::memory::MemoryStore;
    use dtx_store::testsuite::{T0, saga_with};

    use super::*;
    use crate::{EngineOptions, ManualClock};

    fn by_status(counts: &StatusCounts) -> Vec<(&'static str, u64)> {
        counts.by_status.iter().map(|(s, n)| (s.as_str(), *n)).collect()
    }

    async fn put(store: &MemoryStore, gid: &str, status: GlobalStatus) {
        store.create(saga_with(gid, status, Timestamp(0), None)).await.expect("create");
    }

    /// Finished rows are recounted at most once per max age and after a purge; unfinished ones
    /// and the backlog on every call.
    #[tokio::test]
    async fn finished_counts_are_kept_a_while_and_unfinished_ones_are_always_fresh() {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(T0.add(std::time::Duration::from_secs(3600))));
        let engine = Engine::new(store.clone(), EngineOptions::default(), clock.clone()).expect("engine");
        put(&store, "ok-1", GlobalStatus::Succeed).await;
        put(&store, "open-1", GlobalStatus::Submitted).await;
        let first = engine.status_counts().await.expect("counts");
        assert_eq!(by_status(&first), [("submitted", 1), ("succeed", 1)]);
        assert_eq!(first.due, 1);

        put(&store, "ok-2", GlobalStatus::Succeed).await;
        put(&store, "ko-1", GlobalStatus::Failed).await;
        put(&store, "open-2", GlobalStatus::Aborting).await;
        let kept = engine.status_counts().await.expect("counts");
        assert_eq!(by_status(&kept), [("aborting", 1), ("submitted", 1), ("succeed", 1)]);
        assert_eq!(kept.due, 2);

        // Past the max age: this call recounts.
        clock.advance(FINISHED_COUNTS_MAX_AGE);
        let recounted = engine.status_counts().await.expect("counts");
        assert_eq!(by_status(&recounted), [("aborting", 1), ("failed", 1), ("submitted", 1), ("succeed", 2)]);

        // A purge outdates the count at once.
        let deleted = engine.purge(Duration::ZERO, 10, Duration::ZERO).await.expect("purge");
        assert_eq!(deleted, 3);
        let purged = engine.status_counts().await.expect("counts");
        assert_eq!(by_status(&purged), [("aborting", 1), ("submitted", 1)]);
    }
}
