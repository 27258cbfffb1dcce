//! save: fenced by the owner token, applied whole or not at all.

use std::sync::Arc;
use std::time::Duration;

use dtx_core::{BranchStatus, GlobalStatus, Op};

use super::{assert_fenced, at, get, gids, put, saga_with};
use crate::{BranchUpdate, Error, LeaseChange, Save, StatusChange, Store};

fn done(branch_id: &str, op: Op, secs: u64) -> BranchUpdate {
    BranchUpdate {
        id: 0,
        branch_id: branch_id.to_owned(),
        op,
        status: BranchStatus::Succeed,
        attempts: 1,
        last_error: String::new(),
        finish_time: Some(at(secs)),
    }
}

fn renew(gid: &str, owner: &str, now: u64, until: u64) -> Save {
    Save {
        gid: gid.to_owned(),
        owner: owner.to_owned(),
        now: at(now),
        branches: Vec::new(),
        status: None,
        lease: LeaseChange::Renew { lease_until: at(until) },
    }
}

/// After its lease expired and another node claimed the row, the old owner's save is
/// `Fenced` and changes nothing; the new owner's save goes through.
pub async fn stale_owner_is_fenced(store: Arc<dyn Store>) {
    put(&*store, saga_with("fence", GlobalStatus::Submitted, at(0), Some(("a", at(30))))).await;
    let b = store.claim("fence", "b", at(31), at(60)).await.expect("claim").expect("expired");
    let before = get(&*store, "fence").await;
    assert_eq!(before, b);

    let stale = Save {
        branches: vec![done("01", Op::Action, 32)],
        status: Some(StatusChange {
            to: GlobalStatus::Aborting,
            rollback_reason: Some("stale".into()),
            result: None,
        }),
        ..renew("fence", "a", 32, 90)
    };
    assert_fenced(store.save(stale).await, "fence");
    assert_eq!(get(&*store, "fence").await, before, "a fenced save writes nothing");

    let fresh = Save { branches: vec![done("01", Op::Action, 33)], ..renew("fence", "b", 33, 90) };
    store.save(fresh).await.expect("owner's save");
    let after = get(&*store, "fence").await;
    assert_eq!(after.branches[1].status, BranchStatus::Succeed);
    assert_eq!(after.global.lease_until, Some(at(90)));
}

/// Branch results are written by (branch_id, op); Renew keeps the owner and moves the lease.
pub async fn save_applies_branches_and_renews(store: Arc<dyn Store>) {
    put(&*store, saga_with("renew", GlobalStatus::Submitted, at(0), Some(("a", at(30))))).await;
    let before = get(&*store, "renew").await;
    let failed = BranchUpdate {
        id: 0,
        status: BranchStatus::Prepared,
        attempts: 2,
        last_error: "HTTP 503".into(),
        finish_time: None,
        ..done("02", Op::Action, 0)
    };
    let save = Save { branches: vec![done("01", Op::Action, 20), failed], ..renew("renew", "a", 20, 80) };
    store.save(save).await.expect("save");

    let after = get(&*store, "renew").await;
    let g = &after.global;
    assert_eq!(g.owner.as_deref(), Some("a"));
    assert_eq!(g.lease_until, Some(at(80)));
    assert_eq!(g.update_time, at(20));
    assert_eq!(g.status, GlobalStatus::Submitted);
    assert_eq!((g.finish_time, g.rollback_time), (None, None));
    assert_eq!(
        (g.next_cron_time, g.next_cron_interval),
        (before.global.next_cron_time, before.global.next_cron_interval)
    );

    let [c1, a1, c2, a2] = &after.branches[..] else {
        panic!("4 branches, got {:?}", after.branches);
    };
    assert_eq!(
        (a1.status, a1.attempts, a1.finish_time, a1.update_time),
        (BranchStatus::Succeed, 1, Some(at(20)), at(20))
    );
    assert_eq!((a2.status, a2.attempts, a2.last_error.as_str()), (BranchStatus::Prepared, 2, "HTTP 503"));
    assert_eq!((c1, c2), (&before.branches[0], &before.branches[2]), "untouched rows");
    assert_eq!(a1.payload, before.branches[1].payload);

    // The renewed lease holds past the original one.
    assert!(store.claim_due("b", at(50), at(99), 10).await.expect("claim_due").is_empty());
    assert!(!store.claim_due("b", at(81), at(99), 10).await.expect("claim_due").is_empty());
}

/// Release clears owner and lease and schedules the next round; the row is claimable again
/// at `next_cron_time`, not before, and the releasing token no longer owns it.
pub async fn release_clears_owner_and_reschedules(store: Arc<dyn Store>) {
    put(&*store, saga_with("rel", GlobalStatus::Submitted, at(0), Some(("a", at(30))))).await;
    let save = Save {
        lease: LeaseChange::Release { next_cron_time: at(60), next_cron_interval: Duration::from_secs(20) },
        ..renew("rel", "a", 10, 0)
    };
    store.save(save).await.expect("release");
    let g = get(&*store, "rel").await.global;
    assert_eq!((g.owner, g.lease_until), (None, None));
    assert_eq!(g.next_cron_time, at(60));
    assert_eq!(g.next_cron_interval, Duration::from_secs(20));
    assert_eq!(g.update_time, at(10));

    assert_fenced(store.save(renew("rel", "a", 11, 40)).await, "rel");
    assert!(store.claim_due("b", at(59), at(90), 10).await.expect("early").is_empty());
    let claimed = store.claim_due("b", at(60), at(90), 10).await.expect("due");
    assert_eq!(gids(&claimed), ["rel"]);
}

/// RenewRescheduled keeps the owner, moves the lease and sets the schedule, with the status
/// change, in one fenced write: once the lease expires the row is due at the new time.
pub async fn renew_rescheduled_keeps_owner_and_sets_the_schedule(store: Arc<dyn Store>) {
    put(&*store, saga_with("resched", GlobalStatus::Prepared, at(0), Some(("a", at(30))))).await;
    let save = Save {
        status: Some(StatusChange { to: GlobalStatus::Submitted, rollback_reason: None, result: None }),
        lease: LeaseChange::RenewRescheduled {
            lease_until: at(40),
            next_cron_time: at(10),
            next_cron_interval: Duration::from_secs(7),
        },
        ..renew("resched", "a", 10, 0)
    };
    store.save(save.clone()).await.expect("renew and reschedule");
    let g = get(&*store, "resched").await.global;
    assert_eq!(
        (g.status, g.owner.as_deref(), g.lease_until),
        (GlobalStatus::Submitted, Some("a"), Some(at(40)))
    );
    assert_eq!((g.next_cron_time, g.next_cron_interval), (at(10), Duration::from_secs(7)));
    assert!(store.claim_due("b", at(39), at(90), 10).await.expect("leased").is_empty());
    let claimed = store.claim_due("b", at(41), at(90), 10).await.expect("expired");
    assert_eq!(gids(&claimed), ["resched"]);
    assert_fenced(store.save(save).await, "resched");
}

/// `succeed` sets finish_time, `failed` sets rollback_time, rollback_reason and result (a
/// workflow's) are replaced when given; final rows are never claimed again.
pub async fn status_change_sets_final_times(store: Arc<dyn Store>) {
    for gid in ["ok", "ko", "abort"] {
        put(&*store, saga_with(gid, GlobalStatus::Submitted, at(0), Some(("a", at(30))))).await;
    }
    let release =
        LeaseChange::Release { next_cron_time: at(12), next_cron_interval: Duration::from_secs(10) };
    let change = |gid: &str, to, reason: Option<&str>| Save {
        status: Some(StatusChange { to, rollback_reason: reason.map(str::to_owned), result: None }),
        lease: release.clone(),
        ..renew(gid, "a", 5, 0)
    };
    let with_result =
        StatusChange { to: GlobalStatus::Succeed, rollback_reason: None, result: Some("cmVzdWx0".into()) };
    store
        .save(Save { status: Some(with_result), ..change("ok", GlobalStatus::Succeed, None) })
        .await
        .expect("succeed");
    store.save(change("abort", GlobalStatus::Aborting, Some("step 2 failed"))).await.expect("aborting");
    store.save(change("ko", GlobalStatus::Aborting, Some("first"))).await.expect("aborting");
    store.claim("ko", "a", at(12), at(40)).await.expect("claim").expect("ko claimable");
    let fail = Save { now: at(13), ..change("ko", GlobalStatus::Failed, None) };
    store.save(fail).await.expect("failed");

    let ok = get(&*store, "ok").await.global;
    assert_eq!((ok.status, ok.finish_time, ok.rollback_time), (GlobalStatus::Succeed, Some(at(5)), None));
    assert_eq!(ok.rollback_reason, "");
    assert_eq!(ok.result, "cmVzdWx0", "the result given is written");
    let ko = get(&*store, "ko").await.global;
    assert_eq!((ko.status, ko.finish_time, ko.rollback_time), (GlobalStatus::Failed, None, Some(at(13))));
    assert_eq!(ko.rollback_reason, "first", "None keeps the earlier reason");
    assert_eq!(ko.result, "", "None keeps the result");
    let abort = get(&*store, "abort").await.global;
    assert_eq!((abort.status, abort.finish_time, abort.rollback_time), (GlobalStatus::Aborting, None, None));
    assert_eq!(abort.rollback_reason, "step 2 failed");

    let claimed = store.claim_due("b", at(1000), at(1030), 10).await.expect("claim_due");
    assert_eq!(gids(&claimed), ["abort"]);
    assert_eq!(store.claim("ok", "b", at(1000), at(1030)).await.expect("claim"), None);
    assert_eq!(store.claim("ko", "b", at(1000), at(1030)).await.expect("claim"), None);
}

/// A save for a transaction that does not exist owns nothing: `Fenced`.
pub async fn save_unknown_gid_is_fenced(store: Arc<dyn Store>) {
    assert_fenced(store.save(renew("ghost", "a", 1, 30)).await, "ghost");
    assert_eq!(store.load("ghost").await.expect("load"), None);
}

/// A save naming a branch the transaction does not have is refused as a whole (`NotFound`):
/// neither the global change nor the other branch updates are written.
pub async fn save_unknown_branch_writes_nothing(store: Arc<dyn Store>) {
    put(&*store, saga_with("partial", GlobalStatus::Submitted, at(0), Some(("a", at(30))))).await;
    let before = get(&*store, "partial").await;
    let save = Save {
        branches: vec![done("01", Op::Action, 5), done("09", Op::Action, 5)],
        status: Some(StatusChange { to: GlobalStatus::Succeed, rollback_reason: None, result: None }),
        ..renew("partial", "a", 5, 60)
    };
    let result = store.save(save).await;
    assert!(matches!(result, Err(Error::NotFound(_))), "got {result:?}");
    assert_eq!(get(&*store, "partial").await, before);
    // The transaction is still usable afterwards.
    store.save(renew("partial", "a", 6, 60)).await.expect("valid save");
}
