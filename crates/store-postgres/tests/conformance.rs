//! The shared `Store` conformance suite on PostgreSQL, each test in a fresh database of the
//! server named by `DTX_TEST_POSTGRES_URL` (skipped, with a notice, when it is unset).
//!
//! The suite drives time by hand (`now` is an argument), so these stores trust the caller's
//! clock ([`ClockSource::Caller`]); the SQL is the one the database clock uses, with `$1` bound.
//! The database clock itself is tested in `tests/nodes.rs`.

use std::sync::Arc;

use dtx_store::Store;
use dtx_store_postgres::{ClockSource, PgOptions, PgStore, testing};

async fn fresh_store() -> Option<(Arc<dyn Store>, ())> {
    let url = testing::fresh_database("postgres conformance").await?;
    let opts = PgOptions { clock: ClockSource::Caller, ..PgOptions::default() };
    let store = PgStore::open(&url, opts).await.expect("open postgres store");
    Some((Arc::new(store), ()))
}

dtx_store::store_test_suite!(fresh_store);
