//! claim_due and claim: only eligible rows, never two owners at once.

use std::collections::HashMap;
use std::sync::Arc;

use dtx_core::GlobalStatus;

use super::{T0, at, get, gids, put, saga, saga_with};
use crate::Store;

/// Only due, non-final rows without a valid lease are claimed; the claim sets owner and lease
/// and returns the branches.
pub async fn claim_due_takes_only_eligible(store: Arc<dyn Store>) {
    use GlobalStatus::*;
    let now = at(100);
    let rows = [
        ("due-submitted", Submitted, at(50), None),
        ("due-prepared", Prepared, at(50), None),
        ("due-aborting", Aborting, at(50), None),
        ("due-exactly-now", Submitted, now, None),
        ("due-lease-expired", Submitted, at(50), Some(("old", at(99)))),
        ("not-due", Submitted, at(101), None),
        ("final-succeed", Succeed, at(50), None),
        ("final-failed", Failed, at(50), None),
        ("leased", Submitted, at(50), Some(("other", at(130)))),
        // `lease_until < now` is strict: a lease ending exactly now is still held.
        ("lease-ends-now", Submitted, at(50), Some(("other", now))),
    ];
    for (gid, status, next, owner) in rows {
        put(&*store, saga_with(gid, status, next, owner)).await;
    }

    let claimed = store.claim_due("me", now, at(130), 100).await.expect("claim_due");
    assert_eq!(
        gids(&claimed),
        ["due-aborting", "due-exactly-now", "due-lease-expired", "due-prepared", "due-submitted"]
    );
    for l in &claimed {
        assert_eq!(l.global.owner.as_deref(), Some("me"));
        assert_eq!(l.global.lease_until, Some(at(130)));
        assert_eq!(l.branches.len(), 4, "branches of {}", l.global.gid);
        assert!(l.branches.windows(2).all(|w| w[0].id < w[1].id));
        let stored = get(&*store, &l.global.gid).await;
        assert_eq!(stored, crate::Loaded { taken_over: false, ..l.clone() }, "claim result matches the row");
        // Only the row that still had an owner (its lease expired) was taken over.
        assert_eq!(l.taken_over, l.global.gid == "due-lease-expired", "taken_over of {}", l.global.gid);
    }
    let leased = get(&*store, "leased").await;
    assert_eq!(leased.global.owner.as_deref(), Some("other"));
    assert!(store.claim_due("me", now, at(130), 100).await.expect("again").is_empty());
}

/// At most `limit` rows per call, the most overdue first.
pub async fn claim_due_respects_limit(store: Arc<dyn Store>) {
    // Created in an order unrelated to their due time.
    for i in [5u64, 2, 8, 0, 9, 1, 7, 3, 6, 4] {
        put(&*store, saga_with(&format!("lim-{i}"), GlobalStatus::Submitted, at(i), None)).await;
    }
    let now = at(60);
    assert!(store.claim_due("a", now, at(90), 0).await.expect("limit 0").is_empty());
    let first = store.claim_due("a", now, at(90), 3).await.expect("claim_due");
    assert_eq!(gids(&first), ["lim-0", "lim-1", "lim-2"]);
    let second = store.claim_due("b", now, at(90), 3).await.expect("claim_due");
    assert_eq!(gids(&second), ["lim-3", "lim-4", "lim-5"]);
    let rest = store.claim_due("c", now, at(90), 100).await.expect("claim_due");
    assert_eq!(gids(&rest), ["lim-6", "lim-7", "lim-8", "lim-9"]);
}

/// A claimed row stays with its owner until the lease expires, then anyone may claim it.
pub async fn claimed_row_not_claimable_until_lease_expires(store: Arc<dyn Store>) {
    put(&*store, saga("lease")).await;
    let a = store.claim_due("a", at(0), at(30), 10).await.expect("claim a");
    assert_eq!(gids(&a), ["lease"]);

    for now in [at(10), at(30)] {
        assert!(store.claim_due("b", now, at(60), 10).await.expect("b").is_empty());
        assert_eq!(store.claim("lease", "b", now, at(60)).await.expect("claim b"), None);
    }
    let b = store.claim_due("b", at(31), at(61), 10).await.expect("after expiry");
    assert_eq!(gids(&b), ["lease"]);
    let row = get(&*store, "lease").await.global;
    assert_eq!(row.owner.as_deref(), Some("b"));
    assert_eq!(row.lease_until, Some(at(61)));
}

/// Concurrent claimers partition the due rows: every row is claimed exactly once.
pub async fn concurrent_claimers_never_share(store: Arc<dyn Store>) {
    const ROWS: usize = 200;
    const CLAIMERS: usize = 8;
    for i in 0..ROWS {
        put(&*store, saga(&format!("race-{i:03}"))).await;
    }
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..CLAIMERS {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let token = format!("claimer-{c}");
            let mut mine = Vec::new();
            // Every non-empty round takes at least one new row, so a correct store is drained
            // within ROWS rounds; the bound turns a store that re-grants rows into a failure
            // below instead of an endless loop.
            for _ in 0..=ROWS {
                let got = store.claim_due(&token, at(1), at(300), 7).await.expect("claim_due");
                if got.is_empty() {
                    break;
                }
                assert!(got.len() <= 7);
                mine.extend(got.into_iter().map(|l| l.global.gid));
                tokio::task::yield_now().await;
            }
            (token, mine)
        });
    }
    let mut owner_of: HashMap<String, String> = HashMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (token, mine) = joined.expect("claimer task");
        for gid in mine {
            if let Some(first) = owner_of.insert(gid.clone(), token.clone()) {
                panic!("{gid} claimed by both {first} and {token}");
            }
        }
    }
    assert_eq!(owner_of.len(), ROWS);
    for (gid, token) in &owner_of {
        let row = get(&*store, gid).await.global;
        assert_eq!(row.owner.as_ref(), Some(token), "stored owner of {gid}");
    }
}

/// `claim` by gid: not final and no valid lease (due or not); `None` otherwise.
pub async fn claim_by_gid(store: Arc<dyn Store>) {
    put(&*store, saga_with("later", GlobalStatus::Submitted, at(1000), None)).await;
    put(&*store, saga_with("done", GlobalStatus::Succeed, T0, None)).await;
    put(&*store, saga_with("held", GlobalStatus::Aborting, T0, Some(("x", at(50))))).await;

    assert_eq!(store.claim("unknown", "me", at(10), at(40)).await.expect("unknown"), None);
    assert_eq!(store.claim("done", "me", at(10), at(40)).await.expect("final"), None);
    assert_eq!(store.claim("held", "me", at(10), at(40)).await.expect("held"), None);

    // Not due yet, but free: a by-gid claim (e.g. an explicit submit) takes it.
    let later = store.claim("later", "me", at(10), at(40)).await.expect("later");
    let later = later.expect("claimable");
    assert_eq!(later.global.owner.as_deref(), Some("me"));
    assert_eq!(later.global.lease_until, Some(at(40)));
    assert_eq!(later.branches.len(), 4);
    assert_eq!(later, get(&*store, "later").await);

    let held = store.claim("held", "me", at(51), at(80)).await.expect("expired");
    assert_eq!(held.expect("expired lease").global.owner.as_deref(), Some("me"));
}

/// `claim_then`: the claim, then the save decided on the claimed row; nothing decided for a
/// row that is not claimable; a refused save writes nothing of it.
pub async fn claim_then_claims_and_saves(store: Arc<dyn Store>) {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use dtx_core::Op;

    use crate::{BranchUpdate, LeaseChange, Save, StatusChange, ThenSave};

    for gid in ["then-save", "then-keep", "then-refused"] {
        put(&*store, saga_with(gid, GlobalStatus::Prepared, at(1000), None)).await;
    }
    let asked = Arc::new(AtomicUsize::new(0));
    // prepared -> submitted with the first action's attempt; `missing` names a row that does
    // not exist, so the save is refused.
    let submit = |missing: bool| {
        let asked = asked.clone();
        ThenSave(Arc::new(move |l: &crate::Loaded| {
            asked.fetch_add(1, Ordering::SeqCst);
            assert_eq!(l.global.owner.as_deref(), Some("me"), "decided on the claimed row");
            (l.global.gid != "then-keep").then(|| Save {
                gid: l.global.gid.clone(),
                owner: "me".to_owned(),
                now: at(10),
                branches: vec![BranchUpdate {
                    id: 0,
                    branch_id: if missing { "99".to_owned() } else { "01".to_owned() },
                    op: Op::Action,
                    status: dtx_core::BranchStatus::Prepared,
                    attempts: 1,
                    last_error: String::new(),
                    finish_time: None,
                }],
                status: Some(StatusChange {
                    to: GlobalStatus::Submitted,
                    rollback_reason: None,
                    result: None,
                }),
                lease: LeaseChange::RenewRescheduled {
                    lease_until: at(40),
                    next_cron_time: at(10),
                    next_cron_interval: std::time::Duration::from_secs(5),
                },
            })
        }))
    };

    let c = store.claim_then("then-save", "me", at(10), at(30), submit(false)).await.expect("claim_then");
    let c = c.expect("claimable");
    assert!(c.saved);
    assert_eq!((c.loaded.global.status, c.loaded.global.lease_until), (GlobalStatus::Prepared, Some(at(30))));
    let row = get(&*store, "then-save").await;
    assert_eq!(row.global.status, GlobalStatus::Submitted);
    assert_eq!((row.global.owner.as_deref(), row.global.lease_until), (Some("me"), Some(at(40))));
    assert_eq!(row.global.next_cron_time, at(10));
    let action = row.branches.iter().find(|b| b.branch_id == "01" && b.op == Op::Action).expect("row 01");
    assert_eq!(action.attempts, 1);

    let c = store.claim_then("then-keep", "me", at(10), at(30), submit(false)).await.expect("claim_then");
    assert!(!c.expect("claimable").saved);
    let row = get(&*store, "then-keep").await.global;
    assert_eq!(
        (row.status, row.owner.as_deref(), row.lease_until),
        (GlobalStatus::Prepared, Some("me"), Some(at(30)))
    );

    // Leased by "me" now: another claimer gets nothing, and nothing is decided.
    let before = asked.load(Ordering::SeqCst);
    let other = store.claim_then("then-save", "other", at(11), at(31), submit(false)).await.expect("leased");
    assert_eq!(other, None);
    assert_eq!(
        store.claim_then("unknown", "me", at(11), at(31), submit(false)).await.expect("unknown"),
        None
    );
    assert_eq!(asked.load(Ordering::SeqCst), before);

    let refused = store.claim_then("then-refused", "me", at(10), at(30), submit(true)).await;
    assert!(matches!(refused, Err(crate::Error::NotFound(_))), "{refused:?}");
    let row = get(&*store, "then-refused").await;
    assert_eq!(row.global.status, GlobalStatus::Prepared, "the refused save wrote nothing");
    assert!(row.branches.iter().all(|b| b.attempts == 0));
}
