//! Backend-specific checks; the behaviour of the `Store` contract is covered by the shared
//! conformance suite (`tests/conformance.rs`) and the multi-node tests (`tests/nodes.rs`).

use dtx_store::sql::{Arg, Dialect};

use super::*;
use crate::write::My;

#[test]
fn pool_size_derives_the_writers() {
    assert_eq!(MySqlOptions::default().clock, ClockSource::Database);
    assert_eq!(MySqlOptions::with_pool_size(10).writers, 5);
    assert_eq!(MySqlOptions::with_pool_size(0).pool_size, 1);
}

/// MySQL's parameters are anonymous: a template parameter used twice is bound twice, in order.
#[test]
fn anonymous_parameters_bind_in_placeholder_order() {
    let sql = dtx_store::sql::render::<My>("SELECT {now} + ($3 - $2), $2");
    assert!(!sql.text.contains('$'), "{}", sql.text);
    assert_eq!(sql.text.matches('?').count(), 4, "{}", sql.text);
    let args = [Arg::Int(None), Arg::int(2), Arg::int(3)];
    let bound: Vec<Option<i64>> = sql
        .bound(&args)
        .map(|a| match a {
            Arg::Int(v) => v,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(bound, [None, Some(3), Some(2), Some(2)]);
    assert!(My::NOW.contains("NOW(6)"));
}

#[tokio::test]
async fn a_bad_url_or_an_unreachable_server_fails_at_once() {
    let bad = MySqlStore::open("mysql://x:y@[nope/db", MySqlOptions::default()).await;
    assert!(matches!(bad, Err(Error::Internal(_))), "{bad:?}");
    let started = std::time::Instant::now();
    let refused = MySqlStore::open("mysql://dtx@127.0.0.1:1/dtx", MySqlOptions::default()).await;
    match refused {
        Err(Error::Unavailable(msg)) => assert!(msg.contains("MySQL"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "no retry loop at start");
}

/// The database clock in use: the store's `db_now` follows the server's clock, and the claim
/// judges leases by it (a lease the caller computed from a clock an hour behind is still an
/// hour-long lease on the database's timeline).
#[tokio::test]
async fn leases_are_judged_by_the_database_clock() {
    let Some(url) = testing::fresh_database("leases_are_judged_by_the_database_clock").await else {
        return;
    };
    let store = MySqlStore::open(&url, MySqlOptions::default()).await.expect("open");
    let db = store.db_now().await.expect("db_now");
    let system = Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default(),
    );
    assert!((db.0 - system.0).abs() < 5_000, "database clock {db:?} vs this machine {system:?}");
    assert_eq!(
        store.shared_clock().await.expect("shared clock").map(|t| (t.0 - db.0).abs() < 5_000),
        Some(true)
    );

    // A node whose clock is an hour behind creates and leases a saga for 30 s of its time.
    let behind = Timestamp(db.0 - 3_600_000);
    let mut tx = dtx_store::testsuite::saga_with(
        "skew",
        GlobalStatus::Submitted,
        behind,
        Some(("a", behind.add(Duration::from_secs(30)))),
    );
    tx.global.create_time = behind;
    tx.global.update_time = behind;
    store.create(tx).await.expect("create");
    let row = store.load("skew").await.expect("load").expect("row").global;
    let lease = row.lease_until.expect("lease");
    assert!(
        (lease.0 - (db.0 + 30_000)).abs() < 5_000,
        "the lease is 30 s of database time: {lease:?} vs {db:?}"
    );
    // Another node, with a correct clock, cannot take it yet.
    let now = Timestamp(db.0);
    assert!(store.claim("skew", "b", now, now.add(Duration::from_secs(30))).await.expect("claim").is_none());
    assert!(
        store.claim_due("b", now, now.add(Duration::from_secs(30)), 10).await.expect("claim due").is_empty()
    );
}

/// `IN` lists are padded to a power of two (few statement texts, all kept prepared) by
/// repeating the last value.
#[test]
fn in_lists_pad_to_a_power_of_two() {
    assert_eq!([0, 1, 2, 3, 4, 5, 9, 128].map(crate::write::padded_len), [1, 1, 2, 4, 4, 8, 16, 128]);
    let padded: Vec<i64> = crate::write::padded(&[7, 8, 9]).copied().collect();
    assert_eq!(padded, [7, 8, 9, 9]);
    assert_eq!(crate::write::padded::<i64>(&[]).count(), 0);
}
