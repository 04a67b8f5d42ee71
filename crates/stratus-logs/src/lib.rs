//! The log seam: every log line of an instance, every report and request
//! record and every line the platform writes about an instance goes
//! through [`Logs`], and so does every read of them.
//!
//! The contract, which every backend keeps:
//! - [`Logs::append`] never waits. A backend that cannot keep up drops
//!   records rather than slow an invocation down, and counts them
//!   ([`Logs::dropped`]).
//! - A record counts as stored once a [`Logs::flush`] begun after its
//!   `append` returned has returned `Ok`: from then on every
//!   [`Logs::query`] sees it (or, had it been dropped, it is counted).
//!   Nothing acknowledged to a caller that depends on a record (a log
//!   query after a response, an event settled after its attempt) may be
//!   acknowledged before that flush.
//! - Queries return records oldest first, each with the id it was stored
//!   under; ids grow in the order records were stored.
//!
//! [`BatchedLogs`] batches records into a [`LogTable`] off the invocation
//! path and applies the retention limits. Two tables: [`SegmentLogs`],
//! append-only segment files in the data directory (one node), and
//! [`StoreTable`], the store's own log table (for a store that several
//! nodes share). [`MemoryLogs`] keeps records in memory, for tests and
//! for tools that need no store.

mod memory;
mod reserve;
mod segments;
mod table;
mod writer;

use async_trait::async_trait;

pub use memory::MemoryLogs;
pub use reserve::{Reserve, free_bytes};
pub use segments::{SegmentLimits, SegmentLogs};
pub use stratus_store::{LogQuery, LogRecord, LogStream, StoredLog};
pub use table::{LogTable, StoreTable, TableError};
pub use writer::{BatchedLogs, Buffer, Retention};

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("cannot store or read log records: {0}")]
    Table(#[from] TableError),
    #[error("the log writer has stopped")]
    Stopped,
    /// A write that a flush waited for failed (the store said why in the
    /// server's log).
    #[error("log records could not be stored")]
    Unstored,
}

/// Whether applying retention is this writer's turn: where several nodes
/// share one log table, one of them at a time trims it.
#[async_trait]
pub trait TrimTurn: Send + Sync {
    async fn mine(&self) -> bool;
}

/// Where log records go and where they are read back.
#[async_trait]
pub trait Logs: Send + Sync {
    /// Takes `record` without waiting; see the crate's contract.
    fn append(&self, record: LogRecord);

    /// Returns once every record appended before the call is stored.
    async fn flush(&self) -> Result<(), LogsError>;

    /// Stored records that match `query`, oldest first.
    async fn query(&self, query: LogQuery) -> Result<Vec<StoredLog>, LogsError>;

    /// Records dropped so far because the backend could not keep up.
    fn dropped(&self) -> u64;
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}
