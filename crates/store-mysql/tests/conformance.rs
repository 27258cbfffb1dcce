//! The shared `Store` conformance suite on MySQL / MariaDB, each test in a fresh database of the
//! server named by `DTX_TEST_MYSQL_URL` (skipped with a notice when it is unset; a failure under
//! `CI=true`).
//!
//! The suite drives time by hand (`now` is an argument), so these stores trust the caller's
//! clock ([`ClockSource::Caller`]); the SQL is the one the database clock uses, with `$1` bound.
//! The database clock itself is tested in `tests/nodes.rs`.

use std::sync::Arc;

use dtx_store::Store;
use dtx_store_mysql::{ClockSource, MySqlOptions, MySqlStore, testing};

async fn fresh_store() -> Option<(Arc<dyn Store>, ())> {
    let url = testing::fresh_database("mysql conformance").await?;
    let opts = MySqlOptions { clock: ClockSource::Caller, ..MySqlOptions::default() };
    let store = MySqlStore::open(&url, opts).await.expect("open mysql store");
    Some((Arc::new(store), ()))
}

dtx_store::store_test_suite!(fresh_store);
