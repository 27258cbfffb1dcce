//! Fuzzing the HTTP API: bodies generated from valid DTM requests (spec: the request bodies of
//! /api/dtmsvr/...) and mutated, for every route, on SQLite and on PostgreSQL. Every answer must
//! be below 500, the server must keep answering (a panic drops the connection), and no 4xx may
//! leave anything behind: a transaction named by a refused body is not stored (or unchanged),
//! and at the end the store holds exactly the transactions that were acknowledged.

use std::collections::HashSet;

use dtx_store::ListFilter;
use dtx_tests::{Msg, Participant, Saga, TestServer, client::tcc_register_body, server::read};
use serde_json::{Value, json};

use super::{Rng, size};

/// The POST routes and the GET / DELETE ones (query strings fuzzed).
const POSTS: &[&str] = &[
    "submit",
    "prepare",
    "abort",
    "registerBranch",
    "registerTccBranch",
    "registerXaBranch",
    "forceStop",
    "resetNextCronTime",
];
const GETS: &[&str] = &[
    "newGid",
    "version",
    "query",
    "all",
    "scanKV",
    "queryKV",
    "subscribe",
    "unsubscribe",
    "resetCronTime",
    "topic",
    "ping",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_http_bodies_on_sqlite_get_no_5xx_and_store_nothing_when_refused() {
    let s = TestServer::start().await;
    fuzz_http(&s, "sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzed_http_bodies_on_postgres_get_no_5xx_and_store_nothing_when_refused() {
    let test = "fuzzed_http_bodies_on_postgres_get_no_5xx_and_store_nothing_when_refused";
    let Some(url) = dtx_store_postgres::testing::fresh_database(test).await else { return };
    let s = TestServer::spawn(|c| c.database_url = url.into()).await;
    fuzz_http(&s, "postgres").await;
}

/// A random JSON value of any kind, edge values first.
pub(crate) fn random_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth > 2 { 9 } else { 11 }) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(*rng.pick(&[0i64, -1, 1, i64::MAX, i64::MIN, 4_294_967_296, 86_400_000])),
        3 => json!(*rng.pick(&[0.5f64, -1e308, 1e308, 3.0])),
        4 | 5 => json!(random_text(rng)),
        6 => json!(""),
        7 => json!(*rng.pick(&["saga", "tcc", "msg", "xa", "workflow", "SUCCESS", "FAILURE"])),
        8 => json!(*rng.pick(&[
            "http://127.0.0.1:1/x",
            "http://[::1]:1/x",
            "grpc://127.0.0.1:1/a.B/C",
            "localhost:1/a.B/C",
            "http://169.254.169.254/latest",
            "ftp://x",
            "topic://t",
            "http://",
        ])),
        9 => Value::Array((0..rng.below(4)).map(|_| random_value(rng, depth + 1)).collect()),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.below(4) {
                m.insert(random_key(rng), random_value(rng, depth + 1));
            }
            Value::Object(m)
        }
    }
}

pub(crate) fn random_text(rng: &mut Rng) -> String {
    let pieces = [
        "a", "é", "\u{0}", "\u{1f}", "\u{7f}", "\u{202e}", "😀", "%", "_", "'", "\"", "\\", "/", " ", "\n",
        "{", "[", "0", "-", "topic://", "..", "\u{fffd}",
    ];
    let n = *rng.pick(&[0usize, 1, 3, 8, 64, 300]);
    (0..n).map(|_| *rng.pick(&pieces)).collect()
}

fn random_key(rng: &mut Rng) -> String {
    let keys = [
        "gid",
        "trans_type",
        "steps",
        "payloads",
        "bin_payloads",
        "custom_data",
        "query_prepared",
        "wait_result",
        "timeout_to_fail",
        "retry_interval",
        "retry_limit",
        "request_timeout",
        "branch_headers",
        "concurrent",
        "orders",
        "rollback_reason",
        "branch_id",
        "op",
        "data",
        "confirm",
        "cancel",
        "passthrough_headers",
        "action",
        "compensate",
        "delay",
        "x",
    ];
    if rng.chance(80) { (*rng.pick(&keys)).to_owned() } else { random_text(rng) }
}

/// Changes one place of a JSON document: a value replaced, a key removed or added, recursively.
pub(crate) fn mutate_value(rng: &mut Rng, v: &mut Value) {
    match v {
        Value::Object(m) if !m.is_empty() && rng.chance(70) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let k = rng.pick(&keys).clone();
            match rng.below(4) {
                0 => {
                    m.remove(&k);
                }
                1 => {
                    m.insert(k, random_value(rng, 0));
                }
                _ => {
                    if let Some(inner) = m.get_mut(&k) {
                        mutate_value(rng, inner);
                    }
                }
            }
        }
        Value::Object(m) => {
            m.insert(random_key(rng), random_value(rng, 0));
        }
        Value::Array(a) if !a.is_empty() && rng.chance(70) => {
            let i = rng.below(a.len());
            if rng.chance(20) {
                a.remove(i);
            } else {
                mutate_value(rng, &mut a[i]);
            }
        }
        Value::String(s) if rng.chance(50) => {
            // Often a JSON document inside a string (steps' payloads, custom_data).
            if let Ok(mut inner) = serde_json::from_str::<Value>(s) {
                mutate_value(rng, &mut inner);
                *s = inner.to_string();
            } else {
                s.push_str(&random_text(rng));
            }
        }
        other => *other = random_value(rng, 0),
    }
}

/// Mutates serialized text: truncation, a byte inserted, removed or replaced, a part doubled.
pub(crate) fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(3) {
        let len = bytes.len();
        match rng.below(5) {
            0 => bytes.truncate(rng.below(len + 1)),
            1 => bytes.insert(rng.below(len + 1), *rng.pick(b"{}[]\",:0\\\x00\xff ")),
            2 if len > 0 => {
                bytes.remove(rng.below(len));
            }
            3 if len > 0 => {
                let i = rng.below(len);
                bytes[i] = rng.next() as u8;
            }
            _ => {
                let (a, b) = (rng.below(len + 1), rng.below(len + 1));
                let part = bytes[a.min(b)..a.max(b)].to_vec();
                let at = rng.below(bytes.len() + 1);
                bytes.splice(at..at, part);
            }
        }
    }
}

struct World<'a> {
    s: &'a TestServer,
    p: Participant,
    /// Prepared TCCs (and a prepared msg) that abort / registerBranch / forceStop bodies name.
    pool: Vec<String>,
    /// Every gid the store holds (created before the fuzzing or acknowledged during it).
    known: HashSet<String>,
    prefix: String,
    n: u64,
}

impl World<'_> {
    fn fresh_gid(&mut self) -> String {
        self.n += 1;
        format!("{}{}", self.prefix, self.n)
    }

    fn seed(&mut self, rng: &mut Rng, route: &str) -> Value {
        let gid = if matches!(route, "submit" | "prepare") || rng.chance(10) {
            self.fresh_gid()
        } else {
            rng.pick(&self.pool).clone()
        };
        let p = &self.p;
        match route {
            "submit" => match rng.below(3) {
                0 => Saga::new(&gid)
                    .step(p.url("/A1"), p.url("/C1"), r#"{"amount":30}"#)
                    .step(p.url("/A2"), p.url("/C2"), r#"{"amount":30}"#)
                    .option("retry_interval", json!(1))
                    .json(),
                1 => Saga::new(&gid)
                    .step(p.url("/A1"), p.url("/C1"), "{}")
                    .step(p.url("/A2"), "", "{}")
                    .concurrent(json!({"1": [0]}))
                    .wait_result()
                    .json(),
                _ => Msg::new(&gid, p.url("/qp")).step(p.url("/M1"), r#"{"a":1}"#).json(),
            },
            "prepare" => {
                if rng.chance(50) {
                    json!({"gid": gid, "trans_type": "tcc", "timeout_to_fail": 60})
                } else {
                    Msg::new(&gid, p.url("/qp")).step(p.url("/M1"), "{}").json()
                }
            }
            "abort" => json!({"gid": gid, "trans_type": "tcc", "rollback_reason": "fuzz"}),
            "forceStop" | "resetNextCronTime" => json!({"gid": gid}),
            _ => tcc_register_body(&gid, "01", r#"{"amount":1}"#, &p.url("/confirm"), &p.url("/cancel")),
        }
    }

    /// Transactions stored since `after` (the highest id seen): the database is this test's.
    async fn stored_since(&self, after: i64) -> Vec<(i64, String)> {
        let page = self.s.engine().list(&ListFilter { limit: 20, ..Default::default() }).await.expect("list");
        page.into_iter().filter(|g| g.id > after).map(|g| (g.id, g.gid)).collect()
    }

    async fn snapshot(&self, gid: Option<&str>) -> String {
        match gid {
            Some(g) => format!("{:?}", self.s.engine().load(g).await.ok().flatten()),
            None => String::new(),
        }
    }
}

fn gid_of(bytes: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(bytes).ok()?.get("gid")?.as_str().map(str::to_owned)
}

async fn fuzz_http(s: &TestServer, backend: &str) {
    let per_route = super::fuzz_bodies().unwrap_or_else(|| size(60, 100_000));
    let mut rng = Rng::seeded(&format!("http fuzz on {backend}"));
    let prefix = format!("fz{}-", rng.next() % 1_000_000);
    let mut w =
        World { s, p: Participant::spawn().await, pool: Vec::new(), known: HashSet::new(), prefix, n: 0 };
    for i in 0..4 {
        let gid = format!("{}pool{i}", w.prefix);
        let resp = s
            .http()
            .post(format!("{}/prepare", s.base_url()))
            .json(&json!({"gid": gid, "trans_type": "tcc", "timeout_to_fail": 3600}))
            .send()
            .await
            .expect("prepare");
        assert_eq!(resp.status(), 200);
        w.pool.push(gid.clone());
        w.known.insert(gid);
    }
    let http = s.http().clone();
    let (mut sent, mut refused) = (0u64, 0u64);
    let mut last_id = w.stored_since(0).await.iter().map(|r| r.0).max().unwrap_or(0);
    for route in POSTS {
        for _ in 0..per_route {
            let mut v = w.seed(&mut rng, route);
            for _ in 0..1 + rng.below(3) {
                mutate_value(&mut rng, &mut v);
            }
            let mut bytes = v.to_string().into_bytes();
            if rng.chance(25) {
                mutate_bytes(&mut rng, &mut bytes);
            }
            let gid = gid_of(&bytes);
            let existing = gid.as_ref().is_some_and(|g| w.known.contains(g));
            let before = if existing { w.snapshot(gid.as_deref()).await } else { String::new() };
            let resp = http
                .post(format!("{}/{route}", s.base_url()))
                .header("content-type", "application/json")
                .body(bytes.clone())
                .send()
                .await
                .unwrap_or_else(|e| {
                    panic!("{route}: no answer ({e}) to {}", String::from_utf8_lossy(&bytes))
                });
            let (code, reply) = read(resp).await;
            sent += 1;
            assert!(code < 500, "{route} answered {code} {reply} to {}", String::from_utf8_lossy(&bytes));
            // Whatever the body said: a refused request stored no transaction, an accepted
            // one at most its own.
            let new = w.stored_since(last_id).await;
            // 425 ONGOING / 409 FAILURE with a dtm_result to a `wait_result` submit report the
            // outcome of a transaction that was stored and ran: not a refusal. Such an answer
            // may have stored its own gid, nothing else.
            let waited = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.get("wait_result").and_then(Value::as_bool))
                .unwrap_or(false);
            let outcome = *route == "submit"
                && waited
                && (code == 409 || code == 425)
                && reply.get("dtm_result").is_some();
            if outcome {
                // The gid as stored: dtx drops CR, LF and ';' from gids, as DTM does.
                let own: Option<String> =
                    gid.as_ref().map(|g| g.chars().filter(|c| !matches!(c, '\n' | '\r' | ';')).collect());
                assert!(
                    new.iter().all(|(_, g)| Some(g) == own.as_ref()),
                    "{route} answered {code} {reply} and stored {new:?}"
                );
            } else if code >= 400 {
                assert!(new.is_empty(), "{route} answered {code} {reply} but stored {new:?}");
            }
            for (id, g) in new {
                last_id = last_id.max(id);
                w.known.insert(g);
            }
            let Some(gid) = gid else { continue };
            if code >= 400 && !outcome {
                refused += 1;
                if existing {
                    // A refused request changes nothing (a round may still run on a submitted
                    // one: only compare rows that no round owns).
                    let after = w.snapshot(Some(&gid)).await;
                    if !after.contains("owner: Some") && !before.contains("owner: Some") {
                        assert_eq!(before, after, "{route} {code} {reply} changed {gid}");
                    }
                } else {
                    let stored = s.engine().load(&gid).await.ok().flatten();
                    assert!(stored.is_none(), "{route} answered {code} {reply} but stored {gid}");
                }
            }
        }
    }
    for route in GETS {
        for _ in 0..per_route / 4 {
            let gid = if rng.chance(50) { rng.pick(&w.pool).clone() } else { random_text(&mut rng) };
            let params: Vec<(String, String)> = (0..rng.below(5))
                .map(|_| {
                    let k = (*rng.pick(&[
                        "gid", "topic", "url", "remark", "cat", "key", "limit", "position", "status", "x",
                    ]))
                    .to_owned();
                    let v = if rng.chance(30) {
                        gid.clone()
                    } else {
                        random_value(&mut rng, 2).to_string().trim_matches('"').to_owned()
                    };
                    (k, v)
                })
                .collect();
            let req = if *route == "topic" {
                http.delete(format!("{}/topic/{}", s.base_url(), urlencode(&random_text(&mut rng))))
            } else if *route == "ping" {
                http.get(format!("{}/api/ping", s.root_url()))
            } else {
                let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={}", urlencode(v))).collect();
                http.get(format!("{}/{route}?{}", s.base_url(), q.join("&")))
            };
            let resp = req.send().await.unwrap_or_else(|e| panic!("{route}: no answer ({e}) to {params:?}"));
            let (code, reply) = read(resp).await;
            sent += 1;
            assert!(code < 500, "{route} answered {code} {reply} to {params:?}");
        }
    }
    // The store holds exactly what was acknowledged.
    let mut stored = HashSet::new();
    let mut before_id = None;
    loop {
        let page = s
            .engine()
            .list(&ListFilter {
                before_id,
                limit: 500,
                gid_prefix: Some(w.prefix.clone()),
                ..Default::default()
            })
            .await
            .expect("list");
        if page.is_empty() {
            break;
        }
        before_id = page.last().map(|g| g.id);
        stored.extend(page.into_iter().map(|g| g.gid));
    }
    let unexpected: Vec<_> = stored.difference(&w.known).collect();
    assert!(unexpected.is_empty(), "stored without an acknowledgement: {unexpected:?}");
    println!(
        "http fuzz on {backend}: {sent} requests, {refused} refused (4xx), 0 answers >= 500, {} transactions stored, all acknowledged",
        stored.len()
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}
