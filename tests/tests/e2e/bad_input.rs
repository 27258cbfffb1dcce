//! Bad submits: HTTP 400 with a message naming the problem, and nothing stored.

use dtx_tests::{Participant, Saga, TestServer};
use serde_json::{Value, json};

const MAX_BODY: usize = 4096;
const MAX_STEPS: usize = 3;

async fn server() -> TestServer {
    TestServer::spawn(|c| {
        c.max_body_bytes = MAX_BODY;
        c.engine.max_steps = MAX_STEPS;
    })
    .await
}

fn good(p: &Participant, gid: &str) -> Value {
    Saga::new(gid).step(p.url("/A0"), p.url("/C0"), "{}").step(p.url("/A1"), p.url("/C1"), "{}").json()
}

/// Applies `edit` to a good body.
fn with(p: &Participant, gid: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut v = good(p, gid);
    edit(&mut v);
    v.to_string()
}

async fn stored_count(s: &TestServer) -> usize {
    let (code, all) = s.get("/all?limit=1000").await;
    assert_eq!(code, 200, "{all}");
    all["transactions"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_submits_are_rejected_with_400_and_store_nothing() {
    let s = server().await;
    let p = Participant::spawn().await;
    let big_payload = "x".repeat(MAX_BODY + 100);
    // (case, body, the gid it would have used, words the message must contain)
    let cases: Vec<(&str, String, &str, &[&str])> = vec![
        ("malformed JSON", r#"{"gid":"bad-json","trans_type":"saga","#.into(), "bad-json", &["JSON"]),
        ("not an object", "[1,2]".into(), "", &["JSON"]),
        ("wrong type", with(&p, "bad-type", |v| v["steps"] = json!("abc")), "bad-type", &["JSON"]),
        ("missing gid", with(&p, "", |v| drop(v.as_object_mut().unwrap().remove("gid"))), "", &["gid"]),
        ("empty gid", with(&p, "", |_| {}), "", &["gid"]),
        ("gid with a space", with(&p, "bad gid", |_| {}), "bad gid", &["gid"]),
        (
            "unknown trans_type",
            with(&p, "bad-tt", |v| v["trans_type"] = json!("sagaa")),
            "bad-tt",
            &["trans_type", "sagaa"],
        ),
        (
            "missing trans_type",
            with(&p, "bad-tt2", |v| drop(v.as_object_mut().unwrap().remove("trans_type"))),
            "bad-tt2",
            &["trans_type"],
        ),
        (
            "steps/payloads mismatch",
            with(&p, "bad-count", |v| v["payloads"] = json!(["{}"])),
            "bad-count",
            &["2 steps", "1 payloads"],
        ),
        (
            "empty steps",
            with(&p, "bad-empty", |v| {
                v["steps"] = json!([]);
                v["payloads"] = json!([]);
            }),
            "bad-empty",
            &["step"],
        ),
        (
            "ftp URL",
            with(&p, "bad-ftp", |v| v["steps"][1]["compensate"] = json!("ftp://127.0.0.1/x")),
            "bad-ftp",
            &["ftp", "scheme"],
        ),
        (
            "not a URL",
            with(&p, "bad-url", |v| v["steps"][0]["action"] = json!("TransOut")),
            "bad-url",
            &["URL"],
        ),
        (
            "body over the limit",
            with(&p, "bad-big", |v| v["payloads"][0] = json!(big_payload)),
            "bad-big",
            &["limit", "4096"],
        ),
        (
            "too many steps",
            Saga::new("bad-many")
                .step(p.url("/A"), p.url("/C"), "{}")
                .step(p.url("/A"), p.url("/C"), "{}")
                .step(p.url("/A"), p.url("/C"), "{}")
                .step(p.url("/A"), p.url("/C"), "{}")
                .json()
                .to_string(),
            "bad-many",
            &["too many steps", "3"],
        ),
        (
            "negative retry_interval",
            with(&p, "bad-neg", |v| v["retry_interval"] = json!(-1)),
            "bad-neg",
            &["retry_interval"],
        ),
        (
            "negative timeout_to_fail",
            with(&p, "bad-neg2", |v| v["timeout_to_fail"] = json!(-5)),
            "bad-neg2",
            &["timeout_to_fail"],
        ),
        (
            "orders naming a missing step",
            with(&p, "bad-orders", |v| v["custom_data"] = json!(r#"{"orders":{"1":[5]},"concurrent":true}"#)),
            "bad-orders",
            &["orders", "5"],
        ),
        (
            "orders forming a cycle",
            with(&p, "bad-cycle", |v| {
                v["custom_data"] = json!(r#"{"orders":{"0":[1],"1":[0]},"concurrent":true}"#)
            }),
            "bad-cycle",
            &["cycle"],
        ),
        (
            "custom_data not JSON",
            with(&p, "bad-custom", |v| v["custom_data"] = json!("{orders")),
            "bad-custom",
            &["custom_data"],
        ),
        (
            "bad branch header",
            with(&p, "bad-header", |v| v["branch_headers"] = json!({"bad header": "x"})),
            "bad-header",
            &["branch_headers"],
        ),
    ];

    for (case, body, gid, words) in &cases {
        let (code, reply) = s.submit_raw(body.clone()).await;
        assert_eq!(code, 400, "{case}: {reply}");
        let message = reply["message"].as_str().unwrap_or_else(|| panic!("{case}: no message in {reply}"));
        for w in *words {
            assert!(message.contains(w), "{case}: message {message:?} should mention {w:?}");
        }
        assert!(!message.contains("FAILURE") && !message.contains("ONGOING"), "{case}: {message}");
        if !gid.is_empty() {
            let (code, q) = s.get(&format!("/query?gid={}", gid.replace(' ', "%20"))).await;
            assert_eq!(code, 200);
            assert_eq!(q["transaction"], Value::Null, "{case}: nothing stored, got {q}");
        }
    }
    assert_eq!(stored_count(&s).await, 0, "no bad submit stored anything");
    assert!(p.calls().is_empty(), "no participant was called");

    // The same server still accepts a good saga.
    let (code, reply) = s.submit(&good(&p, "good")).await;
    assert_eq!(code, 200, "{reply}");
    s.wait_status("good", "succeed").await;
    assert_eq!(stored_count(&s).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misused_workflow_requests_are_rejected_without_storing() {
    let s = server().await;
    let p = Participant::spawn().await;
    // A workflow is created by prepareWorkflow and finished by a submit with req_extra.status.
    let cases = [
        ("submit", with(&p, "wf-no-status", |v| v["trans_type"] = json!("workflow")), "status"),
        ("prepare", with(&p, "wf-prepare", |v| v["trans_type"] = json!("workflow")), "prepareWorkflow"),
        (
            "prepareWorkflow",
            with(&p, "wf-bad-custom", |v| {
                v["trans_type"] = json!("workflow");
                v["custom_data"] = json!("{not json");
            }),
            "custom_data",
        ),
    ];
    for (op, body, word) in cases {
        let resp = s.http().post(format!("{}/{op}", s.base_url())).body(body.clone()).send().await.expect(op);
        let (code, reply) = dtx_tests::server::read(resp).await;
        assert_eq!(code, 400, "{op}: {reply}");
        assert!(reply["message"].as_str().unwrap_or_default().contains(word), "{op}: {reply}");
        let gid: Value = serde_json::from_str::<Value>(&body).expect("json")["gid"].clone();
        assert_eq!(s.query(gid.as_str().unwrap_or_default()).await["transaction"], Value::Null);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_just_under_the_limit_is_accepted() {
    let s = server().await;
    let p = Participant::spawn().await;
    let filler = "y".repeat(MAX_BODY - 600);
    let body = with(&p, "almost-big", |v| v["payloads"][0] = json!(filler));
    assert!(body.len() < MAX_BODY, "{}", body.len());
    let (code, reply) = s.submit_raw(body).await;
    assert_eq!(code, 200, "{reply}");
    s.wait_status("almost-big", "succeed").await;
}
