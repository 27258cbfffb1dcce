//! create, load, list.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dtx_core::{Branch, BranchStatus, GlobalStatus, Op, Timestamp, TransOptions, TransType};

use super::{T0, at, expected, get, put, saga};
use crate::{Error, ListFilter, Store};

/// Every field round-trips: options JSON, nullable times, owner, binary payloads, row order.
pub async fn create_then_load(store: Arc<dyn Store>) {
    let mut tx = saga("round-trip");
    let g = &mut tx.global;
    g.trans_type = TransType::Msg;
    g.status = GlobalStatus::Prepared;
    g.protocol = "grpc".into();
    g.query_prepared = "http://svc/query".into();
    g.custom_data = r#"{"delay":5}"#.into();
    g.options = TransOptions {
        wait_result: true,
        timeout_to_fail: 60,
        request_timeout: 3,
        retry_interval: 7,
        branch_headers: BTreeMap::from([("x-trace".to_owned(), "abc".to_owned())]),
        concurrent: true,
        retry_limit: 2,
    };
    g.rollback_reason = "none yet".into();
    g.result = "r".into();
    g.create_time = at(1);
    g.update_time = at(2);
    g.finish_time = Some(at(3));
    g.rollback_time = Some(at(4));
    g.next_cron_time = at(5);
    g.next_cron_interval = Duration::from_millis(1_500);
    g.owner = Some("node-a".into());
    g.lease_until = Some(at(30));
    tx.branches = vec![
        Branch::new("02".into(), Op::Msg, String::new(), Vec::new(), at(1)),
        Branch {
            payload: vec![0, 159, 146, 150, 255, b'\n', 0],
            status: BranchStatus::Failed,
            attempts: 3,
            last_error: "HTTP 500".into(),
            finish_time: Some(at(9)),
            update_time: at(8),
            ..Branch::new("01".into(), Op::Action, "http://svc/a".into(), Vec::new(), at(1))
        },
    ];
    put(&*store, tx.clone()).await;

    let loaded = get(&*store, "round-trip").await;
    assert_eq!(loaded, expected(&tx, &loaded));
    // Insertion order, not branch_id order.
    assert_eq!(loaded.branches[0].branch_id, "02");

    // A transaction without branches (a msg before its steps are known) is fine too.
    let mut bare = saga("bare");
    bare.branches.clear();
    put(&*store, bare.clone()).await;
    let loaded = get(&*store, "bare").await;
    assert_eq!(loaded, expected(&bare, &loaded));
    assert!(loaded.global.id > get(&*store, "round-trip").await.global.id);
}

/// Creates with 0 to 70 branch rows (a backend may insert them several per statement) store
/// every row exactly as given, in order; a duplicate row among many fails the create and
/// writes nothing.
pub async fn create_with_many_branches_keeps_every_row_in_order(store: Arc<dyn Store>) {
    for n in [0, 1, 3, 4, 7, 31, 33, 63, 70] {
        let mut tx = saga(&format!("wide-{n}"));
        tx.branches = (0..n)
            .map(|i| Branch {
                attempts: i % 3,
                finish_time: (i % 2 == 0).then(|| at(u64::from(i))),
                ..Branch::new(format!("{i:03}"), Op::Action, format!("http://svc/{i}"), vec![i as u8], at(1))
            })
            .collect();
        put(&*store, tx.clone()).await;
        let loaded = get(&*store, &tx.global.gid).await;
        assert_eq!(loaded, expected(&tx, &loaded), "{n} rows");
    }

    let mut dup = saga("wide-dup");
    dup.branches = (0..40)
        .map(|i| Branch::new(format!("{:03}", i % 37), Op::Action, "u".into(), Vec::new(), T0))
        .collect();
    let result = store.create(dup).await;
    assert!(matches!(result, Err(Error::Conflict(_))), "got {result:?}");
    assert!(store.load("wide-dup").await.expect("load").is_none(), "nothing of it stored");
}

/// `create_returning_ids` gives each caller its own transaction back, unchanged, with the
/// ids its rows got (or none), also when the creates share a write batch; a duplicate is a
/// `Conflict` as for `create`.
pub async fn create_returning_ids_gives_the_transaction_back(store: Arc<dyn Store>) {
    let creates = (0..24).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tx = saga(&format!("returned-{i}"));
            tx.branches[0].payload = format!("{{\"i\":{i}}}").into_bytes();
            let created = store.create_returning_ids(tx.clone()).await.expect("create");
            (tx, created)
        })
    });
    for create in creates.collect::<Vec<_>>() {
        let (tx, created) = create.await.expect("task");
        assert_eq!(created.tx.global, tx.global, "{}", tx.global.gid);
        assert_eq!(created.tx.branches, tx.branches, "{}", tx.global.gid);
        let loaded = get(&*store, &tx.global.gid).await;
        assert_eq!(loaded, expected(&tx, &loaded));
        if !created.ids.is_empty() {
            assert_eq!(created.ids, loaded.branches.iter().map(|b| b.id).collect::<Vec<_>>());
        }
    }
    let again = store.create_returning_ids(saga("returned-0")).await;
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
}

/// A duplicate gid is a `Conflict`, and the stored transaction is untouched.
pub async fn create_duplicate_gid_conflicts(store: Arc<dyn Store>) {
    put(&*store, saga("dup")).await;
    let before = get(&*store, "dup").await;

    let mut again = saga("dup");
    again.global.custom_data = "other".into();
    again.branches.push(Branch::new("03".into(), Op::Action, "u".into(), vec![1], T0));
    let result = store.create(again).await;
    assert!(matches!(result, Err(Error::Conflict(_))), "got {result:?}");
    assert_eq!(get(&*store, "dup").await, before);
}

/// Loading an unknown gid is `None`, not an error.
pub async fn load_unknown_is_none(store: Arc<dyn Store>) {
    assert_eq!(store.load("nope").await.expect("load"), None);
}

/// Newest first, paged by `before_id`, every row exactly once.
pub async fn list_pages_newest_first(store: Arc<dyn Store>) {
    for i in 0..25 {
        put(&*store, saga(&format!("page-{i:02}"))).await;
    }
    let mut seen = Vec::new();
    let mut filter = ListFilter { limit: 10, ..ListFilter::default() };
    let mut pages = 0;
    loop {
        let page = store.list(&filter).await.expect("list");
        if page.is_empty() {
            break;
        }
        pages += 1;
        assert!(page.len() <= 10);
        assert!(page.windows(2).all(|w| w[0].id > w[1].id), "ids descend");
        filter.before_id = page.last().map(|g| g.id);
        seen.extend(page.into_iter().map(|g| g.gid));
    }
    assert_eq!(pages, 3);
    let want: Vec<String> = (0..25).rev().map(|i| format!("page-{i:02}")).collect();
    assert_eq!(seen, want);
}

/// Status, mode and creation-time filters, alone and combined.
pub async fn list_filters(store: Arc<dyn Store>) {
    let rows = [
        ("f-1", TransType::Saga, GlobalStatus::Submitted, at(10)),
        ("f-2", TransType::Tcc, GlobalStatus::Prepared, at(20)),
        ("f-3", TransType::Saga, GlobalStatus::Succeed, at(30)),
        ("f-4", TransType::Msg, GlobalStatus::Submitted, at(40)),
        ("f-5", TransType::Saga, GlobalStatus::Submitted, at(50)),
    ];
    for (gid, trans_type, status, created) in rows {
        let mut tx = saga(gid);
        tx.global.trans_type = trans_type;
        tx.global.status = status;
        tx.global.create_time = created;
        put(&*store, tx).await;
    }
    let list = |filter: ListFilter| {
        let store = Arc::clone(&store);
        async move {
            let filter = ListFilter { limit: 100, ..filter };
            let rows = store.list(&filter).await.expect("list");
            rows.into_iter().map(|g| g.gid).collect::<Vec<_>>()
        }
    };
    let by_status = |s| ListFilter { status: Some(s), ..ListFilter::default() };
    assert_eq!(list(by_status(GlobalStatus::Submitted)).await, ["f-5", "f-4", "f-1"]);
    assert_eq!(list(by_status(GlobalStatus::Aborting)).await, Vec::<String>::new());
    let saga_only = ListFilter { trans_type: Some(TransType::Saga), ..ListFilter::default() };
    assert_eq!(list(saga_only.clone()).await, ["f-5", "f-3", "f-1"]);
    let window = ListFilter { created_from: Some(at(20)), created_to: Some(at(40)), ..ListFilter::default() };
    assert_eq!(list(window.clone()).await, ["f-4", "f-3", "f-2"]);
    let combined = ListFilter {
        status: Some(GlobalStatus::Submitted),
        trans_type: Some(TransType::Saga),
        created_from: Some(at(11)),
        ..ListFilter::default()
    };
    assert_eq!(list(combined).await, ["f-5"]);
    let open_end =
        ListFilter { created_to: Some(Timestamp(at(20).as_millis() - 1)), ..ListFilter::default() };
    assert_eq!(list(open_end).await, ["f-1"]);
    // Filters and the cursor together.
    let all = list(saga_only.clone()).await;
    let f3 = store.load(&all[1]).await.expect("load").expect("f-3").global.id;
    let after = ListFilter { before_id: Some(f3), ..saga_only };
    assert_eq!(list(after).await, ["f-1"]);
    let limited = store.list(&ListFilter { limit: 2, ..window }).await.expect("list");
    assert_eq!(limited.len(), 2);
}
