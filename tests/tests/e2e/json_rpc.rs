//! DTM's JSON-RPC 2.0 endpoint (`POST /api/json-rpc`, spec 2.4) and JSON-RPC participants
//! (spec 4.3). The saga and TCC cases of the HTTP suite run unchanged through the endpoint
//! ([`TestServer::via_json_rpc`] switches the test's client over); the rest checks the
//! envelope, DTM's error codes, and branches called as JSON-RPC methods.

use dtx_tests::{Participant, Reply, Saga, TestServer, branch_statuses};
use serde_json::{Value, json};

use crate::{saga, tcc};

async fn rpc_server() -> TestServer {
    let s = TestServer::start().await;
    s.via_json_rpc();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_normal_through_json_rpc() {
    saga::saga_normal_succeeds_and_calls_participants_like_dtm_on(&rpc_server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saga_rollback_through_json_rpc() {
    saga::saga_rollback_compensates_in_reverse_order_including_the_failed_step_on(&rpc_server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_normal_through_json_rpc() {
    tcc::tcc_normal_confirms_newest_first_one_at_a_time_on(&rpc_server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_rollback_through_json_rpc() {
    tcc::tcc_rollback_cancels_newest_first_and_keeps_the_reason_on(&rpc_server().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_timeout_through_json_rpc() {
    let s = rpc_server().await;
    tcc::times_out_and_is_cancelled(&s, "rpc-tcc-timeout", json!({"timeout_to_fail": 5})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcc_idempotency_through_json_rpc() {
    tcc::prepare_submit_and_abort_follow_dtm_idempotency_rules_on(&rpc_server().await).await;
}

/// Posts a raw body to the endpoint; the answer is always 200 and JSON.
async fn raw(s: &TestServer, body: &str) -> Value {
    let resp = s
        .http()
        .post(format!("{}/api/json-rpc", s.root_url()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("json-rpc");
    assert_eq!(resp.status().as_u16(), 200);
    resp.json().await.expect("JSON answer")
}

fn code(v: &Value) -> i64 {
    v["error"]["code"].as_i64().unwrap_or_else(|| panic!("an error answer: {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_and_error_codes_are_dtms() {
    let s = TestServer::start().await;
    let v = raw(&s, r#"{"jsonrpc":"2.0","id":"no-use","method":"newGid","params":{}}"#).await;
    assert!(v["error"].is_null(), "{v}");
    assert_eq!(v["id"], "no-use");
    assert_eq!(v["result"]["gid"].as_str().map(str::len), Some(22), "{v}");
    assert!(v["result"].get("dtm_result").is_none(), "no dtm_result in JSON-RPC results");

    assert_eq!(code(&raw(&s, "{not json").await), -32700);
    assert_eq!(code(&raw(&s, r#"{"jsonrpc":"2.0","id":"","method":"newGid"}"#).await), -32600, "empty id");
    assert_eq!(code(&raw(&s, r#"{"jsonrpc":"1.0","id":"x","method":"newGid"}"#).await), -32600);
    assert_eq!(code(&raw(&s, r#"{"jsonrpc":"2.0","id":"x","method":"query"}"#).await), -32601);
    let bad =
        raw(&s, r#"{"jsonrpc":"2.0","id":"x","method":"submit","params":{"gid":"g","trans_type":"nope"}}"#)
            .await;
    assert_eq!(code(&bad), -32602, "bad input: {bad}");
    assert!(s.query("g").await["transaction"].is_null(), "nothing stored");

    // A finished transaction cannot be submitted again: FAILURE = -32901.
    let body = r#"{"jsonrpc":"2.0","id":7,"method":"submit","params":{"gid":"rpc-done","trans_type":"saga",
        "steps":[{"action":"","compensate":""}],"payloads":["{}"],"wait_result":true,"protocol":"json-rpc"}}"#;
    let v = raw(&s, body).await;
    assert!(v["error"].is_null() && v["result"].is_null(), "{v}");
    assert_eq!(v["id"], 7);
    let q = s.query("rpc-done").await;
    assert_eq!(q["transaction"]["status"], "succeed");
    assert_eq!(q["transaction"]["protocol"], "json-rpc", "the protocol the params carry is stored");
    assert_eq!(code(&raw(&s, body).await), -32901);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_participants_are_called_as_methods() {
    let s = rpc_server().await;
    let p = Participant::spawn().await;
    let ok = r#"{"jsonrpc":"2.0","id":"1","error":null,"result":{}}"#;
    let refused = r#"{"jsonrpc":"2.0","id":"1","error":{"code":-32901,"message":"Insufficient balance"},"result":null}"#;
    let ongoing = r#"{"jsonrpc":"2.0","id":"1","error":{"code":-32902,"message":"not yet"},"result":null}"#;
    // TransOut succeeds; TransIn refuses (FAILURE); TransIn's compensation is ONGOING once.
    p.script("/rpc", [Reply::status(200, ok), Reply::status(200, refused), Reply::status(200, ongoing)]);
    let url = |m: &str| p.url(&format!("/rpc?method={m}"));
    let saga = Saga::new("rpc-participants")
        .step(url("TransOut"), url("TransOutRevert"), r#"{"amount":30}"#)
        .step(url("TransIn"), url("TransInRevert"), r#"{"amount":30}"#);
    let mut body = saga.json();
    body["protocol"] = json!("json-rpc");
    let (code, reply) = s.submit(&body).await;
    assert_eq!(code, 200, "{reply}");
    s.wait_idle("rpc-participants").await;
    dtx_tests::advance_to_due(&s, "rpc-participants").await;
    s.cron().await;
    let q = s.wait_status("rpc-participants", "failed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed", "succeed", "failed"]);

    let calls = p.calls_for("/rpc");
    let methods: Vec<String> = calls
        .iter()
        .map(|c| {
            let v: Value = serde_json::from_slice(&c.body).expect("a JSON-RPC request");
            assert_eq!(v["jsonrpc"], "2.0");
            assert!(v["id"].as_str().is_some_and(|id| !id.is_empty()), "{v}");
            assert_eq!(v["params"]["amount"], 30, "the payload's keys are in params: {v}");
            assert_eq!(v["params"]["gid"], "rpc-participants");
            assert_eq!(v["params"]["trans_type"], "saga");
            format!(
                "{} {} {}",
                v["method"].as_str().unwrap_or(""),
                v["params"]["branch_id"].as_str().unwrap_or(""),
                v["params"]["op"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        methods,
        [
            "TransOut 01 action",
            "TransIn 02 action",
            "TransInRevert 02 compensate",
            "TransInRevert 02 compensate",
            "TransOutRevert 01 compensate"
        ]
    );
    assert!(calls.iter().all(|c| c.method == "POST"));
    assert_eq!(
        q["transaction"]["rollback_reason"].as_str().map(|r| r.contains("Insufficient balance")),
        Some(true),
        "{q}"
    );
}
