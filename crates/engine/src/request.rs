//! A client's global request, validated and turned into rows (spec 1.3). Nothing here touches
//! the store except the topic lookup of msg steps.

use dtx_core::saga::{SagaCustomData, SagaLayout, is_rollbackable};
use dtx_core::{Branch, Global, GlobalStatus, Op, Timestamp, TransOptions, TransType, model::step_branch_id};
use serde::Deserialize;

use crate::participant::is_http_url;
use crate::{Error, Inner, Result};

/// The key-value category holding topic subscriptions.
pub const TOPICS: &str = "topics";
/// A msg step whose action is `topic://<name>` fans out to the topic's subscribers.
const TOPIC_SCHEME: &str = "topic://";

/// One step as the client sent it (`compensate` is for sagas only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Forward URL (empty = nothing to call).
    pub action: String,
    /// Compensation URL (saga; empty = this step cannot be rolled back unless its action is empty).
    pub compensate: String,
}

/// A prepare / submit / abort request, already decoded from the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct TransRequest {
    /// Global id.
    pub gid: String,
    /// Mode.
    pub trans_type: TransType,
    /// `http` (or empty).
    pub protocol: String,
    /// Steps (saga, msg).
    pub steps: Vec<Step>,
    /// One request body per step.
    pub payloads: Vec<Vec<u8>>,
    /// `custom_data` text (saga: orders, concurrent; msg: delay).
    pub custom_data: String,
    /// msg check-back URL.
    pub query_prepared: String,
    /// Per-transaction options.
    pub options: TransOptions,
    /// abort: why.
    pub rollback_reason: String,
    /// workflow submit: `status`, `rollback_reason`, `result` (base64).
    pub req_extra: std::collections::BTreeMap<String, String>,
}

/// A subscriber of a topic, as stored in the key-value table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct Subscriber {
    /// Where messages go.
    pub url: String,
    /// Free text.
    #[serde(default)]
    pub remark: String,
}

impl TransRequest {
    /// msg: the requested delay before the first execution.
    pub(crate) fn msg_delay(&self) -> Result<Option<std::time::Duration>> {
        dtx_core::msg::delay(&self.custom_data).map_err(|e| Error::InvalidArgument(e.to_string()))
    }

    /// Checks what can be checked before anything is stored.
    pub(crate) fn validate(&self, max_steps: usize) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        check_gid(&self.gid)?;
        check_text("custom_data", &self.custom_data)?;
        check_text("query_prepared", &self.query_prepared)?;
        check_text("rollback_reason", &self.rollback_reason)?;
        for s in &self.steps {
            check_text("a step's url", &s.action)?;
            check_text("a step's url", &s.compensate)?;
        }
        if !matches!(self.protocol.as_str(), "" | "http" | "grpc" | "json-rpc") {
            return bad(format!(
                "protocol '{}' is not supported (use http, grpc or json-rpc)",
                self.protocol
            ));
        }
        let grpc = self.protocol == "grpc";
        check_headers(&self.options)?;
        match self.trans_type {
            TransType::Saga | TransType::Msg => {
                if self.steps.is_empty() {
                    return bad(format!("a {} needs at least one step", self.trans_type));
                }
                if self.steps.len() > max_steps {
                    return bad(format!("too many steps: {} (the limit is {max_steps})", self.steps.len()));
                }
                if self.payloads.len() != self.steps.len() {
                    return bad(format!(
                        "steps and payloads do not match: {} steps, {} payloads",
                        self.steps.len(),
                        self.payloads.len()
                    ));
                }
            }
            TransType::Tcc | TransType::Xa => {}
            TransType::Workflow => {
                check_branch_url(&self.query_prepared, grpc).map_err(|m| {
                    Error::InvalidArgument(format!("query_prepared (the workflow callback): {m}"))
                })?;
                dtx_core::workflow::Custom::parse(&self.custom_data)
                    .map_err(|e| Error::InvalidArgument(e.0))?;
            }
        }
        match self.trans_type {
            TransType::Saga => {
                for (i, s) in self.steps.iter().enumerate() {
                    check_branch_url(&s.action, grpc)
                        .map_err(|m| Error::InvalidArgument(format!("step {i} action: {m}")))?;
                    check_branch_url(&s.compensate, grpc)
                        .map_err(|m| Error::InvalidArgument(format!("step {i} compensate: {m}")))?;
                }
                let custom = SagaCustomData::parse(&self.custom_data)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
                SagaLayout::new(saga_rollbackable(&self.steps), &custom)
                    .map_err(|e| Error::InvalidArgument(e.to_string()))?;
            }
            TransType::Msg => {
                for (i, s) in self.steps.iter().enumerate() {
                    if let Some(topic) = s.action.strip_prefix(TOPIC_SCHEME) {
                        if topic.is_empty() {
                            return bad(format!("step {i} action: empty topic name"));
                        }
                    } else {
                        check_branch_url(&s.action, grpc)
                            .map_err(|m| Error::InvalidArgument(format!("step {i} action: {m}")))?;
                    }
                }
                check_branch_url(&self.query_prepared, grpc)
                    .map_err(|m| Error::InvalidArgument(format!("query_prepared: {m}")))?;
                self.msg_delay()?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks the server's policy: option maxima, then every participant address (after DNS
    /// resolution) against the allowlist.
    pub(crate) async fn check_policy(&self, inner: &Inner) -> Result<()> {
        let delay = if self.trans_type == TransType::Msg { self.msg_delay()? } else { None };
        inner.opts.limits.check(&self.options, delay).map_err(Error::InvalidArgument)?;
        // Collected first: an iterator with closures held across the await would not be Send.
        let mut urls: Vec<&str> = Vec::with_capacity(self.steps.len() * 2 + 1);
        for s in &self.steps {
            urls.push(&s.action);
            urls.push(&s.compensate);
        }
        urls.push(&self.query_prepared);
        crate::participant::check_urls(inner.policy.as_deref(), urls).await.map_err(Error::InvalidArgument)
    }

    /// The global row, `status` as given, not owned (the caller sets ownership).
    pub(crate) fn global(&self, inner: &Inner, status: GlobalStatus, now: Timestamp) -> Global {
        Global {
            id: 0,
            gid: self.gid.clone(),
            trans_type: self.trans_type,
            status,
            protocol: if self.protocol.is_empty() { "http".into() } else { self.protocol.clone() },
            query_prepared: self.query_prepared.clone(),
            custom_data: self.custom_data.clone(),
            options: self.options.clone(),
            rollback_reason: String::new(),
            result: String::new(),
            create_time: now,
            update_time: now,
            finish_time: None,
            rollback_time: None,
            next_cron_time: now,
            next_cron_interval: inner.opts.retry.base(self.options.retry_interval),
            owner: None,
            lease_until: None,
            held_host: None,
        }
    }

    /// The branch rows at creation: saga = compensate then action per step; msg = one action
    /// per step, or per subscriber of a `topic://` step; tcc = none (registered later).
    pub(crate) async fn branches(&self, inner: &Inner, now: Timestamp) -> Result<Vec<Branch>> {
        let mut rows = Vec::new();
        match self.trans_type {
            TransType::Saga => {
                for (i, (step, payload)) in self.steps.iter().zip(&self.payloads).enumerate() {
                    let id = step_branch_id(i);
                    rows.push(Branch::new(
                        id.clone(),
                        Op::Compensate,
                        step.compensate.clone(),
                        payload.clone(),
                        now,
                    ));
                    rows.push(Branch::new(id, Op::Action, step.action.clone(), payload.clone(), now));
                }
            }
            TransType::Msg => {
                for (i, (step, payload)) in self.steps.iter().zip(&self.payloads).enumerate() {
                    let urls = match step.action.strip_prefix(TOPIC_SCHEME) {
                        Some(topic) => subscribers(inner, topic).await?.into_iter().map(|s| s.url).collect(),
                        None => vec![step.action.clone()],
                    };
                    let many = urls.len() > 1;
                    for (j, url) in urls.into_iter().enumerate() {
                        let id = if many { format!("{:02}-{:02}", i + 1, j + 1) } else { step_branch_id(i) };
                        rows.push(Branch::new(id, Op::Action, url, payload.clone(), now));
                    }
                }
            }
            _ => {}
        }
        Ok(rows)
    }
}

/// The subscribers of a topic; a topic without any is an error (the message would go nowhere).
async fn subscribers(inner: &Inner, topic: &str) -> Result<Vec<Subscriber>> {
    let row = inner.store.kv_get(TOPICS, topic).await?;
    let list: Vec<Subscriber> = match row {
        Some(r) => serde_json::from_str(&r.v).unwrap_or_default(),
        None => Vec::new(),
    };
    if list.is_empty() {
        return Err(Error::InvalidArgument(format!("topic '{topic}' not found or has no subscribers")));
    }
    Ok(list)
}

/// Which saga steps can be rolled back (the rule is `dtx_core::saga::is_rollbackable`).
fn saga_rollbackable(steps: &[Step]) -> Vec<bool> {
    steps.iter().map(|s| is_rollbackable(&s.action, &s.compensate)).collect()
}

/// The gid rule of every front door (`dtx_core::gid`), as an engine error.
/// Text a database cannot hold (PostgreSQL refuses NUL characters in text columns and
/// parameters) is bad input on every backend alike, not a store failure.
pub(crate) fn check_text(field: &str, v: &str) -> Result<()> {
    if v.contains('\0') {
        return Err(Error::InvalidArgument(format!("{field} must not contain NUL characters")));
    }
    Ok(())
}

pub(crate) fn check_gid(gid: &str) -> Result<()> {
    dtx_core::gid::check_gid(gid).map_err(|e| Error::InvalidArgument(e.to_string()))
}

fn check_headers(options: &TransOptions) -> Result<()> {
    for (name, value) in &options.branch_headers {
        if ::http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(Error::InvalidArgument(format!(
                "branch_headers: '{name}' is not a valid header name"
            )));
        }
        if ::http::header::HeaderValue::from_str(value).is_err() {
            return Err(Error::InvalidArgument(format!(
                "branch_headers: '{value}' is not a valid header value"
            )));
        }
    }
    Ok(())
}

/// A branch URL: an http URL, or, in a gRPC transaction, `host:port/package.Service/Method`
/// (a gRPC transaction may mix in http branches).
pub(crate) fn check_branch_url(u: &str, grpc: bool) -> std::result::Result<(), String> {
    if grpc && !u.is_empty() && !is_http_url(u) {
        return crate::participant::parsed::parse_grpc(u).map(|_| ());
    }
    check_url(u)
}

/// A participant URL must be empty (nothing to call) or an absolute http(s) URL with a host.
pub(crate) fn check_url(u: &str) -> std::result::Result<(), String> {
    if u.is_empty() {
        return Ok(());
    }
    let parsed =
        crate::participant::parsed::parse(u).map_err(|e| format!("'{u}' is not a valid URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("'{u}': unsupported scheme '{}' (use http or https)", parsed.scheme()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("'{u}' has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gid_rule_applies_to_every_request() {
        let mut r = req(TransType::Saga, 1, 1);
        r.gid = "a b".into();
        assert!(err(&r).contains("gid contains"));
        r.gid = "a\0b".into();
        assert!(err(&r).contains("gid contains"));
        r.gid = "x".repeat(129);
        assert!(err(&r).contains("longer than 128"));
        r.gid = String::new();
        assert!(err(&r).contains("gid is missing"));
    }

    fn req(trans_type: TransType, steps: usize, payloads: usize) -> TransRequest {
        TransRequest {
            gid: "g".into(),
            trans_type,
            protocol: String::new(),
            steps: (0..steps)
                .map(|i| Step { action: format!("http://h/a{i}"), compensate: format!("http://h/c{i}") })
                .collect(),
            payloads: vec![b"{}".to_vec(); payloads],
            custom_data: String::new(),
            query_prepared: String::new(),
            req_extra: Default::default(),
            options: TransOptions::default(),
            rollback_reason: String::new(),
        }
    }

    fn err(r: &TransRequest) -> String {
        r.validate(10).err().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn saga_validation_names_the_problem() {
        assert!(req(TransType::Saga, 2, 2).validate(10).is_ok());
        assert!(err(&req(TransType::Saga, 0, 0)).contains("at least one step"));
        assert!(err(&req(TransType::Saga, 11, 11)).contains("too many steps"));
        assert!(err(&req(TransType::Saga, 2, 1)).contains("do not match"));
        let mut r = req(TransType::Saga, 1, 1);
        r.steps[0].action = "ftp://h/x".into();
        assert!(err(&r).contains("unsupported scheme"));
        r.steps[0].action = "not a url".into();
        assert!(err(&r).contains("not a valid URL"));
        let mut r = req(TransType::Saga, 2, 2);
        r.custom_data = r#"{"orders":{"1":[5]}}"#.into();
        assert!(err(&r).contains("orders"));
        let mut r = req(TransType::Saga, 1, 1);
        r.options.branch_headers.insert("bad header".into(), "v".into());
        assert!(err(&r).contains("branch_headers"));
        let mut r = req(TransType::Saga, 1, 1);
        r.protocol = "soap".into();
        assert!(err(&r).contains("protocol"));
        let mut r = req(TransType::Saga, 1, 1);
        r.steps[0].action = "localhost:5/busi.Busi/TransIn".into();
        assert!(err(&r).contains("unsupported scheme") || err(&r).contains("not a valid URL"));
        r.protocol = "grpc".into();
        assert!(r.validate(10).is_ok(), "{}", err(&r));
        r.steps[0].action = "localhost:5".into();
        assert!(err(&r).contains("package.Service/Method"));
    }

    #[test]
    fn msg_and_tcc_validation() {
        let mut r = req(TransType::Msg, 1, 1);
        assert!(r.validate(10).is_ok());
        r.query_prepared = "gopher://x".into();
        assert!(err(&r).contains("query_prepared"));
        let mut r = req(TransType::Msg, 1, 1);
        r.custom_data = r#"{"delay":"soon"}"#.into();
        assert!(err(&r).contains("custom_data"));
        let mut r = req(TransType::Msg, 1, 1);
        r.steps[0].action = "topic://".into();
        assert!(err(&r).contains("empty topic"));
        assert!(req(TransType::Tcc, 0, 0).validate(10).is_ok());
        assert!(req(TransType::Xa, 0, 0).validate(10).is_ok());
        let mut r = req(TransType::Workflow, 0, 0);
        r.custom_data = r#"{"name":"wf","data":"e30="}"#.into();
        assert!(r.validate(10).is_ok());
        r.custom_data = "{".into();
        assert!(err(&r).contains("custom_data"));
    }
}
