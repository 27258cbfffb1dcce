//! The barrier on each database: duplicates, null compensation, hanging, business errors,
//! barrier ids, the message check-back race, cleanup.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use dtx_client::barrier::{self, Barrier, BarrierTable, Barriered, Skip};
use dtx_client::{BranchInfo, Error};

use crate::db::{TestDb, TestSql};

/// A gid no other test (or test process, on a shared server) uses.
pub fn unique_gid(test: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{test}-{}-{}-{nanos}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
}

fn branch(gid: &str, op: &str) -> BranchInfo {
    let tt = match op {
        "try" | "confirm" | "cancel" => "tcc",
        "msg" => "msg",
        _ => "saga",
    };
    let branch_id = if op == "msg" { barrier::MSG_BRANCH_ID } else { "01" };
    BranchInfo::new(gid, tt, branch_id, op).expect("branch info")
}

/// Creates the barrier table and a one-row business table; returns the business table's name.
async fn setup<DB: TestSql>(db: &TestDb<DB>) -> &'static str {
    barrier::create_table(&db.pool, None).await.expect("create the barrier table");
    // Twice: the DDL is idempotent.
    barrier::create_table(&db.pool, None).await.expect("create the barrier table again");
    db.exec("CREATE TABLE busi (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)").await;
    db.exec("INSERT INTO busi (id, n) VALUES (1, 0)").await;
    "busi"
}

async fn counter<DB: TestSql>(db: &TestDb<DB>) -> i64 {
    db.number("SELECT n FROM busi WHERE id = 1").await
}

async fn barrier_rows<DB: TestSql>(db: &TestDb<DB>, gid: &str) -> i64 {
    db.number(&format!("SELECT COUNT(*) FROM {} WHERE gid = '{gid}'", DB::DEFAULT_TABLE)).await
}

/// Adds `delta` to the counter inside the barrier's transaction, after `hold` (so that a
/// concurrent duplicate arrives while this transaction is open); counts its runs.
async fn guarded<DB: TestSql>(
    db: &TestDb<DB>,
    b: &Barrier,
    delta: i64,
    hold: Duration,
    runs: &AtomicUsize,
) -> Result<Barriered<()>, Error> {
    b.call(&db.pool, async |conn| {
        runs.fetch_add(1, Ordering::SeqCst);
        DB::exec(conn, &format!("UPDATE busi SET n = n + {delta} WHERE id = 1")).await?;
        tokio::time::sleep(hold).await;
        Ok::<_, Error>(())
    })
    .await
}

const HOLD: Duration = Duration::from_millis(300);

pub async fn duplicate_action_runs_once<DB: TestSql>(db: TestDb<DB>) {
    setup(&db).await;
    let gid = unique_gid("dup");
    let runs = AtomicUsize::new(0);
    let (b1, b2) = (Barrier::new(&branch(&gid, "action")), Barrier::new(&branch(&gid, "action")));
    let (r1, r2) = tokio::join!(guarded(&db, &b1, 1, HOLD, &runs), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        guarded(&db, &b2, 1, Duration::ZERO, &runs).await
    });
    assert_eq!(r1.expect("first"), Barriered::Ran(()));
    assert_eq!(r2.expect("duplicate"), Barriered::Skipped(Skip::AlreadyDone));
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the business ran once");
    assert_eq!(counter(&db).await, 1);
    // A later retry is skipped too.
    let b3 = Barrier::new(&branch(&gid, "action"));
    assert_eq!(
        guarded(&db, &b3, 1, Duration::ZERO, &runs).await.expect("retry"),
        Barriered::Skipped(Skip::AlreadyDone)
    );
    assert_eq!(counter(&db).await, 1);
}

pub async fn null_compensation_then_hanging_action<DB: TestSql>(db: TestDb<DB>) {
    setup(&db).await;
    for (action, compensation) in [("action", "compensate"), ("try", "cancel")] {
        let gid = unique_gid("null");
        let runs = AtomicUsize::new(0);
        let c = Barrier::new(&branch(&gid, compensation));
        let r = guarded(&db, &c, -1, Duration::ZERO, &runs).await.expect("compensation");
        assert_eq!(r, Barriered::Skipped(Skip::NullCompensation), "{compensation}");
        let a = Barrier::new(&branch(&gid, action));
        let r = guarded(&db, &a, 1, Duration::ZERO, &runs).await.expect("late action");
        assert_eq!(r, Barriered::Skipped(Skip::AlreadyDone), "hanging {action}");
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        assert_eq!(counter(&db).await, 0);
        // The origin row records who inserted it.
        let reason = db
            .number(&format!(
                "SELECT COUNT(*) FROM {} WHERE gid = '{gid}' AND op = '{action}' AND reason = '{compensation}'",
                DB::DEFAULT_TABLE
            ))
            .await;
        assert_eq!(reason, 1);
    }
}

pub async fn compensation_runs_once_under_concurrent_duplicates<DB: TestSql>(db: TestDb<DB>) {
    setup(&db).await;
    let gid = unique_gid("comp");
    let runs = AtomicUsize::new(0);
    let a = Barrier::new(&branch(&gid, "action"));
    assert_eq!(guarded(&db, &a, 1, Duration::ZERO, &runs).await.expect("action"), Barriered::Ran(()));
    let comp_runs = AtomicUsize::new(0);
    let bs: Vec<Barrier> = (0..3).map(|_| Barrier::new(&branch(&gid, "compensate"))).collect();
    let (r1, r2, r3) = tokio::join!(
        guarded(&db, &bs[0], -1, HOLD, &comp_runs),
        async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            guarded(&db, &bs[1], -1, Duration::ZERO, &comp_runs).await
        },
        async {
            tokio::time::sleep(Duration::from_millis(80)).await;
            guarded(&db, &bs[2], -1, Duration::ZERO, &comp_runs).await
        },
    );
    let results = [r1.expect("c1"), r2.expect("c2"), r3.expect("c3")];
    assert_eq!(results.iter().filter(|r| **r == Barriered::Ran(())).count(), 1, "{results:?}");
    assert_eq!(
        results.iter().filter(|r| **r == Barriered::Skipped(Skip::AlreadyDone)).count(),
        2,
        "{results:?}"
    );
    assert_eq!(comp_runs.load(Ordering::SeqCst), 1);
    assert_eq!(counter(&db).await, 0, "compensated exactly once");
}

pub async fn business_error_leaves_no_row<DB: TestSql>(db: TestDb<DB>) {
    setup(&db).await;
    let gid = unique_gid("err");
    let b = Barrier::new(&branch(&gid, "action"));
    let r = b
        .call(&db.pool, async |conn| {
            DB::exec(conn, "UPDATE busi SET n = n + 1 WHERE id = 1").await?;
            Err::<(), _>(Error::failure("insufficient balance"))
        })
        .await;
    assert!(matches!(r, Err(Error::Failure(_))), "{r:?}");
    assert_eq!(barrier_rows(&db, &gid).await, 0, "no barrier row after a business error");
    assert_eq!(counter(&db).await, 0, "the business update rolled back");
    // The action may be retried and then runs.
    let runs = AtomicUsize::new(0);
    let b = Barrier::new(&branch(&gid, "action"));
    assert_eq!(guarded(&db, &b, 1, Duration::ZERO, &runs).await.expect("retry"), Barriered::Ran(()));
    assert_eq!(counter(&db).await, 1);
}

pub async fn barrier_ids_count_calls_within_one_request<DB: TestSql>(db: TestDb<DB>) {
    setup(&db).await;
    let gid = unique_gid("ids");
    let runs = AtomicUsize::new(0);
    let first = Barrier::new(&branch(&gid, "action"));
    assert_eq!(guarded(&db, &first, 1, Duration::ZERO, &runs).await.expect("01"), Barriered::Ran(()));
    assert_eq!(guarded(&db, &first, 10, Duration::ZERO, &runs).await.expect("02"), Barriered::Ran(()));
    assert_eq!(counter(&db).await, 11);
    // The retried request builds a new barrier: ids 01 and 02 again, both deduplicated.
    let retry = Barrier::new(&branch(&gid, "action"));
    assert_eq!(
        guarded(&db, &retry, 1, Duration::ZERO, &runs).await.expect("01"),
        Barriered::Skipped(Skip::AlreadyDone)
    );
    assert_eq!(
        guarded(&db, &retry, 10, Duration::ZERO, &runs).await.expect("02"),
        Barriered::Skipped(Skip::AlreadyDone)
    );
    assert_eq!(counter(&db).await, 11);
    let ids = db
        .number(&format!("SELECT COUNT(DISTINCT barrier_id) FROM {} WHERE gid = '{gid}'", DB::DEFAULT_TABLE))
        .await;
    assert_eq!(ids, 2);
}

/// The message's local transaction and the check-back race, several times: exactly one wins,
/// and the check-back's answer always matches whether the local effect committed.
pub async fn msg_local_transaction_races_the_check_back<DB: TestSql>(db: TestDb<DB>) {
    setup(&db).await;
    for i in 0..6u64 {
        let gid = unique_gid("race");
        let before = counter(&db).await;
        let b = Barrier::new(&branch(&gid, "msg"));
        let runs = AtomicUsize::new(0);
        // Alternate who starts first, with the local transaction holding its row a while.
        let (local, check) = tokio::join!(
            async {
                if i % 2 == 1 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                guarded(&db, &b, 1, Duration::from_millis(100), &runs).await
            },
            async {
                if i % 2 == 0 {
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
                barrier::query_prepared(&db.pool, None, &gid).await
            }
        );
        let committed = counter(&db).await - before;
        match (local.expect("local transaction"), check) {
            (Barriered::Ran(()), Ok(())) => assert_eq!(committed, 1, "local won: its effect stays"),
            (Barriered::Skipped(Skip::MsgDecided), Err(Error::Failure(_))) => {
                assert_eq!(committed, 0, "check-back won: the local effect is rolled back");
                assert_eq!(runs.load(Ordering::SeqCst), 0);
            }
            (l, c) => panic!("inconsistent outcome: local {l:?}, check-back {c:?}"),
        }
        // Asking again gives the same answer.
        assert_eq!(barrier::query_prepared(&db.pool, None, &gid).await.is_ok(), committed == 1);
        assert_eq!(barrier_rows(&db, &gid).await, 1);
    }
}

pub async fn cleanup_deletes_old_rows_in_batches<DB: TestSql>(db: TestDb<DB>) {
    setup(&db).await;
    let (old, new) = (unique_gid("old"), unique_gid("new"));
    let runs = AtomicUsize::new(0);
    for gid in [&old, &new] {
        for op in ["action", "compensate"] {
            let b = Barrier::new(&branch(gid, op));
            guarded(&db, &b, 0, Duration::ZERO, &runs).await.expect("barrier");
        }
    }
    let t = DB::DEFAULT_TABLE;
    db.exec(&format!("UPDATE {t} SET create_time = {} WHERE gid = '{old}'", DB::TWO_HOURS_AGO)).await;
    let deleted = barrier::cleanup(&db.pool, None, Duration::from_secs(3600), 1).await.expect("cleanup");
    assert!(deleted >= 2, "deleted {deleted}");
    assert_eq!(barrier_rows(&db, &old).await, 0);
    assert_eq!(barrier_rows(&db, &new).await, 2);
    // A custom table name works end to end too.
    let custom = BarrierTable::new("busi_barrier").expect("name");
    barrier::create_table(&db.pool, Some(&custom)).await.expect("custom table");
    let b = Barrier::new(&branch(&new, "action")).with_table(custom.clone());
    assert_eq!(guarded(&db, &b, 0, Duration::ZERO, &runs).await.expect("custom"), Barriered::Ran(()));
    assert_eq!(db.number(&format!("SELECT COUNT(*) FROM busi_barrier WHERE gid = '{new}'")).await, 1);
}

/// `do_and_submit` against a real dtx, with the check-back (called as the coordinator calls
/// it) racing its local transaction at several offsets: whichever inserts the message's
/// barrier row first wins; the loser's effect is rolled back, and the message's fate follows.
pub async fn do_and_submit_races_the_check_back<DB: TestSql>(db: TestDb<DB>) {
    setup(&db).await;
    let dtx = dtx_tests::TestServer::start().await;
    let app = axum::Router::new()
        .route("/queryPrepared", dtx_client::axum::query_prepared_route(db.pool.clone()))
        .route("/ok", axum::routing::post(async || dtx_client::axum::Success));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = dtx_client::Client::http(dtx.base_url()).expect("client");
    let http = reqwest::Client::new();
    let check_back = format!("{base}/queryPrepared");
    let (mut local_wins, mut check_back_wins) = (0, 0);
    for offset_ms in [0u64, 3, 6, 10, 20, 40] {
        let gid = unique_gid("dsrace");
        let before = counter(&db).await;
        let mut msg = client.msg(&gid).add(format!("{base}/ok"), serde_json::json!({}));
        let local = msg.do_and_submit(&check_back, &db.pool, async |conn| {
            DB::exec(conn, "UPDATE busi SET n = n + 1 WHERE id = 1").await?;
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok(())
        });
        let asked = async {
            tokio::time::sleep(Duration::from_millis(offset_ms)).await;
            let url = format!("{check_back}?gid={gid}&trans_type=msg&branch_id=00&op=msg");
            http.get(url).send().await.expect("check-back").status().as_u16()
        };
        let (local, answer) = tokio::join!(local, asked);
        let committed = counter(&db).await - before;
        match (local, answer) {
            (Ok(()), 200) => {
                assert_eq!(committed, 1);
                dtx.wait_status(&gid, "succeed").await;
                local_wins += 1;
            }
            (Err(Error::Duplicated), 409) => {
                assert_eq!(committed, 0, "the losing local transaction rolled back");
                dtx.wait_status(&gid, "failed").await;
                check_back_wins += 1;
            }
            (l, a) => panic!("inconsistent outcome at {offset_ms} ms: do_and_submit {l:?}, check-back {a}"),
        }
    }
    eprintln!("do_and_submit vs check-back: local won {local_wins}, check-back won {check_back_wins}");
}

macro_rules! suite {
    ($module:ident, $open:expr) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            suite!(@test $open, duplicate_action_runs_once);
            suite!(@test $open, null_compensation_then_hanging_action);
            suite!(@test $open, compensation_runs_once_under_concurrent_duplicates);
            suite!(@test $open, business_error_leaves_no_row);
            suite!(@test $open, barrier_ids_count_calls_within_one_request);
            suite!(@test $open, msg_local_transaction_races_the_check_back);
            suite!(@test $open, cleanup_deletes_old_rows_in_batches);
            suite!(@test $open, do_and_submit_races_the_check_back);
        }
    };
    (@test $open:expr, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $case() {
            let open = $open;
            if let Some(db) = open(stringify!($case)).await {
                super::$case(db).await;
            }
        }
    };
}

suite!(sqlite, |_: &'static str| async { Some(crate::db::sqlite().await) });
suite!(postgres, |t: &'static str| crate::db::postgres(t));
suite!(mysql, |t: &'static str| crate::db::mysql(t));
