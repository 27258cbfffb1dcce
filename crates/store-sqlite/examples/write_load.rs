//! A write-path load for the SQLite store: `CONCURRENCY` tasks each run 2-step sagas the way the
//! engine writes them (create owned, save step 1 + renew, save step 2 + renew, save `succeed` +
//! release) and the rate of finished sagas is printed. No HTTP: only the store is measured.
//!
//! `cargo run --release -p dtx-store-sqlite --example write_load -- [sagas] [concurrency] [normal|full] [steps] [payload bytes]`
//!
//! With `steps` (default 2), each saga has that many steps (a compensation and an action
//! each, with `payload bytes` of payload, default 16) and one save per step: the cost of a
//! large transaction written after each call (ADR 26).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a benchmark: a panic is a failed run")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use dtx_core::{Branch, BranchStatus, GlobalStatus, Op};
use dtx_store::testsuite::{at, saga_with};
use dtx_store::{BranchUpdate, LeaseChange, Save, StatusChange, Store};
use dtx_store_sqlite::{SqliteOptions, SqliteStore, Synchronous};

fn step(branch_id: &str) -> BranchUpdate {
    BranchUpdate {
        id: 0,
        branch_id: branch_id.to_owned(),
        op: Op::Action,
        status: BranchStatus::Succeed,
        attempts: 1,
        last_error: String::new(),
        finish_time: Some(at(1)),
    }
}

async fn one(store: &dyn Store, gid: String, steps: usize, payload: usize) {
    let mut tx = saga_with(&gid, GlobalStatus::Submitted, at(0), Some(("n", at(30))));
    tx.branches = (1..=steps)
        .flat_map(|i| {
            [Op::Compensate, Op::Action].map(|op| {
                Branch::new(
                    format!("{i:02}"),
                    op,
                    format!("http://127.0.0.1:1/{op}"),
                    vec![b'x'; payload],
                    at(0),
                )
            })
        })
        .collect();
    store.create(tx).await.unwrap();
    let base = |branches: Vec<BranchUpdate>| Save {
        gid: gid.clone(),
        owner: "n".to_owned(),
        now: at(1),
        branches,
        status: None,
        lease: LeaseChange::Renew { lease_until: at(31) },
    };
    for i in 1..=steps {
        store.save(base(vec![step(&format!("{i:02}"))])).await.unwrap();
    }
    let done = Save {
        status: Some(StatusChange { to: GlobalStatus::Succeed, rollback_reason: None, result: None }),
        lease: LeaseChange::Release { next_cron_time: at(60), next_cron_interval: Duration::from_secs(10) },
        ..base(Vec::new())
    };
    store.save(done).await.unwrap();
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let sagas: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(256);
    let synchronous = match args.get(3).map(String::as_str) {
        Some("full") => Synchronous::Full,
        _ => Synchronous::Normal,
    };
    let steps: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(2);
    let payload: usize = args.get(5).and_then(|s| s.parse().ok()).unwrap_or(16);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("dtx.db").display());
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::open(&url, SqliteOptions { synchronous, ..SqliteOptions::default() }).await.unwrap(),
    );
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = t;
            while i < sagas {
                one(&*store, format!("g-{i}"), steps, payload).await;
                i += concurrency;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{sagas} sagas of {steps} steps ({} writes), concurrency {concurrency}, synchronous {synchronous:?}: \
         {secs:.2} s, {:.0} sagas/s",
        sagas * (steps + 2),
        sagas as f64 / secs
    );
}
