//! DTM's JSON on the wire: the global request body (spec 1.1) and the query output (1.4, 1.5).

use std::collections::BTreeMap;

use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use dtx_core::TransType;
use dtx_core::{Branch, Global, Timestamp, TransOptions};
use dtx_engine::{Step, TransRequest};
use dtx_store::KvRow;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::api::error::ApiError;

/// One element of `steps` as sent: `{"action": url, "compensate": url, "data": payload}`, any
/// key possibly missing or `null` (other keys ignored), the element itself possibly `null`. A
/// struct rather than a map: no map node and key strings allocated per step.
pub type RawStep = Option<StepKeys>;

/// The keys of a step that dtx reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StepKeys {
    pub action: Option<String>,
    pub compensate: Option<String>,
    /// The legacy place of a step's payload (before `payloads`).
    pub data: Option<String>,
}

/// The global request body. Every key is optional and may be `null`; unknown keys
/// (`passthrough_headers`, storage-only keys...) are ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct GlobalRequest {
    pub gid: Option<String>,
    pub trans_type: Option<String>,
    pub steps: Option<Vec<RawStep>>,
    pub payloads: Option<Vec<Option<String>>>,
    pub custom_data: Option<Value>,
    pub protocol: Option<String>,
    pub query_prepared: Option<String>,
    pub rollback_reason: Option<String>,
    pub wait_result: Option<bool>,
    pub timeout_to_fail: Option<i64>,
    pub request_timeout: Option<i64>,
    pub retry_interval: Option<i64>,
    pub retry_limit: Option<i64>,
    pub branch_headers: Option<BTreeMap<String, String>>,
    pub concurrent: Option<bool>,
    pub req_extra: Option<BTreeMap<String, String>>,
}

/// A registerBranch body: a flat JSON object of strings (DTM reads it into a map of strings),
/// read straight into the keys dtx takes. A map of every key cost ~5,000 instructions per
/// registration. As with a map of strings, every value must be a string, unknown keys
/// included, and a key given twice keeps its last value.
#[derive(Debug, Default)]
pub struct RegisterBody {
    pub gid: Option<String>,
    pub trans_type: String,
    pub branch_id: String,
    pub data: String,
    pub confirm: String,
    pub cancel: String,
    pub url: String,
    pub op: String,
    pub status: String,
}

/// The keys of a [`RegisterBody`], read without allocating a string for them.
#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "snake_case")]
enum RegisterKey {
    Gid,
    TransType,
    BranchId,
    Data,
    Confirm,
    Cancel,
    Url,
    Op,
    Status,
    #[serde(other)]
    Other,
}

impl<'de> Deserialize<'de> for RegisterBody {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RegisterBody, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = RegisterBody;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object of strings")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<RegisterBody, A::Error> {
                let mut body = RegisterBody::default();
                while let Some(key) = map.next_key::<RegisterKey>()? {
                    let value: String = map.next_value()?;
                    let slot = match key {
                        RegisterKey::Gid => {
                            body.gid = Some(value);
                            continue;
                        }
                        RegisterKey::TransType => &mut body.trans_type,
                        RegisterKey::BranchId => &mut body.branch_id,
                        RegisterKey::Data => &mut body.data,
                        RegisterKey::Confirm => &mut body.confirm,
                        RegisterKey::Cancel => &mut body.cancel,
                        RegisterKey::Url => &mut body.url,
                        RegisterKey::Op => &mut body.op,
                        RegisterKey::Status => &mut body.status,
                        RegisterKey::Other => continue,
                    };
                    *slot = value;
                }
                Ok(body)
            }
        }
        d.deserialize_map(Fields)
    }
}

/// DTM removes `\n`, `\r` and `;` from gids received over HTTP; the rest is checked by the
/// gid rule every front door shares (`dtx_core::gid`).
pub fn clean_gid(raw: Option<&str>) -> Result<String, ApiError> {
    let raw = raw.unwrap_or_default();
    let removed = ['\n', '\r', ';'];
    let gid: String = if raw.contains(removed) {
        raw.chars().filter(|c| !removed.contains(c)).collect()
    } else {
        raw.to_owned()
    };
    dtx_core::gid::check_gid(&gid).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok(gid)
}

fn non_negative(v: Option<i64>, key: &str) -> Result<u64, ApiError> {
    match v {
        None => Ok(0),
        Some(n) => u64::try_from(n).map_err(|_| ApiError::BadRequest(format!("{key} must not be negative"))),
    }
}

impl GlobalRequest {
    /// The per-transaction options.
    pub fn options(&self) -> Result<TransOptions, ApiError> {
        Ok(TransOptions {
            wait_result: self.wait_result.unwrap_or(false),
            timeout_to_fail: non_negative(self.timeout_to_fail, "timeout_to_fail")?,
            request_timeout: non_negative(self.request_timeout, "request_timeout")?,
            retry_interval: non_negative(self.retry_interval, "retry_interval")?,
            branch_headers: self.branch_headers.clone().unwrap_or_default(),
            concurrent: self.concurrent.unwrap_or(false),
            retry_limit: non_negative(self.retry_limit, "retry_limit")?,
        })
    }

    /// `custom_data` as text: DTM clients send a JSON string; an object is accepted too.
    fn custom_data_text(&self) -> Result<String, ApiError> {
        match &self.custom_data {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(v @ Value::Object(_)) => Ok(v.to_string()),
            Some(_) => Err(ApiError::BadRequest("custom_data must be a JSON string".into())),
        }
    }

    /// Decodes a request. Payloads come from `payloads`, or from the legacy `steps[].data`.
    pub fn into_request(self, gid: String, trans_type: TransType) -> Result<TransRequest, ApiError> {
        let options = self.options()?;
        let custom_data = self.custom_data_text()?;
        let raw_steps = self.steps.unwrap_or_default();
        let mut steps = Vec::with_capacity(raw_steps.len());
        let mut legacy_payloads = Vec::new();
        for (i, s) in raw_steps.into_iter().enumerate() {
            let s = s.ok_or_else(|| ApiError::BadRequest(format!("steps[{i}] is null")))?;
            let step =
                Step { action: s.action.unwrap_or_default(), compensate: s.compensate.unwrap_or_default() };
            let data = s.data.unwrap_or_default();
            if !data.is_empty() {
                legacy_payloads.push(data.into_bytes());
            }
            steps.push(step);
        }
        let payloads = match self.payloads {
            Some(p) => p.into_iter().map(|p| p.unwrap_or_default().into_bytes()).collect(),
            None => legacy_payloads,
        };
        Ok(TransRequest {
            gid,
            trans_type,
            protocol: self.protocol.unwrap_or_default(),
            steps,
            payloads,
            custom_data,
            query_prepared: self.query_prepared.unwrap_or_default(),
            options,
            rollback_reason: self.rollback_reason.unwrap_or_default(),
            req_extra: self.req_extra.unwrap_or_default(),
        })
    }
}

/// A key-value row as `scanKV` / `queryKV` return it.
pub fn kv_json(r: &KvRow) -> Value {
    json!({
        "id": r.id,
        "create_time": time_text(r.create_time),
        "update_time": time_text(r.update_time),
        "cat": r.cat,
        "k": r.k,
        "v": r.v,
        "version": r.version,
    })
}

/// RFC 3339 in UTC with milliseconds.
pub fn time_text(t: Timestamp) -> Value {
    match DateTime::<Utc>::from_timestamp_millis(t.0) {
        Some(dt) => Value::String(dt.to_rfc3339_opts(SecondsFormat::Millis, true)),
        None => Value::Null,
    }
}

fn put_nonempty(m: &mut Map<String, Value>, k: &str, v: &str) {
    if !v.is_empty() {
        m.insert(k.into(), Value::String(v.into()));
    }
}

fn put_time(m: &mut Map<String, Value>, k: &str, v: Option<Timestamp>) {
    if let Some(t) = v {
        m.insert(k.into(), time_text(t));
    }
}

/// A global transaction as `query` / `all` return it (DTM's keys, plus dtx's `lease_until`,
/// `forward_only` and `held_host`: the participant host it waits for, held because a node saw
/// that host down, until its next probe or the host's return).
pub fn global_json(g: &Global, forward_only: bool) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(g.id));
    m.insert("create_time".into(), time_text(g.create_time));
    m.insert("update_time".into(), time_text(g.update_time));
    m.insert("gid".into(), json!(g.gid));
    m.insert("trans_type".into(), json!(g.trans_type.as_str()));
    m.insert("status".into(), json!(g.status.as_str()));
    put_nonempty(&mut m, "query_prepared", &g.query_prepared);
    put_nonempty(&mut m, "protocol", &g.protocol);
    put_time(&mut m, "finish_time", g.finish_time);
    put_time(&mut m, "rollback_time", g.rollback_time);
    put_nonempty(&mut m, "result", &g.result);
    put_nonempty(&mut m, "rollback_reason", &g.rollback_reason);
    m.insert("options".into(), json!(redacted_options(&g.options)));
    put_nonempty(&mut m, "custom_data", &g.custom_data);
    m.insert("next_cron_interval".into(), json!(g.next_cron_interval.as_secs()));
    if !g.status.is_final() {
        m.insert("next_cron_time".into(), time_text(g.next_cron_time));
    }
    if let Some(owner) = &g.owner {
        m.insert("owner".into(), json!(owner));
    }
    put_time(&mut m, "lease_until", g.lease_until);
    if let Some(host) = g.held_host.as_ref().filter(|_| !g.status.is_final()) {
        m.insert("held_host".into(), json!(host));
    }
    m.insert("concurrent".into(), json!(false));
    if forward_only {
        m.insert("forward_only".into(), json!(true));
    }
    Value::Object(m)
}

/// The options as stored, `branch_headers` values replaced by `***`: they often carry
/// participant credentials, and a reader of `query` / `all` only needs to see which were set.
fn redacted_options(o: &TransOptions) -> String {
    if o.branch_headers.is_empty() {
        return o.to_json();
    }
    let mut shown = o.clone();
    for v in shown.branch_headers.values_mut() {
        *v = REDACTED.to_owned();
    }
    shown.to_json()
}

/// What a redacted value shows.
pub const REDACTED: &str = "***";

/// A branch row as `query` returns it (`bin_data` is base64), plus `attempts` and `last_error`.
pub fn branch_json(gid: &str, b: &Branch) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(b.id));
    m.insert("create_time".into(), time_text(b.create_time));
    m.insert("update_time".into(), time_text(b.update_time));
    m.insert("gid".into(), json!(gid));
    put_nonempty(&mut m, "url", &b.url);
    if !b.payload.is_empty() {
        m.insert("bin_data".into(), json!(base64::engine::general_purpose::STANDARD.encode(&b.payload)));
    }
    m.insert("branch_id".into(), json!(b.branch_id));
    m.insert("op".into(), json!(b.op.as_str()));
    m.insert("status".into(), json!(b.status.as_str()));
    put_time(&mut m, "finish_time", b.finish_time);
    m.insert("attempts".into(), json!(b.attempts));
    put_nonempty(&mut m, "last_error", &b.last_error);
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_register_body_is_an_object_of_strings() {
        let body: RegisterBody = serde_json::from_str(
            r#"{"gid":"g1","trans_type":"tcc","br\u0061nch_id":"01","data":"{\"a\":1}","confirm":"http://c",
                "cancel":"http://x","cancel":"http://k","custom":"kept out","op":"try"}"#,
        )
        .expect("body");
        assert_eq!(body.gid.as_deref(), Some("g1"));
        assert_eq!((body.trans_type.as_str(), body.branch_id.as_str()), ("tcc", "01"));
        assert_eq!((body.data.as_str(), body.confirm.as_str()), ("{\"a\":1}", "http://c"));
        // The last of a key given twice, as a map keeps it.
        assert_eq!((body.cancel.as_str(), body.op.as_str()), ("http://k", "try"));
        assert_eq!((body.url.as_str(), body.status.as_str()), ("", ""));
        assert!(serde_json::from_str::<RegisterBody>("{}").expect("empty").gid.is_none());
        // Every value a string, unknown keys too; an object.
        for bad in [r#"{"gid":1}"#, r#"{"x":null}"#, r#"{"x":{"y":"z"}}"#, r#"["gid"]"#, r#""gid""#] {
            assert!(serde_json::from_str::<RegisterBody>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gid_is_cleaned_then_checked() {
        assert_eq!(clean_gid(Some("a;b\n")).unwrap(), "ab");
        assert!(clean_gid(None).is_err());
        assert!(clean_gid(Some(";")).is_err());
        assert!(clean_gid(Some("a b")).is_err());
        assert!(clean_gid(Some(&"x".repeat(129))).is_err());
    }

    #[test]
    fn python_sdk_nulls_and_legacy_data_are_accepted() {
        let body = r#"{"gid":"g","trans_type":"saga","custom_data":null,"protocol":null,
            "passthrough_headers":null,"wait_result":null,"branch_headers":null,
            "steps":[{"action":"http://h/a","compensate":"http://h/c","data":"{\"x\":1}"}]}"#;
        let r: GlobalRequest = serde_json::from_str(body).unwrap();
        let saga = r.into_request("g".into(), TransType::Saga).unwrap();
        assert_eq!(saga.payloads, vec![br#"{"x":1}"#.to_vec()]);
        assert_eq!(saga.steps[0].compensate, "http://h/c");
    }

    #[test]
    fn step_keys_may_be_null_or_missing_and_others_are_ignored() {
        let body = r#"{"steps":[{"action":"http://h/a","compensate":null,"note":"x"},{}],
            "payloads":["p1",null]}"#;
        let r: GlobalRequest = serde_json::from_str(body).unwrap();
        let saga = r.into_request("g".into(), TransType::Saga).unwrap();
        assert_eq!((saga.steps[0].action.as_str(), saga.steps[0].compensate.as_str()), ("http://h/a", ""));
        assert_eq!((saga.steps[1].action.as_str(), saga.steps[1].compensate.as_str()), ("", ""));
        assert_eq!(saga.payloads, vec![b"p1".to_vec(), Vec::new()]);
        let null_step: GlobalRequest = serde_json::from_str(r#"{"steps":[null]}"#).unwrap();
        let err = null_step.into_request("g".into(), TransType::Saga).unwrap_err();
        assert!(matches!(&err, ApiError::BadRequest(m) if m.contains("steps[0] is null")), "{err:?}");
    }

    #[test]
    fn branch_header_values_are_never_shown() {
        let mut options = TransOptions::default();
        options.branch_headers.insert("authorization".into(), "Bearer hunter2".into());
        let g = Global {
            id: 1,
            gid: "g".into(),
            trans_type: TransType::Saga,
            status: dtx_core::GlobalStatus::Submitted,
            protocol: "http".into(),
            query_prepared: String::new(),
            custom_data: String::new(),
            options,
            rollback_reason: String::new(),
            result: String::new(),
            create_time: Timestamp(0),
            update_time: Timestamp(0),
            finish_time: None,
            rollback_time: None,
            next_cron_time: Timestamp(0),
            next_cron_interval: std::time::Duration::from_secs(10),
            owner: None,
            lease_until: None,
            held_host: None,
        };
        let shown = global_json(&g, false).to_string();
        assert!(shown.contains("authorization") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn negative_options_are_rejected() {
        let r: GlobalRequest = serde_json::from_str(r#"{"retry_interval":-1}"#).unwrap();
        assert!(r.options().is_err());
    }
}
