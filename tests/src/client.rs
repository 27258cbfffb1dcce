//! The client side of DTM over plain HTTP, as its SDKs speak it (spec 4.5): the test is the
//! client. [`Client`] calls the `/api/dtmsvr` routes; [`Tcc`] drives a TCC (prepare, then for
//! each branch registerBranch and the try call, then submit or abort); [`Msg`] builds 2-phase
//! message bodies.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::server::read;
use crate::{Participant, TestServer, time_ms};

/// A DTM HTTP client of one dtx server (`http://host:port/api/dtmsvr`).
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    http: reqwest::Client,
    /// POSTs go to `/api/json-rpc` as JSON-RPC 2.0 calls (the method = the route's name).
    json_rpc: bool,
}

impl Client {
    /// A client of the server at `base` (`http://127.0.0.1:PORT/api/dtmsvr`).
    pub fn new(base: impl Into<String>) -> Client {
        let http = reqwest::Client::builder().no_proxy().build().expect("http client");
        Client { base: base.into(), http, json_rpc: false }
    }

    /// A client whose POSTs (prepare, submit, abort, registerBranch) go through the JSON-RPC
    /// endpoint, as DTM's JSON-RPC SDK sends them (`id` "no-use"); the answers are mapped back
    /// to what the HTTP route would say (error null = 200, -32901 = 409, -32602 = 400, other
    /// errors = 500), so the same test code runs over both transports.
    pub fn json_rpc_of(s: &TestServer) -> Client {
        Client { json_rpc: true, ..Client::new(s.base_url()) }
    }

    /// A client of an in-process test server (a JSON-RPC one after
    /// [`TestServer::via_json_rpc`]).
    pub fn of(s: &TestServer) -> Client {
        if s.is_json_rpc() { Client::json_rpc_of(s) } else { Client::new(s.base_url()) }
    }

    /// `http://127.0.0.1:PORT/api/dtmsvr`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The plain HTTP client (no proxy).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `POST <base>/<op>` with a JSON body.
    pub async fn post(&self, op: &str, body: &Value) -> (u16, Value) {
        if self.json_rpc {
            return self.rpc(op, body).await;
        }
        self.post_raw(op, body.to_string()).await
    }

    /// `POST /api/json-rpc` with `method` = `op`, `params` = `body`; see [`Client::json_rpc_of`].
    async fn rpc(&self, op: &str, body: &Value) -> (u16, Value) {
        let root = self.base.trim_end_matches("/api/dtmsvr");
        let req = json!({"jsonrpc": "2.0", "id": "no-use", "method": op, "params": body});
        let resp = self
            .http
            .post(format!("{root}/api/json-rpc"))
            .json(&req)
            .send()
            .await
            .unwrap_or_else(|e| panic!("json-rpc {op}: {e}"));
        let (code, v) = read(resp).await;
        assert_eq!(code, 200, "the JSON-RPC endpoint always answers 200: {v}");
        assert_eq!((&v["jsonrpc"], &v["id"]), (&json!("2.0"), &json!("no-use")), "{v}");
        match v["error"]["code"].as_i64() {
            None => (
                200,
                if v["result"].is_null() { json!({"dtm_result": "SUCCESS"}) } else { v["result"].clone() },
            ),
            Some(code) => {
                let status = match code {
                    -32901 => 409,
                    -32602 => 400,
                    _ => 500,
                };
                let mut reply = json!({"message": v["error"]["message"], "rpc_code": code});
                if status == 409 {
                    reply["dtm_result"] = json!("FAILURE");
                }
                (status, reply)
            }
        }
    }

    /// `POST <base>/<op>` with raw bytes as a JSON body.
    pub async fn post_raw(&self, op: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .http
            .post(format!("{}/{op}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {op}: {e}"));
        read(resp).await
    }

    /// `GET <base>/<op>?<params>` (the values are percent-encoded).
    pub async fn get(&self, op: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/{op}{}", self.base, query_string(params)))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {op}: {e}"));
        read(resp).await
    }

    /// `DELETE <base>/<path>`.
    pub async fn delete(&self, path: &str) -> (u16, Value) {
        let resp = self
            .http
            .delete(format!("{}/{path}", self.base))
            .send()
            .await
            .unwrap_or_else(|e| panic!("DELETE {path}: {e}"));
        read(resp).await
    }

    /// `POST /prepare`.
    pub async fn prepare(&self, body: &Value) -> (u16, Value) {
        self.post("prepare", body).await
    }

    /// `POST /submit`.
    pub async fn submit(&self, body: &Value) -> (u16, Value) {
        self.post("submit", body).await
    }

    /// `POST /abort`.
    pub async fn abort(&self, body: &Value) -> (u16, Value) {
        self.post("abort", body).await
    }

    /// `POST /registerBranch` (a flat object; DTM's SDKs send only strings).
    pub async fn register_branch(&self, body: &Value) -> (u16, Value) {
        self.post("registerBranch", body).await
    }

    /// `POST /forceStop {"gid":gid}`.
    pub async fn force_stop(&self, gid: &str) -> (u16, Value) {
        self.post("forceStop", &json!({"gid": gid})).await
    }

    /// `POST /resetNextCronTime {"gid":gid}`.
    pub async fn reset_next_cron_time(&self, gid: &str) -> (u16, Value) {
        self.post("resetNextCronTime", &json!({"gid": gid})).await
    }

    /// `GET /subscribe?topic=&url=&remark=`.
    pub async fn subscribe(&self, topic: &str, url: &str, remark: &str) -> (u16, Value) {
        self.get("subscribe", &[("topic", topic), ("url", url), ("remark", remark)]).await
    }

    /// `GET /unsubscribe?topic=&url=`.
    pub async fn unsubscribe(&self, topic: &str, url: &str) -> (u16, Value) {
        self.get("unsubscribe", &[("topic", topic), ("url", url)]).await
    }

    /// `GET /query?gid=`; panics unless 200.
    pub async fn query(&self, gid: &str) -> Value {
        let (code, q) = self.get("query", &[("gid", gid)]).await;
        assert_eq!(code, 200, "query {gid}: {q}");
        q
    }
}

/// `?k=v&...`, percent-encoded ("" when there is nothing).
pub fn query_string(params: &[(&str, &str)]) -> String {
    if params.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> =
        params.iter().map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v))).collect();
    format!("?{}", pairs.join("&"))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A registerBranch body for a TCC branch, all values strings (DTM's SDK).
pub fn tcc_register_body(gid: &str, branch_id: &str, data: &str, confirm: &str, cancel: &str) -> Value {
    json!({
        "gid": gid,
        "trans_type": "tcc",
        "branch_id": branch_id,
        "data": data,
        "confirm": confirm,
        "cancel": cancel,
    })
}

/// A TCC global transaction, driven as `dtmcli.TccGlobalTransaction` does.
#[derive(Clone, Debug)]
pub struct Tcc {
    client: Client,
    gid: String,
}

impl Tcc {
    /// `prepare {"gid","trans_type":"tcc", <extra keys>}`; panics unless 200.
    pub async fn prepare(client: &Client, gid: &str, extra: Value) -> Tcc {
        let mut body = json!({"gid": gid, "trans_type": "tcc"});
        if let (Some(b), Value::Object(extra)) = (body.as_object_mut(), extra) {
            b.extend(extra);
        }
        let (code, reply) = client.prepare(&body).await;
        assert_eq!(code, 200, "prepare {gid}: {reply}");
        Tcc { client: client.clone(), gid: gid.to_owned() }
    }

    /// The gid.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// `{"gid","trans_type":"tcc"}`.
    pub fn body(&self) -> Value {
        json!({"gid": self.gid, "trans_type": "tcc"})
    }

    /// registerBranch with `<service>Confirm` / `<service>Cancel` of `p`; returns the answer.
    pub async fn register(
        &self,
        p: &Participant,
        branch_id: &str,
        service: &str,
        data: &str,
    ) -> (u16, Value) {
        let body = tcc_register_body(
            &self.gid,
            branch_id,
            data,
            &p.url(&format!("/{service}Confirm")),
            &p.url(&format!("/{service}Cancel")),
        );
        self.client.register_branch(&body).await
    }

    /// One SDK branch call: registerBranch (must answer 200), then the try `<service>Try` of
    /// `p`, called by the test itself. Returns the try's HTTP status.
    pub async fn branch(&self, p: &Participant, branch_id: &str, service: &str, data: &str) -> u16 {
        let (code, reply) = self.register(p, branch_id, service, data).await;
        assert_eq!(code, 200, "registerBranch {}/{branch_id}: {reply}", self.gid);
        self.call_try(&p.url(&format!("/{service}Try")), branch_id, data).await
    }

    /// POSTs a try URL with the SDK's query (`dtm`, `gid`, `trans_type=tcc`, `branch_id`,
    /// `op=try`); returns the HTTP status.
    pub async fn call_try(&self, url: &str, branch_id: &str, data: &str) -> u16 {
        let q = query_string(&[
            ("dtm", self.client.base_url()),
            ("gid", &self.gid),
            ("trans_type", "tcc"),
            ("branch_id", branch_id),
            ("op", "try"),
        ]);
        let resp = self
            .client
            .http()
            .post(format!("{url}{q}"))
            .header("content-type", "application/json")
            .body(data.to_owned())
            .send()
            .await
            .unwrap_or_else(|e| panic!("try {url}: {e}"));
        resp.status().as_u16()
    }

    /// `submit {"gid","trans_type":"tcc"}`.
    pub async fn submit(&self) -> (u16, Value) {
        self.client.submit(&self.body()).await
    }

    /// `abort {"gid","trans_type":"tcc","rollback_reason":reason}`.
    pub async fn abort(&self, reason: &str) -> (u16, Value) {
        let mut body = self.body();
        body["rollback_reason"] = json!(reason);
        self.client.abort(&body).await
    }
}

/// A 2-phase message body (the Go `dtmcli.Msg` wire format).
#[derive(Clone, Debug)]
pub struct Msg {
    gid: String,
    actions: Vec<String>,
    payloads: Vec<String>,
    query_prepared: String,
    options: Map<String, Value>,
}

impl Msg {
    /// An empty message with this gid and check-back URL.
    pub fn new(gid: &str, query_prepared: impl Into<String>) -> Msg {
        Msg {
            gid: gid.to_owned(),
            actions: Vec::new(),
            payloads: Vec::new(),
            query_prepared: query_prepared.into(),
            options: Map::new(),
        }
    }

    /// Adds a step (`msg.Add(action, payload)`); `action` may be `topic://<name>`.
    pub fn step(mut self, action: impl Into<String>, payload: &str) -> Msg {
        self.actions.push(action.into());
        self.payloads.push(payload.to_owned());
        self
    }

    /// Sets a top-level key (`timeout_to_fail`, `request_timeout`, `concurrent`...).
    pub fn option(mut self, key: &str, value: Value) -> Msg {
        self.options.insert(key.to_owned(), value);
        self
    }

    /// `custom_data` = `{"delay":secs}` (a JSON string, as the SDK writes it at submit).
    pub fn delay(self, secs: u64) -> Msg {
        self.option("custom_data", json!(json!({"delay": secs}).to_string()))
    }

    /// The gid.
    pub fn gid(&self) -> &str {
        &self.gid
    }

    /// The body: `{"gid","trans_type":"msg","concurrent":false,"protocol":"","steps",
    /// "payloads","query_prepared",...}`.
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("gid".into(), json!(self.gid));
        m.insert("trans_type".into(), json!("msg"));
        m.insert("concurrent".into(), json!(false));
        m.insert("protocol".into(), json!(""));
        let steps: Vec<Value> = self.actions.iter().map(|a| json!({"action": a})).collect();
        m.insert("steps".into(), Value::Array(steps));
        m.insert("payloads".into(), json!(self.payloads));
        m.insert("query_prepared".into(), json!(self.query_prepared));
        for (k, v) in &self.options {
            m.insert(k.clone(), v.clone());
        }
        Value::Object(m)
    }
}

/// Milliseconds until the transaction's `next_cron_time` (negative when overdue).
pub fn due_in_ms(s: &TestServer, q: &Value) -> i64 {
    time_ms(&q["transaction"]["next_cron_time"]) - s.now_ms()
}

/// Moves the clock just past the transaction's `next_cron_time` (read from `query`).
pub async fn advance_to_due(s: &TestServer, gid: &str) {
    let q = s.query(gid).await;
    let due_in = due_in_ms(s, &q);
    if due_in >= 0 {
        s.advance(Duration::from_millis(due_in as u64 + 100));
    }
}

/// Asserts DTM's timeout reason: `^Timeout after \d+ seconds$`.
pub fn assert_timeout_reason(reason: &str) {
    let digits = reason.strip_prefix("Timeout after ").and_then(|r| r.strip_suffix(" seconds"));
    assert!(
        digits.is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
        "reason should match ^Timeout after \\d+ seconds$: {reason:?}"
    );
}
