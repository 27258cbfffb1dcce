//! Key-value rows: insert, get, scan, compare-and-set update, delete.

use std::sync::Arc;

use futures::future::join_all;

use super::at;
use crate::{Error, KvRow, Store};

/// Reads a row that must exist.
async fn row(store: &dyn Store, cat: &str, k: &str) -> KvRow {
    store
        .kv_get(cat, k)
        .await
        .unwrap_or_else(|e| panic!("kv_get {cat}/{k}: {e:#}"))
        .unwrap_or_else(|| panic!("kv {cat}/{k} not found"))
}

/// Insert starts at version 1; a duplicate `(cat, k)` is a `Conflict`; categories are
/// separate; delete removes the row (then `NotFound`), and the key can be inserted again.
pub async fn kv_insert_get_delete(store: Arc<dyn Store>) {
    assert_eq!(store.kv_get("topics", "t1").await.expect("kv_get"), None);
    store.kv_insert("topics", "t1", r#"[{"url":"http://a"}]"#, at(1)).await.expect("insert");
    let t1 = row(&*store, "topics", "t1").await;
    assert!(t1.id > 0);
    let want = KvRow {
        id: t1.id,
        cat: "topics".into(),
        k: "t1".into(),
        v: r#"[{"url":"http://a"}]"#.into(),
        version: 1,
        create_time: at(1),
        update_time: at(1),
    };
    assert_eq!(t1, want);

    let result = store.kv_insert("topics", "t1", "other", at(2)).await;
    assert!(matches!(result, Err(Error::Conflict(_))), "got {result:?}");
    assert_eq!(row(&*store, "topics", "t1").await, want, "a refused insert changes nothing");

    store.kv_insert("settings", "t1", "x", at(3)).await.expect("same key, other category");
    assert_eq!(row(&*store, "settings", "t1").await.v, "x");

    store.kv_delete("topics", "t1").await.expect("delete");
    assert_eq!(store.kv_get("topics", "t1").await.expect("kv_get"), None);
    assert_eq!(row(&*store, "settings", "t1").await.v, "x", "the other category is untouched");
    let result = store.kv_delete("topics", "t1").await;
    assert!(matches!(result, Err(Error::NotFound(_))), "got {result:?}");
    let result = store.kv_delete("nowhere", "t1").await;
    assert!(matches!(result, Err(Error::NotFound(_))), "got {result:?}");

    store.kv_insert("topics", "t1", "again", at(4)).await.expect("insert after delete");
    let again = row(&*store, "topics", "t1").await;
    assert_eq!((again.version, again.v.as_str(), again.create_time), (1, "again", at(4)));
}

/// One category, newest (highest id) first, paged by `before_id`, every row exactly once.
pub async fn kv_scan_pages_newest_first(store: Arc<dyn Store>) {
    for i in 0..25 {
        store.kv_insert("topics", &format!("topic-{i:02}"), "[]", at(i)).await.expect("insert");
        if i % 5 == 0 {
            store.kv_insert("other", &format!("other-{i:02}"), "{}", at(i)).await.expect("insert");
        }
    }
    let mut seen = Vec::new();
    let mut before = None;
    let mut pages = 0;
    loop {
        let page = store.kv_scan("topics", before, 10).await.expect("kv_scan");
        if page.is_empty() {
            break;
        }
        pages += 1;
        assert!(page.len() <= 10);
        assert!(page.windows(2).all(|w| w[0].id > w[1].id), "ids descend");
        assert!(page.iter().all(|r| r.cat == "topics"));
        before = page.last().map(|r| r.id);
        seen.extend(page.into_iter().map(|r| r.k));
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).rev().map(|i| format!("topic-{i:02}")).collect();
    assert_eq!(seen, want);

    let other = store.kv_scan("other", None, 100).await.expect("kv_scan");
    let keys: Vec<&str> = other.iter().map(|r| r.k.as_str()).collect();
    assert_eq!(keys, ["other-20", "other-15", "other-10", "other-05", "other-00"]);
    assert_eq!(other[0], row(&*store, "other", "other-20").await, "scan returns whole rows");
    assert!(store.kv_scan("empty", None, 10).await.expect("kv_scan").is_empty());
    assert!(store.kv_scan("topics", None, 0).await.expect("limit 0").is_empty());
}

/// Update is a compare-and-set on `version`: the current version wins (then version + 1), a
/// stale or future version is a `Conflict` that writes nothing, a missing row `NotFound`.
pub async fn kv_update_is_compare_and_set(store: Arc<dyn Store>) {
    store.kv_insert("topics", "t", "v1", at(1)).await.expect("insert");
    store.kv_update("topics", "t", "v2", 1, at(2)).await.expect("update at version 1");
    let t = row(&*store, "topics", "t").await;
    assert_eq!((t.v.as_str(), t.version), ("v2", 2));
    assert_eq!((t.create_time, t.update_time), (at(1), at(2)));

    for stale in [1, 3] {
        let result = store.kv_update("topics", "t", "lost", stale, at(3)).await;
        assert!(matches!(result, Err(Error::Conflict(_))), "version {stale}: got {result:?}");
        assert_eq!(row(&*store, "topics", "t").await, t, "a refused update changes nothing");
    }
    store.kv_update("topics", "t", "v3", 2, at(4)).await.expect("update at version 2");
    assert_eq!(row(&*store, "topics", "t").await.version, 3);

    let result = store.kv_update("topics", "missing", "x", 1, at(5)).await;
    assert!(matches!(result, Err(Error::NotFound(_))), "got {result:?}");
    assert_eq!(store.kv_get("topics", "missing").await.expect("kv_get"), None);
    store.kv_delete("topics", "t").await.expect("delete");
    let result = store.kv_update("topics", "t", "x", 3, at(6)).await;
    assert!(matches!(result, Err(Error::NotFound(_))), "got {result:?}");
}

/// Concurrent updates with the version read before: exactly the winners increment the
/// version (one, as all read the same one), the others get `Conflict`. With a read-and-retry
/// loop, no increment is ever lost.
pub async fn kv_concurrent_updates_count_winners(store: Arc<dyn Store>) {
    const N: usize = 20;
    store.kv_insert("topics", "race", "start", at(1)).await.expect("insert");
    let read = row(&*store, "topics", "race").await;
    let results = join_all((0..N).map(|i| {
        let store = Arc::clone(&store);
        let version = read.version;
        tokio::spawn(async move {
            let v = format!("writer-{i}");
            let result = store.kv_update("topics", "race", &v, version, at(2)).await;
            (v, result)
        })
    }))
    .await;
    let mut winners = Vec::new();
    for joined in results {
        match joined.expect("update task") {
            (v, Ok(())) => winners.push(v),
            (_, Err(Error::Conflict(_))) => {}
            (v, Err(e)) => panic!("{v}: unexpected error {e:?}"),
        }
    }
    let after = row(&*store, "topics", "race").await;
    assert_eq!(after.version, 1 + winners.len() as i64, "winners: {winners:?}");
    assert_eq!(winners.len(), 1, "one version, one winner");
    assert_eq!(after.v, winners[0]);

    // A counter incremented by N tasks, each retrying on Conflict with a fresh read.
    store.kv_insert("topics", "counter", "0", at(1)).await.expect("insert");
    let tasks = join_all((0..N).map(|_| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            loop {
                let current = row(&*store, "topics", "counter").await;
                let n: u64 = current.v.parse().expect("counter value");
                match store.kv_update("topics", "counter", &(n + 1).to_string(), current.version, at(3)).await
                {
                    Ok(()) => return,
                    Err(Error::Conflict(_)) => tokio::task::yield_now().await,
                    Err(e) => panic!("unexpected error {e:?}"),
                }
            }
        })
    }))
    .await;
    tasks.into_iter().for_each(|t| t.expect("counter task"));
    let counter = row(&*store, "topics", "counter").await;
    assert_eq!((counter.v, counter.version), (N.to_string(), 1 + N as i64));
}
