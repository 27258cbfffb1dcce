//! `dtx-client`: the Rust SDK for dtx and other DTM-compatible
//! coordinators.
//!
//! - **Start transactions** over HTTP or gRPC with one API ([`Client`]): sagas ([`Saga`]),
//!   TCC ([`TccBuilder::run`]), XA ([`XaBuilder::run`], participants in [`xa`]), 2-phase messages ([`Msg`], with
//!   [`Msg::do_and_submit`] for the transactional outbox), [`Client::new_gid`],
//!   [`Client::query`].
//! - **Write participants**: [`BranchInfo`] says which branch a call is for; [`mod@axum`]
//!   (feature `axum`) and [`grpc`] (feature `grpc`) read it from the request and answer
//!   with the result protocol (success / FAILURE / ONGOING); nested TCC with [`Tcc::nested`].
//! - **The barrier** ([`barrier`], features `sqlite`, `postgres`, `mysql`): DTM's
//!   sub-transaction barrier on sqlx, so handlers run their business exactly once per branch
//!   op and never compensate what did not happen.
//!
//! Errors are typed ([`Error`]): [`Error::Failure`] and [`Error::Ongoing`] are the result
//! protocol's FAILURE (HTTP 409, gRPC `Aborted`) and ONGOING (425, `FailedPrecondition`);
//! [`Error::Transport`] means no answer, [`Error::Protocol`] an answer outside the protocol.
//!
//! # Features
//!
//! | feature | adds |
//! |---|---|
//! | (none) | HTTP client: sagas, TCC, messages, query |
//! | `grpc` | [`Client::grpc`], gRPC branch URLs, [`Payload::proto`], tonic participant helpers ([`grpc`]) |
//! | `axum` | axum extractors and responses ([`mod@axum`]) |
//! | `sqlite`, `postgres`, `mysql` | the [`barrier`] on that database, [`Msg::do_and_submit`] |
//! | `rustls` | HTTPS |
//!
//! # Quick start
//!
//! A saga that moves 30 from one account to another; the coordinator calls the actions in
//! order and, if one answers FAILURE, the compensations of those that ran, in reverse:
//!
//! ```no_run
//! use serde_json::json;
//!
//! # async fn f() -> Result<(), dtx_client::Error> {
//! let client = dtx_client::Client::http("http://127.0.0.1:36789/api/dtmsvr")?;
//! let gid = client.new_gid().await?;
//! let body = json!({"amount": 30});
//! client
//!     .saga(&gid)
//!     .add("http://bank1:8081/api/TransOut", "http://bank1:8081/api/TransOutRevert", &body)
//!     .add("http://bank2:8082/api/TransIn", "http://bank2:8082/api/TransInRevert", &body)
//!     .wait_result(true) // report the outcome: a rollback is Err(Error::Failure(reason))
//!     .submit()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! A participant (axum, feature `axum`) whose business runs under the barrier (feature
//! `sqlite` here), so duplicates, null compensations and hanging actions are handled:
//!
//! ```
//! use axum::extract::State;
//! use dtx_client::axum::{BranchCall, Success};
//! use dtx_client::barrier::Barrier;
//! use dtx_client::{BranchResult, Error};
//!
//! #[derive(serde::Deserialize)]
//! struct Transfer { amount: i64 }
//!
//! async fn trans_in(State(db): State<sqlx::SqlitePool>, call: BranchCall<Transfer>) -> BranchResult {
//!     Barrier::new(&call.info)
//!         .call(&db, async |conn| {
//!             sqlx::query("UPDATE account SET balance = balance + ? WHERE id = 2")
//!                 .bind(call.payload.amount)
//!                 .execute(conn)
//!                 .await?;
//!             Ok::<_, Error>(())
//!         })
//!         .await?;
//!     Ok(Success) // also when the barrier skipped the business
//! }
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Error> {
//! let db = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
//! dtx_client::barrier::create_table(&db, None).await?;
//! sqlx::raw_sql("CREATE TABLE account (id INTEGER PRIMARY KEY, balance INTEGER); INSERT INTO account VALUES (2, 0)")
//!     .execute(&db)
//!     .await?;
//! let app: axum::Router = axum::Router::new().route("/TransIn", axum::routing::post(trans_in)).with_state(db.clone());
//! # let _ = app;
//! // The coordinator calls it twice (a retry): the money arrives once.
//! let info = dtx_client::BranchInfo::new("gid-1", "saga", "01", "action")?;
//! for _ in 0..2 {
//!     trans_in(State(db.clone()), BranchCall { info: info.clone(), payload: Transfer { amount: 30 } }).await?;
//! }
//! let balance: i64 = sqlx::query_scalar("SELECT balance FROM account WHERE id = 2").fetch_one(&db).await?;
//! assert_eq!(balance, 30);
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod branch;
mod client;
mod error;
mod msg;
mod saga;
mod tcc;
mod trans;
pub mod xa;

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
pub mod barrier;
#[cfg(feature = "grpc")]
pub mod grpc;

pub use branch::BranchInfo;
pub use client::Client;
pub use error::Error;
pub use msg::Msg;
pub use saga::Saga;
pub use tcc::{Tcc, TccBuilder};
pub use trans::{Options, Payload};
pub use xa::{Xa, XaBuilder};

/// What a branch handler returns: `Ok` = success (with axum, [`axum::Success`] answers 200),
/// [`Error::Failure`] = FAILURE, [`Error::Ongoing`] = ONGOING, any other error is retried.
#[cfg(feature = "axum")]
pub type BranchResult<T = axum::Success> = Result<T, Error>;
/// What a branch handler returns: `Ok` = success, [`Error::Failure`] = FAILURE,
/// [`Error::Ongoing`] = ONGOING, any other error is retried.
#[cfg(not(feature = "axum"))]
pub type BranchResult<T = ()> = Result<T, Error>;
