//! The store suite every backend runs, on SQLite: each case in a database
//! file of its own.

use std::sync::Arc;

use async_trait::async_trait;
use stratus_store::Store;
use stratus_store::conformance::Fixture;
use stratus_store_sqlite::SqliteStore;

struct Sqlite(tempfile::TempDir);

#[async_trait]
impl Fixture for Sqlite {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&self.0.path().join("db")).unwrap())
    }

    async fn other(&self) -> Arc<dyn Store> {
        Arc::new(SqliteStore::open(&self.0.path().join("other")).unwrap())
    }
}

stratus_store::conformance_suite!(async { Sqlite(tempfile::tempdir().unwrap()) });
