//! End to end: a real dtx in process, the bank's axum and tonic participants, the SDK on both
//! sides; every flow over HTTP and over gRPC.

use std::time::Duration;

use dtx_client::barrier::{Barrier, Barriered, MSG_BRANCH_ID, MSG_OP, Skip};
use dtx_client::{BranchInfo, Client, Error};
use dtx_tests::TestServer;

use crate::bank::{Bank, Mode, Req};

struct Env {
    dtx: TestServer,
    bank: Bank,
    client: Client,
    mode: Mode,
}

impl Env {
    async fn start(mode: Mode) -> Env {
        let dtx = TestServer::start().await;
        let bank = Bank::start().await;
        let client = match mode {
            Mode::Http => Client::http(dtx.base_url()).expect("http client"),
            Mode::Grpc => Client::grpc(&dtx.grpc_addr().to_string()).expect("grpc client"),
        };
        Env { dtx, bank, client, mode }
    }

    fn url(&self, method: &str) -> String {
        self.bank.url(self.mode, method)
    }

    fn transfer_saga(&self, gid: &str, req: &Req) -> dtx_client::Saga {
        let p = req.payload(self.mode);
        self.client.saga(gid).add(self.url("TransOut"), self.url("TransOutRevert"), p.clone()).add(
            self.url("TransIn"),
            self.url("TransInRevert"),
            p,
        )
    }

    fn count_calls(&self, call: &str) -> usize {
        self.bank.calls().iter().filter(|c| *c == call).count()
    }

    /// Runs the scheduler until `gid` is `status` (a few rounds at most).
    async fn cron_until(&self, gid: &str, status: &str) {
        for _ in 0..5 {
            self.dtx.cron().await;
            if self.dtx.status(gid).await == status {
                break;
            }
        }
        self.dtx.wait_status(gid, status).await;
    }
}

pub async fn saga_success(mode: Mode) {
    let env = Env::start(mode).await;
    let gid = env.client.new_gid().await.expect("new gid");
    env.transfer_saga(&gid, &Req::amount(30)).wait_result(true).submit().await.expect("saga");
    assert_eq!(env.bank.balances().await, (970, 1030));
    assert_eq!(env.dtx.status(&gid).await, "succeed");
    if mode == Mode::Http {
        let q = env.client.query(&gid).await.expect("query").expect("known gid");
        assert_eq!(q["transaction"]["status"], "succeed");
        assert!(env.client.query("no-such-gid").await.expect("query").is_none());
    }
}

pub async fn saga_rollback(mode: Mode) {
    let env = Env::start(mode).await;
    let gid = env.client.new_gid().await.expect("new gid");
    let req = Req { trans_in_result: "FAILURE".into(), ..Req::amount(30) };
    let err = env.transfer_saga(&gid, &req).wait_result(true).submit().await.expect_err("rolled back");
    assert!(err.is_failure(), "{err:?}");
    assert!(err.to_string().contains("TransIn refused"), "the reason reaches the caller: {err}");
    env.dtx.wait_status(&gid, "failed").await;
    // TransOut was compensated; TransIn's refusal left no barrier row, so its compensation
    // was a null compensation and did not take 30 from account 2.
    assert_eq!(env.bank.balances().await, (1000, 1000));
    assert_eq!(env.count_calls("TransInRevert compensate"), 1);
    assert_eq!(env.count_calls("TransOutRevert compensate"), 1);
}

pub async fn concurrent_sagas(mode: Mode) {
    let env = Env::start(mode).await;
    let mut sagas = Vec::new();
    for _ in 0..4 {
        let gid = env.client.new_gid().await.expect("new gid");
        let p = Req::amount(10).payload(mode);
        // Three steps: two debits of 10 run concurrently, the credit of 20 after the first.
        let saga = env
            .client
            .saga(&gid)
            .add(env.url("TransOut"), env.url("TransOutRevert"), p.clone())
            .add(env.url("TransOut"), env.url("TransOutRevert"), p.clone())
            .add(env.url("TransIn"), env.url("TransInRevert"), Req::amount(20).payload(mode))
            .add_branch_order(2, [0])
            .concurrent(true)
            .wait_result(true);
        sagas.push((gid, saga));
    }
    let results = futures::future::join_all(sagas.iter().map(|(_, s)| s.submit())).await;
    for r in results {
        r.expect("concurrent saga");
    }
    for (gid, _) in &sagas {
        assert_eq!(env.dtx.status(gid).await, "succeed");
    }
    assert_eq!(env.bank.balances().await, (1000 - 4 * 20, 1000 + 4 * 20));
}

pub async fn tcc_confirm(mode: Mode) {
    let env = Env::start(mode).await;
    let gid = env.client.new_gid().await.expect("new gid");
    let p = Req::amount(30).payload(mode);
    let out = env
        .client
        .tcc(&gid)
        .wait_result(true)
        .run(async |tcc| {
            tcc.call_branch(
                p.clone(),
                &env.url("TransOutTry"),
                &env.url("TransOutConfirm"),
                &env.url("TransOutCancel"),
            )
            .await?;
            tcc.call_branch(
                p.clone(),
                &env.url("TransInTry"),
                &env.url("TransInConfirm"),
                &env.url("TransInCancel"),
            )
            .await?;
            Ok("tried")
        })
        .await
        .expect("tcc");
    assert_eq!(out, "tried");
    env.dtx.wait_status(&gid, "succeed").await;
    assert_eq!(env.bank.balances().await, (970, 1030));
    assert_eq!(env.count_calls("TransInConfirm confirm"), 1);
    assert_eq!(env.count_calls("TransOutCancel cancel"), 0);
}

pub async fn tcc_cancel(mode: Mode) {
    let env = Env::start(mode).await;
    let gid = env.client.new_gid().await.expect("new gid");
    let p = Req { trans_in_result: "FAILURE".into(), ..Req::amount(30) }.payload(mode);
    let err = env
        .client
        .tcc(&gid)
        .run(async |tcc| {
            tcc.call_branch(
                p.clone(),
                &env.url("TransOutTry"),
                &env.url("TransOutConfirm"),
                &env.url("TransOutCancel"),
            )
            .await?;
            tcc.call_branch(
                p.clone(),
                &env.url("TransInTry"),
                &env.url("TransInConfirm"),
                &env.url("TransInCancel"),
            )
            .await?;
            Ok(())
        })
        .await
        .expect_err("the second try refuses");
    assert!(err.is_failure(), "{err:?}");
    let q = env.dtx.wait_status(&gid, "failed").await;
    assert!(q["transaction"]["rollback_reason"].as_str().unwrap_or_default().contains("refused"), "{q}");
    assert_eq!(env.bank.balances().await, (1000, 1000), "the debit was cancelled");
    assert_eq!(env.count_calls("TransOutCancel cancel"), 1);
    assert_eq!(env.count_calls("TransInConfirm confirm"), 0);
}

pub async fn tcc_nested(mode: Mode) {
    let env = Env::start(mode).await;
    let nested = [env.url("TransInTry"), env.url("TransInConfirm"), env.url("TransInCancel")];
    assert!(env.bank.inner.nested.set((env.client.clone(), mode, nested)).is_ok());
    let gid = env.client.new_gid().await.expect("new gid");
    let p = Req::amount(30).payload(mode);
    env.client
        .tcc(&gid)
        .wait_result(true)
        .run(async |tcc| {
            tcc.call_branch(
                p.clone(),
                &env.url("TransOutTry"),
                &env.url("TransOutConfirm"),
                &env.url("TransOutCancel"),
            )
            .await?;
            // Branch 02's try opens a nested TCC (branch 0201); 02 itself confirms nothing.
            tcc.call_branch(
                p.clone(),
                &env.url("TransInTryNested"),
                &env.url("TransOutConfirm"),
                &env.url("TransInCancel"),
            )
            .await?;
            Ok(())
        })
        .await
        .expect("nested tcc");
    let q = env.dtx.wait_status(&gid, "succeed").await;
    let ids: Vec<&str> =
        q["branches"].as_array().expect("branches").iter().filter_map(|b| b["branch_id"].as_str()).collect();
    assert!(ids.contains(&"0201") && ids.contains(&"02") && ids.contains(&"01"), "{ids:?}");
    assert_eq!(env.bank.balances().await, (970, 1030));
}

pub async fn msg_do_and_submit(mode: Mode) {
    let env = Env::start(mode).await;
    let gid = env.client.new_gid().await.expect("new gid");
    let mut msg =
        env.client.msg(&gid).add(env.url("TransIn"), Req::amount(30).payload(mode)).wait_result(true);
    let v = msg
        .do_and_submit(&env.url("QueryPrepared"), &env.bank.inner.pool, async |conn| {
            sqlx::query("UPDATE account SET balance = balance - 30 WHERE id = 1").execute(conn).await?;
            Ok(7)
        })
        .await
        .expect("do_and_submit");
    assert_eq!(v, 7);
    env.dtx.wait_status(&gid, "succeed").await;
    assert_eq!(env.bank.balances().await, (970, 1030));

    // A local business failure aborts the message: its action never runs.
    let gid = env.client.new_gid().await.expect("new gid");
    let mut msg = env.client.msg(&gid).add(env.url("TransIn"), Req::amount(30).payload(mode));
    let err = msg
        .do_and_submit(&env.url("QueryPrepared"), &env.bank.inner.pool, async |conn| {
            sqlx::query("UPDATE account SET balance = balance - 30 WHERE id = 1").execute(conn).await?;
            Err::<(), _>(Error::failure("no funds"))
        })
        .await
        .expect_err("business failure");
    assert!(err.is_failure());
    env.dtx.wait_status(&gid, "failed").await;
    assert_eq!(env.bank.balances().await, (970, 1030));
    assert_eq!(env.count_calls("TransIn action"), 1);
}

/// The coordinator's check-back arrives while the local transaction is still open: it waits
/// for it, sees it committed, and the message is delivered exactly once.
pub async fn msg_do_and_submit_with_check_back_in_flight(mode: Mode) {
    let env = Env::start(mode).await;
    let gid = env.client.new_gid().await.expect("new gid");
    let mut msg = env.client.msg(&gid).add(env.url("TransIn"), Req::amount(30).payload(mode));
    // The business code runs inside the local transaction, after its barrier row: the
    // check-back starts from there, so it cannot reach the participant before the local
    // transaction began (it would then rightly roll the message back).
    let opened = tokio::sync::Notify::new();
    let check_back = async {
        opened.notified().await;
        // Past the message's timeout: the scheduler asks the check-back.
        env.dtx.advance(Duration::from_secs(120));
        env.dtx.cron().await;
    };
    let query_prepared = env.url("QueryPrepared");
    let local = msg.do_and_submit(&query_prepared, &env.bank.inner.pool, async |conn| {
        sqlx::query("UPDATE account SET balance = balance - 30 WHERE id = 1").execute(conn).await?;
        opened.notify_one();
        tokio::time::sleep(Duration::from_millis(400)).await;
        Ok(())
    });
    let (r, ()) = tokio::join!(local, check_back);
    r.expect("local transaction wins");
    env.cron_until(&gid, "succeed").await;
    assert_eq!(env.bank.balances().await, (970, 1030));
    assert_eq!(env.count_calls("TransIn action"), 1);
}

/// Prepared, then the sender crashes: the check-back decides. Committed local transaction =>
/// delivered; none => failed, and a late local transaction is refused (rolled back).
pub async fn msg_check_back(mode: Mode) {
    let env = Env::start(mode).await;
    // Committed locally, never submitted.
    let gid = env.client.new_gid().await.expect("new gid");
    let mut msg = env.client.msg(&gid).add(env.url("TransIn"), Req::amount(30).payload(mode));
    msg.prepare(&env.url("QueryPrepared")).await.expect("prepare");
    let local = BranchInfo::new(&gid, "msg", MSG_BRANCH_ID, MSG_OP).expect("info");
    let debit = async |conn: &mut sqlx::SqliteConnection| {
        sqlx::query("UPDATE account SET balance = balance - 30 WHERE id = 1").execute(conn).await?;
        Ok::<_, Error>(())
    };
    assert_eq!(
        Barrier::new(&local).call(&env.bank.inner.pool, debit).await.expect("local"),
        Barriered::Ran(())
    );
    env.dtx.advance(Duration::from_secs(120));
    env.cron_until(&gid, "succeed").await;
    assert_eq!(env.bank.balances().await, (970, 1030));

    // Nothing committed: the check-back rolls it back, and the late local transaction loses.
    let gid = env.client.new_gid().await.expect("new gid");
    let mut msg = env.client.msg(&gid).add(env.url("TransIn"), Req::amount(30).payload(mode));
    msg.prepare(&env.url("QueryPrepared")).await.expect("prepare");
    env.dtx.advance(Duration::from_secs(120));
    env.cron_until(&gid, "failed").await;
    let local = BranchInfo::new(&gid, "msg", MSG_BRANCH_ID, MSG_OP).expect("info");
    assert_eq!(
        Barrier::new(&local).call(&env.bank.inner.pool, debit).await.expect("late local"),
        Barriered::Skipped(Skip::MsgDecided)
    );
    assert_eq!(env.bank.balances().await, (970, 1030), "the late debit rolled back");
    assert_eq!(env.count_calls("TransIn action"), 1);
}

pub async fn typed_errors(mode: Mode) {
    let env = Env::start(mode).await;
    // ONGOING: the round could not finish.
    let gid = env.client.new_gid().await.expect("new gid");
    let req = Req { trans_in_result: "ONGOING".into(), ..Req::amount(30) };
    let err = env.transfer_saga(&gid, &req).wait_result(true).submit().await.expect_err("ongoing");
    assert!(err.is_ongoing(), "{err:?}");
    // Protocol: the coordinator refuses the request (no gid).
    let err = env.transfer_saga("", &Req::amount(1)).submit().await.expect_err("no gid");
    assert!(matches!(err, Error::Protocol(_)), "{err:?}");
    // Transport: nobody listens.
    let port = dtx_tests::free_port();
    let nobody = match mode {
        Mode::Http => Client::http(&format!("http://127.0.0.1:{port}/api/dtmsvr")).expect("client"),
        Mode::Grpc => Client::grpc(&format!("127.0.0.1:{port}")).expect("client"),
    };
    let err = nobody.new_gid().await.expect_err("nobody listens");
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
}

macro_rules! both {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                use crate::bank::Mode;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn http() {
                    super::$case(Mode::Http).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn grpc() {
                    super::$case(Mode::Grpc).await;
                }
            }
        )*
    };
}

both!(
    saga_success,
    saga_rollback,
    concurrent_sagas,
    tcc_confirm,
    tcc_cancel,
    tcc_nested,
    msg_do_and_submit,
    msg_do_and_submit_with_check_back_in_flight,
    msg_check_back,
    typed_errors,
);
