//! Topics: subscriptions stored as key-value rows, and msg steps `topic://<name>` fanned out
//! to every subscriber (DTM's topic_test.go and TestMsgNormal / TestMsgTopicNotFoundFailed).

use dtx_tests::{Client, Msg, Participant, TestServer, branch, branch_statuses, status_of};
use serde_json::{Value, json};

fn kv_keys(reply: &Value) -> Vec<String> {
    reply["kv"]
        .as_array()
        .unwrap_or_else(|| panic!("no kv array: {reply}"))
        .iter()
        .map(|r| r["k"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The subscriber list of a topic (from queryKV), as (url, remark) pairs, and its version.
async fn subscribers(c: &Client, topic: &str) -> (Vec<(String, String)>, i64) {
    let (code, reply) = c.get("queryKV", &[("cat", "topics"), ("key", topic)]).await;
    assert_eq!(code, 200, "{reply}");
    let rows = reply["kv"].as_array().unwrap_or_else(|| panic!("{reply}"));
    assert_eq!(rows.len(), 1, "{reply}");
    let row = &rows[0];
    assert_eq!(row["cat"], "topics");
    assert_eq!(row["k"], topic);
    let list: Value = serde_json::from_str(row["v"].as_str().unwrap_or_default()).expect("v is JSON");
    let subs = list
        .as_array()
        .unwrap_or_else(|| panic!("v is an array: {row}"))
        .iter()
        .map(|s| {
            (
                s["url"].as_str().unwrap_or_default().to_owned(),
                s["remark"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    (subs, row["version"].as_i64().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_message_reaches_every_subscriber() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    for (url, remark) in [(p.url("/TransIn1"), "first"), (p.url("/TransIn2?shard=2"), "second")] {
        let (code, reply) = c.subscribe("trans", &url, remark).await;
        assert_eq!(code, 200, "{reply}");
        assert_eq!(reply["dtm_result"], "SUCCESS");
    }
    let (subs, version) = subscribers(&c, "trans").await;
    assert_eq!(
        subs,
        [(p.url("/TransIn1"), "first".to_owned()), (p.url("/TransIn2?shard=2"), "second".to_owned())]
    );
    assert_eq!(version, 2);

    // One topic step fanned out, then a plain step.
    let msg = Msg::new("topic-msg", p.url("/QueryPrepared"))
        .step("topic://trans", r#"{"amount":30}"#)
        .step(p.url("/Audit"), r#"{"audit":true}"#);
    let (code, reply) = c.submit(&msg.json()).await;
    assert_eq!(code, 200, "{reply}");
    let q = s.wait_status("topic-msg", "succeed").await;
    assert_eq!(branch_statuses(&q), ["succeed", "succeed", "succeed"]);
    assert_eq!(branch(&q, "01-01", "action")["url"], p.url("/TransIn1"));
    assert_eq!(branch(&q, "01-02", "action")["url"], p.url("/TransIn2?shard=2"));
    assert_eq!(branch(&q, "02", "action")["url"], p.url("/Audit"));

    for (path, branch_id) in [("/TransIn1", "01-01"), ("/TransIn2", "01-02")] {
        let calls = p.calls_for(path);
        assert_eq!(calls.len(), 1, "{path}: {:?}", p.paths());
        assert_eq!(calls[0].param("branch_id"), branch_id);
        assert_eq!(calls[0].param("op"), "action");
        assert_eq!(calls[0].param("trans_type"), "msg");
        assert_eq!(calls[0].body, br#"{"amount":30}"#, "every subscriber gets the payload");
    }
    assert_eq!(p.calls_for("/TransIn2")[0].param("shard"), "2", "the subscriber's own query is kept");
    assert_eq!(p.calls_for("/Audit")[0].param("branch_id"), "02");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_unsubscribe_and_delete() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    let (a, b) = (p.url("/A"), p.url("/B"));
    assert_eq!(c.subscribe("t", &a, "ra").await.0, 200);
    assert_eq!(c.subscribe("t", &b, "rb").await.0, 200);

    // Duplicate: refused, nothing changed.
    let (code, reply) = c.subscribe("t", &a, "again").await;
    assert_eq!(code, 409, "duplicate subscribe: {reply}");
    assert!(reply["message"].as_str().unwrap_or_default().contains("already"), "{reply}");
    let (subs, version) = subscribers(&c, "t").await;
    assert_eq!(subs.len(), 2);
    assert_eq!(version, 2);

    // Bad input.
    for (topic, url) in [("", a.as_str()), ("t", ""), ("t", "ftp://h/x"), ("t", "not a url")] {
        let (code, reply) = c.subscribe(topic, url, "").await;
        assert_eq!(code, 400, "subscribe({topic:?}, {url:?}): {reply}");
    }

    // Unsubscribe.
    let (code, reply) = c.unsubscribe("t", &a).await;
    assert_eq!(code, 200, "{reply}");
    let (subs, version) = subscribers(&c, "t").await;
    assert_eq!(subs, [(b.clone(), "rb".to_owned())]);
    assert_eq!(version, 3);
    let (code, reply) = c.unsubscribe("t", &a).await;
    assert_eq!(code, 404, "unsubscribe of an unknown url: {reply}");
    let (code, reply) = c.unsubscribe("nope", &a).await;
    assert_eq!(code, 404, "unsubscribe from an unknown topic: {reply}");
    for (topic, url) in [("", a.as_str()), ("t", "")] {
        let (code, reply) = c.unsubscribe(topic, url).await;
        assert_eq!(code, 400, "unsubscribe({topic:?}, {url:?}): {reply}");
    }

    // Delete.
    let (code, reply) = c.delete("topic/t").await;
    assert_eq!(code, 200, "{reply}");
    let (code, reply) = c.get("queryKV", &[("cat", "topics"), ("key", "t")]).await;
    assert_eq!(code, 200);
    assert_eq!(reply["kv"], json!([]), "gone: {reply}");
    let (code, reply) = c.delete("topic/t").await;
    assert_eq!(code, 404, "delete of an unknown topic: {reply}");
    // A deleted topic can be created again from scratch.
    assert_eq!(c.subscribe("t", &a, "").await.0, 200);
    assert_eq!(subscribers(&c, "t").await.1, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_kv_pages_newest_first() {
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    for topic in ["t1", "t2", "t3"] {
        assert_eq!(c.subscribe(topic, &p.url(&format!("/{topic}")), "").await.0, 200);
    }
    let (code, page) = c.get("scanKV", &[("cat", "topics"), ("limit", "2")]).await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(kv_keys(&page), ["t3", "t2"]);
    let cursor = page["next_position"].as_str().unwrap_or_default().to_owned();
    assert!(!cursor.is_empty(), "a full page has a cursor: {page}");
    let (code, page) = c.get("scanKV", &[("cat", "topics"), ("limit", "2"), ("position", &cursor)]).await;
    assert_eq!(code, 200, "{page}");
    assert_eq!(kv_keys(&page), ["t1"]);
    assert_eq!(page["next_position"], "", "the last page has no cursor");
    let row = &page["kv"][0];
    for key in ["id", "create_time", "update_time", "cat", "k", "v", "version"] {
        assert!(row.get(key).is_some(), "kv.{key} missing: {row}");
    }

    let (_, all) = c.get("scanKV", &[("cat", "topics")]).await;
    assert_eq!(kv_keys(&all), ["t3", "t2", "t1"]);
    assert_eq!(all["next_position"], "");
    let (_, other) = c.get("scanKV", &[("cat", "nothing")]).await;
    assert_eq!(other["kv"], json!([]));
    // queryKV without a key lists the category.
    let (_, whole) = c.get("queryKV", &[("cat", "topics")]).await;
    assert_eq!(kv_keys(&whole).len(), 3, "{whole}");
    let (_, missing) = c.get("queryKV", &[("cat", "topics"), ("key", "t9")]).await;
    assert_eq!(missing["kv"], json!([]));
    for bad in [("limit", "0"), ("limit", "x"), ("position", "abc")] {
        let (code, reply) = c.get("scanKV", &[("cat", "topics"), bad]).await;
        assert_eq!(code, 400, "{bad:?}: {reply}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_topic_without_subscribers_is_refused_and_not_stored() {
    // DTM's TestMsgTopicNotFoundFailed.
    let s = TestServer::start().await;
    let c = Client::of(&s);
    let p = Participant::spawn().await;
    // "emptied": every subscriber left; "deleted": the topic was deleted; "never": no such topic.
    assert_eq!(c.subscribe("emptied", &p.url("/A"), "").await.0, 200);
    assert_eq!(c.unsubscribe("emptied", &p.url("/A")).await.0, 200);
    assert_eq!(c.subscribe("deleted", &p.url("/A"), "").await.0, 200);
    assert_eq!(c.delete("topic/deleted").await.0, 200);

    for topic in ["emptied", "deleted", "never"] {
        let gid = format!("topic-none-{topic}");
        let msg = Msg::new(&gid, p.url("/QueryPrepared")).step(format!("topic://{topic}"), "{}");
        for op in ["submit", "prepare"] {
            let (code, reply) = c.post(op, &msg.json()).await;
            assert_eq!(code, 400, "{op} to topic {topic}: {reply}");
            let text = reply["message"].as_str().unwrap_or_default();
            assert!(text.contains(topic) && text.contains("not found"), "{reply}");
            assert_eq!(status_of(&s.query(&gid).await), "", "nothing stored for {gid}");
        }
    }
    let bad = Msg::new("topic-empty-name", p.url("/QueryPrepared")).step("topic://", "{}");
    assert_eq!(c.submit(&bad.json()).await.0, 400);
    assert!(p.calls().is_empty());
}
