//! Participant health: a release can hold a transaction for a host (`held_host`), and a host
//! coming back releases what is held for it, at a bounded batch size, fenced by `held_host`.

use std::sync::Arc;
use std::time::Duration;

use dtx_core::GlobalStatus;

use super::{T0, at, get, put, saga_with};
use crate::{LeaseChange, Save, Store};

fn hold(gid: &str, owner: &str, now: u64, until: u64, host: &str) -> Save {
    Save {
        gid: gid.to_owned(),
        owner: owner.to_owned(),
        now: at(now),
        branches: Vec::new(),
        status: None,
        lease: LeaseChange::Hold {
            next_cron_time: at(until),
            next_cron_interval: Duration::from_secs(20),
            host: host.to_owned(),
        },
    }
}

/// A hold releases the row like a release and records the host; a later plain release
/// clears it; `resume_held` makes up to `limit` rows held for that host (and only those,
/// unfinished and unleased) due now, marked resumed (`""`).
pub async fn hold_then_resume_held(store: Arc<dyn Store>) {
    use GlobalStatus::*;
    let down = "http://down:1";
    for i in 0..5 {
        put(&*store, saga_with(&format!("h-{i}"), Submitted, at(0), Some(("a", at(30))))).await;
        store.save(hold(&format!("h-{i}"), "a", 1, 100, down)).await.expect("hold");
    }
    let h0 = get(&*store, "h-0").await.global;
    assert_eq!(h0.held_host.as_deref(), Some(down));
    assert_eq!((h0.owner, h0.lease_until, h0.next_cron_time), (None, None, at(100)));
    assert_eq!(h0.next_cron_interval, Duration::from_secs(20));
    // Another host's row, a row released normally after a hold, a row owned under a valid
    // lease, and a row that became final: none of them is resumed.
    put(&*store, saga_with("other", Submitted, at(0), Some(("a", at(30))))).await;
    store.save(hold("other", "a", 1, 100, "http://other:2")).await.expect("hold other");
    put(&*store, saga_with("released", Submitted, at(0), Some(("a", at(30))))).await;
    store.save(hold("released", "a", 1, 100, down)).await.expect("hold");
    let claimed = store.claim("released", "b", at(2), at(40)).await.expect("claim").expect("unowned");
    assert_eq!(claimed.global.held_host.as_deref(), Some(down), "a claim keeps the mark");
    let release = Save {
        lease: LeaseChange::Release { next_cron_time: at(100), next_cron_interval: Duration::from_secs(20) },
        ..hold("released", "b", 3, 0, "")
    };
    store.save(release).await.expect("release");
    assert_eq!(get(&*store, "released").await.global.held_host, None, "a release clears the mark");
    put(&*store, saga_with("owned", Submitted, at(0), Some(("a", at(30))))).await;
    store.save(hold("owned", "a", 1, 100, down)).await.expect("hold");
    store.claim("owned", "c", at(2), at(60)).await.expect("claim").expect("unowned");
    put(&*store, saga_with("final", Submitted, at(0), Some(("a", at(30))))).await;
    store.save(hold("final", "a", 1, 100, down)).await.expect("hold");
    store.force_stop("final", "stop", at(2)).await.expect("force stop");

    let now = at(10);
    assert_eq!(store.resume_held(down, 3, now).await.expect("first batch"), 3);
    assert_eq!(store.resume_held(down, 3, now).await.expect("second batch"), 2);
    assert_eq!(store.resume_held(down, 3, now).await.expect("nothing left"), 0);
    for i in 0..5 {
        let g = get(&*store, &format!("h-{i}")).await.global;
        assert_eq!((g.held_host.as_deref(), g.next_cron_time), (Some(""), now), "h-{i}: resumed");
        assert_eq!(g.update_time, now);
    }
    let other = get(&*store, "other").await.global;
    assert_eq!((other.held_host.as_deref(), other.next_cron_time), (Some("http://other:2"), at(100)));
    let owned = get(&*store, "owned").await.global;
    assert_eq!((owned.held_host.as_deref(), owned.owner.as_deref()), (Some(down), Some("c")));
    assert_eq!(get(&*store, "final").await.global.held_host.as_deref(), Some(down));
    // The owned row's lease runs out: then it is released too.
    assert_eq!(store.resume_held(down, 10, at(61)).await.expect("expired lease"), 1);

    let due = store.claim_due("z", now.add(Duration::from_secs(100)), at(200), 100).await.expect("claim due");
    assert!(due.iter().all(|l| l.global.next_cron_time <= at(100)));
    assert_eq!(T0, at(0));
}
