//! The shared `Store` conformance suite, each test on a fresh SQLite file.

use std::sync::Arc;

use dtx_store::Store;
use dtx_store_sqlite::{SqliteOptions, SqliteStore};
use tempfile::TempDir;

/// A fresh store in its own temp dir; the dir (and the database) goes away with the guard.
async fn fresh_store() -> (Arc<dyn Store>, TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("dtx.db").display());
    let store = SqliteStore::open(&url, SqliteOptions::default()).await.expect("open sqlite store");
    (Arc::new(store), dir)
}

dtx_store::store_test_suite!(fresh_store);
