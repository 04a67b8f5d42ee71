//! Platform state: applications, their versions, code packages, app keys
//! and logs.
//!
//! [`Store`] is the one interface the rest of the platform uses; this crate
//! holds the records it speaks in and the embedded SQLite backend
//! ([`SqliteStore`], the default). A PostgreSQL backend for several nodes
//! implements the same trait. The hot path never calls the store: the server
//! keeps in-memory snapshots and writes logs in batches.

mod records;
mod sqlite;

use async_trait::async_trait;

pub use records::{
    AppRecord, KeyRecord, LogQuery, LogRecord, NewVersion, PackageRecord, StoredLog, VersionRecord,
};
pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("stored record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("the store's worker thread failed: {0}")]
    Worker(String),
    #[error(
        "the database was written by a newer stratus (schema {found}, this build knows {known}); upgrade stratus"
    )]
    NewerSchema { found: i64, known: i64 },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Durable platform state. Every method is one atomic step.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Whether a package with this SHA-256 is recorded.
    async fn has_package(&self, sha256: &str) -> Result<bool>;
    async fn put_package(&self, package: PackageRecord) -> Result<()>;

    async fn list_apps(&self) -> Result<Vec<AppRecord>>;
    async fn get_app(&self, app: &str) -> Result<Option<AppRecord>>;
    /// The active version of every application, for start-up.
    async fn active_versions(&self) -> Result<Vec<VersionRecord>>;
    async fn active_version(&self, app: &str) -> Result<Option<VersionRecord>>;
    /// Records a new version and makes it the active one, in one transaction.
    async fn activate(&self, version: NewVersion) -> Result<VersionRecord>;
    /// Removes an application and its versions; false if it did not exist.
    async fn delete_app(&self, app: &str) -> Result<bool>;

    /// Records an app key; only its SHA-256 is kept.
    async fn create_key(&self, key: KeyRecord) -> Result<()>;
    /// The keys of `app`, or of every app.
    async fn list_keys(&self, app: Option<&str>) -> Result<Vec<KeyRecord>>;
    /// Revokes a key; false if `app` has no key `id`.
    async fn delete_key(&self, app: &str, id: &str) -> Result<bool>;

    async fn append_logs(&self, logs: Vec<LogRecord>) -> Result<()>;
    async fn query_logs(&self, query: LogQuery) -> Result<Vec<StoredLog>>;
    /// Deletes logs older than `before_ms`, then the oldest until at most
    /// `max_bytes` of messages remain. Returns the number deleted.
    async fn trim_logs(&self, before_ms: i64, max_bytes: u64) -> Result<u64>;
}
