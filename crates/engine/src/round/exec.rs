//! The effect executor: the one path from a round to a participant.
//!
//! Persist, then act (ADR 0002), enforced here rather than by each round loop: a call starts
//! only after a fenced write that records its attempt (and any status change waiting to be
//! written, e.g. `aborting` before the first compensation) has succeeded. A write that comes
//! back `Fenced` (lease lost, forceStop) or fails ends the round before anyone is called. The
//! only exception is an attempt the insert itself persisted ([`Premarks`]): exactly that row at
//! exactly that attempt count, used once, while the lease of that write is fresh (and, for a
//! later call recorded ahead, while no operator stop began on this node since: ADR 21).
//!
//! The caller lives in [`Effects`] with a private field, so no other module can reach it.

use std::sync::Arc;
use std::task::Poll;

use dtx_core::Outcome;
use futures::future::BoxFuture;

use crate::health::Health;
use crate::participant::{CallRequest, Caller};
use crate::round::RoundEnd;
use crate::round::ctx::{Ctx, Premarks};

/// The engine's participant caller, reachable only through [`Ctx::launch`].
pub(crate) struct Effects {
    caller: Arc<dyn Caller>,
}

impl Effects {
    pub(crate) fn new(caller: Arc<dyn Caller>) -> Effects {
        Effects { caller }
    }
}

/// What a call is for.
pub(crate) enum Target {
    /// A branch row: its attempt count is the attempt mark.
    Row(usize),
    /// A call without a row (the msg check-back): the fenced write still goes first, so a
    /// round that lost the transaction never makes it.
    Plain(CallRequest),
}

/// Renewals tried when a write outlasted the lease it wrote, before the round gives up.
const MAX_LATE_RENEWALS: u32 = 3;

/// A call in flight, answering with its tag.
pub(crate) type Running<'a, T> = BoxFuture<'a, (T, Outcome)>;

impl<'a> Ctx<'a> {
    /// Records the attempts of `calls`, writes them (fenced, with everything unsaved), and
    /// only then starts the calls. `Err` (nothing called) when the write did not succeed.
    pub(crate) async fn launch<T: Send + 'a>(
        &mut self,
        calls: Vec<(T, Target)>,
    ) -> Result<Vec<Running<'a, T>>, RoundEnd> {
        // Participant health (crate::health): a call to a host this node sees down is not made
        // (unless it is that host's probe); the transaction waits for the host instead.
        let urls = calls.iter().map(|(_, target)| match target {
            Target::Row(row) => self.branches[*row].url.as_str(),
            Target::Plain(req) => req.url.as_str(),
        });
        let probes = match self.inner.health.admit_all(urls, self.now(), self.global.held_host.as_deref()) {
            Ok(probes) => probes,
            Err((host, until)) => return Err(self.hold(host, until).await),
        };
        // Calling now: no longer held (its next release writes that); later calls of this round
        // are judged as any other transaction's.
        self.global.held_host = None;
        // Results gathered since the last write may wait for the next one (a call that is
        // already on record needs no write, and a lost result only repeats an idempotent
        // call); attempt marks and status changes may not.
        let mut write = self.has_status_change();
        let mut requests = Vec::with_capacity(calls.len());
        for (tag, target) in calls {
            let req = match target {
                Target::Row(row) => {
                    if !self.take_premark(row) {
                        self.mark_attempt(row);
                        write = true;
                    }
                    self.call_row(row)
                }
                Target::Plain(req) => {
                    write = true;
                    req
                }
            };
            requests.push((tag, req));
        }
        if write {
            self.renew_lease().await?;
        }
        // A write slower than the lease (a stalled database) may have returned after the lease
        // it wrote ran out: another node could claim the transaction at any moment. Renew
        // again (fenced) until the lease runs, or give the round up.
        let mut tries = 0;
        while !self.lease_valid() {
            tries += 1;
            if tries > MAX_LATE_RENEWALS {
                tracing::warn!(gid = %self.global.gid, "lease writes keep outlasting the lease; leaving the round");
                return Err(RoundEnd::Abandoned);
            }
            self.renew_lease().await?;
        }
        let caller: &'a dyn Caller = &*self.inner.effects.caller;
        let health: &'a Arc<Health> = &self.inner.health;
        let mut started = Vec::with_capacity(requests.len());
        for ((tag, req), probe) in requests.into_iter().zip(probes) {
            let mut call: Running<'a, T> = Box::pin(async move {
                let outcome = caller.call(&req).await;
                health.observe(&req.url, &outcome, probe);
                (tag, outcome)
            });
            // Started here, right after the write that allowed it, rather than whenever the
            // round's loop first polls it (which could be after later decisions, e.g. after a
            // rollback began). An answer ready at once is kept in a ready future: one box per
            // call in the usual case.
            match futures::poll!(call.as_mut()) {
                Poll::Pending => started.push(call),
                Poll::Ready(done) => started.push(Box::pin(std::future::ready(done))),
            }
        }
        Ok(started)
    }

    /// [`Ctx::launch`] of one call, awaited here while the lease is renewed every third of it,
    /// so that a call longer than the lease does not let another round take the transaction
    /// over and call again. `Err` when the ownership was lost (the answer is then dropped).
    pub(crate) async fn call_renewing(&mut self, target: Target) -> Result<Outcome, RoundEnd> {
        let Some(mut call) = self.launch(vec![((), target)]).await?.pop() else {
            return Err(RoundEnd::Abandoned);
        };
        loop {
            tokio::select! {
                ((), outcome) = &mut call => return Ok(outcome),
                () = self.renewal_due() => self.renew_lease().await?,
            }
        }
    }

    /// Whether every row of `rows` would start on an attempt the insert persisted for a first
    /// call (such calls may still start while the node shuts down: they are already on record;
    /// an action recorded ahead is not started then, and the round's release takes it back).
    pub(crate) fn all_premarked(&self, rows: &[usize]) -> bool {
        !rows.is_empty() && rows.iter().all(|&r| self.is_premarked_first(r))
    }
}

/// No attempt persisted ahead of the round.
pub(crate) fn no_premarks() -> Premarks {
    Premarks::new()
}
