//! XA end to end on real prepared transactions: a real dtx in process, a bank whose two
//! accounts live in PostgreSQL or MySQL / MariaDB, its branches served over axum and over
//! tonic with `dtx_client::xa::{local, phase_two}`, and the global side with `Client::xa`.
//! Each case runs over HTTP and gRPC (coordinator API and participant calls) on both
//! databases: a branch's data is invisible until commit and gone after rollback.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::any;
use bytes::Bytes;
use dtx_client::axum::{BranchCall, Success};
use dtx_client::barrier;
use dtx_client::{BranchInfo, BranchResult, Client, Error, xa};
use dtx_engine::participant::grpc::RawCodec;
use dtx_tests::TestServer;
use dtx_tests::grpc::busi::ReqGrpc;
use prost::Message;
use tokio::net::TcpListener;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use crate::bank::{Mode, Req};
use crate::barrier::unique_gid;
use crate::db::{TestDb, TestSql};

/// What the suite asks a database besides SQL: its prepared transactions.
pub trait XaTestDb: TestSql {
    /// How many prepared (not yet committed or rolled back) transactions belong to `gid`.
    fn prepared_of<'a>(
        pool: &'a sqlx::Pool<Self>,
        gid: &'a str,
    ) -> impl std::future::Future<Output = i64> + Send + 'a;
}

impl XaTestDb for sqlx::Postgres {
    async fn prepared_of(pool: &sqlx::Pool<Self>, gid: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM pg_prepared_xacts WHERE gid LIKE $1")
            .bind(format!("{gid}-%"))
            .fetch_one(pool)
            .await
            .expect("pg_prepared_xacts")
    }
}

impl XaTestDb for sqlx::MySql {
    async fn prepared_of(pool: &sqlx::Pool<Self>, gid: &str) -> i64 {
        use sqlx::Row;
        // XA RECOVER is not a prepared statement: text protocol.
        let rows = sqlx::raw_sql("XA RECOVER").fetch_all(pool).await.expect("XA RECOVER");
        let n = rows
            .iter()
            .filter(|r| {
                r.try_get::<Vec<u8>, _>("data").is_ok_and(|d| d.starts_with(format!("{gid}-").as_bytes()))
            })
            .count();
        i64::try_from(n).unwrap_or(i64::MAX)
    }
}

struct Inner<DB: sqlx::Database> {
    pool: sqlx::Pool<DB>,
    /// The coordinator the branches register with (the test's API: HTTP or gRPC).
    client: Client,
}

struct Env<DB: XaTestDb> {
    dtx: TestServer,
    client: Client,
    db: TestDb<DB>,
    urls: (String, String),
}

impl<DB: XaTestDb> Env<DB> {
    async fn start(mode: Mode, db: TestDb<DB>) -> Env<DB> {
        let dtx = TestServer::start().await;
        let client = match mode {
            Mode::Http => Client::http(dtx.base_url()).expect("http client"),
            Mode::Grpc => Client::grpc(&dtx.grpc_addr().to_string()).expect("grpc client"),
        };
        barrier::create_table(&db.pool, None).await.expect("barrier table");
        db.exec("CREATE TABLE account (id BIGINT PRIMARY KEY, balance BIGINT NOT NULL)").await;
        db.exec("INSERT INTO account (id, balance) VALUES (1, 1000), (2, 1000)").await;
        let inner = Arc::new(Inner { pool: db.pool.clone(), client: client.clone() });
        let base = match mode {
            Mode::Http => {
                let app = Router::new().route("/api/{method}", any(http_branch::<DB>)).with_state(inner);
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
                let base = format!("http://{}/api", listener.local_addr().expect("addr"));
                tokio::spawn(async move { axum::serve(listener, app).await });
                base
            }
            Mode::Grpc => {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
                let base = format!("{}/busi.Busi", listener.local_addr().expect("addr"));
                let service = XaService { inner };
                tokio::spawn(async move {
                    tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming(TcpIncoming::from(listener))
                        .await
                });
                base
            }
        };
        let urls = (format!("{base}/XaTransOut"), format!("{base}/XaTransIn"));
        Env { dtx, client, db, urls }
    }

    /// Balances as another session sees them.
    async fn balances(&self) -> (i64, i64) {
        let one = self.db.number("SELECT balance FROM account WHERE id = 1").await;
        let two = self.db.number("SELECT balance FROM account WHERE id = 2").await;
        (one, two)
    }

    async fn prepared(&self, gid: &str) -> i64 {
        DB::prepared_of(&self.db.pool, gid).await
    }

    async fn rolled_back_rows(&self, gid: &str) -> i64 {
        let sql = format!(
            "SELECT COUNT(*) FROM {} WHERE gid = '{gid}' AND trans_type = 'xa' AND reason = 'rollback'",
            DB::DEFAULT_TABLE
        );
        self.db.number(&sql).await
    }
}

async fn http_branch<DB: XaTestDb>(
    State(bank): State<Arc<Inner<DB>>>,
    Path(method): Path<String>,
    call: BranchCall<Option<Req>>,
) -> BranchResult {
    handle(&bank, &method, &call.info, call.payload.unwrap_or_default()).await?;
    Ok(Success)
}

/// The XA action (op `action`: a local transaction prepared under XA) or its phase two.
async fn handle<DB: XaTestDb>(
    bank: &Inner<DB>,
    method: &str,
    info: &BranchInfo,
    req: Req,
) -> Result<(), Error> {
    if info.op != "action" {
        return xa::phase_two(&bank.pool, None, info).await;
    }
    let (id, delta, scripted) = match method {
        "XaTransOut" => (1, -req.amount, req.trans_out_result),
        "XaTransIn" => (2, req.amount, req.trans_in_result),
        other => return Err(Error::Protocol(format!("no method {other}"))),
    };
    xa::local(&bank.client, info, &bank.pool, None, async |conn| {
        DB::exec(conn, &format!("UPDATE account SET balance = balance + {delta} WHERE id = {id}")).await?;
        // A refusal after the update: the local transaction rolls it back, nothing registers.
        if scripted == "FAILURE" {
            return Err(Error::failure(format!("{method} refused")));
        }
        Ok(())
    })
    .await?;
    Ok(())
}

struct XaService<DB: sqlx::Database> {
    inner: Arc<Inner<DB>>,
}

impl<DB: sqlx::Database> Clone for XaService<DB> {
    fn clone(&self) -> Self {
        XaService { inner: self.inner.clone() }
    }
}

impl<DB: sqlx::Database> NamedService for XaService<DB> {
    const NAME: &'static str = "busi.Busi";
}

impl<DB: XaTestDb, B> Service<http::Request<B>> for XaService<DB>
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
        let handler = Handler { inner: self.inner.clone(), method };
        Box::pin(async move { Ok(tonic::server::Grpc::new(RawCodec).unary(handler, req).await) })
    }
}

struct Handler<DB: sqlx::Database> {
    inner: Arc<Inner<DB>>,
    method: String,
}

impl<DB: XaTestDb> UnaryService<Bytes> for Handler<DB> {
    type Response = Bytes;
    type Future = BoxFuture<Response<Bytes>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let (inner, method) = (self.inner.clone(), self.method.clone());
        Box::pin(async move {
            let info = dtx_client::grpc::branch_info(&request)?;
            let r = ReqGrpc::decode(request.get_ref().clone())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let req = Req {
                amount: r.amount,
                trans_out_result: r.trans_out_result,
                trans_in_result: r.trans_in_result,
            };
            handle(&inner, &method, &info, req).await?;
            Ok(Response::new(Bytes::new()))
        })
    }
}

async fn xa_commit<DB: XaTestDb>(mode: Mode, db: TestDb<DB>) {
    let env = Env::start(mode, db).await;
    let gid = unique_gid("xa-commit");
    let p = Req::amount(30).payload(mode);
    env.client
        .xa(&gid)
        .wait_result(true)
        .run(async |x| {
            x.call_branch(p.clone(), &env.urls.0).await?;
            x.call_branch(p.clone(), &env.urls.1).await?;
            // Both branches are prepared: written, but invisible to everyone else.
            assert_eq!(env.balances().await, (1000, 1000), "prepared data is invisible");
            assert_eq!(env.prepared(&gid).await, 2);
            Ok(())
        })
        .await
        .expect("xa");
    assert_eq!(env.dtx.status(&gid).await, "succeed");
    assert_eq!(env.balances().await, (970, 1030), "committed");
    assert_eq!(env.prepared(&gid).await, 0);
    // Phase two again (a coordinator retry): the xid is gone, which counts as done.
    let again = BranchInfo::new(&gid, "xa", "01", "commit").expect("info");
    xa::phase_two(&env.db.pool, None, &again).await.expect("a repeated commit is a no-op");
    assert_eq!(env.balances().await, (970, 1030));
}

async fn xa_rollback<DB: XaTestDb>(mode: Mode, db: TestDb<DB>) {
    let env = Env::start(mode, db).await;
    let gid = unique_gid("xa-rollback");
    let ok = Req::amount(30).payload(mode);
    let refused = Req { trans_in_result: "FAILURE".into(), ..Req::amount(30) }.payload(mode);
    let err = env
        .client
        .xa(&gid)
        .wait_result(true)
        .run(async |x| {
            x.call_branch(ok.clone(), &env.urls.0).await?;
            x.call_branch(refused.clone(), &env.urls.1).await?;
            Ok(())
        })
        .await
        .expect_err("rolled back");
    assert!(err.is_failure(), "{err:?}");
    env.dtx.wait_status(&gid, "failed").await;
    assert_eq!(env.balances().await, (1000, 1000), "the prepared debit is gone");
    assert_eq!(env.prepared(&gid).await, 0);
    let q = env.dtx.query(&gid).await;
    assert_eq!(dtx_tests::branch_statuses(&q), ["succeed", "prepared"], "only 01 registered; rolled back");
    assert_eq!(env.rolled_back_rows(&gid).await, 1, "branch 01's barrier row records the rollback");
    // A late action of the rolled-back branch does not prepare anything.
    let late = BranchInfo::new(&gid, "xa", "01", "action").expect("info").with_phase2_url(&env.urls.0);
    let r = xa::local(&env.client, &late, &env.db.pool, None, async |_| Ok::<_, Error>(())).await;
    assert!(matches!(r, Err(ref e) if e.is_failure()), "{r:?}");
    assert_eq!(env.prepared(&gid).await, 0);
}

async fn xa_timeout<DB: XaTestDb>(mode: Mode, db: TestDb<DB>) {
    let env = Env::start(mode, db).await;
    let gid = unique_gid("xa-timeout");
    let p = Req::amount(30).payload(mode);
    let err = env
        .client
        .xa(&gid)
        .timeout_to_fail(Duration::from_secs(5))
        .run(async |x| {
            x.call_branch(p.clone(), &env.urls.0).await?;
            assert_eq!(env.prepared(&gid).await, 1);
            // The client stalls past the timeout: dtx rolls the branch back.
            env.dtx.advance(Duration::from_secs(10));
            env.dtx.cron().await;
            env.dtx.wait_status(&gid, "failed").await;
            Ok(())
        })
        .await
        .expect_err("the submit after the timeout is refused");
    assert!(err.is_failure(), "{err:?}");
    assert_eq!(env.balances().await, (1000, 1000));
    assert_eq!(env.prepared(&gid).await, 0, "rolled back");
    let q = env.dtx.query(&gid).await;
    dtx_tests::assert_timeout_reason(q["transaction"]["rollback_reason"].as_str().unwrap_or_default());
}

macro_rules! xa_suite {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                use crate::bank::Mode;

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_http() {
                    if let Some(db) = crate::db::postgres(concat!(stringify!($case), "_postgres_http")).await {
                        super::$case(Mode::Http, db).await;
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres_grpc() {
                    if let Some(db) = crate::db::postgres(concat!(stringify!($case), "_postgres_grpc")).await {
                        super::$case(Mode::Grpc, db).await;
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mysql_http() {
                    if let Some(db) = crate::db::mysql(concat!(stringify!($case), "_mysql_http")).await {
                        super::$case(Mode::Http, db).await;
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn mysql_grpc() {
                    if let Some(db) = crate::db::mysql(concat!(stringify!($case), "_mysql_grpc")).await {
                        super::$case(Mode::Grpc, db).await;
                    }
                }
            }
        )*
    };
}

xa_suite!(xa_commit, xa_rollback, xa_timeout);
