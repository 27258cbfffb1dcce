//! New transactions: validation, creation (owned by this node), idempotent re-submits.

use std::sync::Arc;

use dtx_core::saga::{SagaCustomData, SagaLayout};
use dtx_core::{Branch, Global, GlobalStatus, Op, TransOptions, TransType, model::step_branch_id};
use dtx_store::{Error as StoreError, Loaded, NewTransaction};
use tracing::info;

use crate::round::{self, RoundEnd};
use crate::{Engine, Error, Inner, Result};

/// One saga step as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaStep {
    /// Forward URL (empty = nothing to call).
    pub action: String,
    /// Compensation URL (empty = this step cannot be rolled back, unless its action is empty).
    pub compensate: String,
}

/// A saga submit, already decoded from the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitSaga {
    /// Global id.
    pub gid: String,
    /// `http` (or empty).
    pub protocol: String,
    /// The steps.
    pub steps: Vec<SagaStep>,
    /// One request body per step.
    pub payloads: Vec<Vec<u8>>,
    /// `custom_data` text (orders, concurrent).
    pub custom_data: String,
    /// Per-transaction options.
    pub options: TransOptions,
}

/// The answer to a submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitReply {
    /// Stored durably; processing goes on in the background.
    Accepted,
    /// `wait_result`: the first round reached a final status.
    Finished {
        /// `succeed` or `failed`.
        status: GlobalStatus,
        /// The rollback reason when failed.
        reason: String,
    },
    /// `wait_result`: the first round ended without a final status.
    InProgress {
        /// Where it stands (`submitted` or `aborting`).
        status: GlobalStatus,
        /// The rollback reason so far.
        reason: String,
    },
}

impl Engine {
    /// Validates, stores (durably, owned by this node) and starts a saga.
    pub async fn submit_saga(&self, req: SubmitSaga) -> Result<SubmitReply> {
        validate_saga(&req, self.inner.opts.max_steps)?;
        let inner = &self.inner;
        let now = inner.clock.now();
        let owner = inner.fresh_owner();
        let global = Global {
            id: 0,
            gid: req.gid.clone(),
            trans_type: TransType::Saga,
            status: GlobalStatus::Submitted,
            protocol: if req.protocol.is_empty() { "http".into() } else { req.protocol.clone() },
            query_prepared: String::new(),
            custom_data: req.custom_data.clone(),
            options: req.options.clone(),
            rollback_reason: String::new(),
            result: String::new(),
            create_time: now,
            update_time: now,
            finish_time: None,
            rollback_time: None,
            // Due at once if this node dies: the lease alone keeps others away meanwhile.
            next_cron_time: now,
            next_cron_interval: inner.opts.retry.base(req.options.retry_interval),
            owner: Some(owner.clone()),
            lease_until: Some(now.add(inner.opts.lease)),
        };
        let mut branches = Vec::with_capacity(req.steps.len() * 2);
        for (i, (step, payload)) in req.steps.iter().zip(&req.payloads).enumerate() {
            let id = step_branch_id(i);
            // DTM's row order: compensate first, then action.
            branches.push(Branch::new(
                id.clone(),
                Op::Compensate,
                step.compensate.clone(),
                payload.clone(),
                now,
            ));
            branches.push(Branch::new(id, Op::Action, step.action.clone(), payload.clone(), now));
        }
        let premarked = round::saga::premark_first_actions(&global, &mut branches, now);
        let tx = NewTransaction { global, branches };
        match inner.store.create(tx.clone()).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return self.resubmit(&req.gid, TransType::Saga, req.options.wait_result).await;
            }
            Err(e) => return Err(e.into()),
        }
        info!(gid = %req.gid, steps = req.steps.len(), "saga submitted");
        let loaded = Loaded { global: tx.global, branches: tx.branches };
        Ok(self.process(loaded, owner, premarked, req.options.wait_result).await)
    }

    /// The same gid again: a `submitted` transaction is processed again from its stored
    /// branches; a finished or rolling-back one is refused.
    async fn resubmit(&self, gid: &str, trans_type: TransType, wait: bool) -> Result<SubmitReply> {
        let inner = &self.inner;
        let existing = inner
            .store
            .load(gid)
            .await?
            .ok_or_else(|| Error::Conflict(format!("transaction {gid} is being created concurrently")))?;
        let g = &existing.global;
        if g.trans_type != trans_type {
            return Err(Error::Conflict(format!(
                "gid {gid} is already used by a {} transaction",
                g.trans_type
            )));
        }
        if g.status != GlobalStatus::Submitted {
            return Err(Error::Conflict(format!("current status '{}', cannot submit", g.status)));
        }
        let now = inner.clock.now();
        let owner = inner.fresh_owner();
        match inner.store.claim(gid, &owner, now, now.add(inner.opts.lease)).await? {
            Some(loaded) => Ok(self.process(loaded, owner, false, wait).await),
            // Another round owns it right now and will carry it on.
            None if wait => {
                Ok(SubmitReply::InProgress { status: g.status, reason: g.rollback_reason.clone() })
            }
            None => Ok(SubmitReply::Accepted),
        }
    }

    /// Runs a round inline (`wait_result`) or in the background.
    async fn process(&self, loaded: Loaded, owner: String, premarked: bool, wait: bool) -> SubmitReply {
        if wait {
            return reply_of(round::run(&self.inner, loaded, owner, premarked).await);
        }
        let inner: Arc<Inner> = self.inner.clone();
        self.inner.tasks.spawn(async move {
            round::run(&inner, loaded, owner, premarked).await;
        });
        SubmitReply::Accepted
    }
}

fn reply_of(end: RoundEnd) -> SubmitReply {
    match end {
        RoundEnd::Finished { status, reason } => SubmitReply::Finished { status, reason },
        RoundEnd::Pending { status, reason } => SubmitReply::InProgress { status, reason },
        RoundEnd::Abandoned => {
            SubmitReply::InProgress { status: GlobalStatus::Submitted, reason: String::new() }
        }
    }
}

/// Checks everything that can be checked before anything is stored.
fn validate_saga(req: &SubmitSaga, max_steps: usize) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidArgument(m));
    if req.steps.is_empty() {
        return bad("a saga needs at least one step".into());
    }
    if req.steps.len() > max_steps {
        return bad(format!("too many steps: {} (the limit is {max_steps})", req.steps.len()));
    }
    if req.payloads.len() != req.steps.len() {
        return bad(format!(
            "steps and payloads do not match: {} steps, {} payloads",
            req.steps.len(),
            req.payloads.len()
        ));
    }
    if !matches!(req.protocol.as_str(), "" | "http") {
        return bad(format!("protocol '{}' is not supported (use http)", req.protocol));
    }
    for (i, s) in req.steps.iter().enumerate() {
        check_url(&s.action).map_err(|m| Error::InvalidArgument(format!("step {i} action: {m}")))?;
        check_url(&s.compensate).map_err(|m| Error::InvalidArgument(format!("step {i} compensate: {m}")))?;
    }
    for name in req.options.branch_headers.keys() {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return bad(format!("branch_headers: '{name}' is not a valid header name"));
        }
    }
    for value in req.options.branch_headers.values() {
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return bad(format!("branch_headers: '{value}' is not a valid header value"));
        }
    }
    let custom =
        SagaCustomData::parse(&req.custom_data).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    let rollbackable = req.steps.iter().map(|s| s.action.is_empty() || !s.compensate.is_empty()).collect();
    SagaLayout::new(rollbackable, &custom).map_err(|e| Error::InvalidArgument(e.to_string()))?;
    Ok(())
}

/// A participant URL must be empty (nothing to call) or an absolute http(s) URL with a host.
fn check_url(u: &str) -> std::result::Result<(), String> {
    if u.is_empty() {
        return Ok(());
    }
    let parsed = url::Url::parse(u).map_err(|e| format!("'{u}' is not a valid URL: {e}"))?;
    if parsed.scheme() != "http" {
        return Err(format!("'{u}': unsupported scheme '{}' (only http is supported)", parsed.scheme()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{u}' has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(steps: usize, payloads: usize) -> SubmitSaga {
        SubmitSaga {
            gid: "g".into(),
            protocol: String::new(),
            steps: (0..steps)
                .map(|i| SagaStep { action: format!("http://h/a{i}"), compensate: format!("http://h/c{i}") })
                .collect(),
            payloads: vec![b"{}".to_vec(); payloads],
            custom_data: String::new(),
            options: TransOptions::default(),
        }
    }

    #[test]
    fn validation_names_the_problem() {
        let err = |r: &SubmitSaga| validate_saga(r, 10).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(validate_saga(&req(2, 2), 10).is_ok());
        assert!(err(&req(0, 0)).contains("at least one step"));
        assert!(err(&req(11, 11)).contains("too many steps"));
        assert!(err(&req(2, 1)).contains("do not match"));
        let mut r = req(1, 1);
        r.steps[0].action = "ftp://h/x".into();
        assert!(err(&r).contains("unsupported scheme"));
        r.steps[0].action = "not a url".into();
        assert!(err(&r).contains("not a valid URL"));
        let mut r = req(2, 2);
        r.custom_data = r#"{"orders":{"1":[5]}}"#.into();
        assert!(err(&r).contains("orders"));
        let mut r = req(1, 1);
        r.options.branch_headers.insert("bad header".into(), "v".into());
        assert!(err(&r).contains("branch_headers"));
        let mut r = req(1, 1);
        r.protocol = "grpc".into();
        assert!(err(&r).contains("protocol"));
    }
}
