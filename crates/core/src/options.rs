//! Per-transaction options, as DTM's SDKs send them (all durations in whole seconds on the wire).

use std::collections::BTreeMap;

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
}
