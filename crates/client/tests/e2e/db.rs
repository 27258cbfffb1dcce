//! A fresh database per test on each backend, and the few generic SQL calls the suites need.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use dtx_client::barrier::BarrierDatabase;
use sqlx::{AssertSqlSafe, Connection};
use tempfile::TempDir;

/// A test database: a pool, and what keeps it alive.
pub struct TestDb<DB: sqlx::Database> {
    pub pool: sqlx::Pool<DB>,
    _dir: Option<TempDir>,
}

/// What the suites run besides the barrier: plain statements and one-number queries.
pub trait TestSql: BarrierDatabase {
    /// A timestamp two hours ago, in this database's SQL.
    const TWO_HOURS_AGO: &'static str;
    fn exec<'a>(
        conn: &'a mut Self::Connection,
        sql: &'a str,
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a;
    fn number<'a>(
        conn: &'a mut Self::Connection,
        sql: &'a str,
    ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send + 'a;
}

macro_rules! test_sql {
    ($db:ty, $ago:literal) => {
        impl TestSql for $db {
            const TWO_HOURS_AGO: &'static str = $ago;
            fn exec<'a>(
                conn: &'a mut Self::Connection,
                sql: &'a str,
            ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'a {
                async move { sqlx::raw_sql(AssertSqlSafe(sql)).execute(conn).await.map(drop) }
            }
            fn number<'a>(
                conn: &'a mut Self::Connection,
                sql: &'a str,
            ) -> impl Future<Output = Result<i64, sqlx::Error>> + Send + 'a {
                async move { sqlx::query_scalar::<$db, i64>(AssertSqlSafe(sql)).fetch_one(conn).await }
            }
        }
    };
}

test_sql!(sqlx::Sqlite, "datetime('now', '-2 hours')");
test_sql!(sqlx::Postgres, "now() - interval '2 hours'");
test_sql!(sqlx::MySql, "now() - interval 2 hour");

impl<DB: TestSql> TestDb<DB> {
    pub async fn exec(&self, sql: &str) {
        let mut conn = self.pool.acquire().await.expect("acquire");
        DB::exec(&mut conn, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub async fn number(&self, sql: &str) -> i64 {
        let mut conn = self.pool.acquire().await.expect("acquire");
        DB::number(&mut conn, sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

/// The server URL in `var`, or `None` (the suite skips) — except under `CI=true`, where a
/// missing server is a failure.
fn server_url(var: &str, test: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("{test}: {var} is not set, and CI=true: the suite must run (bash .ci/run sets it)")
        }
        _ => {
            eprintln!("SKIPPED {test}: {var} is not set (bash .ci/run sets it)");
            None
        }
    }
}

pub async fn sqlite() -> TestDb<sqlx::Sqlite> {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("busi.db").display());
    let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(8).connect(&url).await.expect("sqlite");
    TestDb { pool, _dir: Some(dir) }
}

pub async fn postgres(test: &str) -> Option<TestDb<sqlx::Postgres>> {
    let admin = server_url(dtx_store_postgres::testing::URL_VAR, test)?;
    let url = dtx_store_postgres::testing::create_database(&admin)
        .await
        .expect("create a PostgreSQL test database");
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(8).connect(&url).await.expect("postgres");
    Some(TestDb { pool, _dir: None })
}

pub async fn mysql(test: &str) -> Option<TestDb<sqlx::MySql>> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let admin = server_url("DTX_TEST_MYSQL_URL", test)?;
    let name = format!("dtx_t_{}_{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let mut conn = sqlx::MySqlConnection::connect(&admin).await.expect("connect to DTX_TEST_MYSQL_URL");
    sqlx::raw_sql(AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create a MySQL test database");
    let base = admin.rsplit_once('/').map(|(b, _)| b).expect("DTX_TEST_MYSQL_URL ends with /database");
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(8)
        .connect(&format!("{base}/{name}"))
        .await
        .expect("mysql");
    Some(TestDb { pool, _dir: None })
}
