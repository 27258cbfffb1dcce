//! Workflow as DTM's Go SDK (`client/workflow`) plays it over HTTP: `prepareWorkflow` (decoded
//! for `transaction.status/result/rollback_reason` and `progresses`), one `registerBranch` per
//! finished step (`op`, `status`, `data`), and a `submit` with `req_extra`. A replay skips the
//! recorded steps; a crashed client's workflow is resumed through its callback.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::routing::post;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use dtx_tests::{Client, Participant, Reply, TestServer, advance_to_due, branch_statuses};
use serde_json::{Value, json};
use tokio::net::TcpListener;

const NAME: &str = "wf-transfer";
const INPUT: &[u8] = br#"{"amount":30}"#;

/// The callbacks the client's service received: query parameters and body.
type Seen = Arc<std::sync::Mutex<Vec<(Value, Vec<u8>)>>>;

/// The SDK's side of one workflow: its client, its steps (participant URLs called in order,
/// each a `Do` step whose answer is its result), its callback URL.
#[derive(Clone)]
struct Player {
    client: Client,
    steps: Vec<String>,
    callback: String,
}

impl Player {
    /// `workflow.Execute(name, gid, input)`: `Ok(result)` when it succeeded (now or before),
    /// `Err` when a step errored (nothing submitted: the workflow stays prepared).
    async fn execute(&self, gid: &str) -> Result<Vec<u8>, String> {
        let custom = json!({"name": NAME, "data": STANDARD.encode(INPUT)}).to_string();
        let body = json!({"gid": gid, "trans_type": "workflow", "custom_data": custom,
            "query_prepared": self.callback, "protocol": "", "steps": null, "payloads": null, "concurrent": false});
        let (code, reply) = self.client.post("prepareWorkflow", &body).await;
        assert_eq!(code, 200, "prepareWorkflow: {reply}");
        let t = &reply["transaction"];
        match t["status"].as_str() {
            Some("succeed") => {
                return Ok(STANDARD.decode(t["result"].as_str().unwrap_or_default()).expect("base64"));
            }
            Some("failed") => return Err(format!("FAILURE: {}", t["rollback_reason"])),
            _ => {}
        }
        let recorded: Vec<(String, String, Vec<u8>)> = reply["progresses"]
            .as_array()
            .expect("progresses is an array")
            .iter()
            .map(|p| {
                let data =
                    STANDARD.decode(p["bin_data"].as_str().unwrap_or_default()).expect("bin_data is base64");
                (
                    p["branch_id"].as_str().unwrap_or_default().to_owned(),
                    p["op"].as_str().unwrap_or_default().to_owned(),
                    data,
                )
            })
            .collect();
        let mut result = Vec::new();
        for (i, url) in self.steps.iter().enumerate() {
            let branch_id = format!("{:02}", i + 1);
            if let Some((_, _, data)) = recorded.iter().find(|(b, op, _)| *b == branch_id && op == "action") {
                result.extend_from_slice(data);
                continue;
            }
            let resp =
                self.client.http().post(url).body(INPUT.to_vec()).send().await.map_err(|e| e.to_string())?;
            if resp.status().as_u16() != 200 {
                return Err(format!("step {branch_id}: {}", resp.status()));
            }
            let data = resp.bytes().await.map_err(|e| e.to_string())?.to_vec();
            let reg = json!({"gid": gid, "trans_type": "workflow", "branch_id": branch_id, "op": "action",
                "status": "succeed", "data": String::from_utf8_lossy(&data)});
            let (code, reply) = self.client.register_branch(&reg).await;
            assert_eq!(code, 200, "registerBranch {branch_id}: {reply}");
            result.extend_from_slice(&data);
        }
        let submit = json!({"gid": gid, "trans_type": "workflow",
            "req_extra": {"status": "succeed", "rollback_reason": "", "result": STANDARD.encode(&result)}});
        let (code, reply) = self.client.submit(&submit).await;
        assert_eq!(code, 200, "submit: {reply}");
        Ok(result)
    }
}

async fn player(s: &TestServer, p: &Participant, callback: String) -> Player {
    Player { client: Client::of(s), steps: vec![p.url("/TransOut"), p.url("/TransIn")], callback }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_workflow_does_not_rerun_recorded_steps() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransOut", [Reply::status(200, "out-done")]);
    // TransIn errors once: the first execution stops there, unsubmitted.
    p.script("/TransIn", [Reply::error(), Reply::status(200, "in-done")]);
    let w = player(&s, &p, p.url("/unused-callback")).await;

    assert!(w.execute("wf-replay").await.is_err(), "step 02 errored");
    let q = s.query("wf-replay").await;
    assert_eq!(q["transaction"]["status"], "prepared");
    assert_eq!(branch_statuses(&q), ["succeed"], "only the finished step is recorded");

    assert_eq!(w.execute("wf-replay").await.expect("resumed"), b"out-donein-done");
    assert_eq!(p.calls_for("/TransOut").len(), 1, "the recorded step did not run again");
    assert_eq!(p.calls_for("/TransIn").len(), 2);
    let q = s.wait_status("wf-replay", "succeed").await;
    assert_eq!(q["transaction"]["result"], STANDARD.encode("out-donein-done"));
    assert_eq!(branch_statuses(&q), ["succeed", "succeed"]);

    // A finished workflow executed again returns its stored result and runs nothing.
    assert_eq!(w.execute("wf-replay").await.expect("stored result"), b"out-donein-done");
    assert_eq!(p.calls().len(), 3);
    // Its submit again (a client retry) is fine; a different end is refused.
    let again = json!({"gid": "wf-replay", "trans_type": "workflow", "req_extra": {"status": "succeed"}});
    assert_eq!(w.client.submit(&again).await.0, 200);
    let other = json!({"gid": "wf-replay", "trans_type": "workflow", "req_extra": {"status": "failed"}});
    assert_eq!(w.client.submit(&other).await.0, 409);
    assert!(p.calls_for("/unused-callback").is_empty(), "a workflow that is not due is never called back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_clients_workflow_is_resumed_through_its_callback() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    p.script("/TransIn", [Reply::error()]);
    // The client's callback service: dtx POSTs the workflow's input with `gid` and `op` = its
    // name; the handler executes the workflow (as the SDK's `ExecuteByQS` does).
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let callback = format!("http://{}/workflow/resume", listener.local_addr().expect("addr"));
    let w = Arc::new(player(&s, &p, callback.clone()).await);
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/workflow/resume",
            post(
                async |State((w, seen)): State<(Arc<Player>, Seen)>,
                       Query(q): Query<std::collections::HashMap<String, String>>,
                       body: axum::body::Bytes| {
                    seen.lock().expect("seen").push((json!(q), body.to_vec()));
                    match w.execute(q.get("gid").map(String::as_str).unwrap_or_default()).await {
                        Ok(_) => (axum::http::StatusCode::OK, "{}"),
                        Err(_) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "{}"),
                    }
                },
            ),
        )
        .with_state((w.clone(), seen.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await });

    // The client crashes after step 01 (its step 02 errored and nobody retries it).
    assert!(w.execute("wf-crash").await.is_err());
    s.cron().await;
    assert!(seen.lock().expect("seen").is_empty(), "not called back before it is due");
    let q = s.query("wf-crash").await;
    assert_eq!(q["transaction"]["status"], "prepared");

    advance_to_due(&s, "wf-crash").await;
    s.cron().await;
    let q = s.wait_status("wf-crash", "succeed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed"]);
    let calls = seen.lock().expect("seen").clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    let (query, body) = &calls[0];
    assert_eq!(body, INPUT, "the callback gets the workflow's input");
    assert_eq!(query["gid"], "wf-crash");
    assert_eq!(query["op"], NAME, "op = the workflow's name");
    assert_eq!(query["branch_id"], "00");
    assert_eq!(query["trans_type"], "workflow");
    assert_eq!(p.calls_for("/TransOut").len(), 1, "step 01 ran once, before the crash");

    // Finished: no more callbacks.
    s.advance(std::time::Duration::from_secs(600));
    assert_eq!(s.cron().await, 0);
    assert_eq!(seen.lock().expect("seen").len(), 1);
}
