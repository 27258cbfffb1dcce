//! Many writers at once: what group commit must preserve.

use std::sync::Arc;
use std::time::Duration;

use dtx_core::{BranchStatus, GlobalStatus, Op};
use futures::future::join_all;

use super::{at, get, put, saga, saga_with};
use crate::{BranchUpdate, Error, LeaseChange, Loaded, NewTransaction, Save, StatusChange, Store};

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
    let results = create_all(&store, requests).await;

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

/// Many failing requests in one batch cost work linear in the batch, not quadratic: after a
/// failure only the requests around it run again. Counted in SQL statements against the same
/// creates sent one at a time (the old retry of every other request after each failure sent 9
/// to 20 times as many, now about 2.6; this allows 5). A store without SQL sends none.
pub async fn batch_with_many_failures_stays_linear(store: Arc<dyn Store>) {
    const TAKEN: usize = 10;
    const FRESH: usize = 60;
    for i in 0..TAKEN {
        put(&*store, saga(&format!("held-{i}"))).await;
    }
    // The cost of one create, one at a time.
    let before = crate::sql::statements();
    for i in 0..FRESH {
        store.create(saga(&format!("solo-{i:02}"))).await.expect("create");
    }
    let one_at_a_time = crate::sql::statements() - before;

    // FRESH new gids, each followed by a create of a taken one: half of them fail.
    let mut requests = Vec::new();
    for i in 0..FRESH {
        requests.push(saga(&format!("new-{i:02}")));
        requests.push(saga(&format!("held-{}", i % TAKEN)));
    }
    let before = crate::sql::statements();
    let results = create_all(&store, requests).await;
    let together = crate::sql::statements() - before;
    for (gid, result) in results {
        match result {
            Ok(()) => assert!(gid.starts_with("new-"), "{gid} was created twice"),
            Err(Error::Conflict(_)) => assert!(gid.starts_with("held-"), "{gid}: conflict"),
            Err(e) => panic!("{gid}: {e:?}"),
        }
    }
    for i in 0..FRESH {
        get(&*store, &format!("new-{i:02}")).await;
    }
    assert!(
        together <= 5 * one_at_a_time,
        "{together} statements for {FRESH} creates among {FRESH} failing ones; {one_at_a_time} for {FRESH} one at a time"
    );
}

/// Sends every create at once (a batching backend commits them together): each gid with its result.
async fn create_all(
    store: &Arc<dyn Store>,
    requests: Vec<NewTransaction>,
) -> Vec<(String, Result<(), Error>)> {
    join_all(requests.into_iter().map(|tx| {
        let store = Arc::clone(store);
        async move {
            let gid = tx.global.gid.clone();
            (gid, store.create(tx).await)
        }
    }))
    .await
}

/// A loaded transaction without what differs between two copies of it (gid, ids).
fn anonymous(mut loaded: Loaded) -> Loaded {
    loaded.global.gid.clear();
    loaded.global.id = 0;
    loaded.branches.iter_mut().for_each(|b| b.id = 0);
    loaded
}

/// The `i`-th save of [`batch_writes_match_one_at_a_time`], of transaction `gid` owned by `a`:
/// every kind of lease change, status changes, a branch updated twice (the last wins); each
/// tenth is by a stale owner (fenced) and each tenth plus three names a missing branch.
fn varied_save(i: usize, gid: &str) -> Save {
    // One now for all: a store on a database clock the test sets (PostgreSQL's suite) reads
    // the same clock for every save of the batch.
    let now = at(20);
    let update = |branch_id: &str, op: Op, status: BranchStatus, attempts: u32, error: &str| BranchUpdate {
        id: 0,
        branch_id: branch_id.to_owned(),
        op,
        status,
        attempts,
        last_error: error.to_owned(),
        finish_time: (status == BranchStatus::Succeed).then_some(now),
    };
    let mut branches = vec![update("01", Op::Action, BranchStatus::Succeed, 1, "")];
    if i.is_multiple_of(2) {
        branches.push(update("02", Op::Action, BranchStatus::Prepared, 1, "HTTP 503"));
        branches.push(update("02", Op::Action, BranchStatus::Prepared, 2, "HTTP 502"));
    }
    if i % 10 == 3 {
        branches.push(update("99", Op::Action, BranchStatus::Succeed, 1, ""));
    }
    let (status, lease) = match i % 4 {
        0 => (None, LeaseChange::Renew { lease_until: at(90) }),
        1 => (
            Some(StatusChange {
                to: GlobalStatus::Aborting,
                rollback_reason: Some(format!("no {i}")),
                result: None,
            }),
            LeaseChange::RenewRescheduled {
                lease_until: at(95),
                next_cron_time: at(40),
                next_cron_interval: Duration::from_secs(i as u64),
            },
        ),
        2 => (
            Some(StatusChange {
                to: GlobalStatus::Succeed,
                rollback_reason: None,
                result: Some(format!("r{i}")),
            }),
            LeaseChange::Release { next_cron_time: at(100), next_cron_interval: Duration::from_secs(7) },
        ),
        _ => (
            Some(StatusChange {
                to: GlobalStatus::Failed,
                rollback_reason: Some("gave up".into()),
                result: None,
            }),
            LeaseChange::Hold {
                next_cron_time: at(120),
                next_cron_interval: Duration::from_secs(30),
                host: format!("svc-{i}:80"),
            },
        ),
    };
    let owner = if i % 10 == 5 { "stale" } else { "a" };
    Save { gid: gid.to_owned(), owner: owner.to_owned(), now, branches, status, lease }
}

/// The `i`-th new transaction of [`batch_writes_match_one_at_a_time`], written at the saves' now.
fn fresh(gid: &str, i: usize) -> NewTransaction {
    let mut tx = saga(gid);
    tx.global.custom_data = format!("{{\"n\":{i}}}");
    tx.global.update_time = at(20);
    tx.global.next_cron_time = at(20 + i as u64);
    tx
}

/// Creates and saves sent at once (which a batching backend writes together, PostgreSQL in
/// one multi-row statement) leave exactly what the same requests leave one at a time, and
/// each failing one (a lost fence, a missing branch, a duplicate gid) fails alone with its
/// own error, writing nothing.
pub async fn batch_writes_match_one_at_a_time(store: Arc<dyn Store>) {
    const N: usize = 60;
    let owned = |gid: &str| saga_with(gid, GlobalStatus::Submitted, at(0), Some(("a", at(30))));
    let mut alone = Vec::new();
    for i in 0..N {
        put(&*store, owned(&format!("alone-{i:02}"))).await;
        put(&*store, owned(&format!("batched-{i:02}"))).await;
        let gid = format!("alone-{i:02}");
        alone.push(store.save(varied_save(i, &gid)).await);
        put(&*store, fresh(&format!("fresh-alone-{i:02}"), i)).await;
    }
    let befores = join_all((0..N).map(|i| {
        let store = Arc::clone(&store);
        async move { get(&*store, &format!("batched-{i:02}")).await }
    }))
    .await;

    let saves = join_all((0..N).map(|i| {
        let store = Arc::clone(&store);
        async move { store.save(varied_save(i, &format!("batched-{i:02}"))).await }
    }));
    let creates = join_all((0..N).map(|i| {
        let store = Arc::clone(&store);
        async move {
            let fresh = fresh(&format!("fresh-batched-{i:02}"), i);
            // Every fifth is created twice at once: one of the two wins.
            if i.is_multiple_of(5) {
                let again = fresh.clone();
                let (first, twin) = futures::join!(store.create(fresh), store.create(again));
                (first, Some(twin))
            } else {
                (store.create(fresh).await, None)
            }
        }
    }));
    let (batched, created) = futures::join!(saves, creates);

    for (i, (alone, batched)) in alone.into_iter().zip(batched).enumerate() {
        let gid = format!("batched-{i:02}");
        match (&alone, &batched) {
            (Ok(()), Ok(())) => {}
            (Err(Error::Fenced { .. }), Err(Error::Fenced { gid: g })) => assert_eq!(g, &gid),
            (Err(Error::NotFound(_)), Err(Error::NotFound(m))) => assert!(m.contains(&gid), "{m}"),
            other => panic!("save {i}: alone and batched differ: {other:?}"),
        }
        let after = get(&*store, &gid).await;
        if batched.is_err() {
            assert_eq!(after, befores[i], "a failed save of {gid} wrote nothing");
        }
        assert_eq!(anonymous(after), anonymous(get(&*store, &format!("alone-{i:02}")).await), "{gid}");
    }
    for (i, (first, twin)) in created.into_iter().enumerate() {
        let wins = [Some(first), twin].into_iter().flatten().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "fresh-batched-{i:02}: exactly one create wins");
        let batched = get(&*store, &format!("fresh-batched-{i:02}")).await;
        let alone = get(&*store, &format!("fresh-alone-{i:02}")).await;
        assert_eq!(anonymous(batched), anonymous(alone));
    }
}
