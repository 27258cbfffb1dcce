//! Security edges (issue 12): the admin and API tokens on HTTP and gRPC, `branch_headers`
//! redaction, participant allowlist, bounds of per-transaction options.

use dtx_tests::grpc::dtmgimp::DtmTopicRequest;
use dtx_tests::grpc::{GrpcParticipant, dtm_client};
use dtx_tests::{Participant, Reply, Saga, TestServer};
use serde_json::{Value, json};
use tonic::Code;
use tonic::metadata::MetadataValue;

use crate::common::*;

const ADMIN: &str = "admin-token-123";
const API: &str = "api-token-4567";

fn saga(p: &Participant, gid: &str) -> Value {
    Saga::new(gid).step(p.url("/TransOut"), p.url("/TransOutRevert"), "{}").json()
}

/// `method path` with an optional bearer token: the status code.
async fn call(s: &TestServer, method: &str, path: &str, body: Option<&Value>, token: Option<&str>) -> u16 {
    let url = format!("{}{path}", s.root_url());
    let mut req = match method {
        "POST" => s.http().post(url),
        "DELETE" => s.http().delete(url),
        _ => s.http().get(url),
    };
    if let Some(b) = body {
        req = req.json(b);
    }
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request").status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_and_admin_tokens_guard_http_and_nothing_changes_without_them() {
    let s = TestServer::spawn(|c| {
        c.admin_token = Some(ADMIN.into());
        c.api_token = Some(API.into());
    })
    .await;
    let p = Participant::spawn().await;
    let body = saga(&p, "tok-1");
    // SDK calls: no token or a wrong one is 401 and stores nothing.
    assert_eq!(call(&s, "POST", "/api/dtmsvr/submit", Some(&body), None).await, 401);
    assert_eq!(call(&s, "POST", "/api/dtmsvr/submit", Some(&body), Some("nope-nope-1")).await, 401);
    assert_eq!(call(&s, "GET", "/api/dtmsvr/query?gid=tok-1", None, Some(API)).await, 200);
    let (_, q) = dtx_tests::server::read(
        s.http()
            .get(format!("{}/api/dtmsvr/query?gid=tok-1", s.root_url()))
            .bearer_auth(API)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(q["transaction"], Value::Null, "nothing stored: {q}");
    for path in ["/api/dtmsvr/newGid", "/api/dtmsvr/query?gid=x", "/api/dtmsvr/queryKV?cat=topics"] {
        assert_eq!(call(&s, "GET", path, None, None).await, 401, "{path}");
        assert_eq!(call(&s, "GET", path, None, Some(API)).await, 200, "{path}");
        assert_eq!(call(&s, "GET", path, None, Some(ADMIN)).await, 200, "admin token works too: {path}");
    }
    for path in ["/api/dtmsvr/prepare", "/api/dtmsvr/abort", "/api/dtmsvr/registerBranch"] {
        assert_eq!(call(&s, "POST", path, Some(&json!({})), None).await, 401, "{path}");
    }
    // The API token submits; the admin token does too.
    assert_eq!(call(&s, "POST", "/api/dtmsvr/submit", Some(&body), Some(API)).await, 200);
    assert_eq!(call(&s, "POST", "/api/dtmsvr/submit", Some(&saga(&p, "tok-2")), Some(ADMIN)).await, 200);
    // Operator calls: the API token is not enough.
    let gid = json!({"gid": "tok-1"});
    assert_eq!(call(&s, "POST", "/api/dtmsvr/forceStop", Some(&gid), Some(API)).await, 401);
    let sub = "/api/dtmsvr/subscribe?topic=t&url=http://127.0.0.1:1/x&remark=r";
    assert_eq!(call(&s, "GET", sub, None, None).await, 401, "a web page cannot subscribe");
    assert_eq!(call(&s, "GET", sub, None, Some(API)).await, 401);
    assert_eq!(call(&s, "GET", "/api/dtmsvr/scanKV?cat=topics", None, Some(ADMIN)).await, 200);
    let (_, kv) = dtx_tests::server::read(
        s.http()
            .get(format!("{}/api/dtmsvr/scanKV?cat=topics", s.root_url()))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(kv["kv"], json!([]), "no subscription was stored: {kv}");
    for path in ["/api/dtmsvr/all", "/api/admin/counts", "/api/dtmsvr/resetCronTime"] {
        assert_eq!(call(&s, "GET", path, None, Some(API)).await, 401, "{path}");
        assert_eq!(call(&s, "GET", path, None, Some(ADMIN)).await, 200, "{path}");
    }
    assert_eq!(call(&s, "GET", sub, None, Some(ADMIN)).await, 200);
    // Open: liveness, readiness, metrics, the UI's static page.
    for path in ["/api/ping", "/api/ready", "/api/metrics", "/admin"] {
        assert_eq!(call(&s, "GET", path, None, None).await, 200, "{path}");
    }
}

/// `msg` as a gRPC request carrying `authorization: Bearer <token>`.
fn with<T>(token: &str, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    let v = MetadataValue::try_from(format!("Bearer {token}")).expect("metadata");
    r.metadata_mut().insert("authorization", v);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_guard_grpc_through_authorization_metadata() {
    let s = TestServer::spawn(|c| {
        c.admin_token = Some(ADMIN.into());
        c.api_token = Some(API.into());
    })
    .await;
    let p = GrpcParticipant::spawn().await;
    let mut dtm = dtm_client(&s).await;
    let req = trans_saga(&p, "gtok-1").wait_result().request();
    let e = dtm.submit(req.clone()).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let e = dtm.new_gid(with("wrong-token-9", ())).await.expect_err("wrong token");
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(
        call(&s, "GET", "/api/dtmsvr/query?gid=gtok-1", None, Some(API)).await,
        200,
        "query itself works"
    );
    dtm.submit(with(API, req)).await.expect("submit with the API token");
    let topic =
        DtmTopicRequest { topic: "t".into(), url: "http://127.0.0.1:1/x".into(), remark: String::new() };
    let e = dtm.subscribe(with(API, topic.clone())).await.expect_err("API token");
    assert_eq!(e.code(), Code::Unauthenticated);
    dtm.subscribe(with(ADMIN, topic)).await.expect("admin token subscribes");
    dtm.new_gid(with(ADMIN, ())).await.expect("admin token is an API token too");
    // Health stays open.
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut health = HealthClient::new(channel(&s).await);
    health.check(HealthCheckRequest { service: String::new() }).await.expect("health is open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_header_values_never_come_back_from_query_or_all() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let body = Saga::new("hdr-1")
        .step(p.url("/TransOut"), p.url("/TransOutRevert"), "{}")
        .option("branch_headers", json!({"authorization": "Bearer participant-secret"}))
        .json();
    let (code, reply) = s.submit(&body).await;
    assert_eq!(code, 200, "{reply}");
    s.wait_status("hdr-1", "succeed").await;
    let calls = p.calls();
    assert!(calls.iter().all(|c| c.header("authorization") == "Bearer participant-secret"), "still sent");
    let (_, q) = s.get("/query?gid=hdr-1").await;
    let (_, all) = s.get("/all").await;
    for shown in [q.to_string(), all.to_string()] {
        assert!(!shown.contains("participant-secret") && shown.contains("authorization"), "{shown}");
    }
}

/// The number of transactions stored (via the engine, whatever the tokens).
async fn stored(s: &TestServer) -> usize {
    let filter = dtx_store::ListFilter { limit: 1000, ..Default::default() };
    s.engine().list(&filter).await.expect("list").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_above_the_server_maxima_are_refused_over_http_and_grpc() {
    let s = TestServer::spawn(|c| c.engine.limits.retry_limit = 5).await;
    let p = Participant::spawn().await;
    let g = GrpcParticipant::spawn().await;
    for (key, value) in [
        ("retry_limit", json!(6)),
        ("retry_interval", json!(86_401)),
        ("request_timeout", json!(601)),
        ("timeout_to_fail", json!(31 * 86_400)),
    ] {
        let body = Saga::new(&format!("max-{key}"))
            .step(p.url("/TransOut"), p.url("/TransOutRevert"), "{}")
            .option(key, value)
            .json();
        let (code, reply) = s.submit(&body).await;
        assert_eq!(code, 400, "{key}: {reply}");
        assert!(reply.to_string().contains(key) && reply.to_string().contains("maximum"), "{reply}");
    }
    let mut msg = dtx_tests::Msg::new("max-delay", p.url("/Check")).step(p.url("/TransIn"), "{}").json();
    msg["custom_data"] = json!(r#"{"delay":99999999}"#);
    let (code, reply) = dtx_tests::Client::of(&s).post("prepare", &msg).await;
    assert_eq!(code, 400, "{reply}");
    assert!(reply.to_string().contains("delay"), "{reply}");
    let mut saga = trans_saga(&g, "max-grpc");
    saga.options.retry_limit = 6;
    let e = dtm_client(&s).await.submit(saga.request()).await.expect_err("above the maximum");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert_eq!(stored(&s).await, 0, "nothing stored");
    let ok = Saga::new("max-ok")
        .step(p.url("/TransOut"), p.url("/TransOutRevert"), "{}")
        .option("retry_limit", json!(5));
    assert_eq!(s.submit(&ok.json()).await.0, 200, "at the maximum is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_refuses_participants_at_submit_over_http_and_grpc() {
    let s = TestServer::spawn(|c| {
        c.engine.participant_allow = dtx_core::allow::AllowList::parse("10.0.0.0/8, localhost").unwrap()
    })
    .await;
    let p = Participant::spawn().await;
    let g = GrpcParticipant::spawn().await;
    // 127.0.0.1 is not in the list: refused, whether named by address or not.
    let (code, reply) = s.submit(&saga(&p, "allow-1")).await;
    assert_eq!(code, 400, "{reply}");
    assert!(reply.to_string().contains("not in --participant-allow"), "{reply}");
    let e = dtm_client(&s).await.submit(trans_saga(&g, "allow-2").request()).await.expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let sub = format!("/subscribe?topic=t&url={}&remark=", p.url("/Msg"));
    assert_eq!(s.get(&sub).await.0, 400, "subscribe is checked too");
    assert_eq!(stored(&s).await, 0, "nothing stored");
    // A name in the list is allowed: `localhost` resolves to loopback, where the participant is.
    let named = Saga::new("allow-3")
        .step(p.url("/TransOut").replace("127.0.0.1", "localhost"), String::new(), "{}")
        .json();
    let (code, reply) = s.submit(&named).await;
    assert_eq!(code, 200, "{reply}");
    s.wait_status("allow-3", "succeed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_addresses_and_dtx_itself_are_refused_by_default() {
    let s = TestServer::start().await;
    let own = s.root_url().replace("http://", "");
    for (gid, url) in [
        ("meta-1", "http://169.254.169.254/latest/meta-data/".to_owned()),
        ("meta-2", "http://[fe80::1]:80/x".to_owned()),
        ("self-1", format!("http://{own}/api/dtmsvr/forceStop")),
        ("self-2", format!("http://{}/api/ping", own.replace("127.0.0.1", "localhost"))),
    ] {
        let body = Saga::new(gid).step(url.clone(), String::new(), "{}").json();
        let (code, reply) = s.submit(&body).await;
        assert_eq!(code, 400, "{url}: {reply}");
    }
    assert_eq!(stored(&s).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_error_text_is_capped_and_has_no_control_characters() {
    let s = TestServer::start().await;
    let p = Participant::spawn().await;
    let page = format!("<html>\0\u{1b}[31mboom\r\n{}</html>", "x".repeat(100_000));
    p.script("/TransOut", [Reply::status(500, page)]);
    let (code, _) = s.submit(&saga(&p, "errtext")).await;
    assert_eq!(code, 200);
    let q = s.wait_idle("errtext").await;
    let last = q["branches"][1]["last_error"].as_str().unwrap_or_default().to_owned();
    assert!(last.starts_with("status 500") && last.contains("boom"), "{last}");
    assert!(last.len() <= 1024 && !last.chars().any(char::is_control), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off_and_a_slow_body_gets_an_answer_in_time() {
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::spawn(|c| {
        c.http_header_timeout = Duration::from_millis(300);
        c.http_body_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = s.root_url().replace("http://", "");
    // Headers never finished: the connection is closed after the deadline.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    slow.write_all(b"GET /api/ping HTTP/1.1\r\nHost: x\r\n").await.expect("write");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection was closed");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    // A body announced and never sent: an answer (not a hang), nothing stored.
    let mut stuck = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    stuck
        .write_all(b"POST /api/dtmsvr/submit HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"gid\"")
        .await
        .expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), stuck.read(&mut buf))
        .await
        .expect("answered")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 400") || head.starts_with("HTTP/1.1 408"), "{head}");
    assert_eq!(stored(&s).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_branch_urls_pass_the_allowlist_too() {
    let s = TestServer::spawn(|c| {
        c.engine.participant_allow = dtx_core::allow::AllowList::parse("10.0.0.0/8").unwrap()
    })
    .await;
    let c = dtx_tests::Client::of(&s);
    let (code, reply) = c.post("prepare", &json!({"gid": "reg-1", "trans_type": "tcc"})).await;
    assert_eq!(code, 200, "{reply}");
    let branch = json!({"gid": "reg-1", "trans_type": "tcc", "branch_id": "01", "data": "{}",
        "confirm": "http://127.0.0.1:9/confirm", "cancel": "http://127.0.0.1:9/cancel"});
    let (code, reply) = c.post("registerBranch", &branch).await;
    assert_eq!(code, 400, "{reply}");
    let stored = s.engine().load("reg-1").await.expect("load").expect("prepared");
    assert!(stored.branches.is_empty(), "no branch registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_are_bounded_like_http_bodies() {
    let s = TestServer::spawn(|c| c.max_body_bytes = 4096).await;
    let g = GrpcParticipant::spawn().await;
    let saga = dtx_tests::grpc::GrpcSaga::new("big-grpc").step(
        g.url("TransOut"),
        g.url("TransOutRevert"),
        vec![7u8; 8192],
    );
    let e = dtm_client(&s).await.submit(saga.request()).await.expect_err("too large");
    assert!(matches!(e.code(), Code::OutOfRange | Code::ResourceExhausted), "{e}");
    assert_eq!(stored(&s).await, 0);
    let small = dtx_tests::grpc::GrpcSaga::new("small-grpc").step(
        g.url("TransOut"),
        g.url("TransOutRevert"),
        vec![7u8; 64],
    );
    dtm_client(&s).await.submit(small.request()).await.expect("a small one passes");
}
