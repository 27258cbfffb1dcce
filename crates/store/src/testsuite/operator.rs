//! Operator actions: force_stop, reset_next_cron_time, reset_cron_time.

use std::sync::Arc;
use std::time::Duration;

use dtx_core::{BranchStatus, GlobalStatus, Op};

use super::{T0, assert_fenced, at, get, gids, put, saga_with};
use crate::{BranchUpdate, Error, LeaseChange, Save, StatusChange, Store};

/// A submitted, owned transaction becomes `failed` with rollback_time and reason, its owner
/// cleared; the old owner's next save is `Fenced` and changes nothing; it is never claimed.
pub async fn force_stop_fails_and_fences_the_owner(store: Arc<dyn Store>) {
    put(&*store, saga_with("stop", GlobalStatus::Submitted, at(0), Some(("a", at(30))))).await;
    let before = get(&*store, "stop").await;

    let old = store.force_stop("stop", "stopped by operator", at(10)).await.expect("force_stop");
    assert_eq!(old, GlobalStatus::Submitted);
    let after = get(&*store, "stop").await;
    let g = &after.global;
    assert_eq!(g.status, GlobalStatus::Failed);
    assert_eq!((g.rollback_time, g.finish_time), (Some(at(10)), None));
    assert_eq!(g.rollback_reason, "stopped by operator");
    assert_eq!(g.update_time, at(10));
    assert_eq!((g.owner.as_deref(), g.lease_until), (None, None));
    assert_eq!(after.branches, before.branches, "branch rows untouched");

    // The round still running under "a" is fenced out at its next write.
    let stale = Save {
        gid: "stop".into(),
        owner: "a".into(),
        now: at(11),
        branches: vec![BranchUpdate {
            id: 0,
            branch_id: "01".into(),
            op: Op::Action,
            status: BranchStatus::Succeed,
            attempts: 1,
            last_error: String::new(),
            finish_time: Some(at(11)),
        }],
        status: Some(StatusChange { to: GlobalStatus::Succeed, rollback_reason: None, result: None }),
        lease: LeaseChange::Renew { lease_until: at(40) },
    };
    assert_fenced(store.save(stale).await, "stop");
    assert_eq!(get(&*store, "stop").await, after, "a fenced save writes nothing");

    // A force-stopped row is never claimed again.
    assert!(store.claim_due("b", at(100_000), at(100_030), 10).await.expect("claim_due").is_empty());
    assert_eq!(store.claim("stop", "b", at(100_000), at(100_030)).await.expect("claim"), None);

    // Every non-final status can be stopped, owned or not; the old status is returned.
    for (gid, status) in
        [("stop-prepared", GlobalStatus::Prepared), ("stop-aborting", GlobalStatus::Aborting)]
    {
        put(&*store, saga_with(gid, status, at(0), None)).await;
        assert_eq!(store.force_stop(gid, "r", at(12)).await.expect("force_stop"), status);
        let g = get(&*store, gid).await.global;
        assert_eq!((g.status, g.rollback_time), (GlobalStatus::Failed, Some(at(12))));
    }
}

/// A final transaction cannot be stopped (`Precondition`, unchanged), nor stopped twice; an
/// unknown gid is `NotFound`.
pub async fn force_stop_final_or_unknown(store: Arc<dyn Store>) {
    for status in [GlobalStatus::Succeed, GlobalStatus::Failed] {
        let gid = format!("final-{status}");
        put(&*store, saga_with(&gid, status, at(0), None)).await;
        let before = get(&*store, &gid).await;
        let result = store.force_stop(&gid, "too late", at(10)).await;
        assert!(matches!(result, Err(Error::Precondition(_))), "{gid}: got {result:?}");
        assert_eq!(get(&*store, &gid).await, before);
    }

    put(&*store, saga_with("twice", GlobalStatus::Submitted, at(0), None)).await;
    store.force_stop("twice", "first", at(10)).await.expect("first stop");
    let stopped = get(&*store, "twice").await;
    let result = store.force_stop("twice", "second", at(20)).await;
    assert!(matches!(result, Err(Error::Precondition(_))), "got {result:?}");
    assert_eq!(get(&*store, "twice").await, stopped, "reason and times of the first stop kept");

    let result = store.force_stop("ghost", "r", at(10)).await;
    assert!(matches!(result, Err(Error::NotFound(_))), "got {result:?}");
    assert_eq!(store.load("ghost").await.expect("load"), None);
}

/// "Retry now": a row backed off far into the future is due at once, with its interval back
/// to the base; the owner is not touched; any status; unknown → `NotFound`.
pub async fn reset_next_cron_time_makes_due_now(store: Arc<dyn Store>) {
    let mut later = saga_with("later", GlobalStatus::Submitted, at(10_000), None);
    later.global.next_cron_interval = Duration::from_secs(3_600);
    put(&*store, later).await;
    let before = get(&*store, "later").await;
    assert!(store.claim_due("a", at(100), at(130), 10).await.expect("claim_due").is_empty());

    store.reset_next_cron_time("later", Duration::from_secs(10), at(100)).await.expect("reset");
    let after = get(&*store, "later").await;
    let g = &after.global;
    assert_eq!(g.next_cron_time, at(100));
    assert_eq!(g.next_cron_interval, Duration::from_secs(10));
    assert_eq!(g.update_time, at(100));
    assert_eq!((g.status, g.owner.as_deref()), (GlobalStatus::Submitted, None));
    assert_eq!(after.branches, before.branches);
    let claimed = store.claim_due("a", at(100), at(130), 10).await.expect("claim_due");
    assert_eq!(gids(&claimed), ["later"]);
    assert_eq!(claimed[0].global.next_cron_interval, Duration::from_secs(10));

    // A leased row is due now but stays with its owner until the lease expires.
    put(&*store, saga_with("busy", GlobalStatus::Aborting, at(10_000), Some(("x", at(200))))).await;
    store.reset_next_cron_time("busy", Duration::from_secs(5), at(150)).await.expect("reset busy");
    let busy = get(&*store, "busy").await.global;
    assert_eq!((busy.next_cron_time, busy.owner.as_deref()), (at(150), Some("x")));
    // ("later" is due again: a's lease on it ended at +130 s.)
    let early = store.claim_due("b", at(160), at(1_000), 10).await.expect("claim_due");
    assert_eq!(gids(&early), ["later"], "busy is still leased to x");
    assert_eq!(gids(&store.claim_due("b", at(201), at(230), 10).await.expect("claim_due")), ["busy"]);

    // Any status: a final row is reset too, and still never claimed.
    put(&*store, saga_with("done", GlobalStatus::Succeed, at(10_000), None)).await;
    store.reset_next_cron_time("done", Duration::from_secs(10), at(300)).await.expect("reset final");
    assert_eq!(get(&*store, "done").await.global.next_cron_time, at(300));
    assert_eq!(store.claim("done", "c", at(300), at(330)).await.expect("claim"), None);

    let result = store.reset_next_cron_time("ghost", Duration::from_secs(10), at(100)).await;
    assert!(matches!(result, Err(Error::NotFound(_))), "got {result:?}");
}

/// Up to `limit` unfinished rows scheduled strictly after `later_than` are pulled back to
/// `now`; final rows never.
pub async fn reset_cron_time_resets_in_batches(store: Arc<dyn Store>) {
    use GlobalStatus::*;
    let now = T0;
    let statuses = [Prepared, Submitted, Aborting];
    for i in 0..10 {
        put(&*store, saga_with(&format!("far-{i}"), statuses[i % 3], at(110), None)).await;
    }
    put(&*store, saga_with("near", Submitted, at(90), None)).await;
    put(&*store, saga_with("final-ok", Succeed, at(500), None)).await;
    put(&*store, saga_with("final-ko", Failed, at(500), None)).await;
    let next = |gid: &'static str| {
        let store = Arc::clone(&store);
        async move { get(&*store, gid).await.global.next_cron_time }
    };
    let count_at = |t| {
        let store = Arc::clone(&store);
        async move {
            let mut n = 0;
            for i in 0..10 {
                if get(&*store, &format!("far-{i}")).await.global.next_cron_time == t {
                    n += 1;
                }
            }
            n
        }
    };

    assert_eq!(store.reset_cron_time(at(100), 0, now).await.expect("limit 0"), 0);
    assert_eq!(store.reset_cron_time(at(100), 9, now).await.expect("first"), 9);
    assert_eq!((count_at(now).await, count_at(at(110)).await), (9, 1));
    assert_eq!(next("near").await, at(90));

    assert_eq!(store.reset_cron_time(at(100), 10, now).await.expect("second"), 1);
    assert_eq!(count_at(now).await, 10);
    assert_eq!(next("near").await, at(90), "+90 s is not later than +100 s");

    assert_eq!(store.reset_cron_time(at(88), 10, now).await.expect("third"), 1);
    assert_eq!(next("near").await, now);
    assert_eq!(get(&*store, "near").await.global.update_time, now);

    assert_eq!(store.reset_cron_time(at(88), 10, now).await.expect("fourth"), 0);
    // Every unfinished row is at `now` (not later than it): only the final rows would match.
    assert_eq!(store.reset_cron_time(now, 100, now).await.expect("final rows"), 0);
    assert_eq!((next("final-ok").await, next("final-ko").await), (at(500), at(500)));

    let claimed = store.claim_due("a", now, at(30), 100).await.expect("claim_due");
    assert_eq!(claimed.len(), 11, "every reset row is due now");
}
