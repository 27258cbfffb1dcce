//! Retention (`purge_finished`) and the admin helpers (`status_counts`, the gid-prefix filter).

use std::sync::Arc;

use dtx_core::{GlobalStatus, Timestamp};

use super::{at, put, saga_with};
use crate::{ListFilter, Store};

/// A transaction with `status`, last written at `written`.
async fn put_written(store: &dyn Store, gid: &str, status: GlobalStatus, written: Timestamp) {
    let mut tx = saga_with(gid, status, at(0), None);
    tx.global.update_time = written;
    tx.global.create_time = written;
    match status {
        GlobalStatus::Succeed => tx.global.finish_time = Some(written),
        GlobalStatus::Failed => tx.global.rollback_time = Some(written),
        _ => {}
    }
    put(store, tx).await;
}

async fn exists(store: &dyn Store, gid: &str) -> bool {
    store.load(gid).await.expect("load").is_some()
}

/// Exactly the finished transactions written before the cut-off go, with their branches;
/// unfinished ones of any age and recent finished ones stay untouched.
pub async fn purge_deletes_only_old_finished(store: Arc<dyn Store>) {
    let cut = at(1000);
    let rows = [
        ("old-succeed", GlobalStatus::Succeed, at(10), true),
        ("old-failed", GlobalStatus::Failed, at(20), true),
        ("edge-succeed", GlobalStatus::Succeed, Timestamp(cut.as_millis() - 1), true),
        ("at-cut-succeed", GlobalStatus::Succeed, cut, false),
        ("new-failed", GlobalStatus::Failed, at(2000), false),
        ("old-submitted", GlobalStatus::Submitted, at(10), false),
        ("old-prepared", GlobalStatus::Prepared, at(10), false),
        ("old-aborting", GlobalStatus::Aborting, at(10), false),
    ];
    for (gid, status, written, _) in rows {
        put_written(&*store, gid, status, written).await;
    }
    let before = store.load("old-submitted").await.expect("load").expect("old-submitted");
    assert_eq!(store.purge_finished(cut, 100).await.expect("purge"), 3);
    for (gid, _, _, purged) in rows {
        assert_eq!(!exists(&*store, gid).await, purged, "{gid} purged: {purged}");
    }
    // An active one is byte-for-byte unchanged (its branches too).
    let after = store.load("old-submitted").await.expect("load").expect("old-submitted");
    assert_eq!(after, before);
    // The branch rows went with their transaction: a new one may reuse a purged gid.
    put_written(&*store, "old-succeed", GlobalStatus::Submitted, at(3000)).await;
    let reborn = store.load("old-succeed").await.expect("load").expect("reborn");
    assert_eq!(reborn.branches.len(), 4, "only the new transaction's branches");
    assert_eq!(store.purge_finished(cut, 100).await.expect("purge again"), 0);
}

/// Batches are bounded by `limit`, oldest first, until nothing old is left.
pub async fn purge_works_in_bounded_batches(store: Arc<dyn Store>) {
    for i in 0..7u64 {
        put_written(&*store, &format!("done-{i}"), GlobalStatus::Succeed, at(10 + i)).await;
    }
    assert_eq!(store.purge_finished(at(100), 3).await.expect("purge"), 3);
    for i in 0..3 {
        assert!(!exists(&*store, &format!("done-{i}")).await, "oldest first: done-{i} gone");
    }
    assert!(exists(&*store, "done-3").await);
    assert_eq!(store.purge_finished(at(100), 3).await.expect("purge"), 3);
    assert_eq!(store.purge_finished(at(100), 3).await.expect("purge"), 1);
    assert_eq!(store.purge_finished(at(100), 3).await.expect("purge"), 0);
}

/// Several purgers at once (several nodes) delete each row once, and all of them.
pub async fn concurrent_purges_share_the_work(store: Arc<dyn Store>) {
    for i in 0..60u64 {
        put_written(&*store, &format!("c-{i:02}"), GlobalStatus::Failed, at(i)).await;
    }
    put_written(&*store, "c-live", GlobalStatus::Submitted, at(0)).await;
    let purgers = (0..4).map(|_| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let mut total = 0;
            loop {
                let n = store.purge_finished(at(1000), 5).await.expect("purge");
                total += n;
                if n == 0 {
                    return total;
                }
            }
        })
    });
    let mut total = 0;
    for p in purgers {
        total += p.await.expect("purger");
    }
    assert_eq!(total, 60, "every finished row deleted exactly once");
    assert!(exists(&*store, "c-live").await);
}

/// Counts per status and the due backlog.
pub async fn status_counts_per_status_and_due(store: Arc<dyn Store>) {
    assert_eq!(store.status_counts(at(0)).await.expect("counts"), crate::StatusCounts::default());
    assert_eq!(store.unfinished_counts(at(0)).await.expect("counts"), crate::StatusCounts::default());
    assert_eq!(store.finished_counts(at(0)).await.expect("counts"), Vec::new());
    put(&*store, saga_with("due-1", GlobalStatus::Submitted, at(5), None)).await;
    put(&*store, saga_with("due-2", GlobalStatus::Aborting, at(10), None)).await;
    put(&*store, saga_with("later", GlobalStatus::Submitted, at(50), None)).await;
    put(&*store, saga_with("leased", GlobalStatus::Submitted, at(5), Some(("n", at(100))))).await;
    put(&*store, saga_with("lapsed", GlobalStatus::Prepared, at(5), Some(("n", at(15))))).await;
    put_written(&*store, "ok", GlobalStatus::Succeed, at(1)).await;
    put_written(&*store, "ko", GlobalStatus::Failed, at(1)).await;
    put_written(&*store, "ok2", GlobalStatus::Succeed, at(1)).await;
    let counts = store.status_counts(at(20)).await.expect("counts");
    let mut by: Vec<(&str, u64)> = counts.by_status.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    by.sort();
    assert_eq!(by, [("aborting", 1), ("failed", 1), ("prepared", 1), ("submitted", 3), ("succeed", 2)]);
    // due-1, due-2 and lapsed (its lease ended at 15); not later (due at 50) nor leased.
    assert_eq!(counts.due, 3);
    // The same without the finished rows, through the cheap path.
    let unfinished = store.unfinished_counts(at(20)).await.expect("unfinished counts");
    let mut by: Vec<(&str, u64)> = unfinished.by_status.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    by.sort();
    assert_eq!(by, [("aborting", 1), ("prepared", 1), ("submitted", 3)]);
    assert_eq!(unfinished.due, 3);
    let finished = store.finished_counts(at(20)).await.expect("finished counts");
    let by: Vec<(&str, u64)> = finished.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    assert_eq!(by, [("failed", 1), ("succeed", 2)]);
}

/// The gid-prefix filter matches literally (no LIKE wildcards), with the other filters.
pub async fn list_by_gid_prefix(store: Arc<dyn Store>) {
    for gid in ["order-1", "order-2", "orders-x", "ord%er", "other", "order_3"] {
        put(&*store, saga_with(gid, GlobalStatus::Submitted, at(0), None)).await;
    }
    let list = |prefix: &str| {
        let store = Arc::clone(&store);
        let filter = ListFilter { limit: 100, gid_prefix: Some(prefix.to_owned()), ..ListFilter::default() };
        async move {
            let mut gids: Vec<String> =
                store.list(&filter).await.expect("list").into_iter().map(|g| g.gid).collect();
            gids.sort();
            gids
        }
    };
    assert_eq!(list("order-").await, ["order-1", "order-2"]);
    assert_eq!(list("order").await, ["order-1", "order-2", "order_3", "orders-x"]);
    assert_eq!(list("ord%").await, ["ord%er"]);
    assert_eq!(list("order_").await, ["order_3"]);
    assert_eq!(list("nothing").await, Vec::<String>::new());
    assert_eq!(list("").await.len(), 6);
}
