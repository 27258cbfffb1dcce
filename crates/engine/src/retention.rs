//! Retention: finished transactions older than the retention period are deleted, in small
//! batches with a pause between them, so a purge never holds the store for long (live writes
//! interleave with it). Every node runs it; the store makes concurrent purges safe (disjoint
//! rows on PostgreSQL, the one writer on SQLite).

use std::time::Duration;

use dtx_store::StatusCounts;
use tracing::{debug, info, warn};

use crate::{Engine, Result};

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
    /// Rows per status and the due backlog, now.
    pub async fn status_counts(&self) -> Result<StatusCounts> {
        Ok(self.inner.store.status_counts(self.now()).await?)
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
