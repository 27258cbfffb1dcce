//! The small API routes: ping, version, newGid, query, all (DTM's api_test.go).

use dtx_tests::{Participant, Reply, Saga, TestServer, time_ms};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_answers_pong_to_any_method() {
    let s = TestServer::start().await;
    let url = format!("{}/api/ping", s.root_url());
    for method in [reqwest::Method::GET, reqwest::Method::POST, reqwest::Method::PUT] {
        let resp = s.http().request(method.clone(), &url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{method}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body, json!({"msg": "pong"}), "{method}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_and_new_gid() {
    let s = TestServer::start().await;
    let (code, v) = s.get("/version").await;
    assert_eq!(code, 200);
    assert!(v["version"].as_str().is_some_and(|v| v.starts_with('v')), "{v}");

    let mut gids = Vec::new();
    for _ in 0..2 {
        let (code, g) = s.get("/newGid").await;
        assert_eq!(code, 200);
        assert_eq!(g["dtm_result"], "SUCCESS");
        let gid = g["gid"].as_str().unwrap_or_default().to_owned();
        assert_eq!(gid.len(), 22, "{gid}");
        assert!(gid.bytes().all(|b| b.is_ascii_alphanumeric()), "{gid}");
        gids.push(gid);
    }
    assert_ne!(gids[0], gids[1]);

    // A newGid gid is usable as is.
    let p = Participant::spawn().await;
    let saga = Saga::new(&gids[0]).step(p.url("/A"), p.url("/C"), "{}").wait_result();
    assert_eq!(s.submit(&saga.json()).await.0, 200);
    assert_eq!(s.status(&gids[0]).await, "succeed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_unknown_gid_and_missing_gid() {
    let s = TestServer::start().await;
    let (code, q) = s.get("/query?gid=nobody").await;
    assert_eq!(code, 200);
    assert_eq!(q, json!({"transaction": null, "branches": []}), "branches is [], not null");

    for path in ["/query", "/query?gid="] {
        let (code, body) = s.get(path).await;
        assert_eq!(code, 400, "{path}: {body}");
        assert!(body["message"].as_str().unwrap_or_default().contains("gid"), "{path}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_shows_dtm_keys() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let saga = Saga::new("api-keys").step(p.url("/A"), p.url("/C"), r#"{"x":1}"#).wait_result();
    s.submit(&saga.json()).await;
    let q = s.query("api-keys").await;
    let t = &q["transaction"];
    for key in ["id", "create_time", "update_time", "gid", "trans_type", "status", "protocol", "finish_time"]
    {
        assert!(t.get(key).is_some(), "transaction.{key} missing: {t}");
    }
    assert_eq!(t["trans_type"], "saga");
    assert_eq!(t["protocol"], "http");
    assert!(time_ms(&t["finish_time"]) >= time_ms(&t["create_time"]));
    for b in q["branches"].as_array().unwrap() {
        for key in ["id", "create_time", "update_time", "gid", "branch_id", "op", "status"] {
            assert!(b.get(key).is_some(), "branch.{key} missing: {b}");
        }
    }
}

/// Three succeeded sagas and one failed one, oldest first.
async fn four_sagas(s: &TestServer, p: &Participant) -> Vec<String> {
    p.script("/Fail", [Reply::failure("no")]);
    let mut gids = Vec::new();
    for i in 0..4 {
        let gid = format!("all-{i}");
        let action = if i == 2 { p.url("/Fail") } else { p.url("/A") };
        let saga = Saga::new(&gid).step(action, p.url("/C"), "{}").wait_result();
        s.submit(&saga.json()).await;
        gids.push(gid);
    }
    gids
}

fn gids_of(page: &Value) -> Vec<String> {
    page["transactions"]
        .as_array()
        .map(|ts| ts.iter().map(|t| t["gid"].as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_pages_newest_first() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let gids = four_sagas(&s, &p).await;

    let (code, first) = s.get("/all?limit=1").await;
    assert_eq!(code, 200, "{first}");
    assert_eq!(gids_of(&first), ["all-3"]);
    let mut cursor = first["next_position"].as_str().unwrap_or_default().to_owned();
    assert!(!cursor.is_empty(), "a full page has a cursor: {first}");

    let mut seen = gids_of(&first);
    while !cursor.is_empty() {
        let (code, page) = s.get(&format!("/all?limit=1&position={cursor}")).await;
        assert_eq!(code, 200, "{page}");
        seen.extend(gids_of(&page));
        cursor = page["next_position"].as_str().unwrap_or_default().to_owned();
        assert!(seen.len() <= 5, "paging does not end: {seen:?}");
    }
    let newest_first: Vec<String> = gids.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);

    // One big page: everything, and no cursor.
    let (_, all) = s.get("/all?limit=1000").await;
    assert_eq!(gids_of(&all), newest_first);
    assert_eq!(all["next_position"], "");
    // Default limit.
    let (_, all) = s.get("/all").await;
    assert_eq!(gids_of(&all).len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_filters_by_gid_status_type_and_time() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    four_sagas(&s, &p).await;

    let (_, one) = s.get("/all?gid=all-1").await;
    assert_eq!(gids_of(&one), ["all-1"]);
    let (code, none) = s.get("/all?gid=missing").await;
    assert_eq!(code, 200);
    assert_eq!(none["transactions"], Value::Null, "DTM answers null for an unknown gid: {none}");

    let (_, ok) = s.get("/all?status=succeed&transType=saga").await;
    assert_eq!(gids_of(&ok), ["all-3", "all-1", "all-0"]);
    assert!(ok["transactions"].as_array().unwrap().iter().all(|t| t["status"] == "succeed"));
    assert_eq!(ok["next_position"], "");
    let (_, failed) = s.get("/all?status=failed").await;
    assert_eq!(gids_of(&failed), ["all-2"]);
    let (code, msg) = s.get("/all?transType=msg").await;
    assert_eq!(code, 200, "{msg}");
    assert!(gids_of(&msg).is_empty());

    let now = s.now_ms();
    let (_, window) =
        s.get(&format!("/all?createTimeStart={}&createTimeEnd={}", now - 60_000, now + 60_000)).await;
    assert_eq!(gids_of(&window).len(), 4, "{window}");
    let (_, past) =
        s.get(&format!("/all?createTimeStart={}&createTimeEnd={}", now - 600_000, now - 300_000)).await;
    assert!(gids_of(&past).is_empty(), "{past}");

    for bad in ["/all?status=done", "/all?limit=0", "/all?position=xyz"] {
        let (code, body) = s.get(bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
}
