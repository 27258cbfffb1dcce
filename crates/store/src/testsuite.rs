//! The conformance suite every [`Store`] backend runs (feature `testsuite`).
//!
//! Each test is a plain `async fn(Arc<dyn Store>)` that expects a fresh, empty store.
//! A backend runs all of them with one line in its own tests:
//!
//! ```ignore
//! async fn fresh_store() -> (Arc<dyn Store>, tempfile::TempDir) { ... }
//! dtx_store::store_test_suite!(fresh_store);
//! ```
//!
//! The factory is called once per test and returns the store plus a guard that is kept alive
//! until the test ends (a temp dir, a schema to drop...; `()` if none). A backend that needs a
//! server may return `Option<(store, guard)>` instead: `None` skips the test (the factory
//! prints why), e.g. when no test database is configured. The macro expands to
//! one `#[tokio::test]` per test on a multi-thread runtime, so the calling crate needs `tokio`
//! with the `macros` and `rt-multi-thread` features.
//!
//! Times are explicit (`now` is passed in), so nothing here sleeps or reads a clock.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "this is test code: a panic is a failed test")]

use std::sync::Arc;
use std::time::Duration;

use dtx_core::{Branch, Global, GlobalStatus, Op, Timestamp, TransOptions, TransType};

use crate::{Error, Loaded, NewTransaction, Store};

mod batch;
mod branches;
mod claim;
mod create;
mod held;
mod kv;
mod operator;
mod retention;
mod save;

pub use batch::{
    batch_duplicate_fails_only_that_request, batch_with_many_failures_stays_linear,
    batch_writes_match_one_at_a_time, concurrent_creates_all_durable,
};
pub use branches::{
    add_branches_appends_in_order, add_branches_checks_mode_and_timeout,
    add_branches_duplicate_conflicts_and_writes_nothing, add_branches_never_lands_in_a_claimed_round,
    add_branches_only_while_prepared_and_unowned, add_branches_unknown_gid_not_found,
};
pub use claim::{
    claim_by_gid, claim_due_respects_limit, claim_due_takes_only_eligible, claim_then_claims_and_saves,
    claimed_row_not_claimable_until_lease_expires, concurrent_claimers_never_share,
};
pub use create::{
    create_duplicate_gid_conflicts, create_returning_ids_gives_the_transaction_back, create_then_load,
    create_with_many_branches_keeps_every_row_in_order, list_filters, list_pages_newest_first,
    load_unknown_is_none,
};
pub use held::hold_then_resume_held;
pub use kv::{
    kv_concurrent_updates_count_winners, kv_insert_get_delete, kv_scan_pages_newest_first,
    kv_update_is_compare_and_set,
};
pub use operator::{
    force_stop_fails_and_fences_the_owner, force_stop_final_or_unknown, reset_cron_time_resets_in_batches,
    reset_next_cron_time_makes_due_now,
};
pub use retention::{
    concurrent_purges_share_the_work, list_by_gid_prefix, purge_deletes_only_old_finished,
    purge_works_in_bounded_batches, status_counts_per_status_and_due,
};
pub use save::{
    release_clears_owner_and_reschedules, renew_rescheduled_keeps_owner_and_sets_the_schedule,
    save_applies_branches_and_renews, save_unknown_branch_writes_nothing, save_unknown_gid_is_fenced,
    stale_owner_is_fenced, status_change_sets_final_times,
};

/// Expands to one `#[tokio::test]` per conformance test, each on a fresh store from
/// `$factory` (an async fn or closure returning `(Arc<dyn Store>, guard)`).
#[macro_export]
macro_rules! store_test_suite {
    ($factory:expr $(,)?) => {
        $crate::store_test_suite!(@tests $factory;
            create_then_load,
            create_duplicate_gid_conflicts,
            create_returning_ids_gives_the_transaction_back,
            create_with_many_branches_keeps_every_row_in_order,
            load_unknown_is_none,
            list_pages_newest_first,
            list_filters,
            claim_due_takes_only_eligible,
            claim_due_respects_limit,
            claimed_row_not_claimable_until_lease_expires,
            concurrent_claimers_never_share,
            claim_by_gid,
            claim_then_claims_and_saves,
            stale_owner_is_fenced,
            save_applies_branches_and_renews,
            release_clears_owner_and_reschedules,
            renew_rescheduled_keeps_owner_and_sets_the_schedule,
            status_change_sets_final_times,
            save_unknown_gid_is_fenced,
            save_unknown_branch_writes_nothing,
            concurrent_creates_all_durable,
            batch_duplicate_fails_only_that_request,
            batch_writes_match_one_at_a_time,
            batch_with_many_failures_stays_linear,
            add_branches_appends_in_order,
            add_branches_duplicate_conflicts_and_writes_nothing,
            add_branches_checks_mode_and_timeout,
            add_branches_only_while_prepared_and_unowned,
            add_branches_unknown_gid_not_found,
            add_branches_never_lands_in_a_claimed_round,
            force_stop_fails_and_fences_the_owner,
            force_stop_final_or_unknown,
            reset_next_cron_time_makes_due_now,
            reset_cron_time_resets_in_batches,
            kv_insert_get_delete,
            kv_scan_pages_newest_first,
            kv_update_is_compare_and_set,
            kv_concurrent_updates_count_winners,
            purge_deletes_only_old_finished,
            purge_works_in_bounded_batches,
            concurrent_purges_share_the_work,
            status_counts_per_status_and_due,
            list_by_gid_prefix,
            hold_then_resume_held,
        );
    };
    (@tests $factory:expr; $($test:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $test() {
                // `None`: the backend's database is not configured here (the factory said so).
                let Some((store, _guard)) = $crate::testsuite::Fresh::fresh(($factory)().await) else {
                    return;
                };
                $crate::testsuite::$test(store).await;
            }
        )+
    };
}

/// What a suite factory returns: `(store, guard)`, or `Option` of it (`None` skips the test).
pub trait Fresh {
    /// The guard kept alive until the test ends.
    type Guard;
    /// The store and its guard, or `None` to skip.
    fn fresh(self) -> Option<(Arc<dyn Store>, Self::Guard)>;
}

impl<G> Fresh for (Arc<dyn Store>, G) {
    type Guard = G;
    fn fresh(self) -> Option<(Arc<dyn Store>, G)> {
        Some(self)
    }
}

impl<G> Fresh for Option<(Arc<dyn Store>, G)> {
    type Guard = G;
    fn fresh(self) -> Option<(Arc<dyn Store>, G)> {
        self
    }
}

/// The suite's "now": an arbitrary fixed instant (2023-11-14), far from zero and i64 limits.
pub const T0: Timestamp = Timestamp(1_700_000_000_000);

/// `T0 + secs`.
pub fn at(secs: u64) -> Timestamp {
    T0.add(Duration::from_secs(secs))
}

/// A submitted, unowned saga due at `T0`, with two steps (compensate/action rows each).
pub fn saga(gid: &str) -> NewTransaction {
    let global = Global {
        id: 0,
        gid: gid.to_owned(),
        trans_type: TransType::Saga,
        status: GlobalStatus::Submitted,
        protocol: "http".to_owned(),
        query_prepared: String::new(),
        custom_data: r#"{"concurrent":false}"#.to_owned(),
        options: TransOptions::default(),
        rollback_reason: String::new(),
        result: String::new(),
        create_time: T0,
        update_time: T0,
        finish_time: None,
        rollback_time: None,
        next_cron_time: T0,
        next_cron_interval: Duration::from_secs(10),
        owner: None,
        lease_until: None,
        held_host: None,
    };
    let branch = |id: &str, op: Op| {
        let url = format!("http://svc/{id}/{op}");
        Branch::new(id.to_owned(), op, url, format!("{{\"step\":\"{id}\"}}").into_bytes(), T0)
    };
    NewTransaction {
        global,
        branches: vec![
            branch("01", Op::Compensate),
            branch("01", Op::Action),
            branch("02", Op::Compensate),
            branch("02", Op::Action),
        ],
    }
}

/// [`saga`] with its status, `next_cron_time` and owner set.
pub fn saga_with(
    gid: &str,
    status: GlobalStatus,
    next_cron_time: Timestamp,
    owner: Option<(&str, Timestamp)>,
) -> NewTransaction {
    let mut tx = saga(gid);
    tx.global.status = status;
    tx.global.next_cron_time = next_cron_time;
    tx.global.owner = owner.map(|(o, _)| o.to_owned());
    tx.global.lease_until = owner.map(|(_, l)| l);
    tx
}

/// Creates `tx`, panicking on error.
pub async fn put(store: &dyn Store, tx: NewTransaction) {
    let gid = tx.global.gid.clone();
    store.create(tx).await.unwrap_or_else(|e| panic!("create {gid}: {e:#}"));
}

/// Loads `gid`, panicking if it is missing or the load fails.
pub async fn get(store: &dyn Store, gid: &str) -> Loaded {
    store
        .load(gid)
        .await
        .unwrap_or_else(|e| panic!("load {gid}: {e:#}"))
        .unwrap_or_else(|| panic!("{gid} not found"))
}

/// The gids of `loaded`, sorted.
pub fn gids(loaded: &[Loaded]) -> Vec<String> {
    let mut gids: Vec<String> = loaded.iter().map(|l| l.global.gid.clone()).collect();
    gids.sort();
    gids
}

/// Asserts `result` is the `Fenced` error for `gid`.
pub fn assert_fenced(result: crate::Result<()>, gid: &str) {
    match result {
        Err(Error::Fenced { gid: g }) => assert_eq!(g, gid),
        other => panic!("expected Fenced for {gid}, got {other:?}"),
    }
}

/// What `tx` should load as, given the ids the store assigned (checked to ascend).
pub fn expected(tx: &NewTransaction, loaded: &Loaded) -> Loaded {
    assert!(loaded.global.id > 0, "global id assigned");
    let ids: Vec<i64> = loaded.branches.iter().map(|b| b.id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "branch ids ascend: {ids:?}");
    let mut want = Loaded { global: tx.global.clone(), branches: tx.branches.clone(), taken_over: false };
    want.global.id = loaded.global.id;
    for (b, id) in want.branches.iter_mut().zip(ids) {
        b.id = id;
    }
    want
}
