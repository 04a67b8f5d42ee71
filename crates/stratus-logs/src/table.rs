//! Where the writer puts batches of records: the narrow seam between
//! [`crate::BatchedLogs`] and a backend that stores records.

use std::sync::Arc;

use async_trait::async_trait;
use stratus_store::{LogBudget, LogQuery, LogRecord, Store, StoreError, StoredLog, Trimmed};

/// Why a backend could not store or read records.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {err}")]
    Io {
        path: std::path::PathBuf,
        err: std::io::Error,
    },
    #[error("{0}")]
    Full(&'static str),
}

impl TableError {
    /// Whether the disk (or the backend's size limit) is full.
    pub fn is_disk_full(&self) -> bool {
        match self {
            TableError::Store(err) => err.is_disk_full(),
            TableError::Io { err, .. } => matches!(
                err.raw_os_error(),
                Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
            ),
            TableError::Full(_) => true,
        }
    }
}

/// A backend that keeps log records: written in batches by one writer,
/// read by any number of queries at once.
#[async_trait]
pub trait LogTable: Send + Sync {
    /// Stores `records` in order, each under an id larger than any stored
    /// before it.
    async fn append(&self, records: Vec<LogRecord>) -> Result<(), TableError>;

    /// Stored records that match `query`, oldest first.
    async fn query(&self, query: LogQuery) -> Result<Vec<StoredLog>, TableError>;

    /// Deletes records older than `before_ms`, then each app's oldest
    /// beyond `budget.per_app`, then the oldest beyond `budget.total`.
    async fn trim(&self, before_ms: i64, budget: LogBudget) -> Result<Trimmed, TableError>;

    /// Bytes stored, as the budget counts them.
    async fn bytes(&self) -> Result<u64, TableError>;
}

/// Records kept in the [`Store`]'s own log table: for a store shared by
/// several nodes, where every node must read every node's records.
pub struct StoreTable(pub Arc<dyn Store>);

#[async_trait]
impl LogTable for StoreTable {
    async fn append(&self, records: Vec<LogRecord>) -> Result<(), TableError> {
        Ok(self.0.append_logs(records).await?)
    }

    async fn query(&self, query: LogQuery) -> Result<Vec<StoredLog>, TableError> {
        Ok(self.0.query_logs(query).await?)
    }

    async fn trim(&self, before_ms: i64, budget: LogBudget) -> Result<Trimmed, TableError> {
        Ok(self.0.trim_logs(before_ms, budget).await?)
    }

    async fn bytes(&self) -> Result<u64, TableError> {
        Ok(self.0.log_bytes().await?)
    }
}
