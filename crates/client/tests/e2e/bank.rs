//! A bank written with the SDK: the same handlers served over axum and over tonic, each branch
//! under the barrier on its SQLite database. Account 1 pays, account 2 receives.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::any;
use bytes::Bytes;
use dtx_client::axum::{BranchCall, Success};
use dtx_client::barrier::{self, Barrier};
use dtx_client::{BranchInfo, BranchResult, Client, Error, Payload, Tcc};
use dtx_engine::participant::grpc::RawCodec;
use dtx_tests::grpc::busi::ReqGrpc;
use prost::Message;
use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use tokio::net::TcpListener;
use tonic::codegen::{BoxFuture, Service, StdError, http};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

/// Which API the test uses: the coordinator's, and the participants'.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Http,
    Grpc,
}

/// A transfer request; `*_result` makes the forward op (action / try) answer FAILURE or ONGOING.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Req {
    pub amount: i64,
    #[serde(default)]
    pub trans_out_result: String,
    #[serde(default)]
    pub trans_in_result: String,
}

impl Req {
    pub fn amount(amount: i64) -> Req {
        Req { amount, ..Req::default() }
    }

    pub fn payload(&self, mode: Mode) -> Payload {
        match mode {
            Mode::Http => Payload::json(self).expect("json"),
            Mode::Grpc => Payload::proto(&ReqGrpc {
                amount: self.amount,
                trans_out_result: self.trans_out_result.clone(),
                trans_in_result: self.trans_in_result.clone(),
            }),
        }
    }
}

pub struct Inner {
    pub pool: SqlitePool,
    calls: Mutex<Vec<String>>,
    /// For nested TCC: the coordinator client, the API the test uses, and the nested branch's
    /// try, confirm and cancel URLs.
    pub nested: OnceLock<(Client, Mode, [String; 3])>,
}

#[derive(Clone)]
pub struct Bank {
    pub inner: Arc<Inner>,
    http: String,
    grpc: String,
    _dir: Arc<tempfile::TempDir>,
}

impl Bank {
    pub async fn start() -> Bank {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("bank.db").display());
        let pool =
            sqlx::sqlite::SqlitePoolOptions::new().max_connections(8).connect(&url).await.expect("sqlite");
        barrier::create_table(&pool, None).await.expect("barrier table");
        sqlx::raw_sql(
            "CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
             INSERT INTO account VALUES (1, 1000), (2, 1000);",
        )
        .execute(&pool)
        .await
        .expect("accounts");
        let inner = Arc::new(Inner { pool: pool.clone(), calls: Mutex::default(), nested: OnceLock::new() });

        let app = Router::new()
            .route("/api/QueryPrepared", dtx_client::axum::query_prepared_route(pool))
            .route("/api/{method}", any(http_branch))
            .with_state(inner.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let http = format!("http://{}/api", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });

        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
        let grpc = format!("{}/busi.Busi", listener.local_addr().expect("addr"));
        let service = BusiService { inner: inner.clone() };
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener))
                .await
        });
        Bank { inner, http, grpc, _dir: Arc::new(dir) }
    }

    /// The URL of `method` in `mode`.
    pub fn url(&self, mode: Mode, method: &str) -> String {
        match mode {
            Mode::Http => format!("{}/{method}", self.http),
            Mode::Grpc => format!("{}/{method}", self.grpc),
        }
    }

    pub async fn balances(&self) -> (i64, i64) {
        let rows: Vec<i64> = sqlx::query_scalar("SELECT balance FROM account ORDER BY id")
            .fetch_all(&self.inner.pool)
            .await
            .expect("balances");
        (rows[0], rows[1])
    }

    /// Every branch call received, as "Method op".
    pub fn calls(&self) -> Vec<String> {
        self.inner.calls.lock().expect("calls").clone()
    }
}

async fn http_branch(
    State(bank): State<Arc<Inner>>,
    Path(method): Path<String>,
    call: BranchCall<Option<Req>>,
) -> BranchResult {
    handle(&bank, &method, &call.info, call.payload.unwrap_or_default()).await?;
    Ok(Success)
}

/// Every method of both APIs.
async fn handle(bank: &Inner, method: &str, info: &BranchInfo, req: Req) -> Result<(), Error> {
    bank.calls.lock().expect("calls").push(format!("{method} {}", info.op));
    if method == "QueryPrepared" {
        return barrier::query_prepared(&bank.pool, None, &info.gid).await;
    }
    if method == "TransInTryNested" {
        // A try that is itself a TCC: its branches go under this branch's id.
        let (client, mode, [try_url, confirm, cancel]) =
            bank.nested.get().ok_or_else(|| Error::Protocol("no nested TCC configured".into()))?;
        let nested = Tcc::nested(client, info)?;
        nested.call_branch(req.payload(*mode), try_url, confirm, cancel).await?;
        return Ok(());
    }
    let scripted = if method.starts_with("TransIn") { &req.trans_in_result } else { &req.trans_out_result };
    let forward = matches!(info.op.as_str(), "action" | "try");
    let change = match method {
        "TransOut" | "TransOutTry" => Some((1, -req.amount)),
        "TransOutRevert" | "TransOutCancel" => Some((1, req.amount)),
        "TransIn" | "TransInConfirm" => Some((2, req.amount)),
        "TransInRevert" => Some((2, -req.amount)),
        "TransOutConfirm" | "TransInTry" | "TransInCancel" => None,
        other => return Err(Error::Protocol(format!("no method {other}"))),
    };
    Barrier::new(info)
        .call(&bank.pool, async |conn| {
            if let Some((id, delta)) = change {
                sqlx::query("UPDATE account SET balance = balance + ? WHERE id = ?")
                    .bind(delta)
                    .bind(id)
                    .execute(&mut *conn)
                    .await?;
            }
            // A refusal after the update: the barrier's transaction rolls both back.
            match scripted.as_str() {
                "FAILURE" if forward => Err(Error::failure(format!("{method} refused"))),
                "ONGOING" if forward => Err(Error::Ongoing(format!("{method} not yet"))),
                _ => Ok(()),
            }
        })
        .await?;
    Ok(())
}

#[derive(Clone)]
struct BusiService {
    inner: Arc<Inner>,
}

impl NamedService for BusiService {
    const NAME: &'static str = "busi.Busi";
}

impl<B> Service<http::Request<B>> for BusiService
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

struct Handler {
    inner: Arc<Inner>,
    method: String,
}

impl UnaryService<Bytes> for Handler {
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
