//! add_branches: only while `prepared` and not being processed, all rows or none.

use std::sync::Arc;

use dtx_core::{Branch, GlobalStatus, Op};
use futures::future::join_all;

use super::{at, get, put, saga_with};
use crate::{Error, Expect, Loaded, Store};

/// Registration for the saga rows these tests use, with no server timeout.
const SAGA: Expect =
    Expect { trans_type: dtx_core::TransType::Saga, default_timeout: std::time::Duration::ZERO };

/// A new `prepared` branch row of step `id`, created at `T0 + secs`.
fn step(id: &str, op: Op, secs: u64) -> Branch {
    let payload = format!("{{\"added\":\"{id}/{op}\"}}").into_bytes();
    Branch::new(id.to_owned(), op, format!("http://svc/{id}/{op}"), payload, at(secs))
}

/// Asserts `result` is a `Precondition` whose message mentions `word`.
fn assert_precondition(result: crate::Result<()>, word: &str) {
    match result {
        Err(Error::Precondition(msg)) => assert!(msg.contains(word), "message {msg:?} names {word:?}"),
        other => panic!("expected Precondition ({word}), got {other:?}"),
    }
}

/// The rows go after the existing ones, in the order given, exactly as given; the global row
/// only gets its `update_time` bumped.
pub async fn add_branches_appends_in_order(store: Arc<dyn Store>) {
    put(&*store, saga_with("grow", GlobalStatus::Prepared, at(0), None)).await;
    let before = get(&*store, "grow").await;

    let added = vec![step("03", Op::Cancel, 5), step("03", Op::Confirm, 5), step("01", Op::Cancel, 5)];
    store.add_branches("grow", SAGA, added.clone(), at(5)).await.expect("add_branches");
    let after = get(&*store, "grow").await;
    assert_eq!(after.branches.len(), 7);
    assert_eq!(after.branches[..4], before.branches[..], "existing rows untouched");
    let ids: Vec<i64> = after.branches.iter().map(|b| b.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids ascend in insertion order: {ids:?}");
    for (got, want) in after.branches[4..].iter().zip(&added) {
        assert_eq!(*got, Branch { id: got.id, ..want.clone() });
    }
    assert_eq!(after.global.update_time, at(5));
    let mut unchanged = after.global.clone();
    unchanged.update_time = before.global.update_time;
    assert_eq!(unchanged, before.global, "only update_time changes on the global row");

    // Later calls append after those.
    store.add_branches("grow", SAGA, vec![step("04", Op::Action, 6)], at(6)).await.expect("second call");
    let last = get(&*store, "grow").await;
    assert_eq!(last.branches.len(), 8);
    assert_eq!(last.branches[..7], after.branches[..]);
    assert_eq!((last.branches[7].branch_id.as_str(), last.branches[7].op), ("04", Op::Action));
    assert_eq!(last.global.update_time, at(6));
}

/// A duplicate `(branch_id, op)`, with a stored row or within the request, is a `Conflict` and
/// none of the request's rows are written; the same branch_id with another op is fine.
pub async fn add_branches_duplicate_conflicts_and_writes_nothing(store: Arc<dyn Store>) {
    put(&*store, saga_with("dups", GlobalStatus::Prepared, at(0), None)).await;
    let before = get(&*store, "dups").await;

    // New rows first, the duplicate of a stored row last.
    let result = store
        .add_branches("dups", SAGA, vec![step("03", Op::Action, 5), step("01", Op::Action, 5)], at(5))
        .await;
    assert!(matches!(result, Err(Error::Conflict(_))), "got {result:?}");
    assert_eq!(get(&*store, "dups").await, before, "nothing written, update_time kept");

    let result = store
        .add_branches("dups", SAGA, vec![step("04", Op::Action, 5), step("04", Op::Action, 5)], at(5))
        .await;
    assert!(matches!(result, Err(Error::Conflict(_))), "got {result:?}");
    assert_eq!(get(&*store, "dups").await, before);

    store.add_branches("dups", SAGA, vec![step("01", Op::Cancel, 6)], at(6)).await.expect("other op");
    assert_eq!(get(&*store, "dups").await.branches.len(), 5);
}

/// Refused (`Precondition`, nothing written) unless `prepared` and without a valid lease;
/// an expired lease does not count.
pub async fn add_branches_only_while_prepared_and_unowned(store: Arc<dyn Store>) {
    use GlobalStatus::*;
    for status in [Submitted, Aborting, Succeed, Failed] {
        let gid = format!("not-prepared-{status}");
        put(&*store, saga_with(&gid, status, at(0), None)).await;
        let before = get(&*store, &gid).await;
        let result = store.add_branches(&gid, SAGA, vec![step("09", Op::Action, 5)], at(5)).await;
        assert_precondition(result, status.as_str());
        assert_eq!(get(&*store, &gid).await, before);
    }

    // Owned under a valid lease: a round is processing it.
    put(&*store, saga_with("held", Prepared, at(0), Some(("a", at(30))))).await;
    let before = get(&*store, "held").await;
    for now in [10, 30] {
        // `lease_until < now` is strict: a lease ending exactly now is still held.
        let result = store.add_branches("held", SAGA, vec![step("09", Op::Action, now)], at(now)).await;
        assert_precondition(result, "being processed");
        assert_eq!(get(&*store, "held").await, before);
    }
    // The lease has expired: nobody is processing it any more.
    store.add_branches("held", SAGA, vec![step("09", Op::Action, 31)], at(31)).await.expect("lease expired");
    assert_eq!(get(&*store, "held").await.branches.len(), 5);

    // Claimed by a round (with `claim`): refused until that lease expires.
    put(&*store, saga_with("claimed", Prepared, at(0), None)).await;
    store.claim("claimed", "round", at(1), at(60)).await.expect("claim").expect("claimable");
    let before = get(&*store, "claimed").await;
    let result = store.add_branches("claimed", SAGA, vec![step("09", Op::Action, 2)], at(2)).await;
    assert_precondition(result, "being processed");
    assert_eq!(get(&*store, "claimed").await, before);
}

/// The registration's mode must be the transaction's, and a prepared transaction past its
/// timeout (its own, else the server's) takes no more branches (`Precondition`, nothing
/// written).
pub async fn add_branches_checks_mode_and_timeout(store: Arc<dyn Store>) {
    put(&*store, saga_with("mode", GlobalStatus::Prepared, at(0), None)).await;
    let before = get(&*store, "mode").await;
    let tcc = Expect { trans_type: dtx_core::TransType::Tcc, ..SAGA };
    let result = store.add_branches("mode", tcc, vec![step("09", Op::Cancel, 5)], at(5)).await;
    assert_precondition(result, "not tcc");
    assert_eq!(get(&*store, "mode").await, before);

    // The server's timeout (a saga has none of its own by default: it never times out).
    let ten = Expect { default_timeout: std::time::Duration::from_secs(10), ..SAGA };
    store
        .add_branches("mode", ten, vec![step("09", Op::Action, 20)], at(20))
        .await
        .expect("saga: no timeout");

    // Its own timeout_to_fail counts for any mode.
    let mut timed = saga_with("timed", GlobalStatus::Prepared, at(0), None);
    timed.global.options.timeout_to_fail = 10;
    put(&*store, timed).await;
    store.add_branches("timed", SAGA, vec![step("09", Op::Action, 9)], at(9)).await.expect("within its time");
    let before = get(&*store, "timed").await;
    let result = store.add_branches("timed", SAGA, vec![step("10", Op::Action, 10)], at(10)).await;
    assert_precondition(result, "timed out after 10 seconds");
    assert_eq!(get(&*store, "timed").await, before);
}

/// An unknown gid is `NotFound`, and no orphan rows are left behind.
pub async fn add_branches_unknown_gid_not_found(store: Arc<dyn Store>) {
    let result = store.add_branches("ghost", SAGA, vec![step("01", Op::Action, 1)], at(1)).await;
    assert!(matches!(result, Err(Error::NotFound(_))), "got {result:?}");
    assert_eq!(store.load("ghost").await.expect("load"), None);
    // Had a row been written under "ghost", creating it would now show (or conflict on) it.
    let mut tx = saga_with("ghost", GlobalStatus::Prepared, at(0), None);
    tx.branches.clear();
    put(&*store, tx).await;
    assert!(get(&*store, "ghost").await.branches.is_empty());
}

/// Racing a claim, add_branches either lands before it (the claimed round sees the new rows)
/// or is refused (and the rows never appear): never added behind a round's back.
pub async fn add_branches_never_lands_in_a_claimed_round(store: Arc<dyn Store>) {
    const N: usize = 20;
    for i in 0..N {
        put(&*store, saga_with(&format!("race-{i:02}"), GlobalStatus::Prepared, at(0), None)).await;
    }
    let outcomes = join_all((0..N).map(|i| {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let gid = format!("race-{i:02}");
            let add = store.add_branches(&gid, SAGA, vec![step("09", Op::Action, 1)], at(1));
            let claim = store.claim(&gid, "round", at(1), at(60));
            // Alternate which request is issued first.
            let (added, claimed) = if i % 2 == 0 {
                tokio::join!(add, claim)
            } else {
                let (claimed, added) = tokio::join!(claim, add);
                (added, claimed)
            };
            (gid, added, claimed)
        })
    }))
    .await;

    for joined in outcomes {
        let (gid, added, claimed) = joined.expect("race task");
        let claimed: Loaded = claimed.expect("claim").unwrap_or_else(|| panic!("{gid} claimable"));
        let stored = get(&*store, &gid).await;
        match added {
            Ok(()) => assert_eq!(claimed.branches.len(), 5, "{gid}: the round sees the added row"),
            Err(Error::Precondition(_)) => {
                assert_eq!(claimed.branches.len(), 4, "{gid}");
                assert_eq!(stored.branches.len(), 4, "{gid}: refused rows never appear");
            }
            Err(e) => panic!("{gid}: unexpected add_branches error {e:?}"),
        }
        assert_eq!(stored.branches, claimed.branches, "{gid}");
    }
}
