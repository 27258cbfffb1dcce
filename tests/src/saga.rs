//! Saga submit bodies exactly as DTM's Go SDK sends them, and readers of `query` answers.

use serde_json::{Map, Value, json};

/// A saga submit body under construction (the Go `dtmcli.Saga` wire format).
#[derive(Clone, Debug)]
pub struct Saga {
    gid: String,
    steps: Vec<(String, String)>,
    payloads: Vec<String>,
    custom_data: Option<String>,
    options: Map<String, Value>,
}

impl Saga {
    /// An empty saga with this gid.
    pub fn new(gid: &str) -> Saga {
        Saga {
            gid: gid.to_owned(),
            steps: Vec::new(),
            payloads: Vec::new(),
            custom_data: None,
            options: Map::new(),
        }
    }

    /// Adds a step (`saga.Add(action, compensate, payload)`); the payload is the JSON text.
    pub fn step(mut self, action: impl Into<String>, compensate: impl Into<String>, payload: &str) -> Saga {
        self.steps.push((action.into(), compensate.into()));
        self.payloads.push(payload.to_owned());
        self
    }

    /// `EnableConcurrent()` plus `AddBranchOrder`s: `custom_data` becomes
    /// `{"orders":<orders>,"concurrent":true}` (a JSON string, as the SDK writes it).
    pub fn concurrent(mut self, orders: Value) -> Saga {
        self.custom_data = Some(json!({"orders": orders, "concurrent": true}).to_string());
        self
    }

    /// Sets a top-level option key (`wait_result`, `retry_interval`, `branch_headers`...).
    pub fn option(mut self, key: &str, value: Value) -> Saga {
        self.options.insert(key.to_owned(), value);
        self
    }

    /// `WaitResult = true`.
    pub fn wait_result(self) -> Saga {
        self.option("wait_result", json!(true))
    }

    /// The body: `{"gid","trans_type":"saga","concurrent":false,"protocol":"","steps","payloads",...}`.
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("gid".into(), json!(self.gid));
        m.insert("trans_type".into(), json!("saga"));
        m.insert("concurrent".into(), json!(false));
        m.insert("protocol".into(), json!(""));
        let steps: Vec<Value> =
            self.steps.iter().map(|(a, c)| json!({"action": a, "compensate": c})).collect();
        m.insert("steps".into(), Value::Array(steps));
        m.insert("payloads".into(), json!(self.payloads));
        if let Some(c) = &self.custom_data {
            m.insert("custom_data".into(), json!(c));
        }
        for (k, v) in &self.options {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

/// The global status in a `query` answer ("" when the transaction is null).
pub fn status_of(query: &Value) -> String {
    query["transaction"]["status"].as_str().unwrap_or_default().to_owned()
}

/// The branch statuses of a `query` answer, in row order (compensate, action per step).
pub fn branch_statuses(query: &Value) -> Vec<String> {
    query["branches"]
        .as_array()
        .map(|bs| bs.iter().map(|b| b["status"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

/// The branch row `(branch_id, op)` of a `query` answer; panics when missing.
pub fn branch<'a>(query: &'a Value, branch_id: &str, op: &str) -> &'a Value {
    query["branches"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["branch_id"] == branch_id && b["op"] == op))
        .unwrap_or_else(|| panic!("no branch {branch_id}/{op} in {query}"))
}

/// An RFC 3339 timestamp of a `query` answer, in milliseconds since the epoch.
pub fn time_ms(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    chrono::DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("bad timestamp {text}: {e}"))
        .timestamp_millis()
}
