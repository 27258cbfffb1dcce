//! Several nodes on one PostgreSQL database: separate stores (each its own connection pool, as
//! separate processes would have) on the database clock. Skipped, with a notice, when
//! `DTX_TEST_POSTGRES_URL` is unset.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use dtx_core::{GlobalStatus, Timestamp};
use dtx_store::testsuite::saga;
use dtx_store::{Error, LeaseChange, Loaded, Save, Store};
use dtx_store_postgres::testing::{self, Cluster};
use dtx_store_postgres::{PgOptions, PgStore};

const MINUTE: Duration = Duration::from_secs(60);

/// A node's clock: the machine's, shifted by `skew_ms`.
fn node_clock(skew_ms: i64) -> Timestamp {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    Timestamp(now + skew_ms)
}

/// `n` stores (pools) on one fresh database, on the database clock.
async fn nodes(test: &str, n: usize) -> Option<Vec<PgStore>> {
    let url = testing::fresh_database(test).await?;
    let mut stores = Vec::new();
    for _ in 0..n {
        stores.push(PgStore::open(&url, PgOptions::with_pool_size(4)).await.expect("open"));
    }
    Some(stores)
}

/// Inserts an unowned saga due now, built on a node clock `skew_ms` off.
async fn due_now(store: &PgStore, gid: &str, skew_ms: i64) {
    let mut tx = saga(gid);
    let now = node_clock(skew_ms);
    tx.global.create_time = now;
    tx.global.update_time = now;
    tx.global.next_cron_time = now;
    store.create(tx).await.expect("create");
}

fn renew(gid: &str, owner: &str, now: Timestamp, lease: Duration) -> Save {
    Save {
        gid: gid.to_owned(),
        owner: owner.to_owned(),
        now,
        branches: Vec::new(),
        status: None,
        lease: LeaseChange::Renew { lease_until: now.add(lease) },
    }
}

/// Claims by `store` on a node clock `skew_ms` off, leasing for `lease` (by that clock).
async fn claim(store: &PgStore, owner: &str, skew_ms: i64, lease: Duration) -> Vec<Loaded> {
    let now = node_clock(skew_ms);
    store.claim_due(owner, now, now.add(lease), 100).await.expect("claim_due")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimers_on_several_pools_never_share_a_row() {
    const ROWS: usize = 400;
    let Some(stores) = nodes("claimers_on_several_pools_never_share_a_row", 4).await else {
        return;
    };
    for i in 0..ROWS {
        due_now(&stores[i % 4], &format!("row-{i:03}"), 0).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (n, store) in stores.iter().enumerate() {
        // Three claimers per node, each with its own token, small batches to interleave.
        for c in 0..3 {
            let store = store.clone();
            tasks.spawn(async move {
                let token = format!("node{n}-claimer{c}");
                let mut mine = Vec::new();
                loop {
                    let now = node_clock(0);
                    let got = store.claim_due(&token, now, now.add(MINUTE), 7).await.expect("claim_due");
                    if got.is_empty() {
                        break;
                    }
                    mine.extend(got.into_iter().map(|l| l.global.gid));
                }
                (token, mine)
            });
        }
    }
    let mut owner_of: HashMap<String, String> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (token, mine) = joined.expect("claimer");
        for gid in mine {
            if let Some(first) = owner_of.insert(gid.clone(), token.clone()) {
                panic!("{gid} claimed by both {first} and {token}");
            }
        }
    }
    assert_eq!(owner_of.len(), ROWS, "every due row claimed exactly once");
    let loaded = stores[0].load("row-123").await.expect("load").expect("row");
    assert_eq!(loaded.global.owner.as_ref(), owner_of.get("row-123"));
}

/// Node A's clock is five minutes slow, node B's five minutes fast: by their own clocks B
/// would think A's lease long gone and A would think B's last for ten more minutes. By the
/// database clock both leases last exactly the lease, and due times are the interval ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skewed_node_clocks_honour_each_others_leases() {
    let Some(stores) = nodes("skewed_node_clocks_honour_each_others_leases", 2).await else {
        return;
    };
    let (a, b) = (&stores[0], &stores[1]);
    let (slow, fast) = (-5 * 60_000, 5 * 60_000);
    let lease = Duration::from_millis(1500);
    due_now(a, "skew", slow).await;

    // A (slow) claims it, for 1.5 s.
    let claimed = claim(a, "a", slow, lease).await;
    assert_eq!(claimed.len(), 1, "a row built on a slow clock is due at once: the database decides");
    let lease_until = claimed[0].global.lease_until.expect("leased");
    let db_now = a.db_now().await.expect("db clock");
    assert!(
        (lease_until.0 - db_now.0 - 1500).abs() < 1000,
        "the lease is on the database clock: until {lease_until:?}, db now {db_now:?}"
    );

    // B (fast) sees the lease as valid for its whole duration, though A's "now + lease" is ten
    // minutes behind B's clock.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1000) {
        assert!(claim(b, "b", fast, lease).await.is_empty(), "B took A's valid lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A renews (on its slow clock): still A's for another 1.5 s of database time.
    a.save(renew("skew", "a", node_clock(slow), lease)).await.expect("A renews");
    let renewed = std::time::Instant::now();
    while renewed.elapsed() < Duration::from_millis(1000) {
        assert!(claim(b, "b", fast, lease).await.is_empty(), "B took A's renewed lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Once the lease has run out in database time, B takes over, and A is fenced.
    let taken = loop {
        let got = claim(b, "b", fast, lease).await;
        if !got.is_empty() {
            break got;
        }
        assert!(renewed.elapsed() < Duration::from_secs(5), "B never took over the expired lease");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(renewed.elapsed() >= Duration::from_millis(1400), "taken over early: {:?}", renewed.elapsed());
    assert_eq!(taken[0].global.owner.as_deref(), Some("b"));
    let stale = a.save(renew("skew", "a", node_clock(slow), lease)).await;
    assert!(matches!(stale, Err(Error::Fenced { .. })), "A is fenced: {stale:?}");

    // B (fast) releases it due one second later by its clock: A (slow) finds it due one second
    // later, not ten minutes and a second.
    let now_b = node_clock(fast);
    let release = Save {
        lease: LeaseChange::Release {
            next_cron_time: now_b.add(Duration::from_secs(1)),
            next_cron_interval: lease,
        },
        ..renew("skew", "b", now_b, lease)
    };
    b.save(release).await.expect("B releases");
    let released = std::time::Instant::now();
    assert!(claim(a, "a2", slow, lease).await.is_empty(), "not due yet");
    let again = loop {
        let got = claim(a, "a2", slow, lease).await;
        if !got.is_empty() {
            break got;
        }
        assert!(released.elapsed() < Duration::from_secs(5), "A never saw the row due");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(released.elapsed() >= Duration::from_millis(900), "due early: {:?}", released.elapsed());
    assert_eq!(again[0].global.status, GlobalStatus::Submitted);
}

/// A branch added by a client (TCC register) is judged against the lease by database time too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_branches_respects_a_lease_by_database_time() {
    let Some(stores) = nodes("add_branches_respects_a_lease_by_database_time", 2).await else {
        return;
    };
    let (a, b) = (&stores[0], &stores[1]);
    let mut tx = saga("reg");
    tx.global.status = GlobalStatus::Prepared;
    let now = node_clock(0);
    tx.global.update_time = now;
    tx.global.next_cron_time = now;
    a.create(tx).await.expect("create");
    let now = node_clock(0);
    a.claim("reg", "a", now, now.add(Duration::from_secs(30))).await.expect("claim").expect("claimable");
    // B's clock is an hour ahead: by node time A's lease would be long over.
    let b_now = node_clock(3_600_000);
    let branch =
        dtx_core::Branch::new("09".into(), dtx_core::Op::Cancel, "http://x".into(), Vec::new(), b_now);
    let expect = dtx_store::Expect { trans_type: dtx_core::TransType::Saga, default_timeout: Duration::ZERO };
    let refused = b.add_branches("reg", expect, vec![branch], b_now).await;
    assert!(
        matches!(refused, Err(Error::Precondition(ref m)) if m.contains("being processed")),
        "{refused:?}"
    );
}

/// The database going away: operations fail `Unavailable` (promptly, not hanging), and the same
/// store works again once it is back, without being reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_then_the_pool_reconnects() {
    let Some(cluster) = Cluster::start("an_outage_is_unavailable_then_the_pool_reconnects").await else {
        return;
    };
    let opts = PgOptions { acquire_timeout: Duration::from_secs(1), ..PgOptions::with_pool_size(4) };
    let store = Arc::new(PgStore::open(&cluster.url(), opts).await.expect("open"));
    due_now(&store, "before", 0).await;

    cluster.stop().await.expect("stop postgres");
    let started = std::time::Instant::now();
    let mut during = saga("during");
    during.global.update_time = node_clock(0);
    let result = store.create(during).await;
    assert!(matches!(result, Err(Error::Unavailable(_))), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(4), "failed promptly: {:?}", started.elapsed());
    assert!(matches!(store.load("before").await, Err(Error::Unavailable(_))));

    cluster.start_again().await.expect("start postgres");
    due_now(&store, "after", 0).await;
    assert!(store.load("before").await.expect("load").is_some(), "acknowledged before the outage");
    assert!(store.load("during").await.expect("load").is_none(), "nothing of the failed create");
    assert!(store.load("after").await.expect("load").is_some());
}

/// Retention on every node at once: concurrent purges take disjoint rows (`SKIP LOCKED`), so
/// together they delete each old finished transaction exactly once, and no active one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_purging_at_once_delete_each_old_finished_row_once() {
    let Some(stores) = nodes("nodes_purging_at_once", 3).await else {
        return;
    };
    use dtx_store::testsuite::{at, put, saga_with};
    const OLD: usize = 300;
    for i in 0..OLD {
        let status = if i % 3 == 0 { GlobalStatus::Failed } else { GlobalStatus::Succeed };
        let mut tx = saga_with(&format!("old-{i}"), status, at(10), None);
        tx.global.update_time = at(10 + i as u64);
        put(&stores[0], tx).await;
    }
    for i in 0..10 {
        put(&stores[0], saga_with(&format!("active-{i}"), GlobalStatus::Submitted, at(10), None)).await;
    }
    let before = node_clock(0);
    let stores: Vec<Arc<PgStore>> = stores.into_iter().map(Arc::new).collect();
    // Each node purges in its own task, small batches, all at once.
    let tasks: Vec<_> = stores
        .iter()
        .cloned()
        .map(|s| {
            tokio::spawn(async move {
                let mut total = 0;
                loop {
                    let n = s.purge_finished(before, 7).await.expect("purge");
                    total += n;
                    if n == 0 {
                        return total;
                    }
                }
            })
        })
        .collect();
    let mut deleted = Vec::new();
    for t in tasks {
        deleted.push(t.await.expect("purge task"));
    }
    assert_eq!(deleted.iter().sum::<u64>(), OLD as u64, "each row once: {deleted:?}");
    for i in 0..OLD {
        assert!(stores[1].load(&format!("old-{i}")).await.expect("load").is_none(), "old-{i}");
    }
    for i in 0..10 {
        let active = stores[2].load(&format!("active-{i}")).await.expect("load").expect("active kept");
        assert_eq!(active.branches.len(), 4);
    }
}
