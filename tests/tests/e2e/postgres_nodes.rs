//! Several dtx nodes on one PostgreSQL database.
//!
//! - Three real `dtx` processes share a fresh database; 2,000 two-step sagas are submitted
//!   across them while one node is killed with SIGKILL and another restarted. Every saga must
//!   finish `succeed`, with every action run (and answered) in order, no compensation, and no
//!   two calls for the same transaction ever overlapping in time, from whichever nodes they
//!   came: stronger than "no overlap while a lease was valid".
//! - Two in-process nodes whose clocks are ten minutes apart honour each other's leases, and a
//!   node whose clock runs ten minutes ahead times out on the database's timeline, not its own.
//!
//! Skipped, with a notice, unless `DTX_TEST_POSTGRES_URL` is set (`bash .ci/run` sets it).
//! Needs the `dtx` binary next to the test binaries (a workspace build makes it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri};
use dtx_core::GlobalStatus;
use dtx_store::{ListFilter, Store};
use dtx_store_postgres::{PgOptions, PgStore, testing};
use dtx_tests::{Client, DtxProcess, Gate, Participant, Reply, Saga, Tcc, TestServer, free_port};
use futures::StreamExt;
use serde_json::json;

const FLAGS: &[&str] =
    &["--lease", "2s", "--poll-interval", "100ms", "--retry-interval", "1s", "--postgres-pool-size", "8"];
const SAGAS: usize = 2_000;
const CONCURRENCY: usize = 50;

/// One call a participant received: which transaction, which branch, when.
#[derive(Clone, Debug)]
struct Rec {
    path: String,
    gid: String,
    branch_id: String,
    op: String,
    start: Instant,
    /// When the answer left (or the handler was dropped because the caller went away).
    end: Option<Instant>,
    status: u16,
}

#[derive(Default)]
struct Calls {
    recs: Mutex<Vec<Rec>>,
    /// gids whose first `/A2` call answers 500 (a retry the scheduler of any node picks up).
    a2_fails_once: Mutex<HashMap<String, bool>>,
}

/// Sets the end of a call when dropped: also when the caller vanished mid-call (a killed node)
/// and the server dropped the handler, so every call has an end no earlier than its true one.
struct EndOnDrop {
    calls: Arc<Calls>,
    index: usize,
    status: u16,
}

impl Drop for EndOnDrop {
    fn drop(&mut self) {
        let mut recs = self.calls.recs.lock().expect("recs");
        recs[self.index].end = Some(Instant::now());
        recs[self.index].status = self.status;
    }
}

async fn handle(
    State(calls): State<Arc<Calls>>,
    uri: Uri,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, &'static str) {
    let param = |k: &str| q.get(k).cloned().unwrap_or_default();
    let path = uri.path().to_owned();
    let gid = param("gid");
    let fail =
        path == "/A2" && calls.a2_fails_once.lock().expect("fails").get_mut(&gid).is_some_and(std::mem::take);
    let index = {
        let mut recs = calls.recs.lock().expect("recs");
        recs.push(Rec {
            path,
            gid,
            branch_id: param("branch_id"),
            op: param("op"),
            start: Instant::now(),
            end: None,
            status: 0,
        });
        recs.len() - 1
    };
    let mut guard = EndOnDrop { calls: calls.clone(), index, status: 0 };
    // Long enough that calls are in flight when a node dies.
    tokio::time::sleep(Duration::from_millis(10)).await;
    if fail {
        guard.status = 500;
        return (StatusCode::INTERNAL_SERVER_ERROR, "try again later");
    }
    guard.status = 200;
    (StatusCode::OK, r#"{"dtm_result":"SUCCESS"}"#)
}

async fn recording_participant() -> (String, Arc<Calls>) {
    let calls = Arc::new(Calls::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind participant");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().fallback(handle).with_state(calls.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), calls)
}

/// Submits `body` to the live nodes, starting with `first`, until one answers 200 (a node that
/// died mid-request may or may not have stored it: submitting the same gid again is idempotent).
async fn submit(http: &reqwest::Client, nodes: &Mutex<Vec<String>>, first: usize, body: &serde_json::Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = first;
    loop {
        let base = {
            let nodes = nodes.lock().expect("nodes");
            nodes[attempt % nodes.len()].clone()
        };
        match http.post(format!("{base}/submit")).json(body).send().await {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                // A retry after a node died mid-request: that node had stored the saga, and it
                // has already finished.
                if attempt != first && status.as_u16() == 409 && text.contains("succeed") {
                    return;
                }
                assert!(status.is_server_error(), "submit refused: {status} {text}");
            }
            Err(_) => {}
        }
        assert!(Instant::now() < deadline, "no node accepted {}", body["gid"]);
        attempt += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn gid(i: usize) -> String {
    format!("multi-{i:04}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_2000_sagas_survive_a_kill_and_a_restart() {
    let Some(db_url) = testing::fresh_database("three_nodes_2000_sagas_survive_a_kill_and_a_restart").await
    else {
        return;
    };
    let store = PgStore::open(&db_url, PgOptions::with_pool_size(2)).await.expect("open the shared database");
    three_nodes_survive_a_kill_and_a_restart(&db_url, SAGAS, Arc::new(store)).await;
}

/// `sagas` two-step sagas across three `dtx` nodes on the database at `db_url` (which `store`
/// reads too), one node killed and one restarted mid-run: every saga finishes `succeed`, every
/// action ran in order, and no two calls of one transaction ever overlapped. Also run on
/// MySQL / MariaDB (`mysql.rs`).
pub(crate) async fn three_nodes_survive_a_kill_and_a_restart(
    db_url: &str,
    sagas: usize,
    store: Arc<dyn Store>,
) {
    let db_url = db_url.to_owned();
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = |n: usize| dir.path().join(format!("dtx-{n}.log"));
    let (participant, calls) = recording_participant().await;
    {
        let mut fails = calls.a2_fails_once.lock().expect("fails");
        for i in (0..sagas).step_by(10) {
            fails.insert(gid(i), true);
        }
    }

    let mut procs = Vec::new();
    for n in 0..3 {
        procs.push(DtxProcess::start(&db_url, free_port(), FLAGS, &log(n)).await);
    }
    let nodes: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(procs.iter().map(|p| p.base_url()).collect()));
    let http = reqwest::Client::builder().no_proxy().build().expect("client");

    let submitted = Arc::new(AtomicUsize::new(0));
    let submitter = {
        let (nodes, submitted, http) = (nodes.clone(), submitted.clone(), http.clone());
        let p = participant.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..sagas)
                .for_each_concurrent(CONCURRENCY, |i| {
                    let (nodes, submitted, http) = (nodes.clone(), submitted.clone(), http.clone());
                    let body = Saga::new(&gid(i))
                        .step(format!("{p}/A1"), format!("{p}/C1"), r#"{"step":1}"#)
                        .step(format!("{p}/A2"), format!("{p}/C2"), r#"{"step":2}"#)
                        .json();
                    async move {
                        submit(&http, &nodes, i, &body).await;
                        submitted.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .await;
        })
    };

    let wait_for = |n: usize| {
        let submitted = submitted.clone();
        async move {
            while submitted.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    // A third of the way: node 0 dies mid-flight (its leases must expire before anyone else
    // touches its transactions).
    wait_for(sagas / 3).await;
    nodes.lock().expect("nodes").retain(|b| *b != procs[0].base_url());
    procs[0].kill();
    // Two thirds: node 1 is restarted (graceful stop, then a new process).
    wait_for(2 * sagas / 3).await;
    nodes.lock().expect("nodes").retain(|b| *b != procs[1].base_url());
    let status = procs[1].terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "graceful stop: {status}");
    procs[1] = DtxProcess::start(&db_url, free_port(), FLAGS, &log(1)).await;
    nodes.lock().expect("nodes").push(procs[1].base_url());
    submitter.await.expect("submitter");
    let all_submitted = started.elapsed();

    // Every saga finishes `succeed` (read from the database the nodes share).
    let deadline = Instant::now() + Duration::from_secs(90);
    let globals = loop {
        let mut all = Vec::new();
        let mut filter = ListFilter { limit: 1_000, ..ListFilter::default() };
        loop {
            let page = store.list(&filter).await.expect("list");
            let Some(last) = page.last() else { break };
            filter.before_id = Some(last.id);
            all.extend(page);
        }
        let done = all.iter().filter(|g| g.status == GlobalStatus::Succeed && g.owner.is_none()).count();
        if done == sagas && all.len() == sagas {
            break all;
        }
        assert!(
            Instant::now() < deadline,
            "{done} of {sagas} sagas finished ({} stored); others: {:?}",
            all.len(),
            all.iter().filter(|g| g.status != GlobalStatus::Succeed).take(5).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let all_finished = started.elapsed();
    assert_eq!(globals.len(), sagas);

    // Their branch rows agree: both actions succeeded, no compensation ran.
    let loads = futures::stream::iter(0..sagas)
        .map(|i| {
            let store = store.clone();
            async move { store.load(&gid(i)).await.expect("load").expect("stored") }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await;
    for loaded in &loads {
        let statuses: Vec<&str> = loaded.branches.iter().map(|b| b.status.as_str()).collect();
        assert_eq!(statuses, ["prepared", "succeed", "prepared", "succeed"], "{}", loaded.global.gid);
    }

    // What the participant saw, per transaction.
    let recs = calls.recs.lock().expect("recs").clone();
    let mut by_gid: HashMap<&str, Vec<&Rec>> = HashMap::new();
    for r in &recs {
        by_gid.entry(r.gid.as_str()).or_default().push(r);
    }
    assert_eq!(by_gid.len(), sagas, "every saga called its participant");
    let mut repeated = 0;
    for (gid, mut calls) in by_gid {
        calls.sort_by_key(|c| c.start);
        // No compensation: every action succeeded (none was skipped, none failed for good).
        assert!(calls.iter().all(|c| c.op == "action"), "{gid} ran a compensation: {calls:?}");
        let a1: Vec<&&Rec> = calls.iter().filter(|c| c.path == "/A1").collect();
        let a2: Vec<&&Rec> = calls.iter().filter(|c| c.path == "/A2").collect();
        assert!(a1.iter().all(|c| c.branch_id == "01") && a2.iter().all(|c| c.branch_id == "02"), "{gid}");
        let first_a1_ok =
            a1.iter().find(|c| c.status == 200).unwrap_or_else(|| panic!("{gid}: A1 never succeeded"));
        assert!(a2.iter().any(|c| c.status == 200), "{gid}: A2 never succeeded: {calls:?}");
        let first_a1_end = first_a1_ok.end.unwrap_or_else(|| panic!("{gid}: A1 call never ended"));
        assert!(a2[0].start >= first_a1_end, "{gid}: step 2 started before step 1 had succeeded");
        // No two calls of one transaction overlap, whichever nodes made them.
        for pair in calls.windows(2) {
            let end = pair[0].end.unwrap_or_else(|| panic!("{gid}: a call never ended: {:?}", pair[0]));
            assert!(pair[1].start >= end, "{gid}: overlapping calls {:?} and {:?}", pair[0], pair[1]);
        }
        if calls.len() > 2 {
            repeated += 1;
        }
    }
    assert!(repeated >= sagas / 10, "the failing A2 calls were retried ({repeated} sagas called again)");
    for p in procs.iter_mut().skip(1) {
        assert!(p.is_running(), "a surviving node stopped");
    }
    eprintln!(
        "{sagas} sagas on 3 nodes: submitted in {all_submitted:?}, all finished in {all_finished:?}, \
         {} participant calls, {repeated} sagas with repeated calls",
        recs.len()
    );
}

/// Node B's clock runs ten minutes ahead of node A's. A's round holds a saga in a long call,
/// renewing a one-second lease; B's scheduler polls all along. By its own clock B would see
/// A's lease as expired long ago; by the database clock it is valid, so B never touches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_clocks_ten_minutes_apart_honour_each_others_leases() {
    let Some(db_url) =
        testing::fresh_database("nodes_with_clocks_ten_minutes_apart_honour_each_others_leases").await
    else {
        return;
    };
    let a = TestServer::spawn(|c| {
        c.database_url = db_url.clone().into();
        c.engine.lease = Duration::from_secs(1);
        // The held call outlasts several leases, not the call timeout.
        c.engine.request_timeout = Duration::from_secs(10);
    })
    .await;
    let b = TestServer::spawn(|c| {
        c.database_url = db_url.clone().into();
        c.engine.lease = Duration::from_secs(1);
        c.engine.scheduler_enabled = true;
        c.engine.poll_interval = Duration::from_millis(50);
    })
    .await;
    b.advance(Duration::from_secs(600));
    assert!(b.now_ms() - a.now_ms() >= 600_000);

    let p = Participant::spawn().await;
    let gate = Gate::new();
    p.script("/A2", [Reply::ok().blocked_by(&gate)]);
    let saga = Saga::new("skewed")
        .step(p.url("/A1"), p.url("/C1"), "{}")
        .step(p.url("/A2"), p.url("/C2"), "{}")
        .step(p.url("/A3"), p.url("/C3"), "{}");
    let (code, body) = a.submit(&saga.json()).await;
    assert_eq!(code, 200, "{body}");
    p.wait_calls("/A2", 1).await;
    // Three lease lengths: both nodes' clocks run with real time (leases are on the database
    // clock), so A renews its lease and B polls all along; A keeps the saga.
    let mut polls = b.rounds();
    let mut polled = 0;
    let start = tokio::time::Instant::now();
    let mut last = start;
    while last < start + Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = tokio::time::Instant::now();
        a.advance(now - last);
        b.advance(now - last);
        last = now;
        polled += polls.drain_polls();
    }
    assert!(polled >= 10, "B's scheduler polled ({polled} times)");
    assert_eq!(p.calls_for("/A2").len(), 1, "B took over a valid lease");
    gate.release();
    let q = a.wait_status("skewed", "succeed").await;
    assert_eq!(
        dtx_tests::branch_statuses(&q),
        ["prepared", "succeed", "prepared", "succeed", "prepared", "succeed"]
    );
    assert_eq!(p.paths(), ["/A1", "/A2", "/A3"], "each action exactly once");
}

/// Node B's own clock runs ten minutes ahead; like `dtx`, it corrects it to the database clock
/// at start. Two TCCs are prepared on node A, one with a 60 s timeout and one with 1 s; two
/// seconds later both are made due at once for B to process. By its own clock B would find
/// both ten minutes old and cancel both; on the database's timeline only the 1 s one timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_a_skewed_clock_times_out_on_the_database_timeline() {
    let Some(db_url) =
        testing::fresh_database("a_node_with_a_skewed_clock_times_out_on_the_database_timeline").await
    else {
        return;
    };
    let a = TestServer::spawn(|c| c.database_url = db_url.clone().into()).await;
    let b =
        TestServer::spawn_skewed(Duration::from_secs(600), |c| c.database_url = db_url.clone().into()).await;
    assert!(b.now_ms() - a.now_ms() >= 600_000, "B's own clock is ten minutes ahead");
    let corrected = b.engine().now().0 - a.engine().now().0;
    assert!(corrected.abs() < 2_000, "B's corrected clock is {corrected} ms off A's");

    let p = Participant::spawn().await;
    let c = Client::of(&a);
    let fresh = Tcc::prepare(&c, "skew-fresh", json!({"timeout_to_fail": 60})).await;
    assert_eq!(fresh.branch(&p, "01", "Fresh", "{}").await, 200);
    let short = Tcc::prepare(&c, "skew-short", json!({"timeout_to_fail": 1})).await;
    assert_eq!(short.branch(&p, "01", "Short", "{}").await, 200);
    // Two seconds pass on B (the test drives its clock; the correction rides on it).
    b.advance(Duration::from_secs(2));
    for gid in ["skew-fresh", "skew-short"] {
        let (code, body) = c.reset_next_cron_time(gid).await;
        assert_eq!(code, 200, "{body}");
    }

    let processed = b.engine().run_once().await.expect("B's scheduler round");
    assert_eq!(processed, 2, "B claimed both TCCs");
    assert_eq!(a.status("skew-fresh").await, "prepared", "a 60 s TCC timed out after 2 s");
    assert_eq!(a.status("skew-short").await, "failed");
    assert_eq!(p.paths(), ["/FreshTry", "/ShortTry", "/ShortCancel"]);
}
