//! Many writers at once: what group commit must preserve.

use std::sync::Arc;

use futures::future::join_all;

use super::{get, put, saga};
use crate::{Error, Store};

/// 500 concurrent creates all succeed and are all loadable afterwards.
pub async fn concurrent_creates_all_durable(store: Arc<dyn Store>) {
    const N: usize = 500;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let store = Arc::clone(&store);
        tasks.spawn(async move { store.create(saga(&format!("many-{i:03}"))).await });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("create task").expect("create");
    }
    for i in 0..N {
        let loaded = get(&*store, &format!("many-{i:03}")).await;
        assert_eq!(loaded.branches.len(), 4);
    }
}

/// Among many concurrent creates (committed together by a batching backend), the ones with a
/// taken gid fail with `Conflict` alone: all others are written, the originals are untouched,
/// and of two concurrent creates of one new gid exactly one wins.
pub async fn batch_duplicate_fails_only_that_request(store: Arc<dyn Store>) {
    for i in 0..10 {
        put(&*store, saga(&format!("taken-{i}"))).await;
    }
    let originals = join_all((0..10).map(|i| {
        let store = Arc::clone(&store);
        async move { get(&*store, &format!("taken-{i}")).await }
    }))
    .await;

    let mut requests = Vec::new();
    for i in 0..200 {
        requests.push(saga(&format!("fresh-{i:03}")));
        if i % 20 == 10 {
            let mut dup = saga(&format!("taken-{}", i / 20));
            dup.global.custom_data = "impostor".into();
            requests.push(dup);
        }
    }
    requests.push(saga("twin"));
    requests.push(saga("twin"));
    let results = join_all(requests.into_iter().map(|tx| {
        let store = Arc::clone(&store);
        async move {
            let gid = tx.global.gid.clone();
            (gid, store.create(tx).await)
        }
    }))
    .await;

    let mut twins_ok = 0;
    for (gid, result) in results {
        match (gid.as_str(), result) {
            ("twin", Ok(())) => twins_ok += 1,
            ("twin", Err(Error::Conflict(_))) => {}
            (g, Err(Error::Conflict(_))) if g.starts_with("taken-") => {}
            (g, Ok(())) if g.starts_with("fresh-") => {}
            (g, other) => panic!("unexpected outcome for {g}: {other:?}"),
        }
    }
    assert_eq!(twins_ok, 1, "exactly one create of a contested gid wins");
    for i in 0..200 {
        get(&*store, &format!("fresh-{i:03}")).await;
    }
    for (i, original) in originals.iter().enumerate() {
        assert_eq!(&get(&*store, &format!("taken-{i}")).await, original);
    }
}
