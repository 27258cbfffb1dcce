//! The coupon service: an HTTP participant. Saga: `POST /api/coupon/use` marks a coupon used
//! by the order, `POST /api/coupon/release` gives it back. TCC: `try` reserves it for the
//! order, `confirm` marks it used, `cancel` gives it back.

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use dtx_client::axum::{BranchCall, Success};
use dtx_client::barrier::Barrier;
use dtx_client::{BranchResult, Error};
use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::hooks::Hooks;
use crate::with_pool;

/// The service's tables (the barrier table is created as well). `order_id` is `''` when the
/// coupon is free.
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS coupons (
    code TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    order_id TEXT NOT NULL
)";

/// The payload of every coupon branch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CouponRequest {
    /// The order (its gid).
    pub order_id: String,
    /// The coupon code.
    pub coupon: String,
}

/// One coupon row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Coupon {
    /// The code.
    pub code: String,
    /// `available`, `reserved` (by a TCC try) or `used`.
    pub status: String,
    /// The order holding it (`''` when available).
    pub order_id: String,
}

#[derive(Debug, Clone)]
struct AppState {
    db: Db,
    hooks: Hooks,
}

/// The coupon service's routes, on `db` (migrated).
pub async fn router(db: Db, hooks: Hooks) -> Result<Router, crate::Error> {
    db.migrate(SCHEMA).await?;
    Ok(Router::new()
        .route("/api/coupon/use", post(use_coupon))
        .route("/api/coupon/release", post(release))
        .route("/api/coupon/try", post(try_reserve))
        .route("/api/coupon/confirm", post(confirm))
        .route("/api/coupon/cancel", post(cancel))
        .with_state(AppState { db, hooks }))
}

/// Creates (or resets) coupon `code` as available.
pub async fn seed(db: &Db, code: &str) -> Result<(), crate::Error> {
    const SQL: &str = "INSERT INTO coupons (code, status, order_id) VALUES ($1, 'available', '')
        ON CONFLICT (code) DO UPDATE SET status = 'available', order_id = ''";
    with_pool!(db, pool => {
        sqlx::query(SQL).bind(code).execute(pool).await?;
    });
    Ok(())
}

/// Marks coupon `code` used by nobody in particular (a coupon someone else already spent).
pub async fn seed_used(db: &Db, code: &str) -> Result<(), crate::Error> {
    const SQL: &str = "INSERT INTO coupons (code, status, order_id) VALUES ($1, 'used', 'someone-else')
        ON CONFLICT (code) DO UPDATE SET status = 'used', order_id = 'someone-else'";
    with_pool!(db, pool => {
        sqlx::query(SQL).bind(code).execute(pool).await?;
    });
    Ok(())
}

/// Every coupon, by code.
pub async fn all(db: &Db) -> Result<Vec<Coupon>, crate::Error> {
    const SQL: &str = "SELECT code, status, order_id FROM coupons ORDER BY code";
    Ok(with_pool!(db, pool => sqlx::query_as::<_, Coupon>(SQL).fetch_all(pool).await?))
}

/// Runs `update` (binds: coupon, order id) under the barrier of the call. Zero rows changed is
/// FAILURE with `refusal` when given (the coupon is not available), else success.
async fn guarded(
    state: &AppState,
    step: &'static str,
    call: BranchCall<CouponRequest>,
    update: &'static str,
    refusal: Option<&'static str>,
) -> BranchResult {
    let BranchCall { info, payload } = call;
    let barrier = Barrier::new(&info);
    let result = with_pool!(&state.db, pool => {
        barrier
            .call(pool, async |conn| {
                let n = sqlx::query(update)
                    .bind(&payload.coupon)
                    .bind(&payload.order_id)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                match refusal {
                    Some(why) if n == 0 => Err(Error::failure(format!("coupon {} {why}", payload.coupon))),
                    _ => Ok(()),
                }
            })
            .await
    });
    state.hooks.finish(step, &payload.coupon, &info, result)?;
    Ok(Success)
}

async fn use_coupon(State(s): State<AppState>, call: BranchCall<CouponRequest>) -> BranchResult {
    const SQL: &str =
        "UPDATE coupons SET status = 'used', order_id = $2 WHERE code = $1 AND status = 'available'";
    guarded(&s, "coupon.use", call, SQL, Some("is not available")).await
}

async fn release(State(s): State<AppState>, call: BranchCall<CouponRequest>) -> BranchResult {
    const SQL: &str = "UPDATE coupons SET status = 'available', order_id = ''
        WHERE code = $1 AND order_id = $2 AND status = 'used'";
    guarded(&s, "coupon.release", call, SQL, None).await
}

async fn try_reserve(State(s): State<AppState>, call: BranchCall<CouponRequest>) -> BranchResult {
    const SQL: &str =
        "UPDATE coupons SET status = 'reserved', order_id = $2 WHERE code = $1 AND status = 'available'";
    guarded(&s, "coupon.try", call, SQL, Some("is not available")).await
}

async fn confirm(State(s): State<AppState>, call: BranchCall<CouponRequest>) -> BranchResult {
    const SQL: &str =
        "UPDATE coupons SET status = 'used' WHERE code = $1 AND order_id = $2 AND status = 'reserved'";
    guarded(&s, "coupon.confirm", call, SQL, None).await
}

async fn cancel(State(s): State<AppState>, call: BranchCall<CouponRequest>) -> BranchResult {
    const SQL: &str = "UPDATE coupons SET status = 'available', order_id = ''
        WHERE code = $1 AND order_id = $2 AND status = 'reserved'";
    guarded(&s, "coupon.cancel", call, SQL, None).await
}
