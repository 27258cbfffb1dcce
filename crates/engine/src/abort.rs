//! `abort`: a prepared msg fails at once; a prepared (or already aborting) tcc is cancelled.

use dtx_core::lifecycle::{self, OnAbort};
use dtx_core::{GlobalStatus, TransType};
use dtx_store::{LeaseChange, Save, StatusChange};
use tracing::info;

use crate::round::ctx::Premarks;
use crate::submit::SubmitReply;
use crate::{Engine, Error, Result};

impl Engine {
    /// Aborts a transaction. `wait_result` comes from the stored options, as in DTM.
    pub async fn abort(&self, gid: &str, reason: &str) -> Result<SubmitReply> {
        // Boxed for the reason `Engine::submit` is: what callers move stays a pointer (the body's
        // future is ~1.5 KB).
        Box::pin(self.abort_boxed(gid, reason)).await
    }

    async fn abort_boxed(&self, gid: &str, reason: &str) -> Result<SubmitReply> {
        crate::request::check_gid(gid)?;
        crate::request::check_text("rollback_reason", reason)?;
        let inner = &self.inner;
        let existing = inner
            .store
            .load(gid)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no transaction with gid {gid}")))?;
        let g = &existing.global;
        let refuse = |t: TransType, s: GlobalStatus| {
            Error::Conflict(format!("trans type '{t}' current status '{s}', cannot abort"))
        };
        if lifecycle::on_abort(g.trans_type, g.status) == OnAbort::Refuse {
            return Err(refuse(g.trans_type, g.status));
        }
        let slot = self.round_slot().await?;
        let now = inner.clock.now();
        let owner = inner.fresh_owner();
        let Some(mut loaded) = inner.store.claim(gid, &owner, now, now.add(inner.opts.lease)).await? else {
            if g.status == GlobalStatus::Prepared {
                // A round is deciding it right now (the timeout of a tcc, the check-back of a
                // msg, which may still commit it): this abort was not applied. Say so rather
                // than acknowledge it; the client may retry.
                return Err(Error::Ongoing(format!(
                    "transaction {gid} is being processed (its timeout is being handled); \
                     the abort was not applied, retry"
                )));
            }
            // An earlier abort's round owns it: it carries the cancellation on.
            return Ok(SubmitReply::Accepted);
        };
        let wait = loaded.global.options.wait_result;
        let reason = (!reason.is_empty()).then(|| reason.to_owned());
        match lifecycle::on_abort(loaded.global.trans_type, loaded.global.status) {
            OnAbort::FailNow => {
                inner
                    .store
                    .save(Save {
                        gid: gid.to_owned(),
                        owner,
                        now,
                        branches: Vec::new(),
                        status: Some(StatusChange {
                            to: GlobalStatus::Failed,
                            rollback_reason: reason.clone(),
                            result: None,
                        }),
                        lease: LeaseChange::Release {
                            next_cron_time: now,
                            next_cron_interval: loaded.global.next_cron_interval,
                        },
                    })
                    .await?;
                info!(%gid, "prepared msg aborted");
                Ok(SubmitReply::Finished { status: GlobalStatus::Failed, reason: reason.unwrap_or_default() })
            }
            OnAbort::Abort => {
                inner
                    .store
                    .save(Save {
                        gid: gid.to_owned(),
                        owner: owner.clone(),
                        now,
                        branches: Vec::new(),
                        status: Some(StatusChange {
                            to: GlobalStatus::Aborting,
                            rollback_reason: reason.clone(),
                            result: None,
                        }),
                        lease: self.renewed_due_now(&loaded, now),
                    })
                    .await?;
                info!(%gid, "tcc aborted; cancelling its branches");
                loaded.global.status = GlobalStatus::Aborting;
                if let Some(r) = reason {
                    loaded.global.rollback_reason = r;
                }
                Ok(self.process(loaded, owner, Premarks::new(), wait, Some(slot)).await)
            }
            OnAbort::Reprocess => Ok(self.process(loaded, owner, Premarks::new(), wait, Some(slot)).await),
            OnAbort::Refuse => {
                let (t, s) = (loaded.global.trans_type, loaded.global.status);
                self.release_now(&loaded, &owner).await;
                Err(refuse(t, s))
            }
        }
    }
}
