//! Backend-specific checks; the behaviour of the `Store` contract is covered by the shared
//! conformance suite (`tests/conformance.rs`) and the multi-node tests (`tests/nodes.rs`).

use std::path::PathBuf;

use sqlx::Row;

use super::*;

/// The migration file names of one backend, sorted.
fn migration_names(backend: &str) -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(backend);
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn migrations_match_sqlite_by_version_and_name() {
    let postgres = migration_names("postgres");
    let sqlite = migration_names("sqlite");
    let mysql = migration_names("mysql");
    assert!(!postgres.is_empty());
    assert_eq!(postgres, sqlite, "migrations/postgres and migrations/sqlite must list the same files");
    assert_eq!(mysql, sqlite, "migrations/mysql and migrations/sqlite must list the same files");
    // And sqlx reads the same (version, description) pairs from them.
    let embedded: Vec<(i64, String)> = sqlx::migrate!("../../migrations/postgres")
        .iter()
        .map(|m| (m.version, m.description.to_string()))
        .collect();
    assert_eq!(embedded.len(), postgres.len());
}

#[test]
fn pool_size_derives_the_writers() {
    assert_eq!(PgOptions::default().clock, ClockSource::Database);
    assert_eq!(PgOptions::with_pool_size(10).writers, 2);
    assert_eq!(PgOptions::with_pool_size(3).writers, 1);
    assert_eq!(PgOptions::with_pool_size(1).writers, 1);
    assert_eq!(PgOptions::with_pool_size(0).pool_size, 1);
    assert_eq!(PgOptions::with_pool_size(64).writers, 2);
}

#[tokio::test]
async fn a_bad_url_or_an_unreachable_server_fails_at_once() {
    let bad = PgStore::open("postgres://x:y@[nope/db", PgOptions::default()).await;
    assert!(matches!(bad, Err(Error::Internal(_))), "{bad:?}");
    let started = std::time::Instant::now();
    let refused = PgStore::open("postgres://dtx@127.0.0.1:1/dtx", PgOptions::default()).await;
    match refused {
        Err(Error::Unavailable(msg)) => assert!(msg.contains("PostgreSQL"), "{msg}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "no retry loop at start");
}

async fn open(test: &str) -> Option<PgStore> {
    let url = testing::fresh_database(test).await?;
    Some(PgStore::open(&url, PgOptions::default()).await.expect("open"))
}

/// `db_now!` is one value for a whole statement, and moves from one statement to the next even
/// inside one transaction (unlike `now()`, frozen at BEGIN): a batch that runs for a while
/// judges each request by the time it runs.
#[tokio::test]
async fn the_statement_clock_is_stable_within_and_moves_between_statements() {
    let Some(store) = open("the_statement_clock_is_stable_within_and_moves_between_statements").await else {
        return;
    };
    let mut tx = store.inner.db.pool.begin().await.expect("begin");
    let now = <crate::write::Pg as dtx_store::sql::Dialect>::NOW;
    let sql: &'static str = format!("SELECT {now} AS a, pg_sleep(0.05)::text AS s, {now} AS b").leak();
    let first = sqlx::query(sql).bind(None::<i64>).fetch_one(&mut *tx).await.expect("first");
    let (a, b): (i64, i64) = (first.get("a"), first.get("b"));
    assert_eq!(a, b, "one value per statement");
    let second = sqlx::query(sql).bind(None::<i64>).fetch_one(&mut *tx).await.expect("second");
    let c: i64 = second.get("a");
    assert!(c >= a + 50, "the next statement of the transaction reads a later time: {a} then {c}");
    let fixed = sqlx::query(sql).bind(Some(42_i64)).fetch_one(&mut *tx).await.expect("fixed");
    assert_eq!(fixed.get::<i64, _>("a"), 42, "a bound $1 replaces the database clock");
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn the_claim_scans_the_partial_index() {
    let Some(store) = open("the_claim_scans_the_partial_index").await else {
        return;
    };
    // Without statistics the planner may prefer a sequential scan of a tiny table; make the
    // choice show what it does on a real one.
    let mut conn = store.inner.db.pool.acquire().await.expect("conn");
    sqlx::raw_sql("SET enable_seqscan = off").execute(&mut *conn).await.expect("set");
    let sql = format!("EXPLAIN {}", write::SQL.claim_due.text);
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(None::<i64>)
        .bind("o")
        .bind(1_i64)
        .bind(1_i64)
        .bind(10_i64)
        .fetch_all(&mut *conn)
        .await
        .expect("explain");
    let plan: Vec<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
    assert!(plan.iter().any(|l| l.contains("trans_global_due")), "plan: {plan:#?}");
    assert!(plan.iter().any(|l| l.contains("LockRows")), "the sub-select locks: {plan:#?}");
}
