//! Per-transaction options, as DTM's SDKs send them (all durations in whole seconds on the wire).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Options fixed at creation; each overrides the server default for this transaction only.
/// Zero means "use the server default" (DTM's convention).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TransOptions {
    /// Answer the submit only after the first processing round, with its outcome.
    #[serde(skip_serializing_if = "is_false")]
    pub wait_result: bool,
    /// Seconds after creation before a not-yet-finished transaction is rolled back (0 = default).
    #[serde(skip_serializing_if = "is_zero")]
    pub timeout_to_fail: u64,
    /// Seconds allowed for each participant call (0 = default).
    #[serde(skip_serializing_if = "is_zero")]
    pub request_timeout: u64,
    /// Base retry interval in seconds (0 = default).
    #[serde(skip_serializing_if = "is_zero")]
    pub retry_interval: u64,
    /// Extra HTTP headers sent on every participant call.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub branch_headers: BTreeMap<String, String>,
    /// msg: run the actions concurrently. (Saga reads `concurrent` from `custom_data`.)
    pub concurrent: bool,
    /// Immediate re-executions allowed within one processing round before a saga rolls back.
    #[serde(skip_serializing_if = "is_zero")]
    pub retry_limit: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn is_false(v: &bool) -> bool {
    !*v
}

impl TransOptions {
    /// The JSON text stored in the `options` column.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }

    /// Reads the `options` column; an empty text means all defaults.
    pub fn from_json(text: &str) -> Result<TransOptions, serde_json::Error> {
        if text.trim().is_empty() {
            return Ok(TransOptions::default());
        }
        serde_json::from_str(text)
    }
}

/// The server's maxima of the per-transaction options: a request above one is refused before
/// anything is stored (one submit with a huge `retry_limit` must not mean calls for ever).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionLimits {
    /// Most immediate re-executions within a round (`retry_limit`).
    pub retry_limit: u64,
    /// Longest base retry interval (`retry_interval`).
    pub retry_interval: Duration,
    /// Longest participant call timeout (`request_timeout`).
    pub request_timeout: Duration,
    /// Longest `timeout_to_fail`.
    pub timeout_to_fail: Duration,
    /// Longest msg delay (`custom_data` `delay`).
    pub delay: Duration,
}

impl Default for OptionLimits {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        OptionLimits {
            retry_limit: 100,
            retry_interval: Duration::from_secs(DAY),
            request_timeout: Duration::from_secs(600),
            timeout_to_fail: Duration::from_secs(30 * DAY),
            delay: Duration::from_secs(30 * DAY),
        }
    }
}

impl OptionLimits {
    /// Checks `o` (and a msg's `delay`) against the maxima; the error names the option.
    pub fn check(&self, o: &TransOptions, delay: Option<Duration>) -> Result<(), String> {
        let over = |name: &str, v: u64, max: u64| {
            if v > max { Err(format!("{name} {v} is above the server's maximum {max}")) } else { Ok(()) }
        };
        over("retry_limit", o.retry_limit, self.retry_limit)?;
        over("retry_interval", o.retry_interval, self.retry_interval.as_secs())?;
        over("request_timeout", o.request_timeout, self.request_timeout.as_secs())?;
        over("timeout_to_fail", o.timeout_to_fail, self.timeout_to_fail.as_secs())?;
        over("delay", delay.map_or(0, |d| d.as_secs()), self.delay.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_omits_defaults_but_keeps_concurrent() {
        let o = TransOptions::default();
        assert_eq!(o.to_json(), r#"{"concurrent":false}"#);
        let mut o = TransOptions { retry_interval: 5, wait_result: true, ..Default::default() };
        o.branch_headers.insert("x-a".into(), "b".into());
        assert_eq!(TransOptions::from_json(&o.to_json()).ok(), Some(o));
        assert_eq!(TransOptions::from_json("").ok(), Some(TransOptions::default()));
    }

    #[test]
    fn options_above_the_limits_are_refused_by_name() {
        let l = OptionLimits::default();
        let ok = TransOptions { retry_limit: 100, request_timeout: 600, ..Default::default() };
        assert_eq!(l.check(&ok, Some(Duration::from_secs(3600))), Ok(()));
        let cases = [
            (TransOptions { retry_limit: 101, ..Default::default() }, None, "retry_limit"),
            (TransOptions { retry_interval: 86_401, ..Default::default() }, None, "retry_interval"),
            (TransOptions { request_timeout: u64::MAX, ..Default::default() }, None, "request_timeout"),
            (TransOptions { timeout_to_fail: 31 * 86_400, ..Default::default() }, None, "timeout_to_fail"),
            (TransOptions::default(), Some(Duration::from_secs(31 * 86_400)), "delay"),
        ];
        for (o, delay, name) in cases {
            let e = l.check(&o, delay).unwrap_err();
            assert!(e.starts_with(name) && e.contains("maximum"), "{e}");
        }
    }
}
