//! The order service (HTTP). `POST /api/orders` creates an order row (`pending`), starts a
//! saga (or, with `"mode": "tcc"`, a TCC transaction) through dtx's gRPC API, and answers with
//! the outcome. It is also a participant of its own transactions: the order step (confirm /
//! cancel the order) and the "notify shipping" step, which has no compensation.
//!
//! The saga, as submitted:
//!
//! | # | action | compensation |
//! |---|---|---|
//! | 0 | order `POST /api/shipping/notify` | none: a pivot, so dtx runs it after every other step |
//! | 1 | order `POST /api/order/confirm` | order `POST /api/order/cancel` |
//! | 2 | inventory gRPC `Reserve` | inventory gRPC `Release` |
//! | 3 | coupon `POST /api/coupon/use` | coupon `POST /api/coupon/release` |
//!
//! The order step comes first among the steps that can be undone because dtx compensates
//! only steps whose action was started: placed first, every rollback cancels the order.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use dtx_client::axum::{BranchCall, Success};
use dtx_client::barrier::Barrier;
use dtx_client::{BranchResult, Client, Error, Payload};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::coupon::CouponRequest;
use crate::db::Db;
use crate::hooks::Hooks;
use crate::inventory::SERVICE;
use crate::proto::StockRequest;
use crate::with_pool;

/// The service's tables (the barrier table is created as well). `shipments` has no key on
/// purpose: a duplicate notification would show as a second row.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    sku TEXT NOT NULL,
    qty BIGINT NOT NULL,
    coupon TEXT NOT NULL,
    mode TEXT NOT NULL,
    status TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS shipments (
    order_id TEXT NOT NULL,
    sku TEXT NOT NULL,
    qty BIGINT NOT NULL
)";

/// Where the order service finds the others.
#[derive(Debug, Clone)]
pub struct OrderConfig {
    /// dtx's gRPC API (`host:port`): transactions with gRPC branches must be submitted there.
    pub dtx_grpc: String,
    /// This service's own base URL as dtx reaches it (`http://host:port`).
    pub public_url: String,
    /// The inventory service (`host:port`, gRPC).
    pub inventory: String,
    /// The coupon service's base URL (`http://host:port`).
    pub coupon_url: String,
    /// The transactions' retry interval (whole seconds; `None`: the coordinator's default).
    pub retry_interval: Option<Duration>,
}

/// An order as placed by a client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlaceOrder {
    /// The SKU.
    pub sku: String,
    /// How many.
    pub qty: i64,
    /// The coupon code to use.
    pub coupon: String,
    /// `saga` (default) or `tcc`.
    #[serde(default)]
    pub mode: Mode,
}

/// How the order's transaction runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A saga: order, inventory (gRPC), coupon, then shipping.
    #[default]
    Saga,
    /// TCC: try order, coupon and inventory; confirm or cancel them all.
    Tcc,
}

/// The answer to `POST /api/orders`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Placed {
    /// The order id, also the transaction's gid.
    pub order_id: String,
    /// What the first round of the transaction ended with: `succeeded`, `failed` (rolled
    /// back), `ongoing` (dtx keeps retrying).
    pub outcome: String,
    /// The rollback reason or the retry cause.
    #[serde(default)]
    pub reason: String,
}

/// One order row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Order {
    /// The id (= gid).
    pub id: String,
    /// The SKU.
    pub sku: String,
    /// How many.
    pub qty: i64,
    /// The coupon.
    pub coupon: String,
    /// `saga` or `tcc`.
    pub mode: String,
    /// `pending`, `confirmed` or `cancelled`.
    pub status: String,
}

#[derive(Debug, Clone)]
struct AppState {
    db: Db,
    hooks: Hooks,
    dtx: Client,
    config: OrderConfig,
}

/// The payload of the order and shipping branches.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderRef {
    order_id: String,
    sku: String,
    qty: i64,
}

/// The order service's routes, on `db` (migrated).
pub async fn router(db: Db, hooks: Hooks, config: OrderConfig) -> Result<Router, crate::Error> {
    db.migrate(SCHEMA).await?;
    let dtx = Client::grpc(&config.dtx_grpc)?;
    Ok(Router::new()
        .route("/api/orders", post(place))
        .route("/api/order/confirm", post(confirm))
        .route("/api/order/cancel", post(cancel))
        .route("/api/order/try", post(tcc_try))
        .route("/api/order/tcc-confirm", post(tcc_confirm))
        .route("/api/order/tcc-cancel", post(cancel))
        .route("/api/shipping/notify", post(notify_shipping))
        .with_state(AppState { db, hooks, dtx, config }))
}

/// Every order, by id.
pub async fn all(db: &Db) -> Result<Vec<Order>, crate::Error> {
    const SQL: &str = "SELECT id, sku, qty, coupon, mode, status FROM orders ORDER BY id";
    Ok(with_pool!(db, pool => sqlx::query_as::<_, Order>(SQL).fetch_all(pool).await?))
}

/// How many shipping notifications were recorded per order.
pub async fn shipments(db: &Db) -> Result<Vec<(String, i64)>, crate::Error> {
    const SQL: &str = "SELECT order_id, COUNT(*) FROM shipments GROUP BY order_id ORDER BY order_id";
    Ok(with_pool!(db, pool => sqlx::query_as::<_, (String, i64)>(SQL).fetch_all(pool).await?))
}

async fn place(State(s): State<AppState>, Json(order): Json<PlaceOrder>) -> Response {
    if order.qty <= 0 || order.sku.is_empty() || order.coupon.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "sku, coupon and a positive qty are required"})),
        )
            .into_response();
    }
    match start(&s, &order).await {
        Ok(placed) => Json(placed).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "placing an order failed");
            (StatusCode::INTERNAL_SERVER_ERROR, Json(json!({"error": e.to_string()}))).into_response()
        }
    }
}

/// Creates the order row, then runs its transaction.
async fn start(s: &AppState, order: &PlaceOrder) -> Result<Placed, crate::Error> {
    let gid = s.dtx.new_gid().await?;
    const INSERT: &str = "INSERT INTO orders (id, sku, qty, coupon, mode, status)
        VALUES ($1, $2, $3, $4, $5, 'pending')";
    let mode = match order.mode {
        Mode::Saga => "saga",
        Mode::Tcc => "tcc",
    };
    with_pool!(&s.db, pool => {
        sqlx::query(INSERT)
            .bind(&gid)
            .bind(&order.sku)
            .bind(order.qty)
            .bind(&order.coupon)
            .bind(mode)
            .execute(pool)
            .await?;
    });
    let c = &s.config;
    let me = &c.public_url;
    let order_ref =
        Payload::json(&OrderRef { order_id: gid.clone(), sku: order.sku.clone(), qty: order.qty })?;
    let coupon = Payload::json(&CouponRequest { order_id: gid.clone(), coupon: order.coupon.clone() })?;
    let stock =
        Payload::proto(&StockRequest { order_id: gid.clone(), sku: order.sku.clone(), qty: order.qty });
    let inv = |method: &str| format!("{}/{SERVICE}/{method}", c.inventory);
    let result = match order.mode {
        Mode::Saga => {
            let mut saga = s
                .dtx
                .saga(&gid)
                // Listed first, run last: a step without compensation cannot be undone, so dtx
                // holds it back until every step that can be undone has succeeded.
                .add(format!("{me}/api/shipping/notify"), "", order_ref.clone())
                .add(format!("{me}/api/order/confirm"), format!("{me}/api/order/cancel"), order_ref)
                .add(inv("Reserve"), inv("Release"), stock)
                .add(
                    format!("{}/api/coupon/use", c.coupon_url),
                    format!("{}/api/coupon/release", c.coupon_url),
                    coupon,
                )
                .wait_result(true);
            if let Some(d) = c.retry_interval {
                saga = saga.retry_interval(d);
            }
            saga.submit().await
        }
        Mode::Tcc => {
            let mut tcc = s.dtx.tcc(&gid).wait_result(true);
            if let Some(d) = c.retry_interval {
                tcc = tcc.retry_interval(d);
            }
            tcc.run(async |t| {
                t.call_branch(
                    order_ref,
                    &format!("{me}/api/order/try"),
                    &format!("{me}/api/order/tcc-confirm"),
                    &format!("{me}/api/order/tcc-cancel"),
                )
                .await?;
                t.call_branch(
                    coupon,
                    &format!("{}/api/coupon/try", c.coupon_url),
                    &format!("{}/api/coupon/confirm", c.coupon_url),
                    &format!("{}/api/coupon/cancel", c.coupon_url),
                )
                .await?;
                t.call_branch(stock, &inv("TryReserve"), &inv("ConfirmReserve"), &inv("CancelReserve"))
                    .await?;
                Ok(())
            })
            .await
        }
    };
    let (outcome, reason) = match result {
        Ok(()) => ("succeeded", String::new()),
        Err(Error::Failure(r)) => ("failed", r),
        Err(Error::Ongoing(r)) => ("ongoing", r),
        // The coordinator may or may not have the transaction; it finishes it if it has.
        Err(e) => ("unknown", e.to_string()),
    };
    Ok(Placed { order_id: gid, outcome: outcome.into(), reason })
}

/// Runs `update` (bind: order id) under the barrier; zero rows changed is FAILURE with
/// `refusal` when given, else success.
async fn guarded(
    s: &AppState,
    step: &'static str,
    call: BranchCall<OrderRef>,
    update: &'static str,
    refusal: Option<&'static str>,
) -> BranchResult {
    let BranchCall { info, payload } = call;
    let barrier = Barrier::new(&info);
    let result = with_pool!(&s.db, pool => {
        barrier
            .call(pool, async |conn| {
                let n =
                    sqlx::query(update).bind(&payload.order_id).execute(&mut *conn).await?.rows_affected();
                match refusal {
                    Some(why) if n == 0 => Err(Error::failure(format!("order {} {why}", payload.order_id))),
                    _ => Ok(()),
                }
            })
            .await
    });
    s.hooks.finish(step, &payload.order_id, &info, result)?;
    Ok(Success)
}

const CONFIRM: &str = "UPDATE orders SET status = 'confirmed' WHERE id = $1 AND status = 'pending'";

async fn confirm(State(s): State<AppState>, call: BranchCall<OrderRef>) -> BranchResult {
    // A saga action may refuse (FAILURE rolls the saga back)...
    guarded(&s, "order.confirm", call, CONFIRM, Some("is not pending")).await
}

async fn tcc_confirm(State(s): State<AppState>, call: BranchCall<OrderRef>) -> BranchResult {
    // ...a TCC confirm may not: the transaction is already decided.
    guarded(&s, "order.tcc-confirm", call, CONFIRM, None).await
}

async fn cancel(State(s): State<AppState>, call: BranchCall<OrderRef>) -> BranchResult {
    const SQL: &str = "UPDATE orders SET status = 'cancelled' WHERE id = $1 AND status <> 'cancelled'";
    let step = if call.info.op == "cancel" { "order.tcc-cancel" } else { "order.cancel" };
    guarded(&s, step, call, SQL, None).await
}

async fn tcc_try(State(s): State<AppState>, call: BranchCall<OrderRef>) -> BranchResult {
    // Nothing to hold: the order row is the order service's own. The try only checks that the
    // order is still pending, and its barrier row lets a late cancel tell "tried" from "never
    // arrived".
    const SQL: &str = "UPDATE orders SET status = status WHERE id = $1 AND status = 'pending'";
    guarded(&s, "order.try", call, SQL, Some("is not pending")).await
}

async fn notify_shipping(State(s): State<AppState>, call: BranchCall<OrderRef>) -> BranchResult {
    let BranchCall { info, payload } = call;
    const SQL: &str = "INSERT INTO shipments (order_id, sku, qty) VALUES ($1, $2, $3)";
    let barrier = Barrier::new(&info);
    let result = with_pool!(&s.db, pool => {
        barrier
            .call(pool, async |conn| {
                sqlx::query(SQL)
                    .bind(&payload.order_id)
                    .bind(&payload.sku)
                    .bind(payload.qty)
                    .execute(&mut *conn)
                    .await?;
                Ok(())
            })
            .await
    });
    s.hooks.finish("shipping.notify", &payload.order_id, &info, result)?;
    Ok(Success)
}
