//! Each service's own database: a SQLite file or PostgreSQL, through sqlx.
//!
//! The barrier is generic over the database, and so is the business SQL here: every statement
//! is written once with `$n` placeholders, which both SQLite and PostgreSQL accept, and
//! [`with_pool!`](crate::with_pool) expands a block once per backend.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::Error;

/// A service's database.
#[derive(Debug, Clone)]
pub enum Db {
    /// A SQLite file.
    Sqlite(sqlx::SqlitePool),
    /// PostgreSQL.
    Postgres(sqlx::PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$db` (`&SqlitePool` or `&PgPool`):
/// the block is compiled once per backend, so sqlx's types line up without generic bounds.
#[macro_export]
macro_rules! with_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::db::Db::Sqlite($pool) => $body,
            $crate::db::Db::Postgres($pool) => $body,
        }
    };
}

impl Db {
    /// Connects to `url` (`sqlite://path` or `postgres://...`). On PostgreSQL, `schema` (if
    /// any) is created and used as the search path, so several services can share one
    /// PostgreSQL database and still keep their tables apart. The barrier table is always
    /// `dtm_barrier.barrier` there, as in DTM.
    pub async fn connect(url: &str, schema: Option<&str>) -> Result<Db, Error> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // A demo database need not survive power loss; WAL keeps it consistent.
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(10));
            // SQLite has one writer at a time: a few connections keep readers going while
            // writers queue in the pool instead of spinning on SQLITE_BUSY.
            let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let mut options = PgConnectOptions::from_str(url)?;
            if let Some(schema) = schema {
                let admin = PgPoolOptions::new().max_connections(1).connect_with(options.clone()).await?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {schema}")))
                    .execute(&admin)
                    .await?;
                admin.close().await;
                options = options.options([("search_path", schema)]);
            }
            let pool = PgPoolOptions::new().max_connections(8).connect_with(options).await?;
            Ok(Db::Postgres(pool))
        } else {
            Err(Error::Config(format!("database URL {url}: expected sqlite://... or postgres://...")))
        }
    }

    /// Creates the barrier table and then runs `ddl` (statements separated by `;`).
    pub async fn migrate(&self, ddl: &str) -> Result<(), Error> {
        with_pool!(self, pool => {
            dtx_client::barrier::create_table(pool, None).await?;
            for stmt in ddl.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::raw_sql(sqlx::AssertSqlSafe(stmt.to_owned())).execute(pool).await?;
            }
        });
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }
}
