//! The scheduler every node runs: claim due transactions, process them, repeat.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::Semaphore;
use tracing::{error, info};

use crate::round::RoundMode;
use crate::round::exec::no_premarks;
use crate::{Engine, EngineEvent, Inner, Result, round};

impl Engine {
    /// Claims the transactions due now (up to one batch) and processes them, returning when
    /// every claimed round has ended. Returns how many were claimed. Tests step time with it.
    pub async fn run_once(&self) -> Result<usize> {
        let inner = &self.inner;
        let owner = inner.fresh_owner();
        let now = inner.clock.now();
        let claimed =
            inner.store.claim_due(&owner, now, now.add(inner.opts.lease), inner.opts.claim_batch).await?;
        let n = claimed.len();
        observe_claim(inner, &claimed);
        let rounds = claimed.into_iter().map(|loaded| {
            let mode = mode_of(&loaded);
            round::run(inner, loaded, owner.clone(), no_premarks(), mode)
        });
        futures::future::join_all(rounds).await;
        Ok(n)
    }

    /// The scheduler loop: until shutdown, claim due work while there is room (bounded
    /// concurrency) and process each claimed transaction in its own task.
    pub async fn run(&self) {
        if !self.inner.opts.scheduler_enabled {
            self.inner.shutdown.cancelled().await;
            return;
        }
        // The round cap is shared with the rounds requests start (submit, abort).
        let slots = self.inner.rounds.clone();
        let poll = self.inner.opts.poll_interval;
        // The pause after a failed claim: doubles while the store stays down, so a node does
        // not hammer a database that is restarting (nor fill its log), and starts over once it
        // is back.
        let outage = ExponentialBuilder::new()
            .with_min_delay(poll)
            .with_factor(2.0)
            .with_max_delay(MAX_OUTAGE_PAUSE.max(poll))
            .without_max_times();
        let mut outage_pauses: Option<backon::ExponentialBackoff> = None;
        loop {
            if self.inner.shutdown.is_cancelled() {
                return;
            }
            let claimed = match self.claim_batch(&slots).await {
                Ok(n) => {
                    if outage_pauses.take().is_some() {
                        info!("store reachable again; scheduling resumed");
                    }
                    n
                }
                Err(e) => {
                    // Logged once per outage, not on every poll.
                    if outage_pauses.is_none() {
                        error!(error = %e, "claiming due transactions failed; retrying with backoff");
                        outage_pauses = Some(outage.build());
                    }
                    0
                }
            };
            self.inner.emit(EngineEvent::Polled { claimed });
            if claimed == 0 {
                let base = outage_pauses.as_mut().and_then(Iterator::next).unwrap_or(poll);
                let pause = jittered(base);
                tokio::select! {
                    _ = self.inner.shutdown.cancelled() => return,
                    () = self.inner.clock.sleep(pause) => {}
                }
            }
        }
    }

    async fn claim_batch(&self, slots: &Arc<Semaphore>) -> Result<usize> {
        let inner: &Arc<Inner> = &self.inner;
        // Wait for room before claiming, so claimed rows never sit unprocessed under a lease.
        let Ok(first) = slots.clone().acquire_owned().await else {
            return Ok(0);
        };
        let room = 1 + slots.available_permits().min((inner.opts.claim_batch as usize).saturating_sub(1));
        let owner = inner.fresh_owner();
        let now = inner.clock.now();
        let claimed = inner.store.claim_due(&owner, now, now.add(inner.opts.lease), room as u32).await?;
        let n = claimed.len();
        observe_claim(inner, &claimed);
        let mut first = Some(first);
        for loaded in claimed {
            let permit = match first.take() {
                Some(p) => p,
                None => match slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => match slots.clone().acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                },
            };
            let inner = inner.clone();
            let owner = owner.clone();
            let mode = mode_of(&loaded);
            self.inner.tasks.spawn(async move {
                round::run(&inner, loaded, owner, no_premarks(), mode).await;
                drop(permit);
            });
        }
        Ok(n)
    }
}

/// Reports a claim: how many rows, and how many of them were lease takeovers.
fn observe_claim(inner: &Inner, claimed: &[dtx_store::Loaded]) {
    inner.observer.claimed(claimed.len());
    let taken_over = claimed.iter().filter(|l| l.taken_over).count();
    if taken_over > 0 {
        inner.observer.taken_over(taken_over);
    }
}

/// A claimed row's round mode: recovery from a lapsed owner, or its due time come.
fn mode_of(loaded: &dtx_store::Loaded) -> RoundMode {
    if loaded.taken_over { RoundMode::Takeover } else { RoundMode::Scheduled }
}

/// The longest pause between claims while the store is down: short enough that a node resumes
/// within seconds of the database coming back.
const MAX_OUTAGE_PAUSE: Duration = Duration::from_secs(5);

/// The poll pause, ±25 %, so nodes started together do not poll in step.
fn jittered(d: Duration) -> Duration {
    d.mul_f64(0.75 + rand::random::<f64>() * 0.5)
}
