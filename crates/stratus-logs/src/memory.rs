//! Log records kept in memory.

use std::sync::Mutex;

use async_trait::async_trait;
use stratus_store::{LogQuery, LogRecord, StoredLog};

use crate::{Logs, LogsError};

/// [`Logs`] in memory: a record is stored as soon as it is appended.
#[derive(Debug, Default)]
pub struct MemoryLogs {
    records: Mutex<Vec<StoredLog>>,
}

impl MemoryLogs {
    /// Every record, oldest first.
    pub fn all(&self) -> Vec<LogRecord> {
        self.lock().iter().map(|s| s.record.clone()).collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<StoredLog>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Logs for MemoryLogs {
    fn append(&self, record: LogRecord) {
        let mut records = self.lock();
        let id = records.len() as i64 + 1;
        records.push(StoredLog { id, record });
    }

    async fn flush(&self) -> Result<(), LogsError> {
        Ok(())
    }

    async fn query(&self, q: LogQuery) -> Result<Vec<StoredLog>, LogsError> {
        let records = self.lock();
        let matches = records.iter().filter(|s| {
            let r = &s.record;
            q.app.as_ref().is_none_or(|a| *a == r.app)
                && q.function.as_ref().is_none_or(|f| *f == r.function)
                && q.request_id
                    .as_ref()
                    .is_none_or(|id| r.request_id.as_ref() == Some(id))
                && q.since_ms.is_none_or(|t| r.ts_ms >= t)
                && q.until_ms.is_none_or(|t| r.ts_ms < t)
                && q.contains
                    .as_ref()
                    .is_none_or(|text| r.message.contains(text.as_str()))
                && q.after_id.is_none_or(|id| s.id > id)
        });
        let limit = q.limit.max(1) as usize;
        let mut found: Vec<StoredLog> = match q.after_id {
            // Following: the oldest after the id.
            Some(_) => matches.take(limit).cloned().collect(),
            // Otherwise the newest, returned oldest first.
            None => {
                let mut newest: Vec<StoredLog> = matches.rev().take(limit).cloned().collect();
                newest.reverse();
                newest
            }
        };
        found.shrink_to_fit();
        Ok(found)
    }

    fn dropped(&self) -> u64 {
        0
    }
}
