//! The inventory service: a gRPC participant. Its branches are registered in the saga as
//! `host:port/inventory.Inventory/Reserve` (and `Release`, and the TCC trio) and called by dtx
//! over gRPC with the branch in `dtm-*` metadata.
//!
//! Stock per SKU: `available` (can be sold), `reserved` (taken by orders), `frozen` (held by a
//! TCC try, until confirm or cancel). `available + reserved + frozen` never changes.

use dtx_client::barrier::Barrier;
use dtx_client::{BranchInfo, Error, grpc};
use tonic::{Request, Response, Status};

use crate::db::Db;
use crate::hooks::Hooks;
use crate::proto::StockRequest;
use crate::proto::inventory_server::{Inventory, InventoryServer};
use crate::with_pool;

/// The service's tables (the barrier table is created as well).
pub const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS stock (
    sku TEXT PRIMARY KEY,
    available BIGINT NOT NULL,
    reserved BIGINT NOT NULL,
    frozen BIGINT NOT NULL
)";

/// The gRPC method path prefix of the branches: `inventory.Inventory`.
pub const SERVICE: &str = "inventory.Inventory";

/// The inventory service.
#[derive(Debug, Clone)]
pub struct InventoryService {
    db: Db,
    hooks: Hooks,
}

/// One stock row.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Stock {
    /// The SKU.
    pub sku: String,
    /// Can be sold.
    pub available: i64,
    /// Taken by orders.
    pub reserved: i64,
    /// Held by TCC tries.
    pub frozen: i64,
}

impl InventoryService {
    /// The service on `db` (migrated).
    pub async fn new(db: Db, hooks: Hooks) -> Result<InventoryService, crate::Error> {
        db.migrate(SCHEMA).await?;
        Ok(InventoryService { db, hooks })
    }

    /// The tonic service.
    pub fn into_server(self) -> InventoryServer<InventoryService> {
        InventoryServer::new(self)
    }

    /// Sets the stock of `sku`: `available` = `qty`, nothing reserved or frozen.
    pub async fn seed(db: &Db, sku: &str, qty: i64) -> Result<(), crate::Error> {
        const SQL: &str = "INSERT INTO stock (sku, available, reserved, frozen) VALUES ($1, $2, 0, 0)
            ON CONFLICT (sku) DO UPDATE SET available = $2, reserved = 0, frozen = 0";
        with_pool!(db, pool => {
            sqlx::query(SQL).bind(sku).bind(qty).execute(pool).await?;
        });
        Ok(())
    }

    /// Every stock row, by SKU.
    pub async fn all(db: &Db) -> Result<Vec<Stock>, crate::Error> {
        const SQL: &str = "SELECT sku, available, reserved, frozen FROM stock ORDER BY sku";
        Ok(with_pool!(db, pool => sqlx::query_as::<_, Stock>(SQL).fetch_all(pool).await?))
    }

    /// Runs `update` (binds: qty, sku) under the barrier of this call; `None` rows changed
    /// is FAILURE with `refusal` when given, else success (compensations that find nothing to
    /// undo have nothing to do).
    async fn guarded(
        &self,
        step: &'static str,
        request: Request<StockRequest>,
        update: &'static str,
        refusal: Option<&'static str>,
    ) -> Result<Response<()>, Status> {
        let info: BranchInfo = grpc::branch_info(&request)?;
        let req = request.into_inner();
        if req.qty <= 0 || req.sku.is_empty() {
            return Err(Status::invalid_argument("sku and a positive qty are required"));
        }
        let barrier = Barrier::new(&info);
        let result = with_pool!(&self.db, pool => {
            barrier
                .call(pool, async |conn| {
                    let n = sqlx::query(update)
                        .bind(req.qty)
                        .bind(&req.sku)
                        .execute(&mut *conn)
                        .await?
                        .rows_affected();
                    match refusal {
                        Some(why) if n == 0 => {
                            Err(Error::failure(format!("{why}: {} x {}", req.qty, req.sku)))
                        }
                        _ => Ok(()),
                    }
                })
                .await
        });
        self.hooks.finish(step, &req.sku, &info, result)?;
        Ok(Response::new(()))
    }
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    async fn reserve(&self, request: Request<StockRequest>) -> Result<Response<()>, Status> {
        const SQL: &str = "UPDATE stock SET available = available - $1, reserved = reserved + $1
            WHERE sku = $2 AND available >= $1";
        self.guarded("inventory.reserve", request, SQL, Some("out of stock")).await
    }

    async fn release(&self, request: Request<StockRequest>) -> Result<Response<()>, Status> {
        const SQL: &str = "UPDATE stock SET available = available + $1, reserved = reserved - $1
            WHERE sku = $2 AND reserved >= $1";
        self.guarded("inventory.release", request, SQL, None).await
    }

    async fn try_reserve(&self, request: Request<StockRequest>) -> Result<Response<()>, Status> {
        const SQL: &str = "UPDATE stock SET available = available - $1, frozen = frozen + $1
            WHERE sku = $2 AND available >= $1";
        self.guarded("inventory.try", request, SQL, Some("out of stock")).await
    }

    async fn confirm_reserve(&self, request: Request<StockRequest>) -> Result<Response<()>, Status> {
        const SQL: &str = "UPDATE stock SET frozen = frozen - $1, reserved = reserved + $1
            WHERE sku = $2 AND frozen >= $1";
        self.guarded("inventory.confirm", request, SQL, None).await
    }

    async fn cancel_reserve(&self, request: Request<StockRequest>) -> Result<Response<()>, Status> {
        const SQL: &str = "UPDATE stock SET frozen = frozen - $1, available = available + $1
            WHERE sku = $2 AND frozen >= $1";
        self.guarded("inventory.cancel", request, SQL, None).await
    }
}
